"""How a CSV table is written: its text encoding, delimiter and decimal point, read off the file.

Spreadsheets in many locales save "CSV" with semicolons between fields and a decimal comma
(``39,1;18,7``); tab-separated files are common too. pyarrow's reader takes one delimiter and one
decimal point, so they are chosen before reading: the name's ``.tsv``/``.tab`` means tabs; otherwise
the header line's most frequent of ``,`` ``;`` tab ``|`` (a comma when it has none of them). A file
separated by anything but commas whose first rows hold numbers written with a decimal comma
(``-12,5`` as a whole field) gets the decimal comma. The encoding is UTF-8 (a byte-order mark
allowed) when the whole file decodes as UTF-8; else Windows-1252, which spreadsheets on Windows write
(``Adélie`` as one byte ``0xE9``), when it decodes as that; else Latin-1, which decodes any bytes. ``.gz``
and ``.bz2`` files are read decompressed.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import re
from pathlib import Path

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_LINES = 50


CHUNK = 1 << 20


def _open_bytes(file: Path):
    name = file.name.lower()
    return gzip.open(file, "rb") if name.endswith(".gz") else bz2.open(file, "rb") if name.endswith(".bz2") \
        else open(file, "rb")


def _decodes(file: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with _open_bytes(file) as fh:
            while chunk := fh.read(CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def csv_encoding(file: Path) -> str:
    """``utf-8``, ``cp1252`` or ``latin-1``: the first the whole of ``file`` decodes as."""
    try:
        return next(e for e in ("utf-8", "cp1252") if _decodes(file, e))
    except (StopIteration, OSError, EOFError, ValueError):
        return "latin-1"


def csv_dialect(file: Path, encoding: str = "utf-8") -> tuple[str, str]:
    """``(delimiter, decimal point)`` of the CSV file ``file`` in ``encoding`` (see the module docstring);
    unreadable files get the defaults, and the reader then says what is wrong with them."""
    name = file.name.lower()
    try:
        with _open_bytes(file) as raw, codecs.getreader(encoding)(raw, errors="replace") as fh:
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
