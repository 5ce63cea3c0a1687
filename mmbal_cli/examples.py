"""Examples shown at the end of each command's ``--help``, as users of ``git`` and ``gh`` expect them.

They are kept here, apart from the commands, so that one test (``tests/test_help_examples.py``) parses
every example with its command's own parser: an option renamed or removed makes that test fail instead
of leaving a stale example in the help.
"""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "run": (
        "mmbal run presets/quickstart.toml",
        "mmbal run presets/cub10.toml --set method.name=ogm_ge --set train.epochs=5 --name cub-ogm",
        "mmbal run presets/quickstart.toml --tui",
        "mmbal run presets/quickstart.toml --runs-dir ./runs --name try1 | tee train.log",
    ),
    "resume": (
        "mmbal resume try1",
        "mmbal resume try1 --set train.epochs=20",
        "mmbal resume try1 --runs-dir ./runs",
    ),
    "ls": (
        "mmbal ls",
        "mmbal ls --sort score --filter method=ogm*",
        "mmbal ls --filter state=finished --filter tag=baseline --json",
    ),
    "show": ("mmbal show try1", "mmbal show try1 --json"),
    "tag": ("mmbal tag try1 baseline paper", "mmbal tag try1 --remove paper"),
    "note": ('mmbal note try1 "lr 3e-4 after the plateau"',),
    "rm": ("mmbal rm try1", "mmbal rm try1 try2 --yes"),
    "gc": ("mmbal gc --keep-best --dry-run", "mmbal gc --keep-best --filter tag=old --yes"),
    "methods": ("mmbal methods", "mmbal methods ogm_ge mcr", "mmbal methods --format md", "mmbal methods --json"),
    "data synth": (
        "mmbal data synth my.parquet --samples 5000 --classes 4",
        "mmbal data synth my.parquet --set unique=[1.0,0.2]",
        "mmbal data synth --help-options",
    ),
    "data inspect": ("mmbal data inspect ../shared/data/cub10.parquet", "mmbal data inspect my.parquet --json"),
    "data import": (
        "mmbal data import hf_snapshot/ my.parquet --label label",
        "mmbal data import 'data/*.parquet' my.parquet -m image -m caption_emb --image-size 64x64",
        "mmbal data import train.parquet my.parquet --split-column fold --val-fraction 0.15 --seed 1 --force",
        "mmbal data import omics.parquet my.parquet --label subtype -m rna='gene_*' -m protein='prot_*'",
    ),
    "bench": (
        "mmbal bench presets/cub10.toml --methods mcr,ogm_ge",
        "mmbal bench presets/quickstart.toml --repeats 7 --json",
    ),
    "compare": (
        "mmbal compare run-a run-b",
        "mmbal compare --sweep cub10 --baseline joint",
        "mmbal compare --sweep cub10 --baseline joint --format md",
        "mmbal compare --tag paper --columns all --plot curves.png",
    ),
    "sweep": (
        "mmbal sweep presets/cub10.toml --methods joint,ogm_ge,mcr --seeds 0-2 --jobs 2",
        "mmbal sweep presets/cub10.toml --grid train.lr=1e-3,3e-4 --seeds 0,1",
        "mmbal sweep presets/cub10.toml --methods joint,mcr --dry-run",
        "mmbal sweep presets/cub10.toml --methods joint,ogm_ge --seeds 0-3 --gpus 0,1",
        "mmbal sweep presets/cub10.toml --seeds 0-4 --launcher slurm --slurm partition=gpu --slurm gpus_per_node=1",
    ),
    "advise": (
        "mmbal advise presets/quickstart.toml --budget 10m",
        "mmbal advise presets/cub10.toml --methods ogm_ge,mla,mmcosine --seeds 3 --apply",
        "mmbal advise presets/uci_mfeat.toml --budget-runs 40 --format md",
        "mmbal advise presets/cub10.toml --set train.epochs=20 --set train.lr=3e-4 --budget 30m",
        "mmbal advise presets/quickstart.toml --format json --name qs-advice --runs-dir ./runs",
    ),
    "watch": ("mmbal watch", "mmbal watch try1", "mmbal watch try1 --once", "mmbal watch --advice qs-advice",
              "mmbal watch --advice qs-advice --once --runs-dir ./runs"),
    "predict": ("mmbal predict try1 new.parquet --out preds.parquet",
                "mmbal predict try1 ../shared/data/cub10.parquet --split test --out test_preds.parquet",
                "mmbal predict try1 new.parquet --out preds.csv",
                "mmbal predict try1 new_samples.csv --keep sample_id --out preds.csv"),
    "eval": ("mmbal eval try1 ../shared/data/cub10.parquet --split test", "mmbal eval try1 new.parquet --json",
             "mmbal eval try1 ../shared/data/cub10.parquet --split test --per-class"),
    "export": (
        "mmbal export try1 --to csv --out try1.csv",
        "mmbal export try1 --to tensorboard --out tb/try1",
        "mmbal export try1 --to wandb --project balance",
        "mmbal export try1 --to mlflow --out sqlite:///mlflow.db --follow",
    ),
}


def epilog(name: str) -> str | None:
    """The ``Examples`` block of command ``name`` (``"data synth"`` for a subcommand), as Rich text."""
    lines = EXAMPLES.get(name)
    if not lines:
        return None
    from rich.markup import escape

    return "[bold]Examples[/bold]\n" + "\n".join(f"  $ {escape(line)}" for line in lines)


def add_examples(app, prefix: str = "") -> None:
    """Give every command of ``app`` (and of its groups) its examples as the help's epilog."""
    for info in app.registered_commands:
        name = prefix + (info.name or info.callback.__name__.replace("_", "-"))
        info.epilog = info.epilog or epilog(name)
    for group in app.registered_groups:
        add_examples(group.typer_instance, prefix=f"{prefix}{group.name} ")
