"""Printing for the CLI: errors as one paragraph on stderr (and the exit code they carry), and the
training progress display."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from engine.errors import MmbalError

err_console = Console(stderr=True, highlight=False)
# Tables piped to a file or another program keep whole cells rather than an 80-column squeeze.
out_console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True) \
        if err_console.is_terminal else print(f"error: {message}", file=sys.stderr)


def fail(exc: Exception, quiet: bool = False) -> None:
    """Print a user-facing error (:class:`engine.errors.MmbalError`) as one paragraph (unless
    ``quiet``: ranks other than 0 of a multi-process run, whose rank 0 prints it) and exit with its
    code; any other exception is raised again."""
    if isinstance(exc, MmbalError):
        if not quiet:
            print_error(str(exc))
        raise typer.Exit(exc.exit_code)
    raise exc


def _fmt(values: dict[str, float], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is not None:
            parts.append(f"{k.split('/', 1)[1]} {v:.4f}")
    return "  ".join(parts)


class PlainReporter:
    """One plain line per epoch (for logs, nohup, CI): what Rich cannot do without a terminal."""

    def __init__(self, file=None):
        self.file = file or sys.stderr
        self.modalities: list[str] = []
        self.t0 = time.perf_counter()

    def start(self, info):
        self.modalities = []
        pos = info["position"]
        where = f" from epoch {pos.epoch} batch {pos.batch}" if pos.step else ""
        print(f"training {info['method']} on {info['device']}: {info['epochs']} epochs x "
              f"{info['steps_per_epoch']} steps ({info['n_train']} training samples){where}", file=self.file, flush=True)
        if info.get("data"):
            print(f"data: {info['data']}", file=self.file, flush=True)
        self.t0 = time.perf_counter()

    def progress(self, pos, n_batches, epochs, values):
        pass

    def warn(self, message):
        print(f"warning: {message}", file=self.file or sys.stderr, flush=True)

    def epoch(self, epoch, epochs, values):
        keys = ["val/acc/fused"] + sorted(k for k in values if k.startswith("val/acc/") and k != "val/acc/fused")
        keys += ["val/f1/fused", "val/loss/fused"]
        elapsed = time.perf_counter() - self.t0
        print(f"epoch {epoch}/{epochs}  {_fmt(values, keys)}  ({elapsed:.1f}s)", file=self.file, flush=True)

    def end(self, summary):
        test = summary.get("test", {})
        if test:
            keys = ["test/acc/fused"] + sorted(k for k in test if k.startswith("test/acc/") and k != "test/acc/fused")
            print(f"test (best val epoch {summary['selected']['epoch'] + 1}): {_fmt(test, keys + ['test/f1/fused'])}",
                  file=self.file, flush=True)


class RichReporter(PlainReporter):
    """A live progress bar on a terminal, plus the plain per-epoch lines above it."""

    def __init__(self):
        super().__init__(file=None)
        self.bar = Progress(TextColumn("[bold]epoch {task.fields[ep]}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err_console,
                            transient=True)
        self.task = None

    def start(self, info):
        self.bar.console.print(f"training [bold]{info['method']}[/] on {info['device']}: {info['epochs']} epochs x "
                               f"{info['steps_per_epoch']} steps ({info['n_train']} training samples)")
        if info.get("data"):
            self.bar.console.print(f"data: {info['data']}")
        self.total = info["epochs"] * info["steps_per_epoch"]
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=info["position"].step,
                                      ep=f"{info['position'].epoch + 1}/{info['epochs']}", info="")
        self.t0 = time.perf_counter()

    def progress(self, pos, n_batches, epochs, values):
        fields = {"ep": f"{min(pos.epoch + 1, epochs)}/{epochs}"}
        if values:
            fields["info"] = f"loss {values.get('train/loss/method', float('nan')):.3f} " \
                             f"acc {values.get('train/acc/fused', float('nan')):.3f}"
        self.bar.update(self.task, completed=pos.step, **fields)

    def epoch(self, epoch, epochs, values):
        keys = ["val/acc/fused"] + sorted(k for k in values if k.startswith("val/acc/") and k != "val/acc/fused")
        elapsed = time.perf_counter() - self.t0
        self.bar.console.print(f"epoch {epoch}/{epochs}  {_fmt(values, keys + ['val/f1/fused'])}  ({elapsed:.1f}s)")

    def end(self, summary):
        self.bar.stop()
        self.file = sys.stderr
        super().end(summary)

    def stop(self):
        self.bar.stop()


def make_reporter():
    return RichReporter() if err_console.is_terminal else PlainReporter()
