"""``mmbal compare`` on fixture run directories: numbers of every format computed by hand.

Fixture runs (tests/fixtures/compare/runs), all with modalities a and b:

=========  =======  ====  ==========================================================
run        method   seed  test acc fused / f1 fused / acc a / acc b, s/epoch, MiB
=========  =======  ====  ==========================================================
j0000000   joint    0     .70 .68 .65 .40, 2.0 s, 100 (resumed once: a superseded val row)
j1111111   joint    1     .72 .70 .66 .42, 2.2 s, 100
j2222222   joint    2     .74 .71 .67 .41, 2.4 s, 100
o0000000   ogm_ge   0     .75 .74 .60 .55, 3.0 s, 120; imbalance .10, shapley a .40 b .30
o1111111   ogm_ge   1     .76 .73 .62 .58, 3.1 s, 122; imbalance .12, shapley a .41 b .31
o2222222   ogm_ge   2     .80 .78 .61 .57, 3.2 s, 124; imbalance .08, shapley a .39 b .35
r3333333   joint    3     running (the test gives it a live heartbeat)
f3333333   ogm_ge   3     failed: "RuntimeError: CUDA out of memory"
d4444444   ogm_ge   4     damaged: summary.json cut off mid-file
=========  =======  ====  ==========================================================
"""

import csv
import io
import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.analysis import stats
from engine.analysis.build import build_comparison
from engine.analysis.load import load_run, load_runs
from engine.errors import UsageError
from mmbal_cli.app import app

FIXTURES = Path(__file__).parent / "fixtures" / "compare" / "runs"
ALL = ["j0", "j1", "j2", "o0", "o1", "o2", "r3", "f3", "d4"]
runner = CliRunner()


def sd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def p_df2(diffs):
    """Two-sided paired t-test p-value for 3 pairs: Student t with 2 df has CDF 1/2 + t / (2 sqrt(2 + t^2))."""
    t = (sum(diffs) / 3) / (sd(diffs) / math.sqrt(3))
    return 1 - abs(t) / math.sqrt(2 + t * t)


JOINT_ACC, OGM_ACC = [0.70, 0.72, 0.74], [0.75, 0.76, 0.80]
JOINT_F1, OGM_F1 = [0.68, 0.70, 0.71], [0.74, 0.73, 0.78]
JOINT_B, OGM_B = [0.40, 0.42, 0.41], [0.55, 0.58, 0.57]
P_ACC = p_df2([o - j for o, j in zip(OGM_ACC, JOINT_ACC)])   # 0.0131 -> *
P_F1 = p_df2([o - j for o, j in zip(OGM_F1, JOINT_F1)])      # 0.0472 -> *
P_B = p_df2([o - j for o, j in zip(OGM_B, JOINT_B)])         # 0.00045 -> ***


@pytest.fixture()
def runs(tmp_path):
    """A copy of the fixture runs with r3333333 made live (fresh heartbeat from this process)."""
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    status = root / "20260104-100000_fx-joint-s3_r3333333" / "status.json"
    data = json.loads(status.read_text())
    data.update(heartbeat=time.time(), pid=os.getpid(), host=socket.gethostname())
    status.write_text(json.dumps(data))
    return root


def invoke(runs_dir, *args):
    return runner.invoke(app, ["compare", "--runs-dir", str(runs_dir), *map(str, args)])


# -- statistics ---------------------------------------------------------------------------------
def test_t_distribution_matches_closed_forms_and_tables():
    for t in (0.3, 1.0, 2.5, 12.706):
        assert stats.t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)  # Cauchy
        assert stats.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert stats.t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-6)     # t table, 0.975 quantile, df 4
    assert stats.t_two_sided_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6)    # df 10
    assert stats.t_two_sided_p(3.169273, 10) == pytest.approx(0.01, abs=1e-6)
    assert stats.t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)   # normal limit
    assert stats.t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert stats.betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)
    assert stats.betainc(2.5, 0.5, 0.7) == pytest.approx(1 - stats.betainc(0.5, 2.5, 0.3), abs=1e-12)


