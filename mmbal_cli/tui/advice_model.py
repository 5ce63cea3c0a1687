"""What the advice screen shows, from reads of an advice (no Textual): diagnosis, stages, result.

:class:`AdviceModel` folds in :class:`~mmbal_cli.tui.advice_reader.AdviceRead` s and composes the
views. The record says what is decided (the diagnosis, each finished round's scores and what it
kept, the recommendation, ``--apply``'s test figures); the runs say what is happening now (which
members of the stage under way are running, finished or waiting, and the validation figures of
those that finished). A record that cannot be read keeps the previous one, and a notice says so;
every value is read leniently (:mod:`.formatting`), so a partial record shows what it has.

The stages, in order: the diagnosis (``<name>-diag-...``), the halving rounds of the record's
schedule (``<name>-r<r>-<method>-s<seed>``, joint beside the candidates) and ``--apply``
(``<name>-apply-...``) when it has runs or figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.analysis.stats import mean_std
from engine.store import RunInfo

from .advice_reader import AdviceRead
from .formatting import finite, whole
from .run_notices import Notice

DEFAULT_METRIC = "val/acc/fused"
SEED_SUFFIX = re.compile(r"-s(-?\d+)$")


@dataclass(frozen=True)
class ModalityView:
    """One modality of the diagnosis: accuracy alone, inside joint, the gap, Shapley share, MI."""

    name: str
    alone: float | None
    inside: float | None
    gap: float | None
    share: float | None
    mi: float | None
    held_back: bool
    informative: bool


@dataclass(frozen=True)
class DiagnosisView:
    """The diagnosis' verdict, its sentence and the figures behind it."""

    verdict: str
    sentence: str
    fused: float | None
    chance: float | None
    best_alone: str | None
    beats_best: bool | None
    modalities: tuple[ModalityView, ...]


@dataclass(frozen=True)
class Row:
    """One line of a stage: a candidate, joint or a diagnosis run; ``done`` of ``total`` seeds
    finished, their mean and std, the paired difference to joint with its p, the state in words,
    its ``kind`` (how it is drawn) and the run Enter opens (None: no run yet)."""

    label: str
    done: int
    total: int
    mean: float | None
    std: float | None
    diff: float | None
    p: float | None
    state: str
    kind: str
    run: Path | None


@dataclass(frozen=True)
class StageView:
    """A stage: ``title`` (``round 2/3``), ``detail`` (epochs, seeds, what it keeps), ``status``
    (done, running, waiting, stopped, not run), what its means are of, and its rows."""

    key: str
    title: str
    detail: str
    status: str
    figure: str
    rows: tuple[Row, ...]


def _dict(raw) -> dict:
    return raw if isinstance(raw, dict) else {}


def _list(raw) -> list:
    return raw if isinstance(raw, list) else []


def _text(raw, default: str = "") -> str:
    return raw if isinstance(raw, str) else default


