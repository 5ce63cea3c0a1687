"""The commands of ``mmbal``: one module per command or group of commands, each with
``register(app)`` adding its commands to the Typer app. ``COMMANDS`` lists them in the order
``mmbal --help`` shows them within each panel.

| module | commands |
|---|---|
| ``run`` | ``run``, ``resume`` |
| ``ls`` | ``ls`` |
| ``methods`` | ``methods`` |
| ``data`` | ``data synth``, ``data inspect``, ``data import`` |
| ``bench`` | ``bench`` |
| ``compare`` | ``compare`` |
| ``sweep`` | ``sweep`` |
| ``advise`` | ``advise`` |
| ``watch`` | ``watch`` |
| ``show`` | ``show`` |
| ``tags`` | ``tag``, ``note`` |
| ``clean`` | ``rm``, ``gc`` |
| ``export`` | ``export`` |
| ``predict`` | ``predict``, ``eval`` |

A command's body imports the engine (and torch) when it runs, so ``mmbal --help`` stays fast; a
user's error is raised as :class:`engine.errors.MmbalError` and turned into its message and exit
code by :func:`mmbal_cli.output.fail`.
"""

from . import advise, bench, clean, compare, data, export, ls, methods, predict, run, show, sweep, tags, watch

COMMANDS = (run, ls, show, tags, clean, export, predict, methods, data, bench, compare, sweep, advise, watch)


def register_all(app) -> None:
    from ..examples import add_examples
    from ..help_text import flow_help

    for module in COMMANDS:
        module.register(app)
    add_examples(app)
    flow_help(app)
