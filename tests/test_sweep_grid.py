"""``mmbal sweep --grid KEY=V1,V2``: values parsed like ``--set``, members and their names, errors, resuming,
and a real grid sweep compared by its grid key (the runner tests use ``test_sweep``'s stand-in member)."""

import json
import sys

import pytest
from typer.testing import CliRunner

from engine.analysis.build import build_comparison
from engine.analysis.load import load_sweep
from engine.errors import PresetError, UsageError
from engine.sweep.grid import parse_grid, split_values, value_label
from engine.sweep.plan import plan_sweep
from engine.sweep.record import sweep_members
from engine.sweep.runner import SweepRunner
from mmbal_cli.app import app
from runtools import tiny_preset
from test_sweep import FAKE, cli, write_configs

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def preset(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(tiny_preset('name = "joint"', seed=0, epochs=1))
    return p


# test_sweep's stand-in, with run ids and behaviour variables that grid names (``lr=0.1``) cannot break
RUN_ID = 'run_id = ("00000000" + name.replace("-", "").replace("_", ""))[-8:].lower()'
BEHAVIOUR = 'os.environ.get("FAKE_" + name.replace("-", "_").upper(), "finish")'
assert RUN_ID in FAKE and BEHAVIOUR in FAKE
GRID_FAKE = FAKE.replace(RUN_ID, "import hashlib; run_id = hashlib.sha1(name.encode()).hexdigest()[:8]").replace(
    BEHAVIOUR, 'os.environ.get("FAKE_" + "".join(c if c.isalnum() else "_" for c in name).upper(), "finish")')


def behaviour_var(run_name: str) -> str:
    return "FAKE_" + "".join(c if c.isalnum() else "_" for c in run_name).upper()


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable}\n{GRID_FAKE}")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_EVENTS", str(tmp_path / "events"))
    return script


# -- parsing ------------------------------------------------------------------------------------
def test_values_split_on_top_level_commas_and_parse_like_set():
    assert split_values("[1.0,0.2],[1.0,0.5]") == ["[1.0,0.2]", "[1.0,0.5]"]
    assert split_values('{a = 1, b = [2,3]}, "x,y" ,\'p,q\',plain') == ['{a = 1, b = [2,3]}', '"x,y"', "'p,q'", "plain"]
    assert split_values(r'"a\",b",c') == [r'"a\",b"', "c"]
    [unique, lr, fusion] = parse_grid(["data.synthetic.unique=[1.0,0.2],[1.0,0.5]", "train.lr=1e-3, 3e-4",
                                       "model.fusion=concat,gated"], ["joint"])
    assert unique.values == ([1.0, 0.2], [1.0, 0.5]) and unique.labels == ("1.0_0.2", "1.0_0.5")
    assert lr.values == (0.001, 0.0003) and lr.short == "lr" and lr.name_part(1) == "lr=0.0003"
    assert fusion.values == ("concat", "gated") and fusion.item(1) == 'model.fusion="gated"'
    assert value_label("a/b c") == "a_b_c" and value_label({"x": 1}) == "x_1" and value_label("..") == "."


def test_labels_stay_unique_and_file_safe():
    [a, b] = parse_grid(["modalities.a.dim=4,8", "modalities.b.dim=4,8"], ["joint"])
    assert (a.short, b.short) == ("a.dim", "b.dim")           # same last part: one more part each
    [names] = parse_grid(['data.label_column="a b","a_b"'], ["joint"])
    assert names.labels == ("v0", "v1")                        # indistinguishable once made file-safe
    [long] = parse_grid(["name=" + "x" * 40 + ",y"], ["joint"])
    assert long.labels == ("v0", "v1")
    [alpha, scoped] = parse_grid(["train.alpha=1,2", "ogm_ge.alpha=0.1,0.5"], ["joint", "ogm_ge"])
    assert (alpha.short, scoped.short) == ("train.alpha", "alpha") and scoped.config_key == "method.alpha"


