"""What the dashboard and ``watch --once`` say a method's live quantities mean: the text of the run's
method registration (``score/<m>`` is a confidence for OGM and AUG, a permutation importance for
MCR, an F1 for mikd), at 80x24 and 120x40."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.methods import METHODS
from mmbal_cli.app import app
from mmbal_cli.tui.app import DashboardApp
from mmbal_cli.tui.model import RunModel
from mmbal_cli.tui.testing import settled, shows

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
AUG = FIXTURES / "20250301-101500_avdigits-aug_k3f9a2x1"
MCR = FIXTURES / "20250302-090000_quick-mcr_p7q2m4zz"
JOINT = FIXTURES / "20250228-170000_nutrimouse-joint_a0b1c2d3"
MCR_SCORE = METHODS.entry("mcr").info.live["score/<m>"]


def as_method(tmp_path: Path, method: str) -> Path:
    """The MCR fixture run (it logs ``score/a`` .. ``score/c``) recorded as a run of ``method``."""
    run = tmp_path / MCR.name
    shutil.copytree(MCR, run)
    for name, set_method in (("run.json", lambda d: d.update(method=method)),
                             ("config.json", lambda d: d["method"].update(name=method))):
        data = json.loads((run / name).read_text())
        set_method(data)
        (run / name).write_text(json.dumps(data))
    return run


def test_mcr_score_is_permutation_importance_in_the_model():
    model = RunModel(MCR).load()
    meaning = model.meaning("score/b")
    assert (meaning.pattern, meaning.text, meaning.known) == ("score/<m>", MCR_SCORE, True)
    assert "permutation importance" in MCR_SCORE
    assert meaning.label("score/b") == "b"
    captions = {c.series[0].name: c.caption for c in model.method_charts()}
    assert captions["score/a"] == captions["score/c"] == f"score/<m>: {MCR_SCORE}"
    groups = model.live_groups()
    assert groups[0].meaning.pattern == "score/<m>"
    assert [key for key, _ in groups[0].values] == ["score/a", "score/b", "score/c"]
    assert groups[0].values[0][1] == model.value("score/a") is not None


@pytest.mark.parametrize("method, word", [("mcr", "permutation importance"), ("ogm", "confidence"),
                                          ("aug", "confidence"), ("mikd", "F1")])
def test_score_means_what_the_runs_method_registered(tmp_path, method, word):
    model = RunModel(as_method(tmp_path, method)).load()
    text = METHODS.entry(method).info.meaning("score/a")
    assert word in text
    assert model.meaning("score/a").text == text
    out = runner_once(model.run_dir)
    assert f"method {method}: its values and what they mean" in out
    assert " ".join(text.split()) in " ".join(out.split())


def runner_once(run_dir: Path) -> str:
    result = CliRunner().invoke(app, ["watch", str(run_dir), "--once"])
    assert result.exit_code == 0, result.output
    return result.output


def test_undescribed_key_and_unregistered_method_say_so(tmp_path):
    mcr = RunModel(MCR).load()
    assert mcr.meaning("method/not_logged").caption() == "method/not_logged: not described by mcr's registration"
    other = RunModel(as_method(tmp_path, "nosuch")).load()
    assert other.method_info is None and other.coef_meaning() is None
    assert other.meaning("score/a").text == "no description: method 'nosuch' is not registered in this mmbal"


def test_coef_legend_only_where_coefficients_are_logged():
    assert RunModel(AUG).load().coef_meaning().text == METHODS.entry("aug").info.live["coef/<m>"]
    assert RunModel(JOINT).load().coef_meaning() is None  # the fixture logs no coef/<m>


def test_once_shows_coef_and_score_meanings_of_an_mcr_run():
    out = runner_once(MCR)
    flat = " ".join(out.split())
    assert f"coef: {METHODS.entry('mcr').info.live['coef/<m>']}" in flat
    assert "score/<m> a 0.467 b 0.380 c" in flat and " ".join(MCR_SCORE.split()) in flat


def dashboard_text(run_dir: Path, size: tuple[int, int], keys: list[str], wanted: str) -> str:
    async def scenario():
        app = DashboardApp(run_dir, FIXTURES)
        async with app.run_test(size=size) as pilot:
            await settled(pilot, app)
            for key in keys:
                await pilot.press(key)
            return await shows(pilot, app, wanted)

    return asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_dashboard_method_tab_captions_mcr_scores(size):
    width = size[0]
    head = "score/<m>: permutation importance"
    screen = dashboard_text(MCR, size, ["7"], head)
    lines = screen.splitlines()
    assert len(lines) <= size[1] and all(len(line) <= width for line in lines)
    caption = next(line for line in lines if head in line)
    assert len(caption.strip()) <= width - 1
    if width == 80:  # one line, cut with an ellipsis
        assert caption.rstrip().endswith("…")
    else:  # wrapped onto a second line, whole
        after = lines[lines.index(caption) + 1]
        assert f"score/<m>: {MCR_SCORE}" == " ".join((caption + " " + after).split())
    panel = dashboard_text(MCR, size, [], "coef: game weight")
    assert "coef: " + METHODS.entry("mcr").info.live["coef/<m>"][:40] in panel
