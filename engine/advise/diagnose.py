"""The diagnosis: what each modality reaches alone and inside ``joint``, and a one-sentence verdict.

Inputs are validation figures only (the selected checkpoint's, ``summary.json``'s ``best``): the
``joint`` run's ``val/acc/fused`` and ``val/acc/<m>`` (modality m's own head inside the joint model),
each ``unimodal`` run's ``val/acc/fused`` (modality m alone), and, where the joint run's monitors
logged them, ``shapley/<m>`` and ``mi/<m>``.

The rule (fixed in advance, not tuned on any dataset):

* a modality is **uninformative** when alone it is less than ``INFORMATIVE`` (0.05) above chance
  (1 / classes);
* an informative modality is **held back** when it reaches at least ``GAP`` (0.05) more alone than
  its own head inside joint (under-training inside the joint model);
* the fused model **beats the best single modality** when joint's fused accuracy is more than
  ``FUSED_MARGIN`` (0.01) above the best unimodal accuracy;
* the verdict is ``imbalanced`` when some modality is held back (the dominant modality, the one
  with the highest accuracy inside joint, is named, and the most held-back one with its two
  figures); else ``uninformative`` when some modality carries nothing (keep joint, or the best
  modality alone when the fused model does not beat it); else ``balanced`` (keep joint, or the best
  modality alone when the fused model does not beat it).

A validation split of n rows has a standard error of about sqrt(p(1-p)/n) per accuracy (0.05 at
n = 100), so on small validation splits the verdict is indicative; the choice that follows uses
several seeds and repeated splits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

INFORMATIVE = 0.05
GAP = 0.05
FUSED_MARGIN = 0.01


@dataclass(frozen=True)
class ModalityFigures:
    """One modality's figures: accuracy alone and inside joint, the gap, Shapley and MI where logged."""

    name: str
    alone: float
    inside_joint: float
    gap: float
    shapley: float | None = None
    shapley_share: float | None = None
    mi: float | None = None
    informative: bool = True
    held_back: bool = False


@dataclass(frozen=True)
class Diagnosis:
    """The verdict (``imbalanced`` | ``uninformative`` | ``balanced``), its sentence and the figures."""

    verdict: str
    sentence: str
    chance: float
    fused: float
    best_alone: str
    fused_beats_best: bool
    modalities: list[ModalityFigures] = field(default_factory=list)
    dominant: str | None = None
    suggestion: str = "keep joint"
    rule: dict = field(default_factory=lambda: {"informative": INFORMATIVE, "gap": GAP,
                                                "fused_margin": FUSED_MARGIN})

    def to_dict(self) -> dict:
        return asdict(self)


def diagnose(fused: float, inside: dict[str, float], alone: dict[str, float], n_classes: int,
             shapley: dict[str, float] | None = None, mi: dict[str, float] | None = None,
             alone_every_row: dict[str, float] | None = None) -> Diagnosis:
    """The diagnosis from joint's fused and per-modality validation accuracy (``inside``), each
    modality's unimodal validation accuracy (``alone``) and the monitors' figures (see the module).

    Where a modality's value is absent in some rows, ``inside`` and ``alone`` count its present rows
    (as its own scores do) and ``alone_every_row`` is the unimodal model's accuracy over every row, which
    the fused model's (``fused``, every row) is compared with; without it, ``alone`` is."""
    chance = 1.0 / n_classes
    shapley, mi = shapley or {}, mi or {}
    total = sum(v for v in shapley.values())
    figures = []
    for m in inside:
        informative = alone[m] - chance >= INFORMATIVE
        gap = alone[m] - inside[m]
        sh = shapley.get(m)
        figures.append(ModalityFigures(
            m, alone[m], inside[m], gap, sh, (sh / total) if sh is not None and total > 0 else None, mi.get(m),
            informative, informative and gap >= GAP))
    dominant = max(figures, key=lambda f: (f.inside_joint, f.alone)).name
    every_row = alone_every_row or {}
    best = max(figures, key=lambda f: every_row.get(f.name, f.alone))
    best_score = every_row.get(best.name, best.alone)
    beats = fused - best_score > FUSED_MARGIN
    held = sorted((f for f in figures if f.held_back), key=lambda f: -f.gap)
    useless = [f for f in figures if not f.informative]
    if held:
        worst = held[0]
        sentence = (f"imbalanced: {dominant} dominates; {worst.name} reaches {worst.alone:.2f} alone but "
                    f"{worst.inside_joint:.2f} inside joint")
        verdict, suggestion = "imbalanced", "try a balancing method"
    elif useless:
        names = ", ".join(f.name for f in useless)
        figs = "; ".join(f"{f.name} {f.alone:.2f} alone" for f in useless)
        suggestion = "keep joint" if beats else f"keep joint, or unimodal {best.name} alone"
        verdict = "uninformative"
        sentence = (f"uninformative: {names} add{'s' if len(useless) == 1 else ''} nothing ({figs}, chance "
                    f"{chance:.2f}); {suggestion}")
    else:
        verdict, suggestion = "balanced", ("keep joint" if beats else f"keep joint, or unimodal {best.name} alone")
        sentence = f"balanced: every modality reaches inside joint what it reaches alone (within {GAP:.2f})"
        if beats:
            sentence += "; keep joint"
    if not beats and verdict != "uninformative":
        sentence += (f"; the fused model ({fused:.2f}) does not beat {best.name} alone ({best_score:.2f})")
        if verdict == "balanced":
            sentence += f": {suggestion}"
    return Diagnosis(verdict, sentence, chance, fused, best.name, beats, figures, dominant, suggestion)
