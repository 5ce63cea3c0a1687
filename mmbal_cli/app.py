"""The ``mmbal`` command: the Typer app, with the commands of :mod:`mmbal_cli.commands` added to it.

Exit codes (each command's, in ``docs/commands.md``): 0 success, 1 runtime failure, 2 usage / preset /
data error, 3 run not found or resume refused, 129 hang-up (SIGHUP, e.g. a lost SSH connection), 130
interrupted (Ctrl-C or SIGTERM) and 141 a training run's piped output closed, each after a checkpoint is written.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .commands import register_all

EPILOG = ("Exit codes: 0 success, 1 runtime failure, 2 usage/preset/data error, "
          "3 run not found or resume refused, 129 hang-up (SIGHUP), 130 interrupted, 141 output pipe closed.")

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG,
                  help="Balanced multimodal learning: train, resume, list and compare runs.")


def _flags_without_a_type() -> None:
    """Typer's help shows a flag (``--json``, ``--help``) with a ``<bool>`` value it does not take; show
    flags with no type column, as their usage is: the flag alone."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_mmbal", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._mmbal = True
    TyperOption.display_type_rich = display_type_rich


def _version(value: bool) -> None:
    if value:
        import platform

        import torch

        from engine import __version__
        typer.echo(f"mmbal {__version__} (torch {torch.__version__}, python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print mmbal's version (and torch's) and exit.")] = None,
          ) -> None:
    """Balanced multimodal learning: train, resume, list and compare runs."""


_flags_without_a_type()
register_all(app)


def main() -> None:
    app()
