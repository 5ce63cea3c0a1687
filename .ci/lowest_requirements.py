"""Print the lowest declared version of each dependency (``name==floor``) of pyproject.toml, the runtime
ones and those of the extras named on the command line, for the CI step that tests against them.

torch is left out: the local CPU build (torch==2.13.0, installed first) is the only torch these machines
install without downloading the CUDA wheels, so the lowest-versions step runs on it too.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*$")
SKIPPED = {"torch"}


def lowest(requirements: list[str]) -> list[str]:
    pins = []
    for requirement in requirements:
        match = FLOOR.match(requirement.split(";")[0])
        if match is None:
            sys.exit(f"pyproject.toml: '{requirement}' has no '>=' floor to test; declare one")
        if match.group(1).lower() not in SKIPPED:
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in sys.argv[1:]:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(lowest(requirements)))


if __name__ == "__main__":
    main()
