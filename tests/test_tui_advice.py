"""The advice screen (``mmbal watch --advice NAME``, ``a`` on the dashboard) and its ``--once`` text.

One tiny real ``mmbal advise`` (in-process, as tests/test_advise.py runs it) gives a finished advice;
an advice under way is made from it: round 2 and what follows are taken out of ``advice.json``, and
round 2's runs replaced by one finished joint run and one run "being trained" by this process. The
figures checked on the screen are the record's, formatted as the screen formats them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable
from typer.testing import CliRunner

from engine.advise.advisor import Advisor
from engine.advise.config import AdviseConfig
from engine.advise.stages import InProcessExecutor
from engine.store import list_runs, write_status
from mmbal_cli.app import app as cli
from mmbal_cli.tui.advice_model import shown, AdviceModel, pm
from mmbal_cli.tui.advice_reader import AdviceRead
from mmbal_cli.tui.app import DashboardApp
from mmbal_cli.tui.formatting import fmt_number
from mmbal_cli.tui.screens import AdviceScreen, AdvicesScreen, DashboardScreen
from mmbal_cli.tui.testing import live_run, shows, stable

from test_advise import preset

NAME = "t"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The runs directory of a finished advice: 3 candidates, 2 rounds, --apply."""
    tmp = tmp_path_factory.mktemp("advice")
    cfg = AdviseConfig(preset(tmp, epochs=2, n=300).resolve(), (tmp / "runs").resolve(), NAME,
                       ("ogm_ge", "mla", "mmcosine"), seeds=2, apply=True, explicit_methods=True, tune=False)
    Advisor(cfg, InProcessExecutor()).run()
    return tmp / "runs"


def kept_and_dropped(record: dict) -> tuple[str, list[str]]:
    """Round 1's survivor and the candidates it dropped."""
    first = record["choice"]["rounds"][0]
    return first["kept"][0], [c for c in first["candidates"] if c not in first["kept"]]


def record_of(runs: Path) -> dict:
    return json.loads((runs / "advice" / NAME / "advice.json").read_text())


def write_record(runs: Path, record: dict) -> None:
    (runs / "advice" / NAME / "advice.json").write_text(json.dumps(record))


@pytest.fixture
def under_way(finished, tmp_path) -> Path:
    """The advice in round 2 of 2: joint seed 0 finished, the survivor's seed 0 training (epoch 1 of 2), the
    rest waiting."""
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    for info in list_runs(runs):
        if info.name.startswith((f"{NAME}-r1-", f"{NAME}-apply-")) and info.name != f"{NAME}-r1-joint-s0":
            shutil.rmtree(info.path)
    record = record_of(runs)
    kept, _ = kept_and_dropped(record)
    record["choice"]["rounds"] = record["choice"]["rounds"][:1]
    for key in ("recommendation", "apply", "read_while_choosing"):
        record.pop(key, None)
    record["choice"].pop("ranking", None)
    write_record(runs, record)
    run_dir, writer = live_run(runs, name=f"{NAME}-r1-{kept}-s0", run_id="live0001")
    writer.close()
    write_status(run_dir, "running", step=4, epoch=1, epochs=2, heartbeat_interval=5.0)
    return runs


def watch(*args):
    return CliRunner().invoke(cli, ["watch", *map(str, args)])


def flat(text: str) -> str:
    """The text with every run of white space one space (a sentence may wrap)."""
    return " ".join(text.split())


def line_with(text: str, *parts: str) -> str:
    """The one line of ``text`` that holds every part."""
    found = [line for line in text.splitlines() if all(p in line for p in parts)]
    assert len(found) == 1, f"{parts} on {len(found)} lines of:\n{text}"
    return found[0]


def drive(scenario, runs: Path, size=(80, 24), run_dir: Path | None = None):
    """``await scenario(pilot, app)`` on a headless app: the advice screen, or ``run_dir``'s dashboard."""
    async def main():
        home = None if run_dir is not None else runs / "advice" / NAME
        app = DashboardApp(run_dir, runs, advice=home, interval=0.1)
        async with app.run_test(size=size) as pilot:
            await scenario(pilot, app)

    asyncio.run(main())