@pytest.mark.parametrize("items, sets, expected", [
    (["train.lr="], [], "'train.lr=': no value"),
    (["train.lr=1,,2"], [], "an empty value"),
    (["train.lr"], [], "expected KEY=V1,V2,..."),
    (["train.lr=1,1.0"], [], "'train.lr': the value 1.0 is given more than once"),
    (["train.lr=1", "train.lr=2"], [], "given to --grid more than once"),
    (["train.lr=1,2"], ["train.lr=0.1"], "'train.lr': also given to --set (train.lr)"),
    (["model.fusion=sum"], ['model={fusion = "concat"}'], "'model.fusion': also given to --set (model)"),
    (["seed=1,2"], [], "use --seeds"),
    (["method.alpha=1,2"], [], "--grid ogm_ge.alpha=0.1,0.5"),
    (["ogm_ge.alpha=1,2"], [], "method 'ogm_ge' is not in --methods"),
])
def test_grid_item_errors_name_the_key(items, sets, expected):
    with pytest.raises(UsageError) as err:
        parse_grid(items, ["joint"], sets)
    assert err.value.exit_code == 2 and str(err.value).startswith("--grid: ") and expected in str(err.value)
    assert "\n" not in str(err.value)


# -- members ------------------------------------------------------------------------------------
def test_two_by_two_grid_times_two_methods(preset, tmp_path):
    plan = plan_sweep(preset, tmp_path / "runs", ["joint", "unimodal"], [0], ["unimodal.modality=a"],
                      grid=["train.lr=1e-3,3e-4", "model.fusion=concat,gated"])
    assert [t.member.run_name for t in plan.tasks] == [
        f"tiny-{m}-lr={lr}-fusion={f}-s0" for lr in ("0.001", "0.0003") for f in ("concat", "gated")
        for m in ("joint", "unimodal")]
    assert plan.tasks[3].member.key == "unimodal lr=0.001 fusion=gated s0"
    assert plan.tasks[3].member.overrides == ("train.lr=0.001", 'model.fusion="gated"', "seed=0",
                                              'method={name = "unimodal", modality = "a"}')
    joints = [t.member.config for t in plan.tasks if t.member.method == "joint"]
    from engine.config_text import flatten
    flat = [flatten(c) for c in joints]
    differing = {k for k in flat[0] if len({json.dumps(f[k]) for f in flat}) > 1}
    assert differing == {"train.lr", "model.fusion"}
    assert {(f["train.lr"], f["model.fusion"]) for f in flat} == {(a, b) for a in (0.001, 0.0003)
                                                                   for b in ("concat", "gated")}
    # a locked key, a table value and a method-scoped key
    other = plan_sweep(preset, tmp_path / "runs", ["joint", "unimodal"], [0, 1], [],
                       grid=["train.batch_size=16,32", "unimodal.modality=a,b"], name="lock")
    assert len(other.tasks) == 2 * (2 + 2 * 2)
    assert [t.member.run_name for t in other.tasks[:3]] == [
        "lock-joint-batch_size=16-s0", "lock-unimodal-batch_size=16-modality=a-s0",
        "lock-unimodal-batch_size=16-modality=b-s0"]
    assert other.tasks[2].member.config["method"] == {"name": "unimodal", "modality": "b"}
    assert other.tasks[2].member.config_grid == {"train.batch_size": 16, "method.modality": "b"}


def test_bad_values_are_reported_once_with_the_grid_items(preset, tmp_path):
    with pytest.raises(PresetError) as err:
        plan_sweep(preset, tmp_path / "runs", ["joint", "unimodal"], [0, 1], [],
                   grid=["train.lrr=1,2", "model.fusion=concat,gatd", "unimodal.modality=a,c"])
    problems = sorted(err.value.problems)
    assert len(problems) == 3, problems
    assert problems[0].startswith("model.fusion: unknown fusion 'gatd'") and problems[0].endswith(
        "(from --grid model.fusion=gatd)")
    assert problems[1].startswith("train.lrr: unknown key (did you mean 'lr'?)")
    assert problems[1].endswith("(from every value of --grid train.lrr)")
    assert problems[2] == "unimodal.modality: 'c' is not one of the modalities (a, b) (from --grid unimodal.modality=c)"
    assert not (tmp_path / "runs").exists()


