"""Where a dataset's Parquet files are and which split each file holds, from its name.

A dataset path is a Parquet file, a directory of ``*.parquet`` files, or a glob pattern of them
(``data/*.parquet``, ``shards/**/*.parquet``). Files written by Hugging Face ``datasets`` and similar
tools carry their official split in their names: ``train-00000-of-00002.parquet``,
``validation.parquet``, ``test/0000.parquet``. :func:`split_of_file` reads it; the synonyms of
:data:`SPLIT_SYNONYMS` (``validation``, ``valid``, ``dev``, ...) map to mmbal's three split names.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from ..errors import DataError

SPLIT_SYNONYMS = {"train": "train", "training": "train",
                  "validation": "val", "valid": "val", "val": "val", "dev": "val",
                  "test": "test", "testing": "test"}

# a split name at the start of a file's stem, alone or followed by a separator (train-00000-of-00002, test_0)
_STEM_SPLIT = re.compile(r"^(?P<name>[a-z]+)(?:$|[-_.\d])", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_glob(path: str | Path) -> bool:
    """True when ``path`` holds glob characters (``*``, ``?``, ``[``) and names no existing file."""
    return bool(_GLOB_CHARS.search(str(path))) and not Path(path).exists()


CSV_SUFFIXES = (".csv", ".tsv", ".tab", ".csv.gz", ".tsv.gz", ".csv.bz2", ".tsv.bz2")


def is_csv(file: Path) -> bool:
    """A CSV (or tab-separated) table, possibly compressed, by its name."""
    return file.name.lower().endswith(CSV_SUFFIXES)


def glob_files(pattern: str | Path) -> list[Path]:
    """The Parquet files a glob pattern matches (``**`` crosses folders), in name order."""
    matches = sorted(Path(m) for m in glob.glob(str(pattern), recursive=True))
    files = [m for m in matches if m.is_file() and m.suffix == ".parquet"]
    if not files:
        raise DataError(f"{pattern}: the pattern matches no .parquet file"
                        + (f" (it matches {len(matches)} other path(s), e.g. {matches[0]})" if matches else "")
                        + "; a dataset is a Parquet file, a directory of them or a glob pattern of them")
    return files


def split_of_file(file: Path, root: Path | None = None) -> str | None:
    """The split ('train', 'val', 'test') that ``file``'s name names, or None.

    The file's stem is looked at first (``train-00000-of-00001``, ``validation``, ``test_3``), then
    its folders from the nearest up to (not including) ``root`` (``train/0000.parquet``).
    """
    found = _split_of_name(file.stem)
    if found is not None:
        return found
    folder = file.parent
    while root is not None and folder != root and root in folder.parents:
        found = SPLIT_SYNONYMS.get(folder.name.lower())
        if found is not None:
            return found
        folder = folder.parent
    return None


def _split_of_name(stem: str) -> str | None:
    match = _STEM_SPLIT.match(stem)
    return SPLIT_SYNONYMS.get(match.group("name").lower()) if match else None


def file_splits(files: list[Path], root: Path | None) -> list[str] | None:
    """Each file's split from its name when every file names one, None when none does.

    Some files naming a split and others not is an error naming the first file without one: its
    rows would otherwise be split at random among officially split ones.
    """
    splits = [split_of_file(f, root) for f in files]
    if all(s is None for s in splits):
        return None
    missing = [f for f, s in zip(files, splits) if s is None]
    if missing:
        named = next(f for f, s in zip(files, splits) if s is not None)
        raise DataError(f"{missing[0]}: its name names no split (train, validation or test), but {named.name} of the "
                        f"same dataset does; name every file after its split (train-*.parquet, validation-*.parquet, "
                        f"test-*.parquet) or give the data a 'split' column")
    return splits  # type: ignore[return-value]


def glob_root(pattern: str | Path) -> Path:
    """The folder above a glob pattern's first wildcard (what split folders are looked for below)."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))]]
    return Path(*fixed) if fixed else Path(".")
