"""Scores of a round over seeds, the ranked table and its rendering (table, md, json).

Each candidate is compared with ``joint`` of the same round, paired by seed
(:func:`engine.analysis.stats.paired_t_test`), and with the choice's default when that is not joint
(``unimodal`` on the best modality, when the diagnosis found the fused model no better than it); its
cost is its median measured seconds per epoch over joint's in that round. A candidate *beats* a
reference when the mean difference is positive and p < ``ALPHA``. When every seed gives the same
difference the t statistic is infinite and its p of 0 says nothing about chance (three seeds that
each gain one validation row): such a test is reported without a p and decides nothing.
"""

from __future__ import annotations

import json
import math
import statistics

from ..analysis.stats import mean_std, paired_t_test, significance_mark

ALPHA = 0.05


def versus(by_seed: dict[int, float], other: dict[int, float]) -> tuple[float | None, float | None]:
    """(mean difference, p) of ``by_seed`` - ``other`` over their common seeds; p None when undecidable."""
    common = sorted(set(by_seed) & set(other))
    if not common:
        return None, None
    a, b = [by_seed[s] for s in common], [other[s] for s in common]
    test = paired_t_test(a, b)
    _, spread = mean_std([x - y for x, y in zip(a, b)])
    same = spread is None or spread <= 1e-9 * max(1.0, abs(test.mean_diff))   # equal up to rounding
    decisive = test.p is not None and test.t is not None and math.isfinite(test.t) and not same
    return test.mean_diff, test.p if decisive else None


def score_round(scores: dict[str, dict[int, float]], epoch_s: dict[str, list[float]],
                default: str = "joint") -> dict[str, dict]:
    """Per candidate: its scores by seed, mean, std, the paired difference to joint with p (and to
    ``default`` when that is not joint), and cost."""
    joint = scores.get("joint", {})
    joint_cost = statistics.median(epoch_s["joint"]) if epoch_s.get("joint") else None
    out = {}
    for name, by_seed in scores.items():
        values = [by_seed[s] for s in sorted(by_seed)]
        mean, std = mean_std(values)
        diff, p = versus(by_seed, joint) if name != "joint" else (0.0, None)
        cost = statistics.median(epoch_s[name]) / joint_cost if epoch_s.get(name) and joint_cost else None
        entry = {"scores": {str(s): by_seed[s] for s in sorted(by_seed)}, "mean": mean, "std": std,
                 "diff": diff, "p": p, "cost": cost}
        if default != "joint" and default in scores:
            entry["diff_default"], entry["p_default"] = versus(by_seed, scores[default]) if name != default \
                else (0.0, None)
        out[name] = entry
    return out


def beats(entry: dict, reference: str = "joint") -> bool:
    """Whether a scored candidate beats ``reference`` (joint or the default) significantly."""
    diff, p = _against(entry, reference)
    return diff is not None and diff > 0 and p is not None and p < ALPHA


def rank_key(entry: dict, lower: bool, label: str) -> tuple:
    """The order a round keeps candidates in: the best mean first (equal up to rounding: the cheaper
    first, since the validation figures cannot tell them apart; then by label)."""
    mean = round(entry["mean"], 9)
    cost = entry.get("cost")
    return (mean if lower else -mean, cost if cost is not None else math.inf, label)


def _against(entry: dict, reference: str) -> tuple[float | None, float | None]:
    return (entry.get("diff"), entry.get("p")) if reference == "joint" else \
        (entry.get("diff_default"), entry.get("p_default"))


def recommend(last: dict | None, default: str, metric: str, best_alone: str) -> tuple[str, str]:
    """(the recommended label, why) from the last round: its finalist when it beats ``default``
    significantly; else joint when the default is unimodal and joint beats it; else the default (with
    joint's difference to it, when the default is unimodal: a higher but not significant mean does not
    overturn the diagnosis)."""
    finalist = last["kept"][0] if last and last["kept"] else None
    entry = last["scores"].get(finalist) if finalist else None
    if entry is None:
        return default, f"keep {default}: no candidate finished the choice"
    n = len(entry["scores"])
    diff, p = _against(entry, default)
    if beats(entry, default):
        return finalist, (f"{finalist}: it beats {default} on {metric} by {diff:+.4f} "
                          f"(paired t-test p={p:.3f}, {n} seeds)")
    joint = last["scores"].get("joint", {})
    if default != "joint" and beats(joint, default):
        jd, jp = _against(joint, default)
        return "joint", (f"keep joint: it beats {default} on {metric} by {jd:+.4f} (p={jp:.3f}), and no "
                         f"method beats {default} (the finalist {finalist} differs by {diff:+.4f})")
    ptext = f"p={p:.3f}" if p is not None else "no p: the same difference on every seed"
    if default == "joint":
        why = "no method beats it here"
    else:
        jd, jp = _against(joint, default)
        jtext = f"{jd:+.4f}, " + (f"p={jp:.3f}" if jp is not None else "no p") if jd is not None else "not scored"
        why = (f"in the diagnosis the fused model did not beat {best_alone} alone, and here neither joint "
               f"({jtext}) nor a method beats it significantly")
    return default, f"keep {default}: {why} (the finalist {finalist} differs by {diff:+.4f}, {ptext})"


