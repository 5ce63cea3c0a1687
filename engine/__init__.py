"""mmbal's engine: data, models, balancing methods, training and the run store.

The engine never imports :mod:`mmbal_cli`; the CLI and the dashboard are thin layers over it.
"""

__version__ = "0.1.0"

# The notebook API (``from engine import load_run``), imported on first use so ``import engine`` stays cheap
# (PEP 562); it lives in the analysis wing, ``engine.analysis.api``.
_LAZY = ("load_run", "Run")
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from .analysis import api

        return getattr(api, name)
    raise AttributeError(f"module 'engine' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
