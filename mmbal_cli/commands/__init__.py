"""Commands that live in their own modules; each module has ``register(app)`` adding its commands."""

from importlib import import_module

MODULES: tuple[str, ...] = ("bench", "compare", "sweep", "watch")


def register_all(app) -> None:
    for name in MODULES:
        import_module(f"{__name__}.{name}").register(app)
