"""The method registry: every balancing method by its interfaces.md name.

To add a method: write ``engine/methods/<name>.py`` with a :class:`~engine.methods.base.Method`
subclass and its ``Config`` dataclass, decorate the class with
``@METHODS.register("<name>", config=Config, help="one line")``, and import the module below.
"""

from ..registry import Registry
from .base import Method, MethodContext, StepContext, StepResult

METHODS: Registry = Registry("method")

from . import aug, joint, mcr, mikd, ogm, unimodal  # noqa: E402,F401  (registration side effects)

__all__ = ["METHODS", "Method", "MethodContext", "StepContext", "StepResult"]
