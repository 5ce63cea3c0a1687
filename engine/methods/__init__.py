"""The method registry: every balancing method by its registry name (``[method] name``, ``mmbal methods``).

To add a method: write ``engine/methods/<name>.py`` with a :class:`~engine.methods.base.Method`
subclass and its ``Config`` dataclass, decorate the class with
``@METHODS.register("<name>", config=Config, help="one line")``, and import the module below.
"""

from .base import Method, MethodContext, StepContext, StepResult
from .info import MethodInfo, MethodRegistry

METHODS = MethodRegistry("method")

__all__ = ["METHODS", "Method", "MethodContext", "MethodInfo", "StepContext", "StepResult"]

# registration side effects: one import per method module
from . import aug  # noqa: E402,F401
from . import joint  # noqa: E402,F401
from . import mcr  # noqa: E402,F401
from . import mikd  # noqa: E402,F401
from . import multiloss  # noqa: E402,F401
from . import ogm  # noqa: E402,F401
from . import unimodal  # noqa: E402,F401
from . import inforeg  # noqa: E402,F401
from . import mslr  # noqa: E402,F401
from . import mses  # noqa: E402,F401
from . import opm  # noqa: E402,F401
from . import agm  # noqa: E402,F401
from . import cggm  # noqa: E402,F401
from . import pmr  # noqa: E402,F401
from . import valuation  # noqa: E402,F401
from . import relearning  # noqa: E402,F401
from . import mla  # noqa: E402,F401
from . import gblending  # noqa: E402,F401
from . import dimml  # noqa: E402,F401
from . import greedy  # noqa: E402,F401
from . import ume  # noqa: E402,F401
from . import umt  # noqa: E402,F401
from . import reconboost  # noqa: E402,F401
from . import mmpareto  # noqa: E402,F401
from . import arm  # noqa: E402,F401
from . import lfm  # noqa: E402,F401
from . import mmcosine  # noqa: E402,F401
from . import amco  # noqa: E402,F401
from . import mbsd  # noqa: E402,F401
from . import cml  # noqa: E402,F401
