"""The project's contract lives in ``docs/``, and stays true to the code.

* No file of the repository cites the design notes kept outside it (their file names, a ``spec/``
  path or a "spec 1.4" section pointer); ``docs/<page>.md`` links are fine.
* Every ``docs/`` page README.md links exists, every page is linked from it, and every link between
  the pages (file and ``#anchor``) resolves.
* ``docs/commands.md`` has a section for every command ``mmbal --help`` lists, naming each option.
* ``docs/presets.md`` names every key of the preset tables and every registered encoder, fusion and
  mid-fusion with its options.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import typer
from typer.testing import CliRunner

from mmbal_cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THIS = Path(__file__).resolve()

# Design notes kept outside the repository, by file name (spelled in pieces so that this file's own
# text does not look like a citation). ``interfaces`` is an ordinary word: only its ``.md`` form counts.
OUTSIDE = ("interfaces" + ".md", "ux" + "-research", "methods" + "-catalog", "methods" + "-seeds",
           "data" + "-format")
SPEC = "sp" + "ec"
POINTERS = (re.compile(rf"shared/{SPEC}\b"), re.compile(rf"(?<![\w{{}}]){SPEC}/[\w.-]"),
            re.compile(rf"\b{SPEC}(?:'s)?\s+(?:section\s+)?\d+(?:\.\d+)*\b", re.IGNORECASE),
            re.compile(rf"\bthe {SPEC}\b", re.IGNORECASE))
TEXT_SUFFIXES = {"", ".py", ".md", ".toml", ".txt", ".sh", ".cfg", ".ini", ".yaml", ".yml", ".json", ".jsonl"}


def repository_files() -> list[Path]:
    """Tracked and untracked, not ignored files (every file when git is not available)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode()
        files = [ROOT / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
        files = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file() and p.suffix in TEXT_SUFFIXES and p.resolve() != THIS]


