"""What a method's registration says about it: every per-method fact in one place.

A method is registered once, on its class::

    @METHODS.register("ogm", config=OGMConfig, help="one line",
                      paper="Peng et al., Balanced Multimodal Learning via On-the-fly Gradient Modulation, CVPR 2022",
                      optimizer="sgd", cost="1F + 1B + gradient scaling",
                      live={"coef/<m>": "gradient coefficient k_m applied to encoder m", ...},
                      tune={"alpha": (0.1, 0.8)})
    class OGM(Method): ...

The registry sets the class's ``name`` from the registered name (written once). ``mmbal methods``,
the README's methods table, ``mmbal bench``'s cost column and the dashboard's legend of live
quantities all read these facts; nothing else lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from ..registry import Entry, Registry

Optimizer = Literal["sgd", "adam", "adamw"]
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class MethodInfo:
    """The facts of one method's registration (beyond its options dataclass and one-line help).

    ``paper``: the reference (authors, title, venue, year), or "" for mmbal's own baselines;
    ``optimizer``: the optimiser the paper trained with (the method's presets use it);
    ``cost``: per-step cost in baseline forwards (F) and backwards (B), plus per-epoch extras;
    ``live``: each live quantity's name pattern (``<m>`` stands for every modality; other ``<...>``
    placeholders are expanded by the method's :meth:`~engine.methods.base.Method.live_names`) and
    what it means for this method;
    ``tune``: the one or two options the method's results are most sensitive to, each with the values
    worth trying besides its default (the settings the paper reports or ablates); ``mmbal advise``
    tries each value as a candidate of its own (one option changed at a time).
    """

    paper: str
    optimizer: Optimizer
    cost: str
    live: dict[str, str] = field(default_factory=dict)
    tune: dict[str, tuple] = field(default_factory=dict)

    def variants(self) -> list[dict]:
        """The option sets ``mmbal advise`` tries: each declared value, one option changed at a time."""
        return [{option: value} for option, values in self.tune.items() for value in values]

    def meaning(self, name: str) -> str:
        """What a concrete live name (``score/audio``, ``method/J_audio``) means, from its pattern."""
        for pattern, text in self.live.items():
            if _matches(pattern, name):
                return text
        return ""


def _matches(pattern: str, name: str) -> bool:
    if "<" not in pattern:
        return pattern == name
    head = pattern[:pattern.index("<")]
    tail = pattern[pattern.index(">") + 1:]
    return name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail)


def expand(patterns: list[str], modalities: list[str]) -> list[str]:
    """Patterns with ``<m>`` repeated for every modality (others left out: the method expands them)."""
    names: list[str] = []
    for p in patterns:
        if "<m>" in p:
            names.extend(p.replace("<m>", m) for m in modalities)
        elif "<" not in p:
            names.append(p)
    return names


class MethodRegistry(Registry):
    """The registry of balancing methods: each entry carries a :class:`MethodInfo` in ``info``.

    Installed packages add methods through entry points of the group ``mmbal.methods`` (name = the
    method's name, value = its decorated class), loaded when a preset names one this registry does not
    hold and when every method is listed (:mod:`engine.plugins`)."""

    def __init__(self, kind: str, group: str | None = "mmbal.methods"):
        super().__init__(kind, group=group)

    def register(self, name: str, *, config: type | None = None, help: str = "", paper: str = "",
                 optimizer: Optimizer | None = None, cost: str | None = None,
                 live: dict[str, str] | None = None, tune: dict[str, tuple] | None = None) -> Callable:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"method '{name}': optimizer must be one of {', '.join(OPTIMIZERS)} "
                             f"(the optimiser its paper used), got {optimizer!r}")
        if not cost:
            raise ValueError(f"method '{name}': give its per-step cost (e.g. cost=\"1F + 1B\")")
        tune = {option: tuple(values) for option, values in (tune or {}).items()}
        _check_tune(name, config, tune)
        info = MethodInfo(paper=paper, optimizer=optimizer, cost=cost, live=dict(live or {}), tune=tune)
        deco = super().register(name, config=config, help=help)

        def wrap(cls):
            cls.name = name
            cls.info = info
            deco(cls)
            entry = self._entries[name]
            self._entries[name] = MethodEntry(entry.name, entry.builder, entry.config, entry.help, info)
            return cls

        return wrap


def _check_tune(name: str, config: type | None, tune: dict[str, tuple]) -> None:
    """A registration's ``tune``: at most two options of its config, each with at least one value
    besides the default."""
    from dataclasses import MISSING, fields
    if len(tune) > 2:
        raise ValueError(f"method '{name}': tune declares {len(tune)} options; declare the one or two its "
                         f"results are most sensitive to")
    known = {f.name: f for f in fields(config)} if config is not None else {}
    for option, values in tune.items():
        if option not in known:
            raise ValueError(f"method '{name}': tune names '{option}', which is not an option of "
                             f"{getattr(config, '__name__', 'its config')}")
        default = known[option].default
        if not values or (default is not MISSING and default in values):
            raise ValueError(f"method '{name}': tune.{option} must list values other than the default "
                             f"({default!r}), got {values!r}")


@dataclass(frozen=True)
class MethodEntry(Entry):
    info: MethodInfo = None  # type: ignore[assignment]