def _plural(n: int | None, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{'?' if n is None else n} {word}s"


def _seeds_text(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def short_metric(metric: str) -> str:
    """``val/acc/fused`` -> ``val acc/fused`` (the split named, then the figure)."""
    split, _, rest = metric.partition("/")
    return f"{split} {rest}" if rest else metric


def running_text(info: RunInfo, seed: int) -> str:
    """``s1 3/8``: the seed, then epochs done of planned, of a run under way."""
    epoch = finite(info.epoch)
    return f"s{seed} {'-' if epoch is None else f'{epoch:g}'}/{'?' if info.epochs is None else info.epochs}"


def shown(label: str) -> str:
    """A candidate's label as a row shows it: ``unimodal-modality=gene`` reads ``gene alone``."""
    return re.sub(r"^unimodal-(?:modality=)?(.+)$", r"\1 alone", label)


def live_row(label: str, names: dict[int, str], runs: dict[str, RunInfo], metric: str) -> Row:
    """A row from the runs themselves (the stage under way): how many seeds finished, the mean of their
    selected ``metric``, and the state (running with its seeds and epochs, finished, waiting, or the
    state of a run that stopped)."""
    infos = {seed: runs.get(name) for seed, name in names.items()}
    finished = [i for i in infos.values() if i is not None and i.state == "finished"]
    values = [finite(_dict(i.selected).get("value")) for i in finished
              if _dict(i.selected).get("metric") == metric]
    mean, std = mean_std([v for v in values if v is not None])
    running = [(s, i) for s, i in infos.items() if i is not None and i.state in ("running", "created")]
    trouble = [(s, i) for s, i in infos.items() if i is not None and i.state not in ("running", "created", "finished")]
    if running:
        state, kind = "running " + " ".join(running_text(i, s) for s, i in running), "running"
    elif infos and len(finished) == len(infos):
        state, kind = "finished", "finished"
    elif trouble:
        state, kind = " ".join(f"{i.state} s{s}" for s, i in trouble), "problem"
    else:
        state, kind = "waiting", "waiting"
    shown = next((i for _, i in running), None) or next((i for i in infos.values() if i is not None), None)
    return Row(label, len(finished), len(infos), mean, std, None, None, state, kind,
               shown.path if shown is not None else None)


class AdviceModel:
    """The advice in ``home`` as the screen shows it; :meth:`apply` folds a read in."""

    def __init__(self, home: str | Path):
        self.home = Path(home)
        self.name = self.home.name
        self.record: dict | None = None
        self.problem: str | None = None
        self.runs: dict[str, RunInfo] = {}
        self.loaded = False
        self.version = 0

    # -- folding reads ------------------------------------------------------------------------
    def apply(self, read: AdviceRead) -> bool:
        """Fold in ``read``; whether anything shown changed. An unreadable record keeps the previous one."""
        record = read.record if read.record is not None else self.record
        changed = (not self.loaded or record != self.record or read.problem != self.problem
                   or read.runs != self.runs)
        self.record, self.problem, self.runs, self.loaded = record, read.problem, dict(read.runs), True
        if changed:
            self.version += 1
        return changed

    # -- the record's parts ---------------------------------------------------------------------
    @property
    def _record(self) -> dict:
        return _dict(self.record)

    @property
    def _choice(self) -> dict:
        return _dict(self._record.get("choice"))

    @property
    def metric(self) -> str:
        return _text(self._record.get("metric")) or _text(self._choice.get("metric")) or DEFAULT_METRIC

    @property
    def preset(self) -> str:
        return Path(_text(self._record.get("preset"), "?")).name

    def _rounds_done(self) -> list[dict]:
        return [_dict(r) for r in _list(self._choice.get("rounds"))]

    def _schedule(self) -> list[dict]:
        return [_dict(r) for r in _list(self._choice.get("schedule"))]

    def _seed0(self) -> int | None:
        return whole(_dict(self._record.get("diagnosis")).get("seed"))

    def _references(self) -> list[str]:
        """joint, and unimodal on the best modality when the diagnosis found fused no better than it."""
        refs = [r for r in _list(self._choice.get("references")) if isinstance(r, str)]
        return refs or ["joint"]

    def _initial_candidates(self) -> list[str]:
        """The candidates of the first round (older records: the options' methods less those skipped)."""
        listed = [c for c in _list(self._choice.get("candidates")) if isinstance(c, str)]
        if listed:
            return listed
        skipped = {_text(s).split(":", 1)[0] for s in _list(self._record.get("skipped"))}
        return [c for c in _list(_dict(self._record.get("options")).get("candidates"))
                if isinstance(c, str) and c not in skipped]

    def recommendation(self) -> tuple[str, str] | None:
        """(method, text) once the record has the recommendation."""
        rec = _dict(self._record.get("recommendation"))
        text = _text(rec.get("text"))
        return (_text(rec.get("method"), "?"), text) if text else None

    def stopped(self) -> dict | None:
        stopped = self._record.get("stopped")
        return stopped if isinstance(stopped, dict) else None

    # -- views ----------------------------------------------------------------------------------
    def diagnosis(self) -> DiagnosisView | None:
        d = _dict(self._record.get("diagnosis"))
        if not d.get("sentence"):
            return None
        rows = []
        for m in map(_dict, _list(d.get("modalities"))):
            rows.append(ModalityView(_text(m.get("name"), "?"), finite(m.get("alone")), finite(m.get("inside_joint")),
                                     finite(m.get("gap")), finite(m.get("shapley_share")), finite(m.get("mi")),
                                     m.get("held_back") is True, m.get("informative") is not False))
        beats = d.get("fused_beats_best")
        return DiagnosisView(_text(d.get("verdict"), "?"), _text(d.get("sentence")), finite(d.get("fused")),
                             finite(d.get("chance")), _text(d.get("best_alone")) or None,
                             beats if isinstance(beats, bool) else None, tuple(rows))

    def current_stage(self) -> str:
        """Where the advice is: ``diagnosis``, ``round 2 of 3``, ``apply``, ``finished``; ``stopped in ...``."""
        if self.record is None:
            return "no record yet"
        if "diagnosis" not in self._record:
            where = "diagnosis"
        elif self.recommendation() is None:
            total = len(self._schedule())
            where = f"round {len(self._rounds_done()) + 1} of {total}" if total else "choosing"
        elif "apply" not in self._record and self._apply_runs():
            where = "apply"
        else:
            return "finished"
        stopped = self.stopped()
        return f"stopped ({_text(stopped.get('signal'), 'signal')}) in {where}" if stopped else where

    def stages(self) -> list[StageView]:
        """Every stage, in order (see the module docstring)."""
        if self.record is None:
            return []
        stages = [self._diagnosis_stage()]
        schedule, done = self._schedule(), self._rounds_done()
        for r in range(max(len(schedule), len(done))):
            spec = schedule[r] if r < len(schedule) else {}
            stages.append(self._done_round(r, done[r], len(schedule)) if r < len(done)
                          else self._open_round(r, spec, len(schedule), done))
        apply = self._apply_stage()
        if apply is not None:
            stages.append(apply)
        return stages

    def notices(self) -> list[Notice]:
        """Why the screen may not be what the user expects: the record unreadable or missing, a stop."""
        out = []
        if self.problem == "missing" and self.record is None:
            out.append(Notice("warning", f"{self.home / 'advice.json'} does not exist (yet): `mmbal advise` writes "
                                         f"it when the advice starts"))
        elif self.problem is not None:
            what, _, detail = self.problem.partition(": ")
            kept = ", showing the previous read" if self.record is not None else ""
            out.append(Notice("error", f"advice.json {what}{kept}" + (f": {detail}" if detail else "")))
        stopped = self.stopped()
        if stopped:
            out.append(Notice("warning", f"stopped ({_text(stopped.get('signal'), 'a signal')}) at "
                                         f"{_text(stopped.get('at'), '?')}: run the same `mmbal advise` command "
                                         f"again to continue"))
        for note in _list(self._record.get("skipped")):
            out.append(Notice("info", f"skipped: {_text(note)}"))
        return out

    def apply_text(self) -> str | None:
        """``--apply``'s test figures in one line, once the record has them."""
        a = _dict(self._record.get("apply"))
        methods = _dict(a.get("methods"))
        if not methods:
            return None
        parts = []
        for method, values in methods.items():
            v = _dict(values)
            parts.append(f"{method} {pm(finite(v.get('mean')), finite(v.get('std')))}")
        diff, p = finite(a.get("diff")), finite(a.get("p"))
        versus = f"; difference {diff:+.4f} (p={p:.3f})" if diff is not None and p is not None else ""
        seeds = [s for s in _list(a.get("seeds")) if whole(s) is not None]
        return (f"{short_metric(_text(a.get('metric'), '?'))} over {_plural(len(seeds), 'seed')}, "
                f"{_plural(whole(a.get('epochs')), 'epoch')}: " + "; ".join(parts) + versus)

    # -- stages ---------------------------------------------------------------------------------
    def _runs_under(self, stage: str) -> dict[str, dict[int, str]]:
        """The runs of ``stage`` by label (the run name less stage and seed), then seed -> run name."""
        prefix = f"{self.name}-{stage}-"
        out: dict[str, dict[int, str]] = {}
        for name in sorted(self.runs):
            match = SEED_SUFFIX.search(name)
            if name.startswith(prefix) and match:
                out.setdefault(name[len(prefix):match.start()], {})[int(match.group(1))] = name
        return out

    def _diagnosis_stage(self) -> StageView:
        d = _dict(self._record.get("diagnosis"))
        rows = []
        for label, names in self._runs_under("diag").items():
            rows.append(live_row(shown(label), names, self.runs, self.metric))
        rows.sort(key=lambda row: (row.label != "joint", row.label))
        if d:
            detail = f"{_plural(whole(d.get('epochs')), 'epoch')} · seed {whole(d.get('seed'))}"
            status = "done"
        else:
            detail, status = f"joint and each modality alone · {_plural(len(rows), 'run')} so far", self._open_status()
        return StageView("diag", "diagnosis", detail, status, short_metric(self.metric), tuple(rows))

    def _open_status(self) -> str:
        return "stopped" if self.stopped() else "running"

    def _round_detail(self, spec: dict, seeds: list[int] | None, candidates: int | None) -> str:
        parts = [_plural(whole(spec.get("epochs")), "epoch")]
        parts.append(_seeds_text(seeds) if seeds else _plural(whole(spec.get("seeds")), "seed"))
        keep = whole(spec.get("keep"))
        if candidates is not None and keep is not None:
            parts.append(f"keeps {keep} of {candidates}")
        return " · ".join(parts)

    def _run_of(self, stage: str, method: str, seeds: list[int]) -> Path | None:
        """The run Enter opens for ``method`` in ``stage``: its first seed's that exists."""
        for seed in seeds:
            info = self.runs.get(f"{self.name}-{stage}-{method}-s{seed}")
            if info is not None:
                return info.path
        return None

    def _done_round(self, r: int, rnd: dict, total: int) -> StageView:
        seeds = [s for s in _list(rnd.get("seeds")) if whole(s) is not None]
        candidates = [c for c in _list(rnd.get("candidates")) if isinstance(c, str)]
        kept = [c for c in _list(rnd.get("kept")) if isinstance(c, str)]
        scores = _dict(rnd.get("scores"))
        failed = [_text(f) for f in _list(rnd.get("failed"))]
        rows = [self._scored_row(ref, _dict(scores.get(ref)), len(seeds), "reference", "reference",
                                 self._run_of(f"r{r}", ref, seeds)) for ref in self._references()]

        def order(c: str) -> tuple:   # kept first, then by mean, highest first
            mean = finite(_dict(scores.get(c)).get("mean"))
            return c not in kept, -(mean if mean is not None else -1e9), c

        ordered = sorted(candidates, key=order)
        for c in ordered:
            if c in kept:
                state, kind = "kept", "kept"
            else:
                broke = any(f.startswith(f"{c} (") for f in failed)
                state, kind = f"dropped in round {r + 1}" + (" (a run failed)" if broke else ""), "dropped"
            rows.append(self._scored_row(c, _dict(scores.get(c)), len(seeds), state, kind,
                                         self._run_of(f"r{r}", c, seeds)))
        spec = {"epochs": rnd.get("epochs"), "keep": len(kept)}
        detail = self._round_detail(spec, seeds, len(candidates))
        return StageView(f"r{r}", f"round {r + 1}/{max(total, r + 1)}", detail, "done", short_metric(self.metric),
                         tuple(rows))

    @staticmethod
    def _scored_row(label: str, entry: dict, total: int, state: str, kind: str, run: Path | None) -> Row:
        done = len(_dict(entry.get("scores")))
        return Row(shown(label), done, total, finite(entry.get("mean")), finite(entry.get("std")),
                   finite(entry.get("diff")) if label != "joint" else None, finite(entry.get("p")), state, kind, run)

    def _open_round(self, r: int, spec: dict, total: int, done: list[dict]) -> StageView:
        """A round not in the record yet: the one under way (its runs' states) or one still to come."""
        title = f"round {r + 1}/{total}"
        current = r == len(done) and self.recommendation() is None and "diagnosis" in self._record
        if not current:
            status = "not run" if self.recommendation() is not None else "waiting"
            return StageView(f"r{r}", title, self._round_detail(spec, None, whole(spec.get("candidates"))), status,
                             short_metric(self.metric), ())
        candidates = _list(done[-1].get("kept")) if done else self._initial_candidates()
        seed0, n = self._seed0(), whole(spec.get("seeds"))
        seeds = [seed0 + i for i in range(n)] if seed0 is not None and n is not None else []
        rows = []
        for method in [*self._references(), *[c for c in candidates if isinstance(c, str)]]:
            names = {s: f"{self.name}-r{r}-{method}-s{s}" for s in seeds}
            rows.append(live_row(shown(method), names, self.runs, self.metric))
        return StageView(f"r{r}", title, self._round_detail(spec, seeds, len(candidates)), self._open_status(),
                         short_metric(self.metric), tuple(rows))

    def _apply_runs(self) -> dict[str, dict[int, str]]:
        return self._runs_under("apply")

    def _apply_stage(self) -> StageView | None:
        a = _dict(self._record.get("apply"))
        runs = self._apply_runs()
        if not a and not runs:
            return None
        figure = short_metric(_text(a.get("metric"), "test/" + self.metric.split("/", 1)[-1]))
        if not a:
            rows = tuple(live_row(shown(label), names, self.runs, self.metric) for label, names in runs.items())
            return StageView("apply", "apply", "the recommendation and joint, full epochs and seeds",
                             self._open_status(), short_metric(self.metric), rows)
        seeds = [s for s in _list(a.get("seeds")) if whole(s) is not None]
        rows = []
        chosen = _dict(self._record.get("recommendation")).get("method")
        for method, values in _dict(a.get("methods")).items():
            v = _dict(values)
            tests = [t for t in _list(v.get("test")) if finite(t) is not None]
            diff = finite(a.get("diff")) if method == chosen and method != "joint" else None
            rows.append(Row(shown(method), len(tests), len(seeds), finite(v.get("mean")), finite(v.get("std")), diff,
                            finite(a.get("p")) if diff is not None else None, "finished", "finished",
                            self._run_of("apply", method, seeds)))
        detail = f"{_plural(whole(a.get('epochs')), 'epoch')} · {_seeds_text(seeds) if seeds else 'no seeds'}"
        return StageView("apply", "apply", detail, "done", figure, tuple(rows))


def pm(mean: float | None, std: float | None) -> str:
    """``0.432 ± 0.129`` (3 decimals; the std left out when there is none); ``-`` without a mean."""
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"
