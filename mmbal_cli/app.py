"""The ``mmbal`` command: the Typer app, with the commands of :mod:`mmbal_cli.commands` added to it.

Exit codes (each command's, in ``docs/commands.md``): 0 success, 1 runtime failure, 2 usage / preset /
data error, 3 run not found or resume refused, 130 interrupted (after a checkpoint is written).
"""

from __future__ import annotations

import typer

from .commands import register_all

EPILOG = ("Exit codes: 0 success, 1 runtime failure, 2 usage/preset/data error, "
          "3 run not found or resume refused, 130 interrupted.")

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG,
                  help="Balanced multimodal learning: train, resume, list and compare runs.")
register_all(app)


def main() -> None:
    app()
