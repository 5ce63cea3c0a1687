"""The method registry: every balancing method by its registry name (``[method] name``, ``mmbal methods``).

To add a method: write ``engine/methods/<name>.py`` with a :class:`~engine.methods.base.Method`
subclass and its ``Config`` dataclass, decorate the class with
``@METHODS.register("<name>", config=Config, help="one line")``, and import the module below.
"""

from .base import Method, MethodContext, StepContext, StepResult
from .info import MethodInfo, MethodRegistry

METHODS = MethodRegistry("method")

from . import aug, joint, mcr, mikd, multiloss, ogm, unimodal  # noqa: E402,F401  (registration side effects)

__all__ = ["METHODS", "Method", "MethodContext", "MethodInfo", "StepContext", "StepResult"]
