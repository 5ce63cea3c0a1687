"""An advice from start to end: validate, diagnose, choose by successive halving, report, apply.

Everything the user can get wrong (a method, the budget, the preset) is checked before anything is
written. The advice then runs its stages (:mod:`engine.advise.stages`) under a lock on its directory
and writes ``advice.json`` after each; re-running the same command reuses finished runs, resumes
interrupted ones and continues from the first stage not done. The time budget covers the diagnosis
and the choice; ``--apply`` comes on top (its runs are the full epochs over every seed).
"""

from __future__ import annotations

import time
from typing import Callable

from ..errors import MmbalError, PresetError, RunLocked, UsageError
from ..store import RunLock, RunPaths, read_json
from .config import SMALL_TRAIN_ROWS, AdviseConfig, changed_options
from .candidates import Candidate, expand, unimodal
from .diagnose import diagnose
from .halving import as_dicts, estimate_s, fit_runs, fit_time, from_dicts, min_round_epochs, schedule
from .reading import ValidationReader, test_key, test_value
from .record import SCHEMA, advice_dir, now, read_advice, write_advice
from .report import rank_key, ranking, recommend, score_round
from .stages import AdviceStopped, plan_stage, stage_members, stage_results


class AdviceFailed(MmbalError):
    """A run the advice needs did not finish (exit 1); re-running resumes it."""

    exit_code = 1