def ranking(rounds: list[dict]) -> list[dict]:
    """Every candidate at the last round it reached, best first (later rounds, then higher mean);
    joint from the last round."""
    last: dict[str, dict] = {}
    for r in rounds:
        for name, entry in r["scores"].items():
            last[name] = {"candidate": name, "round": r["round"], **entry}
    rows = list(last.values())
    rows.sort(key=lambda e: (-e["round"], -(e["mean"] if e["mean"] is not None else -1e9), e["candidate"]))
    return rows


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def _diff(entry: dict, reference: str = "joint") -> str:
    diff, p = _against(entry, reference)
    if entry["candidate"] == reference or diff is None:
        return "-"
    if p is None:
        return f"{diff:+.4f} (no p)"
    ptext = f" (p={p:.3f}{significance_mark(p)})" if p is not None else ""
    return f"{diff:+.4f}{ptext}"


def table_rows(report: dict) -> list[list[str]]:
    choice = report["choice"]
    default = choice.get("default") or "joint"
    rows = [["candidate", "round", "seeds", choice["metric"], "vs joint",
             *([f"vs {default}"] if default != "joint" else []), "cost/epoch"]]
    for e in choice["ranking"]:
        cost = f"{e['cost']:.2f}x" if e.get("cost") is not None else "-"
        versus = [] if default == "joint" else [_diff(e, default)]
        rows.append([e["candidate"], str(e["round"] + 1), str(len(e["scores"])), _pm(e["mean"], e["std"]),
                     _diff(e), *versus, cost])
    return rows


def _diagnosis_lines(d: dict) -> list[list[str]]:
    rows = [["modality", "alone", "inside joint", "gap", "shapley share", "mi"]]
    for m in d["modalities"]:
        share = f"{m['shapley_share']:.2f}" if m.get("shapley_share") is not None else "-"
        mi = f"{m['mi']:.3f}" if m.get("mi") is not None else "-"
        rows.append([m["name"], f"{m['alone']:.4f}", f"{m['inside_joint']:.4f}", f"{m['gap']:+.4f}", share, mi])
    return rows


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _md(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def render(report: dict, fmt: str) -> str:
    """The report as ``table`` (plain text), ``md`` or ``json``."""
    if fmt == "json":
        return json.dumps(report, indent=2)
    grid = _md if fmt == "md" else _aligned
    d, c, rec = report["diagnosis"], report["choice"], report["recommendation"]
    head = (lambda t: f"## {t}") if fmt == "md" else (lambda t: t)
    lines = [head(f"advice {report['advice']}: {report['preset']}"), "",
             f"diagnosis ({d['epochs']} epochs, seed {d['seed']}): {d['sentence']}",
             f"fused (joint) {d['fused']:.4f}; chance {d['chance']:.4f}; fused beats the best single modality "
             f"({d['best_alone']}): {'yes' if d['fused_beats_best'] else 'no'}", "", *grid(_diagnosis_lines(d)), ""]
    if c["rounds"]:
        how = "repeated train/val splits (data.resplit_seed = seed)" if c["resplit"] else "the preset's split"
        least = c.get("min_round_epochs")
        floor = f", rounds of at least {least} epoch(s)" if least else ""
        lines += [f"choice: successive halving (eta {c['eta']}) on {c['metric']} over seeds, on {how}{floor}; "
                  f"{len(c['rounds'])} of {len(c['schedule'])} rounds done", "", *grid(table_rows(report)), ""]
    for note in c.get("skipped", []):
        lines.append(f"skipped: {note}")
    lines.append(f"recommendation: {rec['text']}")
    if rec.get("set") and rec["method"] != "joint":
        lines.append(f"to use it: mmbal run {report['preset']} --set '{rec['set']}'")
    if report.get("apply"):
        a = report["apply"]
        parts = [f"{m} {_pm(v['mean'], v['std'])}" for m, v in a["methods"].items()]
        p = f" (difference {a['diff']:+.4f}, p={a['p']:.3f})" if a.get("diff") is not None and a.get("p") is not None \
            else ""
        lines.append(f"apply ({a['epochs']} epochs, seeds {', '.join(map(str, a['seeds']))}): test {a['metric']}: "
                     + "; ".join(parts) + p)
    return "\n".join(lines)
