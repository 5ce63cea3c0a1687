"""The import graph keeps the layers ARCHITECTURE.md lists: no cycle between modules, no import
from a lower layer to a higher one, and every part of the engine placed in a layer.

Imports are read from the source (``ast``), function-local ones included, so a cycle cannot hide
behind an import inside a function. A package importing its own submodules (a registry's
``__init__`` importing the modules that register themselves) is assembly, not a dependency, and is
left out of the cycle check.
"""

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "mmbal_cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def unit(name: str) -> str:
    """The part of the tree a module belongs to: ``engine.<first level>`` or ``mmbal_cli``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "engine" else parts[0]


def layers() -> dict[str, int]:
    """ARCHITECTURE.md's "## Layers" list: the number of the line each backticked name is on."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        number = re.match(r"\s*(\d+)\.\s", line)
        if number:
            for name in re.findall(r"`([a-z_.]+)`", line):
                found[name] = int(number.group(1))
    return found


def test_no_import_cycle():
    edges = graph()
    assembled = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in edges.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in assembled.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(assembled):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other (directly or around a loop): {cycles}"


def test_every_part_is_in_a_layer():
    placed = layers()
    missing = sorted({unit(m) for m in modules()} - set(placed))
    assert not missing, f"parts of the tree missing from ARCHITECTURE.md's layers: {missing}"


# The root package's lazy exports (``from engine import load_run``: a PEP 562 ``__getattr__`` in
# engine/__init__.py, run on first use) are a facade over the notebook API, not a dependency of layer 1.
FACADE = {("engine", "engine.analysis"), ("engine", "engine.analysis.api")}


def test_no_import_from_a_lower_layer_to_a_higher_one():
    placed = layers()
    upward = sorted(f"{a} -> {b}" for a, bs in graph().items() for b in bs
                    if unit(a) in placed and unit(b) in placed and placed[unit(a)] < placed[unit(b)]
                    and (a, b) not in FACADE)
    assert not upward, "imports that run up the layers of ARCHITECTURE.md:\n" + "\n".join(upward)


def cli_references(path: Path) -> list[int]:
    """Lines of ``path`` whose code (an import, or a string that is not a docstring) names mmbal_cli."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mmbal_cli" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mmbal_cli":
            lines.append(node.lineno)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and "mmbal_cli" in node.value):
            lines.append(node.lineno)
    return lines


def test_the_engine_never_names_the_cli():
    hits = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "engine").rglob("*.py"))
            for line in cli_references(p)]
    assert not hits, f"engine code naming mmbal_cli (an import, or a command in a string): {hits}"
