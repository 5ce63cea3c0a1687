"""The dashboard's screens: the run dashboard, the runs list, the compare view, the advice screen and
the advices list, and the dialogs."""

from .advice import AdviceScreen
from .advices import AdvicesScreen
from .compare import CompareScreen
from .dashboard import DashboardScreen
from .dialogs import HelpScreen, QuitScreen
from .runs import RunsScreen

__all__ = ["AdviceScreen", "AdvicesScreen", "CompareScreen", "DashboardScreen", "HelpScreen", "QuitScreen",
           "RunsScreen"]