def test_paired_t_test_edge_cases_and_marks():
    res = stats.paired_t_test(OGM_ACC, JOINT_ACC)
    assert res.n == 3 and res.mean_diff == pytest.approx(0.05)
    assert res.t == pytest.approx(0.05 / (0.01 / math.sqrt(3)))
    assert res.p == pytest.approx(P_ACC, abs=1e-12) and stats.significance_mark(res.p) == "*"
    assert stats.paired_t_test([1.0, 2.0], [0.5, 1.5]).p == 0.0     # constant nonzero difference
    assert stats.paired_t_test([1.0, 2.0], [1.0, 2.0]).p == 1.0     # no difference at all
    assert stats.paired_t_test([1.0], [0.0]).p is None               # one pair: no test
    assert [stats.significance_mark(p) for p in (0.0004, 0.005, 0.03, 0.2, None)] == ["***", "**", "*", "", ""]


# -- loading ------------------------------------------------------------------------------------
def test_load_run_states_and_reasons(runs):
    records = {r.run_id: r for r in (load_run(p) for p in sorted(runs.iterdir()))}
    assert records["j0000000"].state == "finished" and records["j0000000"].seed == 0
    assert records["r3333333"].state == "running"
    assert records["f3333333"].state == "failed" and records["f3333333"].reason == "RuntimeError: CUDA out of memory"
    damaged = records["d4444444"]
    assert damaged.state == "damaged" and damaged.reason.startswith("summary.json: not valid JSON")
    assert records["o1111111"].value("imbalance") == 0.12 and records["o1111111"].value("shapley/b") == 0.31
    assert records["j1111111"].value("imbalance") is None
    assert records["r3333333"].value("test/acc/fused") is None      # unfinished runs give no numbers


def test_stale_running_run_is_reported_as_stale():
    record = load_run(FIXTURES / "20260104-100000_fx-joint-s3_r3333333")
    assert record.state == "stale" and "fixture-host" in record.reason


# -- grouped comparison -------------------------------------------------------------------------
def grouped(runs, **kw):
    return build_comparison(load_runs(runs, ALL), group_by=["method"], **kw)


def test_groups_mean_std_runs_and_excluded(runs):
    comp = grouped(runs)
    joint, ogm = comp.rows
    assert [joint.label, ogm.label] == ["joint", "ogm_ge"]
    assert joint.runs_text() == "3/4" and ogm.runs_text() == "3/5" and joint.seeds == [0, 1, 2]
    acc = joint.cells["test/acc/fused"]
    assert acc.mean == pytest.approx(0.72) and acc.std == pytest.approx(0.02) and acc.n == 3
    f1 = ogm.cells["test/f1/fused"]
    assert f1.mean == pytest.approx(sum(OGM_F1) / 3) and f1.std == pytest.approx(sd(OGM_F1))
    assert ogm.cells["peak_memory_bytes"].mean == pytest.approx(122 * 2**20)
    assert ogm.cells["imbalance"].mean == pytest.approx(0.10) and joint.cells["imbalance"].mean is None
    assert [c.key for c in comp.columns] == ["test/acc/fused", "test/f1/fused", "test/acc/a", "test/acc/b",
                                             "imbalance", "shapley/a", "shapley/b", "time_per_epoch_s",
                                             "peak_memory_bytes"]
    assert comp.config_keys == []     # seed is averaged over, method is the label, alpha comes with ogm_ge
    assert {(r.run_id, r.state) for r in comp.excluded} == {("r3333333", "running"), ("f3333333", "failed"),
                                                           ("d4444444", "damaged")}


def test_best_marks_follow_each_column_direction(runs):
    joint, ogm = grouped(runs).rows
    assert ogm.cells["test/acc/fused"].best and not joint.cells["test/acc/fused"].best
    assert joint.cells["test/acc/a"].best                       # joint's modality a is better
    assert joint.cells["time_per_epoch_s"].best and joint.cells["peak_memory_bytes"].best   # lower is better
    assert not ogm.cells["shapley/a"].best                      # no direction for Shapley values


