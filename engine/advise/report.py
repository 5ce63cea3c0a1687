"""Scores of a round over seeds, the ranked table and its rendering (table, md, json).

Each candidate is compared with ``joint`` of the same round, paired by seed
(:func:`engine.analysis.stats.paired_t_test`); its cost is its median measured seconds per epoch over
joint's in that round. The recommendation is the last round's candidate when it beats joint
significantly (p < ``ALPHA`` and a positive mean difference), else "keep joint".
"""

from __future__ import annotations

import json
import statistics

from ..analysis.stats import mean_std, paired_t_test, significance_mark

ALPHA = 0.05


def score_round(scores: dict[str, dict[int, float]], epoch_s: dict[str, list[float]]) -> dict[str, dict]:
    """Per candidate: its scores by seed, mean, std, the paired difference to joint with p, and cost."""
    joint = scores.get("joint", {})
    joint_cost = statistics.median(epoch_s["joint"]) if epoch_s.get("joint") else None
    out = {}
    for name, by_seed in scores.items():
        values = [by_seed[s] for s in sorted(by_seed)]
        mean, std = mean_std(values)
        common = sorted(set(by_seed) & set(joint))
        test = paired_t_test([by_seed[s] for s in common], [joint[s] for s in common]) if name != "joint" else None
        cost = statistics.median(epoch_s[name]) / joint_cost if epoch_s.get(name) and joint_cost else None
        out[name] = {"scores": {str(s): by_seed[s] for s in sorted(by_seed)}, "mean": mean, "std": std,
                     "diff": test.mean_diff if test else (0.0 if name == "joint" else None),
                     "p": test.p if test else None, "cost": cost}
    return out


def beats_joint(entry: dict) -> bool:
    return entry.get("diff") is not None and entry["diff"] > 0 and entry.get("p") is not None and entry["p"] < ALPHA


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


def _diff(entry: dict) -> str:
    if entry["candidate"] == "joint" or entry.get("diff") is None:
        return "-"
    p = entry.get("p")
    ptext = f" (p={p:.3f}{significance_mark(p)})" if p is not None else ""
    return f"{entry['diff']:+.4f}{ptext}"


def table_rows(report: dict) -> list[list[str]]:
    rows = [["candidate", "round", "seeds", report["choice"]["metric"], "vs joint", "cost/epoch"]]
    for e in report["choice"]["ranking"]:
        cost = f"{e['cost']:.2f}x" if e.get("cost") is not None else "-"
        rows.append([e["candidate"], str(e["round"] + 1), str(len(e["scores"])), _pm(e["mean"], e["std"]),
                     _diff(e), cost])
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
        lines += [f"choice: successive halving (eta {c['eta']}) on {c['metric']} over seeds, on {how}; "
                  f"{len(c['rounds'])} of {len(c['schedule'])} rounds done", "", *grid(table_rows(report)), ""]
    for note in c.get("skipped", []):
        lines.append(f"skipped: {note}")
    lines.append(f"recommendation: {rec['text']}")
    if report.get("apply"):
        a = report["apply"]
        parts = [f"{m} {_pm(v['mean'], v['std'])}" for m, v in a["methods"].items()]
        p = f" (difference {a['diff']:+.4f}, p={a['p']:.3f})" if a.get("diff") is not None and a.get("p") is not None \
            else ""
        lines.append(f"apply ({a['epochs']} epochs, seeds {', '.join(map(str, a['seeds']))}): test {a['metric']}: "
                     + "; ".join(parts) + p)
    return "\n".join(lines)
