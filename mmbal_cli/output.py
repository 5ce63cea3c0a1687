"""Printing for the CLI: errors as one paragraph on stderr (and the exit code they carry), and the
training progress display."""

from __future__ import annotations

import os
import sys
import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from engine.errors import MmbalError

err_console = Console(stderr=True, highlight=False)


def piped_width() -> int | None:
    """The width of tables printed to a pipe or file: $COLUMNS when set (Rich reads it), else 200, so that
    they keep whole cells rather than an 80-column squeeze; None (the terminal's) on a terminal."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return None if columns.isdigit() and int(columns) > 0 else 200


out_console = Console(highlight=False, width=piped_width())


def print_heading(text: str) -> None:
    """A table's heading line, styled as Rich's table titles, but not padded to the table's width (piped
    output would keep that padding as trailing spaces)."""
    from rich.text import Text
    out_console.print(Text(text, style="table.title"))


def print_error(message: str) -> None:
    """``error: message`` on stderr (the prefix in bold red on a terminal); the message is shown as it is:
    brackets in it (``mmbal[image]``, a name such as ``exp[/x]``) are not Rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True) \
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


def _short(value: float) -> str:
    """Three decimals; ``-`` for NaN (no score: e.g. a modality absent in every row of the split)."""
    if value != value:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.4g}"


def result_fields(values: dict[str, float], split: str, modalities: list[str]) -> list[str]:
    """``fused 0.912``, one per trained modality, then ``f1`` and ``loss``: a split's scores, short."""
    fields = []
    for key, label in [(f"{split}/acc/fused", "fused")] + [(f"{split}/acc/{m}", m) for m in modalities] \
            + [(f"{split}/f1/fused", "f1"), (f"{split}/loss/fused", "loss")]:
        if values.get(key) is not None:
            fields.append(f"{label} {_short(values[key])}")
    return fields


def fit_lines(head: str, fields: list[str], tail: str = "", width: int | None = None) -> list[str]:
    """``head`` then the fields two spaces apart, broken into lines of at most ``width`` characters
    (continuation lines indented under the first field); no breaks when ``width`` is None."""
    items = fields + ([tail] if tail else [])
    if width is None:
        return ["  ".join([head, *items])]
    indent = " " * (len(head) + 2)
    lines, line = [], head
    for item in items:
        if line.strip() and len(line) + 2 + len(item) > width and line != head:
            lines.append(line)
            line = indent + item
        else:
            line = f"{line}  {item}"
    return lines + [line]


def terminal_width(stream) -> int | None:
    """The columns of the terminal ``stream`` writes to; None when it is a pipe or a file (no wrapping in logs)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else None
    except (OSError, ValueError, AttributeError):
        return None


def test_head(summary: dict) -> str:
    """``test (epoch 7, selected on val)``, or, when no epoch was selected (no validation split, or a
    method whose selectable epochs had not begun), ``test (last epoch, none selected on val)``."""
    epoch = (summary.get("selected") or {}).get("epoch", -1)
    return f"test (epoch {epoch + 1}, selected on val)" if epoch is not None and epoch >= 0 else \
        "test (last epoch, none selected on val)"


def absent_line(absent: dict[str, int]) -> str:
    """How many rows miss each modality's value, and what the run does with them."""
    counts = ", ".join(f"{m} in {n} row{'s' * (n != 1)}" for m, n in absent.items())
    return (f"absent values: {counts} (given the train mean as input; a modality's own val/test scores "
            f"leave those rows out)")


