"""``mmbal methods``: every per-method fact of the registry, in table, json and md, and the README's
table generated from it."""

import json
import os
import re
from pathlib import Path

from typer.testing import CliRunner

from engine.methods import METHODS
from mmbal_cli.app import app
from mmbal_cli.methods_listing import method_rows, to_markdown, to_text

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- methods:start", "<!-- methods:end -->"
REGENERATE = "MMBAL_UPDATE_README=1 pytest tests/test_methods_cli.py -k readme"
runner = CliRunner()

ODD = {"name": "odd", "help": "keeps [bold]markup[/bold] and [modalities] as text | a pipe",
       "paper": "A. Author: [Title], 2024", "optimizer": "adam", "cost": "1F + 1B",
       "params": [{"name": "modality", "type": "str", "default": "(required)",
                   "help": "a name from [modalities]"}],
       "live": [{"name": "score/<m>", "meaning": "score of [m] in [0, 1]"}]}


def _flat(text: str) -> str:
    return " ".join(text.split())


def invoke(*args):
    return runner.invoke(app, ["methods", *args])


def test_table_prints_bracketed_text_verbatim():
    """Rich markup swallowed ``[modalities]`` (the bug: "(a name from )"); text is never markup now."""
    text = _flat(to_text([ODD], 200))
    assert "keeps [bold]markup[/bold] and [modalities] as text" in text
    assert "a name from [modalities]" in text and "A. Author: [Title], 2024" in text
    assert "score/<m> score of [m] in [0, 1]" in text
    bracketed = [p["help"] for row in method_rows() for p in row["params"] if "[" in p["help"]]
    assert bracketed, "no registered option's help holds brackets any more: the check below is empty"
    out = _flat(invoke().output)
    for help_text in bracketed:
        assert _flat(help_text) in out


def test_table_at_80_columns_keeps_every_fact_whole():
    rows = method_rows()
    text = to_text(rows, 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    flat = _flat(text)
    for row in rows:
        assert any(line.startswith(f"{row['name']}  ") for line in lines), row["name"]
        for fact in (row["help"], row["paper"] or "(mmbal baseline)", row["optimizer"], row["cost"]):
            assert _flat(fact) in flat, (row["name"], fact)
        for p in row["params"]:
            assert any(line.strip().startswith(f"{p['name']}  {p['type']}  default ") for line in lines), p
            assert _flat(p["help"]) in flat, p
        for q in row["live"]:
            assert _flat(f"{q['name']} {q['meaning']}") in flat, q


def test_json_carries_the_registration_and_json_flag_is_an_alias():
    res = invoke("--format", "json")
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert list(rows) == METHODS.names()
    for name, row in rows.items():
        info = METHODS.entry(name).info
        assert (row["paper"], row["optimizer"], row["cost"]) == (info.paper, info.optimizer, info.cost)
        assert {q["name"]: q["meaning"] for q in row["live"]} == info.live
    assert rows["mcr"]["live"] and "permutation importance" in METHODS.entry("mcr").info.meaning("score/a")
    assert invoke("--json").output == res.output


def test_markdown_is_one_table_row_per_method_with_pipes_escaped():
    md = invoke("--format", "md").output
    lines = md.splitlines()
    assert lines[0] == "| method | what it does | paper | optimiser | cost per step |"
    assert [re.match(r"\| `([^`]+)` \|", line).group(1) for line in lines[2:]] == METHODS.names()
    joint = next(line for line in lines if line.startswith("| `joint` |"))
    info = METHODS.entry("joint").info
    assert joint.endswith(f"| {info.optimizer} | {info.cost} |")
    odd = to_markdown([ODD]).splitlines()[2]
    assert "as text \\| a pipe" in odd and odd.count(" | ") == 4


def test_bad_format_is_a_usage_error():
    bad = invoke("--format", "mdd")
    assert bad.exit_code == 2 and "'mdd' is not one of table, json, md (did you mean 'md'?)" in bad.output
    both = invoke("--json", "--format", "md")
    assert both.exit_code == 2 and "--json means --format json" in both.output


def test_readme_methods_table_is_the_commands_output():
    """Adding or changing a method without regenerating the README's table fails here."""
    text = README.read_text(encoding="utf-8")
    start = text.index(START)
    body_start = text.index("\n", start) + 1
    body_end = text.index(END, body_start)
    generated = invoke("--format", "md").output
    if os.environ.get("MMBAL_UPDATE_README") == "1":
        README.write_text(text[:body_start] + generated + text[body_end:], encoding="utf-8")
        text = README.read_text(encoding="utf-8")
        body_end = body_start + len(generated)
    assert text[body_start:body_end] == generated, (
        "README.md's methods table (between the methods:start/end markers) is not the output of "
        f"`mmbal methods --format md`; regenerate it with `{REGENERATE}`")


def test_named_methods_only_in_the_order_given_and_an_unknown_one_is_exit_2():
    res = invoke("mcr", "ogm_ge,joint", "--json")
    assert res.exit_code == 0, res.output
    assert [row["name"] for row in json.loads(res.stdout)] == ["mcr", "ogm_ge", "joint"]
    text = invoke("ogm_ge")
    assert text.exit_code == 0 and text.stdout.startswith("ogm_ge ") and "\nmcr " not in text.stdout
    bad = invoke("ogm-ge")
    assert bad.exit_code == 2 and "unknown method 'ogm-ge' (did you mean 'ogm_ge'?)" in bad.output