def test_baseline_difference_and_paired_test(runs):
    comp = grouped(runs, baseline="joint")
    joint, ogm = comp.rows
    assert joint.baseline and joint.cells["test/acc/fused"].delta is None
    acc = ogm.cells["test/acc/fused"]
    assert acc.delta == pytest.approx(0.05) and acc.pairs == 3 and acc.p == pytest.approx(P_ACC, abs=1e-12)
    assert ogm.cells["test/f1/fused"].p == pytest.approx(P_F1, abs=1e-12) and ogm.cells["test/f1/fused"].mark == "*"
    assert ogm.cells["test/acc/b"].mark == "***" and ogm.cells["test/acc/a"].delta == pytest.approx(-0.05)
    assert ogm.cells["time_per_epoch_s"].delta is None          # costs get no difference
    assert ogm.cells["imbalance"].delta is None                 # the baseline has no value


def test_baseline_alone_groups_by_method_and_unknown_baseline_is_refused(runs):
    records = load_runs(runs, ALL)
    assert build_comparison(records, baseline="ogm_ge").group_by == ["method.name"]
    with pytest.raises(UsageError, match="did you mean 'joint'"):
        build_comparison(records, baseline="jiont")
    with pytest.raises(UsageError, match="did you mean 'train.lr'"):
        build_comparison(records, group_by=["train.lrr"])


