"""How a CSV table is written: its delimiter and decimal point, read off its first lines.

Spreadsheets in many locales save "CSV" with semicolons between fields and a decimal comma
(``39,1;18,7``); tab-separated files are common too. pyarrow's reader takes one delimiter and one
decimal point, so they are chosen before reading: the name's ``.tsv``/``.tab`` means tabs; otherwise
the header line's most frequent of ``,`` ``;`` tab ``|`` (a comma when it has none of them). A file
separated by anything but commas whose first rows hold numbers written with a decimal comma
(``-12,5`` as a whole field) gets the decimal comma. ``.gz`` and ``.bz2`` files are sniffed decompressed.
"""

from __future__ import annotations

import bz2
import gzip
import re
from pathlib import Path

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_LINES = 50


def _open_text(file: Path):
    name = file.name.lower()
    opener = gzip.open if name.endswith(".gz") else bz2.open if name.endswith(".bz2") else open
    return opener(file, "rt", encoding="utf-8", errors="replace", newline="")


def csv_dialect(file: Path) -> tuple[str, str]:
    """``(delimiter, decimal point)`` of the CSV file ``file`` (see the module docstring); unreadable files
    get the defaults, and the reader then says what is wrong with them."""
    name = file.name.lower()
    try:
        with _open_text(file) as fh:
            lines = [line for line in (fh.readline() for _ in range(SAMPLE_LINES)) if line]
    except (OSError, EOFError, ValueError):
        lines = []
    if ".tsv" in name or ".tab" in name:
        delimiter = "\t"
    else:
        header = lines[0] if lines else ""
        delimiter = max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","
    return delimiter, _decimal_point(lines[1:], delimiter)


def _decimal_point(rows: list[str], delimiter: str) -> str:
    if delimiter == ",":
        return "."
    comma_number = re.compile(r"^\s*[-+]?\d+,\d+\s*$")
    fields = (f.strip().strip('"') for row in rows for f in row.rstrip("\r\n").split(delimiter))
    return "," if any(comma_number.match(f) for f in fields) else "."