class PlainReporter:
    """Plain lines (for logs, nohup, CI, pipes). Results (one line of validation scores per epoch, the
    test scores at the end) go to stdout, so ``mmbal run ... | tee train.log`` keeps them; what the
    run is doing (device, data placement, warnings) goes to stderr."""

    def __init__(self, out=None, err=None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.modalities: list[str] = []
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def result(self, lines: list[str]) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    def start(self, info):
        self.modalities = list(info.get("modalities") or [])
        pos = info["position"]
        # the position is 0-based; the per-epoch lines count from 1 ("epoch 4/4")
        inside = f", batch {pos.batch + 1}" if pos.batch else ""
        where = f", from epoch {pos.epoch + 1}{inside}" if pos.step else ""
        self.say(f"training {info['method']} on {info['device']}: {info['epochs']} epochs x "
                 f"{info['steps_per_epoch']} steps ({info['n_train']} samples){where}")
        if info.get("data"):
            self.say(f"data: {info['data']}")
        if info.get("absent"):
            self.say(absent_line(info["absent"]))
        self.t0 = time.perf_counter()

    def progress(self, pos, n_batches, epochs, values):
        pass

    def warn(self, message):
        self.say(f"warning: {message}")

    def epoch(self, epoch, epochs, values):
        elapsed = time.perf_counter() - self.t0
        self.result(fit_lines(f"epoch {epoch}/{epochs}  val", result_fields(values, "val", self.modalities),
                              f"({elapsed:.1f}s)", terminal_width(self.out)))

    def end(self, summary):
        test = summary.get("test", {})
        if test:
            head = test_head(summary)
            fields = [f for f in result_fields(test, "test", self.modalities) if not f.startswith("loss ")]
            self.result(fit_lines(head, fields, width=terminal_width(self.out)))


class RichReporter(PlainReporter):
    """A live progress bar (stderr) when stdout and stderr are both the terminal: the epoch, the steps
    of this epoch, samples per second and the time left, with the result lines printed above it."""

    def __init__(self):
        super().__init__()
        self.bar = Progress(TextColumn("[bold]epoch {task.fields[ep]}"), BarColumn(),
                            TextColumn("step {task.fields[steps]}"), TimeRemainingColumn(),
                            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[info]}"),
                            console=err_console, transient=True, redirect_stdout=False, redirect_stderr=False)
        self.task = None
        self.first_step = 0
        self.per_step = 1.0

    def say(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def result(self, lines: list[str]) -> None:
        for line in lines:
            self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def start(self, info):
        super().start(info)
        self.total = info["epochs"] * info["steps_per_epoch"]
        self.first_step = info["position"].step
        self.per_step = info["n_train"] / max(info["steps_per_epoch"], 1)
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=info["position"].step,
                                      ep=f"{info['position'].epoch + 1}/{info['epochs']}",
                                      steps=f"{info['position'].batch}/{info['steps_per_epoch']}", rate="", info="")
        self.t0 = time.perf_counter()

    def progress(self, pos, n_batches, epochs, values):
        fields = {"ep": f"{min(pos.epoch + 1, epochs)}/{epochs}", "steps": f"{pos.batch}/{n_batches}"}
        elapsed = time.perf_counter() - self.t0
        if pos.step > self.first_step and elapsed > 0:
            fields["rate"] = f"{(pos.step - self.first_step) * self.per_step / elapsed:,.0f} samples/s"
        if values:
            fields["info"] = f"loss {values.get('train/loss/method', float('nan')):.3f} " \
                             f"acc {values.get('train/acc/fused', float('nan')):.3f}"
        self.bar.update(self.task, completed=pos.step, **fields)

    def epoch(self, epoch, epochs, values):
        elapsed = time.perf_counter() - self.t0
        width = self.bar.console.width
        self.result(fit_lines(f"epoch {epoch}/{epochs}  val", result_fields(values, "val", self.modalities),
                              f"({elapsed:.1f}s)", width))

    def end(self, summary):
        self.bar.stop()
        test = summary.get("test", {})
        if test:
            head = test_head(summary)
            fields = [f for f in result_fields(test, "test", self.modalities) if not f.startswith("loss ")]
            self.result(fit_lines(head, fields, width=self.bar.console.width))

    def stop(self):
        self.bar.stop()


def make_reporter():
    """The live bar on a terminal; plain lines when stdout or stderr is a file or a pipe (results on
    stdout, diagnostics on stderr)."""
    return RichReporter() if err_console.is_terminal and sys.stdout.isatty() else PlainReporter()