class Advisor:
    """One advice. ``execute(plan)`` runs a stage's plan; ``say(text)`` is told what happens."""

    def __init__(self, cfg: AdviseConfig, execute: Callable, say: Callable[[str], None] = lambda text: None):
        self.cfg, self.execute, self.say = cfg, execute, say
        self.home = advice_dir(cfg.runs_dir, cfg.name)
        self.reader = ValidationReader()
        self._check()

    # ---- validation: nothing written ----
    def _check(self) -> None:
        from ..config import load_preset
        cfg = self.cfg
        preset_cfg, _ = load_preset(cfg.preset, list(cfg.overrides))
        self.epochs = preset_cfg.train.epochs
        # a round must train beyond the preset's warm-up (train.warmup_epochs < train.epochs)
        self.warmup_floor = int(preset_cfg.train.warmup_epochs) + 1
        self.seed0 = preset_cfg.seed
        self.metric = preset_cfg.train.select_metric
        self.modalities = list(preset_cfg.modalities)
        pin = [*cfg.overrides,
               *([] if preset_cfg.data.split_seed is not None else [f"data.split_seed={preset_cfg.seed}"])]
        self.general = pin
        self.probe_epochs = min(cfg.probe_epochs or self.epochs, self.epochs)
        self.diag_members = stage_members(cfg.preset, f"{cfg.name}-diag",
                                          [Candidate("joint"), *map(unimodal, self.modalities)], [self.seed0],
                                          [*pin, f"train.epochs={self.probe_epochs}", "monitor.max_overhead=0"],
                                          cfg.device)   # the monitors' values at joint's selected epoch
        self.candidates, self.skipped, problems = [], [], []
        for c in expand(list(cfg.candidates), cfg.tune):
            try:
                stage_members(cfg.preset, f"{cfg.name}-check", [c], [self.seed0], pin, cfg.device)
                self.candidates.append(c)
            except PresetError as exc:
                if cfg.explicit_methods and not c.options:
                    problems.append(f"{c.label}: " + "; ".join(exc.problems))
                else:
                    self.skipped.append(f"{c.label}: " + "; ".join(exc.problems) + " (the preset does not suit it)")
        if problems:
            raise PresetError(f"{cfg.preset} (--methods)", problems)
        if not self.candidates:
            raise UsageError(f"--methods: no candidate method runs with {cfg.preset}: " + " | ".join(self.skipped))
        self.by_label = {c.label: c for c in self.candidates}
        if cfg.budget_runs is not None:
            rounds = fit_runs(len(self.candidates), cfg.eta, self.epochs, cfg.seeds, cfg.budget_runs)
            if rounds is None:
                need = sum(r.runs() for r in schedule(len(self.candidates), cfg.eta, self.epochs, 2))
                raise UsageError(f"--budget-runs: {cfg.budget_runs} runs are too few to choose among "
                                 f"{len(self.candidates)} candidates with eta {cfg.eta}: successive halving needs "
                                 f"at least {need} (2 seeds a round, joint beside each); raise --budget-runs, "
                                 f"name fewer --methods or raise --eta")
        previous = read_advice(self.home)
        if previous is not None and previous.get("options") != cfg.identity():
            started = "schedule" in previous.get("choice", {})
            changed = changed_options(previous.get("options") or {}, cfg.identity(), started)
            if changed:
                raise UsageError(f"advice '{cfg.name}' in {cfg.runs_dir} was started with other options ("
                                 + "; ".join(changed) + "); re-run it with those to continue"
                                 + ("" if started else " (before its choice starts, only the preset, --set and "
                                                       "--probe-epochs must stay the same)")
                                 + ", or give this one another --name")
            # the choice has no schedule yet: its options may change (an unscheduled choice of the old ones is dropped)
            previous = {**{k: v for k, v in previous.items() if k != "choice"}, "options": cfg.identity()}
        self.record = previous or {"schema": SCHEMA, "name": cfg.name, "created": now(), "options": cfg.identity(),
                                   "preset": str(cfg.preset), "metric": self.metric}

    # ---- running ----
    def run(self) -> dict:
        lock = RunLock(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except RunLocked:
            raise RunLocked(f"advice '{self.cfg.name}' is already running in another process ({self.home})") from None
        try:
            self.record.pop("stopped", None)
            self.record["skipped"] = self.skipped
            write_advice(self.home, self.record)
            self._diagnose()
            self._choose()
            if self.cfg.apply:
                self._apply()
            self.record["read_while_choosing"] = sorted(set(self.record.get("read_while_choosing", []))
                                                        | self.reader.read)
            write_advice(self.home, self.record)
            return self.record
        except (AdviceStopped, KeyboardInterrupt) as exc:
            signal = exc.signal if isinstance(exc, AdviceStopped) else "SIGINT"
            self.record["stopped"] = {"at": now(), "signal": signal,
                                      "continue": "run the same `mmbal advise` command again"}
            write_advice(self.home, self.record)
            raise AdviceStopped(signal) from None
        finally:
            lock.release()

    def _stage(self, stage: str, members) -> list:
        plan = plan_stage(self.cfg.preset, self.cfg.runs_dir, stage, members, self.cfg.device)
        todo = len(plan.todo())
        if todo:
            self.say(f"{stage}: {todo} of {len(plan.tasks)} runs to start or resume")
        self.execute(plan)
        results = stage_results(plan)
        return results

    def _need(self, results, what: str) -> None:
        bad = [r for r in results if r.state != "finished"]
        if bad:
            listed = ", ".join(f"{r.member.run_name} ({r.state})" for r in bad)
            raise AdviceFailed(f"{what}: {listed} did not finish; their logs are in "
                               f"{self.cfg.runs_dir / 'sweeps'}; run the same `mmbal advise` command again to "
                               f"resume them")

    def _diagnose(self) -> None:
        if "diagnosis" in self.record:
            return
        warm = getattr(self.execute, "warm", None)
        if warm is not None:   # the fork server's one-off start is no member's start-up (the budget's estimate)
            warm()
        started = time.perf_counter()
        results = self._stage(f"{self.cfg.name}-diag", self.diag_members)
        wall = time.perf_counter() - started
        self._need(results, "diagnosis")
        joint = next(r for r in results if r.label == "joint")
        # a modality alone: its own score (over its present rows, as inside joint), and the unimodal model's
        # over every row (against the fused model's); the same where no value is absent
        every_row = {r.modality: self.reader.value(r.summary, "val/acc/fused") for r in results if r.modality}
        alone = {r.modality: _own_or(self.reader.value(r.summary, f"val/acc/{r.modality}"), every_row[r.modality])
                 for r in results if r.modality}
        s = joint.summary
        inside = {m: self.reader.value(s, f"val/acc/{m}") for m in self.modalities}
        shapley = {m: v for m in self.modalities if (v := self.reader.value(s, f"shapley/{m}")) is not None}
        mi = {m: v for m in self.modalities if (v := self.reader.value(s, f"mi/{m}")) is not None}
        run_info = read_json(RunPaths(joint.run_dir).run_json)
        n_classes = len(run_info.get("classes") or []) or 2
        counts = (run_info.get("data_fingerprint") or {}).get("split_counts") or {}
        result = diagnose(self.reader.value(s, "val/acc/fused"), inside, alone, n_classes, shapley, mi, every_row)
        epoch_s = self.reader.epoch_s(s) or 0.0
        least = min_round_epochs(self.reader.curve(joint.run_dir, "val/acc/fused"), result.chance, self.epochs)
        spent = sum(float(r.summary.get("duration_s") or 0.0) for r in results)
        startup = max(0.0, wall * min(self.cfg.jobs, len(results)) - spent) / len(results)
        self.record["diagnosis"] = {**result.to_dict(), "epochs": self.probe_epochs, "seed": self.seed0,
                                    "runs": {r.label: r.run_dir.name for r in results},
                                    "train_rows": counts.get("train"), "epoch_s": epoch_s, "startup_s": startup,
                                    "seconds": wall, "min_round_epochs": least}
        write_advice(self.home, self.record)
        self.say(f"diagnosis: {result.sentence}")

    def _references(self) -> list[Candidate]:
        """joint, and ``unimodal`` on the best modality when the diagnosis found the fused model no better."""
        d = self.record["diagnosis"]
        return [Candidate("joint")] + ([] if d["fused_beats_best"] else [unimodal(d["best_alone"])])

    def _schedule(self, references: int) -> list:
        if "schedule" in self.record["choice"]:
            return from_dicts(self.record["choice"]["schedule"])
        cfg, d = self.cfg, self.record["diagnosis"]
        n, least = len(self.candidates), max(d.get("min_round_epochs", 1), self.warmup_floor)
        if cfg.budget_runs is not None:
            rounds = fit_runs(n, cfg.eta, self.epochs, cfg.seeds, cfg.budget_runs, least, references)
            if rounds is None:
                need = sum(r.runs() for r in schedule(n, cfg.eta, self.epochs, 2, least, references))
                raise UsageError(f"--budget-runs: {cfg.budget_runs} runs are too few: with "
                                 f"{' and '.join(c.label for c in self._references())} as references the choice "
                                 f"needs at least {need}; raise --budget-runs (the diagnosis is kept in {self.home})")
        elif cfg.budget_s is not None:
            left = cfg.budget_s - d["seconds"]
            rounds = fit_time(n, cfg.eta, self.epochs, cfg.seeds, left, d["epoch_s"], d["startup_s"], least,
                              references, cfg.jobs)
            if rounds is None:
                need = estimate_s(schedule(n, cfg.eta, least, 2, least, references), d["epoch_s"], d["startup_s"],
                                  jobs=cfg.jobs)
                raise UsageError(f"--budget: {max(left, 0):.0f}s are left after the diagnosis ({d['seconds']:.0f}s), "
                                 f"but choosing among {n} candidates needs about {need:.0f}s even at {least} "
                                 f"epoch(s) and 2 seeds a round (the fewest a round may train: what joint needed "
                                 f"to get halfway from chance to its best validation accuracy, and more than the "
                                 f"preset's warm-up); raise --budget, name fewer "
                                 f"--methods, add --no-tune or raise --eta (the diagnosis is kept in {self.home})")
        else:
            rounds = schedule(n, cfg.eta, self.epochs, cfg.seeds, least, references)
        self.record["choice"]["schedule"] = as_dicts(rounds)
        self.record["choice"]["estimate_s"] = estimate_s(rounds, d["epoch_s"], d["startup_s"], jobs=cfg.jobs)
        return rounds

    def _choose(self) -> None:
        d = self.record["diagnosis"]
        small = d.get("train_rows") is not None and d["train_rows"] < SMALL_TRAIN_ROWS
        references = self._references()
        choice = self.record.setdefault("choice", {
            "metric": self.metric, "eta": self.cfg.eta, "resplit": small, "rounds": [],
            "candidates": [c.label for c in self.candidates], "references": [c.label for c in references],
            "default": references[-1].label,
            "min_round_epochs": min(max(d.get("min_round_epochs", 1), self.warmup_floor), self.epochs)})
        rounds = self._schedule(len(references))
        write_advice(self.home, self.record)
        survivors = [c.label for c in self.candidates]
        for r, spec in enumerate(rounds):
            if r < len(choice["rounds"]):
                survivors = choice["rounds"][r]["kept"]
                continue
            seeds = [self.seed0 + i for i in range(spec.seeds)]
            names = " and ".join(c.label for c in references)
            self.say(f"round {r + 1}/{len(rounds)}: {len(survivors)} candidate(s) + {names} x {spec.seeds} seeds, "
                     f"{spec.epochs} epoch(s)")
            general = [*self.general, f"train.epochs={spec.epochs}", "monitor.enabled=false"]
            stage = f"{self.cfg.name}-r{r}"
            members = stage_members(self.cfg.preset, stage, references, seeds, general, self.cfg.device,
                                    resplit=choice["resplit"])
            refused = []
            for c in survivors:
                try:
                    members += stage_members(self.cfg.preset, stage, [self.by_label[c]], seeds, general,
                                             self.cfg.device, resplit=choice["resplit"])
                except PresetError as exc:   # e.g. an option that needs more epochs than this round trains
                    refused.append(f"{c}: refused at {spec.epochs} epoch(s): " + "; ".join(exc.problems))
            members.sort(key=lambda m: m.seed)   # seed-major, as a sweep: a partial round pairs seeds
            results = self._stage(stage, members)
            refs = {c.label for c in references}
            self._need([x for x in results if x.label in refs], f"round {r + 1}'s reference runs")
            scored, failed = self._score(results, choice["default"])
            failed = [*refused, *failed]
            lower = self.metric.split("/")[1] == "loss"
            alive = [c for c in survivors if c in scored and len(scored[c]["scores"]) == spec.seeds]
            alive.sort(key=lambda c: rank_key(scored[c], lower, c))
            kept = alive[:spec.keep]
            choice["rounds"].append({"round": r, "epochs": spec.epochs, "seeds": seeds, "stage": stage,
                                     "candidates": list(survivors), "scores": scored, "kept": kept, "failed": failed})
            write_advice(self.home, self.record)
            survivors = kept
            if not survivors:
                break
        self._recommend()

    def _score(self, results, default: str) -> tuple[dict, list[str]]:
        """A round's scores (validation only) and costs per candidate, and the runs that did not finish."""
        scores: dict[str, dict[int, float]] = {}
        epoch_s: dict[str, list[float]] = {}
        failed = []
        for x in results:
            if x.state != "finished":
                failed.append(f"{x.label} (seed {x.member.seed}): {x.state}")
                continue
            value = self.reader.value(x.summary, self.metric)
            if value is not None:
                scores.setdefault(x.label, {})[x.member.seed] = value
            cost = self.reader.epoch_s(x.summary)
            if cost is not None:
                epoch_s.setdefault(x.label, []).append(cost)
        return score_round(scores, epoch_s, default), failed

    def _recommend(self) -> None:
        choice = self.record["choice"]
        last = choice["rounds"][-1] if choice["rounds"] else None
        method, text = recommend(last, choice.get("default", "joint"), self.metric,
                                 self.record["diagnosis"]["best_alone"])
        choice["ranking"] = ranking(choice["rounds"])
        self.record["recommendation"] = {"method": method, "text": text, "set": self._as_set(method)}
        write_advice(self.home, self.record)
        self.say(f"recommendation: {text}")

    def _candidate(self, label: str) -> Candidate:
        refs = {c.label: c for c in self._references()}
        return refs.get(label) or self.by_label.get(label) or Candidate(label)

    def _as_set(self, label: str) -> str:
        """The ``--set`` item that makes the preset run the recommendation."""
        from ..config_text import toml_value
        c = self._candidate(label)
        return "method=" + toml_value({"name": c.method, **dict(c.options)})

    def _apply(self) -> None:
        method = self.record["recommendation"]["method"]
        labels = list(dict.fromkeys([method, "joint", self.record["choice"].get("default", "joint")]))
        seeds = [self.seed0 + i for i in range(self.cfg.seeds)]
        stage = f"{self.cfg.name}-apply"
        general = [*self.general, f"train.epochs={self.epochs}", "monitor.enabled=false"]
        members = stage_members(self.cfg.preset, stage, [self._candidate(x) for x in labels], seeds, general,
                                self.cfg.device)
        results = self._stage(stage, members)
        self._need(results, "--apply")
        key = test_key(self.metric)
        values: dict[str, dict[int, float]] = {}
        for x in results:
            values.setdefault(x.label, {})[x.member.seed] = test_value(x.summary, key)
        from ..analysis.stats import mean_std, paired_t_test
        out = {"metric": key, "epochs": self.epochs, "seeds": seeds, "stage": stage, "methods": {}}
        for m in labels:
            mean, std = mean_std([values[m][s] for s in seeds])
            out["methods"][m] = {"test": [values[m][s] for s in seeds], "mean": mean, "std": std}
        if method != "joint":
            t = paired_t_test([values[method][s] for s in seeds], [values["joint"][s] for s in seeds])
            out["diff"], out["p"] = t.mean_diff, t.p
        self.record["apply"] = out
        write_advice(self.home, self.record)


def _own_or(own: float | None, fallback: float) -> float:
    """A unimodal run's own-modality score when it has one (a finite number), else ``fallback``."""
    return own if own is not None and own == own else fallback


def report(record: dict) -> dict:
    """The report (``--format json``) from an advice record: the documented keys."""
    choice = record.get("choice") or {}
    return {"advice": record["name"], "preset": record["preset"], "options": record["options"],
            "diagnosis": record.get("diagnosis"),
            "choice": {"metric": record.get("metric"), "eta": choice.get("eta"), "resplit": choice.get("resplit"),
                       "schedule": choice.get("schedule", []), "estimate_s": choice.get("estimate_s"),
                       "rounds": choice.get("rounds", []), "ranking": choice.get("ranking", []),
                       "skipped": record.get("skipped", []), "candidates": choice.get("candidates", []),
                       "references": choice.get("references", ["joint"]), "default": choice.get("default", "joint"),
                       "min_round_epochs": choice.get("min_round_epochs")},
            "recommendation": record.get("recommendation"), "apply": record.get("apply"),
            "read_while_choosing": record.get("read_while_choosing", []), "stopped": record.get("stopped")}
