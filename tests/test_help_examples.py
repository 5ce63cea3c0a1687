"""Every command's ``--help`` ends with examples, and every example parses with its command's own parser
(an option renamed or removed fails here instead of leaving a stale example)."""

from __future__ import annotations

import shlex

import pytest
import typer
from typer.testing import CliRunner

from mmbal_cli.app import app
from mmbal_cli.examples import EXAMPLES


def _commands(group, prefix: str = ""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors click from 0.2x on: no click import here)
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


ROOT = typer.main.get_command(app)
COMMANDS = dict(_commands(ROOT))


def test_every_command_has_examples():
    assert sorted(COMMANDS) == sorted(EXAMPLES), "add the new command's examples to mmbal_cli/examples.py"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_are_shown_at_the_end_of_the_help(name):
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    tail = result.output[result.output.index("Examples"):]
    for line in EXAMPLES[name]:
        assert line in tail


@pytest.mark.parametrize("name, line", [(n, line) for n, lines in sorted(EXAMPLES.items()) for line in lines])
def test_each_example_parses(name, line):
    words = shlex.split(line.split(" | ")[0])
    assert words[0] == "mmbal" and " ".join(words[1:1 + len(name.split())]) == name
    args = words[1 + len(name.split()):]
    command = COMMANDS[name]
    try:
        with command.make_context(name, args) as ctx:
            assert ctx.params
    except Exception as exit_:  # an eager option that prints and exits (--help-options) raises click's Exit
        assert type(exit_).__name__ == "Exit" and exit_.exit_code == 0, exit_


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_paragraphs_flow_so_that_the_terminal_wraps_them(name):
    """Typer's rich help keeps a paragraph's line breaks: a docstring wrapped in the source showed as
    ragged lines at 80 columns (and in the command list of ``mmbal --help``)."""
    assert [p for p in COMMANDS[name].help.split("\n\n") if "\n" in p] == []


def test_a_later_paragraph_fills_an_80_column_terminal():
    result = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "pred_<m> and prob_<m> (null" in result.output  # the paragraph flows on (it was cut after "prob_<m>;")