def outside_citations(path: Path, text: str) -> list[str]:
    """``line: text`` of every citation of a design note that is not in the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for name in OUTSIDE:
            for match in re.finditer(rf"[\w./-]*{re.escape(name)}(?:\.md)?", line):
                if not _docs_page_link(path, match.group(0)):
                    found.append(f"{number}: {line.strip()}")
        found += [f"{number}: {line.strip()}" for pattern in POINTERS if pattern.search(line)]
    return found


def _docs_page_link(path: Path, cited: str) -> bool:
    """``docs/<page>.md`` (or ``<page>.md`` inside docs/) naming a page that exists."""
    target = (path.parent / cited) if path.parent == DOCS else (ROOT / cited)
    return cited.endswith(".md") and target.resolve().parent == DOCS and target.is_file()


def test_no_file_cites_a_design_note_outside_the_repository():
    files = repository_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    offenders = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data:
            continue
        text = data.decode("utf-8", "replace")
        offenders += [f"{path.relative_to(ROOT)}:{hit}" for hit in outside_citations(path, text)]
    assert not offenders, "cite docs/<page>.md or the paper/release instead of:\n" + "\n".join(offenders)


def test_the_citation_check_tells_a_docs_link_from_a_note_outside():
    readme = ROOT / "README.md"
    assert outside_citations(readme, "see [the format](docs/data-format.md#what-is-refused)") == []
    assert outside_citations(DOCS / "presets.md", "the format: [here](data-format.md)") == []
    for bad in (f"the format ({SPEC}/{OUTSIDE[4]}.md)", f"names follow {OUTSIDE[0]}", f"rules of {OUTSIDE[1]} 4.2",
                f"the release bug ({SPEC} 1.4.1)", f"[{SPEC} 2.4, inferred]", f"the {SPEC} says 2-4",
                f"see docs/{OUTSIDE[2]}.md"):
        hits = outside_citations(readme, bad)
        assert hits and set(hits) == {f"1: {bad}"}, bad


# -- links ----------------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        found.update(re.findall(r'<a id="([^"]+)"', line))
        if re.match(r"#{1,6} ", line):
            slug = _slug(line.lstrip("#"))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    """Links of ``page`` to repository files (and their anchors) that do not resolve."""
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file) if file else page
        if not path.is_file():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    return broken


def test_readme_links_every_docs_page_and_each_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", readme)) | set(re.findall(r"`(docs/[\w./-]+\.md)`", readme))
    assert linked, "README.md links no docs page"
    missing = sorted(p for p in linked if not (ROOT / p).is_file())
    assert not missing, f"README.md links docs pages that do not exist: {missing}"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages - linked == set(), f"docs pages README.md does not link: {sorted(pages - linked)}"


def test_links_between_docs_pages_resolve():
    assert {"commands", "presets", "run-directory", "metrics", "data-format"} <= {p.stem for p in DOCS.glob("*.md")}
    broken = {p.name: broken_links(p) for p in [ROOT / "README.md", *DOCS.glob("*.md")]}
    assert not {k: v for k, v in broken.items() if v}, broken


def test_the_link_check_finds_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## `mmbal run`\n\n[ok](#mmbal-run) [ok](b.md#the-b) "
                                   "[bad](#mmbal-resume) [bad](c.md)\n")
    (tmp_path / "b.md").write_text("## The `b`\n")
    assert broken_links(tmp_path / "a.md") == ["#mmbal-resume", "c.md"]


# -- commands -------------------------------------------------------------------------------------
def command_paths() -> dict:
    """``"run"``, ``"data synth"``, ...: every command of the app (Typer's click commands), by the
    words that call it."""
    out = {}

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
            else:
                out[prefix + name] = cmd
    walk(typer.main.get_command(app), "")
    return out


def command_sections() -> dict[str, str]:
    """The sections of docs/commands.md headed ``## `mmbal <command>```, by command."""
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `mmbal ([a-z ]+?)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_command_of_mmbal_help_has_a_section_in_docs_commands():
    runner = CliRunner()
    helps = runner.invoke(app, ["--help"], env={"COLUMNS": "160"}).output
    paths = command_paths()
    assert {"run", "resume", "ls", "compare", "watch", "methods", "data synth"} <= set(paths)
    sections = command_sections()
    for path in paths:
        words = path.split()
        if len(words) > 1:
            helps += runner.invoke(app, [*words[:-1], "--help"], env={"COLUMNS": "160"}).output
        assert re.search(rf"\b{words[-1]}\b", helps), f"`mmbal --help` does not list '{path}'"
        assert path in sections, f"docs/commands.md has no section '## `mmbal {path}`'"


def test_every_option_of_every_command_is_named_in_its_section():
    sections = command_sections()
    missing = []
    for path, cmd in command_paths().items():
        for param in cmd.params:
            if param.param_type_name == "option" and "--help" not in param.opts:
                name = max(param.opts, key=len)
                if name not in sections.get(path, ""):
                    missing.append(f"mmbal {path} {name}")
    assert not missing, f"options docs/commands.md does not name in their command's section: {missing}"


# -- presets --------------------------------------------------------------------------------------
def test_every_preset_key_and_registered_component_is_in_docs_presets():
    from engine.config import TOP_KEYS
    from engine.data.config import DataConfig, SynthConfig
    from engine.models import ENCODERS, FUSIONS
    from engine.models.mid_fusion import KEYS as MID_FUSION_KEYS, MID_FUSIONS
    from engine.monitor import MonitorConfig
    from engine.train.config import TrainConfig

    text = (DOCS / "presets.md").read_text(encoding="utf-8")
    wanted = [f"`[{k}]`" if k != "modalities" else "`[modalities.<name>]`" for k in TOP_KEYS[2:]]
    wanted += ["`name`", "`seed`", "`column`", "`encoder`", "`fusion`", *MID_FUSION_KEYS]
    for config in (DataConfig, SynthConfig, TrainConfig, MonitorConfig):
        wanted += [f"| `{f.name}` |" for f in dataclasses.fields(config)]
    for registry in (ENCODERS, FUSIONS, MID_FUSIONS):
        for entry in registry.entries():
            wanted.append(f"| `{entry.name}` |")
            wanted += [f"`{f.name}`" for f in dataclasses.fields(entry.config)] if entry.config else []
    missing = [w for w in wanted if w not in text]
    assert not missing, f"docs/presets.md does not describe: {missing}"
