"""Run names: labels a user chooses (``--name`` or the preset's ``name``), checked before anything is created.

A run's directory is ``<timestamp>_<slug>_<id>`` where the slug is a sanitised copy of the name
(:func:`engine.store.layout.slugify`), so the name itself never becomes a path. It is still
stored verbatim in ``run.json``, printed by ``ls``/``watch``/``compare`` and matched by ``RUN``
references, so it is refused when it could mislead a reader or a later tool that does use it
as a path: path separators (``/``, ``\\``), ``..``, control and invisible format characters
(terminal escape sequences, bidi overrides, NUL, newlines), undecodable bytes, more than 255
bytes of UTF-8 (a file name's limit on common file systems), or nothing but white space.
"""

from __future__ import annotations

import unicodedata

from engine.errors import UsageError

NAME_MAX_BYTES = 255
# Cc control, Cf format (bidi overrides, zero-width), Cs lone surrogates (undecodable argv bytes),
# Zl/Zp line and paragraph separators.
_BAD_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible format character",
                   "Cs": "an undecodable byte", "Zl": "a line separator", "Zp": "a paragraph separator"}


def run_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a run name (one phrase), or None when it can."""
    if not isinstance(name, str):
        return f"a run name must be a string, got {type(name).__name__}"
    if not name.strip():
        return "a run name cannot be empty"
    for sep in ("/", "\\"):
        if sep in name:
            return f"a run name cannot contain a path separator ('{sep}')"
    if ".." in name:
        return "a run name cannot contain '..'"
    for ch in name:
        what = _BAD_CATEGORIES.get(unicodedata.category(ch))
        if what is not None:
            return f"a run name cannot contain {what} (U+{ord(ch):04X})"
    size = len(name.encode("utf-8"))
    if size > NAME_MAX_BYTES:
        return f"a run name can have at most {NAME_MAX_BYTES} bytes of UTF-8, this one has {size}"
    return None


def shown(name: object, limit: int = 60) -> str:
    """``name`` quoted for an error message, escapes made visible, cut to ``limit`` characters."""
    text = repr(name) if isinstance(name, str) else repr(str(name))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_run_name(name: str, option: str = "--name") -> str:
    """``name`` when it is a usable run name; else :class:`UsageError` (exit 2) naming ``option``."""
    problem = run_name_problem(name)
    if problem is not None:
        raise UsageError(f"{option}: {shown(name)} is not a usable run name: {problem}. A run name is a label "
                         f"(the directory is named after a sanitised copy of it); use letters, digits, spaces, "
                         f"'-', '_' and '.'")
    return name
