"""Command-line options shared by several commands (declared once, so their names and help agree)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["SetOpt", "NprocOpt", "RunsDirOpt"]

SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", help="Override a preset key: --set train.epochs=3 (repeatable).", show_default=False)]
NprocOpt = Annotated[Optional[int], typer.Option(
    "--nproc", min=1, help="Train with N processes on this machine (data parallel: one GPU each on CUDA, gloo on "
                           "the CPU); train.batch_size must be a multiple of N.", show_default=False)]
RunsDirOpt = Annotated[Optional[Path], typer.Option(
    "--runs-dir", envvar="MMBAL_RUNS_DIR", help="Runs directory (default: the user data dir's mmbal/runs).",
    show_default=False)]
