"""mmbal's engine: data, models, balancing methods, training and the run store.

The engine never imports :mod:`mmbal_cli`; the CLI and the dashboard are thin layers over it.
"""

__version__ = "0.1.0"