def test_cli_errors_exit_2_and_dry_run_lists_the_grid(preset, tmp_path):
    runs = tmp_path / "runs"
    base = ["sweep", preset, "--methods", "joint", "--seeds", "0", "--runs-dir", runs]
    for extra, text in [(["--grid", "train.lr="], "no value"),
                        (["--grid", "train.lr=1,2", "--set", "train.lr=3"], "also given to --set"),
                        (["--grid", "model.fusion=concat,gatd"], "unknown fusion 'gatd'")]:
        res = invoke(*base, *extra)
        assert res.exit_code == 2 and text in res.output, res.output
    res = invoke(*base, "--grid", "model.fusion=concat,sum", "-g", "train.lr=0.1", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "1 method x 1 seed x model.fusion (2) x train.lr (1) = 2 runs" in res.output
    assert "joint fusion=sum lr=0.1 s0" in res.output and "tiny-joint-fusion=sum-lr=0.1-s0" in res.output
    assert "--set 'model.fusion=\"sum\"' --set train.lr=0.1" in res.output
    assert not runs.exists()


# -- resuming, recording ------------------------------------------------------------------------
def test_rerun_skips_finished_grid_members_and_adds_new_values(preset, tmp_path, fake, monkeypatch):
    runs = tmp_path / "runs"
    args = (preset, runs, ["joint", "unimodal"], [0], ["unimodal.modality=a"])
    plan = plan_sweep(*args, grid=["train.lr=0.1,0.01"])
    write_configs(tmp_path, plan, monkeypatch)
    monkeypatch.setenv(behaviour_var("tiny-unimodal-lr=0.01-s0"), "fail")
    result = SweepRunner(plan, cli(fake), jobs=2, poll_s=0.02).run()
    assert sorted((o.task.member.run_name, o.state) for o in result.outcomes) == [
        ("tiny-joint-lr=0.01-s0", "finished"), ("tiny-joint-lr=0.1-s0", "finished"),
        ("tiny-unimodal-lr=0.01-s0", "failed"), ("tiny-unimodal-lr=0.1-s0", "finished")]
    record = json.loads((runs / "sweeps" / "tiny" / "sweep.json").read_text())
    assert record["grid"] == {"train.lr": [0.1, 0.01]} and record["group_by"] == ["method", "train.lr"]
    assert {m["run_name"]: (m["grid"], len(m["attempts"])) for m in record["members"]} == {
        f"tiny-{m}-lr={lr}-s0": ({"train.lr": lr}, 1) for m in ("joint", "unimodal") for lr in (0.1, 0.01)}

    again = plan_sweep(*args, grid=["train.lr=1e-1,1e-2"])          # spelled differently: the same members
    assert [t.action for t in again.tasks] == ["skip", "skip", "skip", "resume"]
    more = plan_sweep(*args, grid=["train.lr=0.1,0.01,0.001"])
    write_configs(tmp_path, more, monkeypatch)
    monkeypatch.delenv(behaviour_var("tiny-unimodal-lr=0.01-s0"))
    assert [t.action for t in more.tasks] == ["skip", "skip", "skip", "resume", "start", "start"]
    second = SweepRunner(more, cli(fake), jobs=2, poll_s=0.02).run()
    assert sorted(o.task.member.run_name for o in second.outcomes) == [
        "tiny-joint-lr=0.001-s0", "tiny-unimodal-lr=0.001-s0", "tiny-unimodal-lr=0.01-s0"]
    assert all(o.state == "finished" for o in second.outcomes)
    record = json.loads((runs / "sweeps" / "tiny" / "sweep.json").read_text())
    assert record["grid"] == {"train.lr": [0.1, 0.01, 0.001]} and len(record["members"]) == 6
    assert all(path is not None for _, path in sweep_members(runs, "tiny"))
    assert [t.action for t in plan_sweep(*args, grid=["train.lr=0.1,0.01,0.001"]).tasks] == ["skip"] * 6


def test_compare_groups_a_grid_sweep_by_its_keys_members_never_started_too(tmp_path):
    runs = tmp_path / "runs"
    home = runs / "sweeps" / "g"
    home.mkdir(parents=True)
    members = [{"method": m, "seed": s, "run_name": f"g-{m}-lr={lr}-s{s}", "grid": {"train.lr": lr}, "attempts": []}
               for s in (0, 1) for lr in (0.1, 0.01) for m in ("joint", "ogm_ge")]
    (home / "sweep.json").write_text(json.dumps({"schema": 1, "name": "g", "members": members,
                                                 "group_by": ["method", "train.lr"]}))
    records = load_sweep(runs, "g")
    comp = build_comparison(records, group_by=["method"])
    assert comp.group_by == ["method.name", "train.lr"]
    assert [(r.label, len(r.records)) for r in comp.rows] == [
        ("joint, 0.1", 2), ("ogm_ge, 0.1", 2), ("joint, 0.01", 2), ("ogm_ge, 0.01", 2)]
    assert [r.label for r in build_comparison(records, group_by=["method.name"]).rows] == ["joint", "ogm_ge"]
    res = invoke("compare", "--sweep", "g", "--runs-dir", runs, "--format", "json")
    assert res.exit_code == 0, res.output
    assert [r["label"] for r in json.loads(res.stdout)["rows"]] == ["joint, 0.1", "ogm_ge, 0.1", "joint, 0.01",
                                                                   "ogm_ge, 0.01"]


def test_baseline_joint_names_the_joint_row_of_a_grid_over_another_methods_option(tmp_path):
    """A grid over ogm_ge's alpha leaves joint one row, ``joint, -``: ``--baseline joint`` names it, and the
    sweep's closing hint offers it. A grid over a key of every member gives joint several rows: refused,
    every row quoted."""
    from types import SimpleNamespace

    from engine.sweep.grid import Axis
    from mmbal_cli.commands.sweep import _compare_hint
    runs = tmp_path / "runs"
    home = runs / "sweeps" / "g"
    home.mkdir(parents=True)
    members = [{"method": "ogm_ge", "seed": s, "run_name": f"g-ogm_ge-alpha={a}-s{s}", "grid": {"method.alpha": a},
                "attempts": []} for s in (0, 1) for a in (0.1, 0.5)]
    members += [{"method": "joint", "seed": s, "run_name": f"g-joint-s{s}", "grid": {}, "attempts": []} for s in (0, 1)]
    (home / "sweep.json").write_text(json.dumps({"schema": 1, "name": "g", "members": members,
                                                 "group_by": ["method", "method.alpha"]}))
    comp = build_comparison(load_sweep(runs, "g"), group_by=["method"], baseline="joint")
    assert [(r.label, r.baseline) for r in comp.rows] == [
        ("ogm_ge, 0.1", False), ("ogm_ge, 0.5", False), ("joint, -", True)] and comp.baseline == "joint, -"
    scoped = Axis("ogm_ge.alpha", (0.1, 0.5), ("0.1", "0.5"), "alpha", method="ogm_ge")
    plan = SimpleNamespace(runs_dir=None, name="g", methods=["ogm_ge", "joint"], grid=[scoped])
    assert _compare_hint(plan) == "mmbal compare --sweep g --baseline joint"
    assert _compare_hint(SimpleNamespace(**{**vars(plan), "grid": [Axis("train.lr", (0.1,), ("0.1",), "lr")]})) \
        == "mmbal compare --sweep g"
    members = [{**m, "grid": {"train.lr": 0.1 if m["seed"] else 0.01}} for m in members]
    (home / "sweep.json").write_text(json.dumps({"schema": 1, "name": "g", "members": members,
                                                 "group_by": ["method", "train.lr"]}))
    with pytest.raises(UsageError, match=r"no row is 'joint' .*rows: 'ogm_ge, 0.01', .*'joint, 0.1'"):
        build_comparison(load_sweep(runs, "g"), group_by=["method"], baseline="joint")


# -- a real grid sweep --------------------------------------------------------------------------
def test_real_grid_sweep_then_compare_groups_by_the_grid_key(preset, tmp_path):
    runs = tmp_path / "runs"
    args = ["sweep", preset, "--methods", "joint", "--seeds", "0", "--grid", "model.fusion=concat,sum",
            "--runs-dir", runs]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "sweep tiny: 2 of 2 runs finished" in res.output
    assert f"mmbal compare --sweep tiny --runs-dir {runs}\n" in res.output
    fusions = {}
    for d in runs.glob("2*"):
        name = json.loads((d / "run.json").read_text())["name"]
        fusions[name] = json.loads((d / "config.json").read_text())["model"]["fusion"]
    assert fusions == {"tiny-joint-fusion=concat-s0": "concat", "tiny-joint-fusion=sum-s0": "sum"}
    again = invoke(*args)
    assert again.exit_code == 0 and "2 finished, skipped" in again.output and len(list(runs.glob("2*"))) == 2
    out = json.loads(invoke("compare", "--sweep", "tiny", "--runs-dir", runs, "--format", "json").stdout)
    assert out["group_by"] == ["method.name", "model.fusion"]
    assert [(r["label"], r["n"]) for r in out["rows"]] == [("joint, concat", 1), ("joint, sum", 1)]