# -- formats ------------------------------------------------------------------------------------
def test_json_format_numbers(runs):
    res = invoke(runs, *ALL, "--baseline", "joint", "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["group_by"] == ["method.name"] and out["baseline"] == "joint"
    joint, ogm = out["rows"]
    assert (joint["n"], joint["runs"], ogm["n"], ogm["runs"]) == (3, 4, 3, 5)
    m = ogm["metrics"]["test/acc/fused"]
    assert m["mean"] == pytest.approx(0.77) and m["std"] == pytest.approx(sd(OGM_ACC))
    assert m["values"] == [0.75, 0.76, 0.80] and m["delta"] == pytest.approx(0.05)
    assert m["p"] == pytest.approx(P_ACC, abs=1e-12) and m["mark"] == "*" and m["best"] is True
    assert joint["metrics"]["test/acc/b"]["std"] == pytest.approx(0.01)
    assert joint["metrics"]["imbalance"]["mean"] is None
    excluded = {e["run_id"]: e for e in out["excluded"]}
    assert excluded["f3333333"]["reason"] == "RuntimeError: CUDA out of memory"
    assert excluded["d4444444"]["state"] == "damaged" and excluded["r3333333"]["state"] == "running"


def test_csv_format_numbers(runs):
    res = invoke(runs, *ALL, "--baseline", "joint", "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["method"] for r in rows] == ["joint", "ogm_ge"]
    joint, ogm = rows
    assert (joint["runs"], joint["n"], joint["seeds"]) == ("4", "3", "0 1 2")
    assert float(joint["test/acc/fused"]) == pytest.approx(0.72)
    assert float(joint["test/acc/fused:std"]) == pytest.approx(0.02)
    assert joint["test/acc/fused:delta"] == "" and joint["imbalance"] == ""
    assert float(ogm["test/f1/fused:delta"]) == pytest.approx(sum(OGM_F1) / 3 - sum(JOINT_F1) / 3)
    assert float(ogm["test/acc/b:p"]) == pytest.approx(P_B, abs=1e-12)
    assert float(ogm["time_per_epoch_s"]) == pytest.approx(3.1) and "time_per_epoch_s:delta" not in ogm
    assert "not included: fx-ogm_ge-s3 f3333333 failed" in res.stderr


def test_markdown_format_is_a_pasteable_table(runs):
    res = invoke(runs, *ALL, "--baseline", "joint", "--format", "md", "--metrics", "test/acc/fused,test/acc/b")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "| method | runs | seeds | acc | acc:b |"
    assert lines[1] == "|:--|:--|:--|--:|--:|"
    assert lines[2] == "| joint (baseline) | 3/4 | 0,1,2 | 0.7200 ± 0.0200 | 0.4100 ± 0.0100 |"
    assert lines[3] == (f"| ogm_ge | 3/5 | 0,1,2 | **0.7700 ± {sd(OGM_ACC):.4f} (+0.0500*, p={P_ACC:.3f})** "
                        f"| **0.5667 ± {sd(OGM_B):.4f} (+0.1567***, p=<0.001)** |")
    assert lines[4] == ""
    notes = "\n".join(lines[5:])
    assert "paired t-test" in notes and "fx-ogm_ge-s4 d4444444 damaged: summary.json" in notes


def test_table_format_per_run_shows_states_and_differing_config(runs):
    res = invoke(runs, *ALL)
    assert res.exit_code == 0, res.output
    out = res.stdout
    header = next(line for line in out.splitlines() if "run" in line and "state" in line)
    for col in ("seed", "method.name", "acc", "f1", "acc:a", "acc:b", "imbalance", "s/epoch"):
        assert col in header
    assert "train.lr" not in out and "method.alpha" not in out   # equal everywhere / comes with ogm_ge
    row = next(line for line in out.splitlines() if "fx-ogm_ge-s1" in line)
    for text in ("o1111111", "finished", "0.7600", "0.7300", "0.6200", "0.5800", "0.1200", "3.10s", "122 MiB"):
        assert text in row
    assert "CUDA out" in out and "running at epoch 2" in out and "damaged: summary.json" in out
    assert invoke(runs, "j0", "j1", "--all-config").stdout.count("train.lr") == 1   # the transposed config table


def test_table_format_grouped_numbers(runs):
    res = invoke(runs, *ALL, "--baseline", "joint")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    joint = next(i for i, line in enumerate(lines) if line.startswith("│ joint"))
    ogm = next(i for i, line in enumerate(lines) if line.startswith("│ ogm_ge"))
    for text in ("3/4", "0,1,2", "0.7200 ± 0.0200", "0.6967 ± 0.0153", "0.4100 ± 0.0100", "2.20s ± 0.20s",
                 "100 ± 0 MiB"):
        assert text in lines[joint]
    assert "(baseline)" in " ".join(lines[joint:ogm])       # the label may wrap
    for text in ("3/5", "0.7700 ± 0.0265", "0.7500 ± 0.0265", "0.6100 ± 0.0100", "0.5667 ± 0.0153",
                 "0.1000 ± 0.0200", "3.10s ± 0.10s", "122 ± 2 MiB"):
        assert text in lines[ogm]
    for text in ("(+0.0500*)", "(+0.0533*)", "(-0.0500*)", "(+0.1567***)"):
        assert text in lines[ogm + 1]
    assert "not included: fx-ogm_ge-s3 f3333333 failed at epoch 1: RuntimeError: CUDA out of memory" in res.stdout


def test_sort_and_metric_patterns(runs):
    records = load_runs(runs, ["j0", "j1", "o0", "o2"])
    comp = build_comparison(records, sort="acc", metrics=["test/acc/*"])
    assert [r.label for r in comp.rows] == ["fx-ogm_ge-s2", "fx-ogm_ge-s0", "fx-joint-s1", "fx-joint-s0"]
    assert [c.key for c in comp.columns] == ["test/acc/fused", "test/acc/a", "test/acc/b"]
    by_time = build_comparison(records, sort="time_per_epoch_s")
    assert [r.label for r in by_time.rows][0] == "fx-joint-s0"     # fastest first
    with pytest.raises(UsageError, match="--sort"):
        build_comparison(records, sort="acuracy")


def test_sweep_record_lists_members_never_started(runs):
    home = runs / "sweeps" / "fx"
    home.mkdir(parents=True)
    members = [{"method": m, "seed": s, "run_name": f"fx-{m}-s{s}", "attempts": []}
               for s in (0, 1, 2, 5) for m in ("joint", "ogm_ge")]
    (home / "sweep.json").write_text(json.dumps({"schema": 1, "name": "fx", "members": members}))
    res = invoke(runs, "--sweep", "fx", "--format", "json", "--baseline", "joint")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [(r["label"], r["n"], r["runs"]) for r in out["rows"]] == [("joint", 3, 4), ("ogm_ge", 3, 4)]
    assert {(e["name"], e["state"]) for e in out["excluded"]} == {("fx-joint-s5", "not started"),
                                                                ("fx-ogm_ge-s5", "not started")}
    missing = invoke(runs, "--sweep", "fxx")
    assert missing.exit_code == 3 and "did you mean 'fx'" in missing.output


def test_cli_errors_exit_codes(runs):
    assert invoke(runs).exit_code == 2                              # nothing to compare
    res = invoke(runs, "j0", "nope")
    assert res.exit_code == 3 and "no run 'nope'" in res.output
    assert invoke(runs, "j0", "--format", "xml").exit_code == 2
    assert invoke(runs, "j0", "--plot", "out.gif").exit_code == 2


# -- plot ---------------------------------------------------------------------------------------
def test_curve_and_bar_data_average_over_seeds(runs):
    from engine.analysis.plot import bar_data, curve_data
    comp = grouped(runs)
    curves = curve_data(comp)
    joint = curves["fused"]["joint"]
    assert joint.epochs == [1.0, 2.0, 3.0]
    # seed 0 was resumed after epoch 2: its superseded epoch-3 row (0.99) is dropped for 0.70
    assert joint.mean == pytest.approx([0.51, 0.61, 0.71]) and joint.std == pytest.approx([0.01] * 3)
    assert curves["a"]["ogm_ge"].mean == pytest.approx([0.40, 0.45, 0.50]) and curves["a"]["ogm_ge"].n == [3, 3, 3]
    bars = bar_data(comp)
    assert bars["ogm_ge"]["b"][0] == pytest.approx(sum(OGM_B) / 3)
    assert bars["joint"]["fused"] == pytest.approx((0.72, 0.02))


def test_plot_writes_png_and_svg(runs, tmp_path):
    pytest.importorskip("matplotlib")
    for name in ("cmp.png", "cmp.svg"):
        res = invoke(runs, *ALL, "--plot", tmp_path / name, "--format", "csv")
        assert res.exit_code == 0, res.output
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "cmp.svg").read_text()
    assert "val/acc/fused" in svg and "ogm_ge" in svg


def test_plot_of_a_many_method_sweep_tells_its_rows_apart_and_makes_room_for_them():
    """30 rows (a sweep of every method): no two rows share colour and line style (matplotlib's 10 default
    colours repeat from the 11th), and the figure widens with the rows' bars; up to 10 rows keep C0..C9."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from engine.analysis.plot import figure_size, row_style
    styles = [(to_hex(row_style(j, 30)["color"]), row_style(j, 30)["linestyle"]) for j in range(30)]
    assert len(set(styles)) == 30 and len({c for c, _ in styles[:20]}) == 20
    assert [row_style(j, 3)["color"] for j in range(3)] == ["C0", "C1", "C2"]
    assert figure_size(3, 3) == (12.0, 7.5) and figure_size(3, 30) == pytest.approx((12.3, 8.5))   # 90 bars, slanted
    assert figure_size(2, 30)[0] == pytest.approx(10.5)                                # 30 labels of 0.3 inch


def test_plot_without_matplotlib_says_how_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib -> ImportError
    res = invoke(runs, "j0", "--plot", tmp_path / "x.png")
    assert res.exit_code == 2 and 'pip install "mmbal[plot]"' in res.output
    assert not (tmp_path / "x.png").exists()


def test_method_options_show_only_when_they_vary_within_a_method(runs):
    config = runs / "20260102-110000_fx-ogm_ge-s1_o1111111" / "config.json"
    data = json.loads(config.read_text())
    data["method"]["alpha"] = 0.5
    config.write_text(json.dumps(data))
    records = load_runs(runs, ["j0", "o0", "o1"])
    per_run = build_comparison(records)
    assert per_run.config_keys == ["seed", "method.name", "method.alpha"]
    assert [r.config.get("method.alpha", "-") for r in per_run.rows] == ["-", 0.8, 0.5]
    by_method = build_comparison(records, group_by=["method"])
    assert by_method.config_keys == ["method.alpha"] and by_method.rows[1].config["method.alpha"] == "mixed"
    by_alpha = build_comparison(records, group_by=["method", "method.alpha"])
    assert [r.label for r in by_alpha.rows] == ["joint, -", "ogm_ge, 0.8", "ogm_ge, 0.5"]


def test_markdown_bolds_no_tie_and_warns_of_two_seeds(runs):
    res = invoke(runs, "j0", "j1", "o0", "o1", "--baseline", "joint", "--format", "md",
                 "--metrics", "test/acc/fused,peak_memory_bytes", "--group-by", "method")
    lines = res.stdout.splitlines()
    assert "1 degree of freedom" in res.stdout
    assert lines[2].startswith("| joint (baseline)") and "**" in lines[3]
    assert "**100 ± 0 MiB**" in lines[2]   # less memory is better


def test_ties_at_the_shown_precision_are_not_best(runs):
    comp = build_comparison(load_runs(runs, ["j0", "j1"]), metrics=["peak_memory_bytes"])
    assert not any(row.cells["peak_memory_bytes"].best for row in comp.rows)   # 100 MiB both


def test_latex_format_is_a_booktabs_tabular(runs):
    res = invoke(runs, *ALL, "--baseline", "joint", "--format", "latex", "--metrics", "test/acc/fused")
    assert res.exit_code == 0, res.output
    body = [line for line in res.stdout.splitlines() if not line.startswith("%")]
    assert body[0] == r"\begin{tabular}{lllr}" and body[1] == r"\toprule"
    assert body[2] == r"method & runs & seeds & acc \\"
    assert body[4] == r"joint (baseline) & 3/4 & 0,1,2 & 0.7200 $\pm$ 0.0200 \\"
    assert body[5] == (rf"ogm\_ge & 3/5 & 0,1,2 & \textbf{{0.7700 $\pm$ {sd(OGM_ACC):.4f} (+0.0500*, "
                       rf"p={P_ACC:.3f})}} \\")
    assert body[-1] == r"\end{tabular}"


@pytest.mark.parametrize("width, shown", [
    (200, None),
    (80, ["method", "seeds", "acc", "acc:b"]),
    (100, ["method", "seeds", "acc", "f1", "acc:b", "imbalance"]),
])
def test_a_narrow_terminal_keeps_the_telling_columns(runs, width, shown):
    from engine.analysis.render import display_grid, fit_columns, table_width
    comp = build_comparison(load_runs(runs, ALL[:6]), group_by=["method"], baseline="joint")
    headers, grid = display_grid(comp, multiline=True)
    kept = fit_columns(comp, headers, grid, width)
    assert [headers[i] for i in kept] == (shown or headers)
    assert "acc:b" in [headers[i] for i in kept]   # the weakest modality (b) stays


def test_columns_option_chooses_and_checks_columns(runs):
    res = invoke(runs, *ALL[:6], "--baseline", "joint", "--columns", "seeds,acc:b")
    header = next(line for line in res.stdout.splitlines() if "method" in line)
    assert "acc:b" in header and "seeds" in header and "f1" not in header and "acc:a" not in header
    bad = invoke(runs, *ALL[:6], "--columns", "acc,nope")
    assert bad.exit_code == 2 and "'nope'" in bad.output and "acc:b" in bad.output


def test_a_table_wider_than_the_output_is_fitted_also_when_piped(runs, monkeypatch):
    """Piped (no terminal), the table is fitted to the output's width as on a terminal, the method kept
    among the config columns, and the note names the most important left-out columns first."""
    from rich.console import Console
    import mmbal_cli.commands.compare as cmd
    monkeypatch.setattr(cmd, "out_console", Console(width=90, highlight=False))
    out = invoke(runs, *ALL).stdout
    assert max(len(line) for line in out.splitlines()) <= 90
    header = next(line for line in out.splitlines() if "run" in line and "acc" in line)
    assert "method.name" in header and "acc:b" in header
    note = next(line for line in out.replace("\n", " ").split("test metrics")[1:])
    assert "left out to fit 90 columns:" in note
    many = cmd.left_out_note([f"c{i}" for i in range(20)], 90)
    assert many.startswith("left out to fit 90 columns: c0, c1,") and "c11 and 8 more;" in many and "c12" not in many