def fits(text: str, size: tuple[int, int]) -> None:
    lines = text.splitlines()
    assert len(lines) <= size[1] and max(map(len, lines)) <= size[0], text


# -- --once ------------------------------------------------------------------------------------
def test_once_shows_the_diagnosis_the_halving_and_the_recommendation(finished):
    result = watch("--advice", NAME, "--once", "--runs-dir", finished)
    assert result.exit_code == 0, result.output
    out, record = result.output, record_of(finished)
    d = record["diagnosis"]
    assert d["sentence"] in flat(out)
    for m in d["modalities"]:
        rows = [line for line in out.splitlines() if line.startswith(f"{m['name']} ")]
        assert len(rows) == 1, out
        row = rows[0]
        assert row.split()[:4] == [m["name"], fmt_number(m["alone"]), fmt_number(m["inside_joint"]), f"{m['gap']:+.3f}"]
        assert ("◀ held back" in row) == m["held_back"]
    first, last = record["choice"]["rounds"]
    assert "round 1/2 · 1 epoch · seeds 0, 1 · keeps 1 of 3 · done" in out
    for name, entry in first["scores"].items():
        row = line_with(out, f"  {shown(name)} ", pm(entry["mean"], entry["std"]))
        if name in record["choice"]["references"]:
            assert row.endswith("reference")
        elif name in first["kept"]:
            assert row.endswith("kept")
        else:
            assert row.endswith("dropped in round 1")
    assert out.count("dropped in round 1") == 2 and "round 2/2 · 2 epochs" in out
    assert record["recommendation"]["text"] in flat(out)
    joint = record["apply"]["methods"]["joint"]
    assert "apply test acc/fused over 2 seeds, 2 epochs: " in flat(out)
    assert f"joint {pm(joint['mean'], joint['std'])}" in flat(out).split("apply test acc/fused", 1)[1]
    assert "now finished" in out and "\x1b[" not in out


def test_an_unknown_advice_is_exit_3_naming_the_known_ones(finished, tmp_path):
    result = watch("--advice", "nope", "--runs-dir", finished)
    assert result.exit_code == 3 and "no advice 'nope'" in result.output and "the advices there: t" in result.output
    result = watch("--advice", "nope", "--runs-dir", tmp_path)
    assert result.exit_code == 3 and "mmbal advise PRESET" in result.output
    assert watch("latest", "--advice", NAME, "--runs-dir", finished).exit_code == 2


def test_a_partial_or_odd_record_shows_what_it_has():
    model = AdviceModel(Path("/nowhere/advice/t"))
    odd = {"name": "t",
           "diagnosis": {"sentence": "imbalanced: a dominates", "modalities": [{"name": "a", "alone": "x"}]},
           "choice": {"schedule": [{"epochs": 1}, "bad"], "rounds": [{"round": 0, "scores": {"joint": 3}}]},
           "recommendation": [], "apply": {"methods": {"joint": None}}, "stopped": {"signal": "SIGTERM"}}
    model.apply(AdviceRead(odd, None))
    assert model.diagnosis().modalities[0].alone is None
    assert [(s.title, s.status) for s in model.stages()] == [
        ("diagnosis", "done"), ("round 1/2", "done"), ("round 2/2", "stopped"), ("apply", "done")]
    assert [(r.label, r.state) for r in model.stages()[2].rows] == [("joint", "waiting")]
    assert model.current_stage() == "stopped (SIGTERM) in round 2 of 2"
    assert any("run the same `mmbal advise` command again" in n.text for n in model.notices())
    assert model.apply_text() == "? over 0 seeds, ? epochs: joint -"


# -- the screen ----------------------------------------------------------------------------------
def test_a_running_round_shows_which_runs_run_then_the_recommendation_appears(under_way, finished):
    async def scenario(pilot, app):
        text = await shows(pilot, app, "round 2/2 · 2 epochs · seeds 0, 1 · keeps 1 of 1 · running")
        assert "now round 2 of 2" in text
        kept, dropped = kept_and_dropped(record_of(under_way))
        assert line_with(text, f"  {kept} ", "0/2").endswith("running s0 1/2")
        joint = line_with(text, "  joint ", "1/2")
        assert joint.endswith("waiting")
        assert "recommendation none yet" in flat(text)
        assert all(line_with(text, f"  {name} ").endswith("dropped in round 1") for name in dropped)
        fits(text, (80, 32))
        write_record(under_way, record_of(finished))    # the round ends: the record has the recommendation
        text = await shows(pilot, app, "now finished")
        assert record_of(finished)["recommendation"]["text"] in flat(await stable(pilot, app))

    drive(scenario, under_way, size=(80, 32))   # tall enough for every round's rows at once


def test_a_torn_record_gives_a_notice_and_the_previous_content_stays(under_way):
    async def scenario(pilot, app):
        sentence = record_of(under_way)["diagnosis"]["sentence"]
        # at 80x24 the rounds do not fit: the cursor follows the advice, so the running run is in view
        await shows(pilot, app, "  running s0 1/2")
        (under_way / "advice" / NAME / "advice.json").write_text('{"schema": 1, "name": "t", "diagn')
        text = await shows(pilot, app, "showing the previous read")
        assert "advice.json unreadable" in text and sentence[:40] in flat(text)
        text = await shows(pilot, app, "  running s0 1/2")   # the notice took a line; still in view
        fits(text, (80, 24))

    drive(scenario, under_way)


def test_120x40_fits_and_shows_every_stage(finished):
    async def scenario(pilot, app):
        text = await shows(pilot, app, "apply · 2 epochs · seeds 0, 1 · test acc/fused · done")
        fits(await stable(pilot, app), (120, 40))
        assert "diagnosis · 2 epochs · seed 0 · done" in text and "a alone" in text

    drive(scenario, finished, size=(120, 40))


def test_the_a_key_lists_the_advices_and_enter_opens_one_then_a_candidates_run(finished):
    record = record_of(finished)
    kept, _ = kept_and_dropped(record)
    joint = next(i.path for i in list_runs(finished) if i.name == f"{NAME}-diag-joint-s0")
    survivor = next(i for i in list_runs(finished) if i.name == f"{NAME}-r1-{kept}-s0")

    async def scenario(pilot, app):
        await shows(pilot, app, joint.name.rsplit("_", 1)[-1])
        await pilot.press("a")
        await shows(pilot, app, "advices in")
        assert isinstance(app.screen, AdvicesScreen)
        row = [str(cell) for cell in app.screen.query_one(DataTable).get_row_at(0)]
        assert row == [NAME, "finished", record["recommendation"]["method"]]
        await pilot.press("enter")
        await shows(pilot, app, "now finished")
        assert isinstance(app.screen, AdviceScreen)
        halving = app.screen.query_one("#halving")
        halving.highlighted = next(i for i, o in enumerate(halving.options) if o.id == str(survivor.path))
        await pilot.press("enter")
        await shows(pilot, app, survivor.run_id)
        assert isinstance(app.screen, DashboardScreen) and app.screen.model.run_dir == survivor.path
        await pilot.press("escape")
        assert isinstance(app.screen, AdviceScreen)

    drive(scenario, finished, run_dir=joint)


def test_a_long_candidate_label_keeps_its_method_and_value():
    from mmbal_cli.tui.advice_text import fit_label
    assert fit_label("ogm_ge-alpha=0.8", 18) == "ogm_ge-alpha=0.8"
    cut = [fit_label(f"inforeg-window_threshold={v}", 18) for v in ("0.04", "0.1")]
    assert cut == ["inforeg-…hold=0.04", "inforeg-…shold=0.1"] and all(len(c) == 18 for c in cut)


def test_the_candidate_column_widens_with_the_terminal():
    from types import SimpleNamespace
    from mmbal_cli.tui.advice_text import label_width
    long = "inforeg-window_threshold=0.04"   # 29 characters
    stages = [SimpleNamespace(rows=[SimpleNamespace(label=long), SimpleNamespace(label="joint")])]
    assert label_width(stages, 78) == 18            # as before at 80 columns less the list's padding
    assert label_width(stages, 80) == 19            # the fixed columns and a 20-wide state beside it
    assert label_width(stages, 70) == 18            # never narrower: cut in the middle
    assert label_width(stages, 100) == len(long)    # whole where there is room
    assert label_width([SimpleNamespace(rows=[SimpleNamespace(label="joint")])], 120) == 9   # the header's width
