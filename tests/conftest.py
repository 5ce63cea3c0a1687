"""Shared test settings: the device tests train on (``MMBAL_TEST_DEVICE``, default cpu) and data paths."""

import os
from pathlib import Path

import pytest
import torch

# The CLI's tables are as wide as $COLUMNS when printed to a pipe (else 200): the tests' expectations must
# not depend on the terminal they are started from.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_DEVICE = os.environ.get("MMBAL_TEST_DEVICE", "cpu")


@pytest.fixture()
def test_device() -> str:
    """The device named by MMBAL_TEST_DEVICE (cpu unless set, e.g. to cuda on a GPU machine)."""
    return TEST_DEVICE


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(),
                                       reason=f"{SHARED_DATA} is not present on this machine")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests (two threads only add scheduling overhead
    on a 2-core machine); the previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def compile_backend(monkeypatch, one_thread):
    """torch.compile tests: the ``aot_eager`` backend (the same capture, no C++ code generation) unless
    ``MMBAL_TEST_COMPILE_INDUCTOR=1``, and a clean Dynamo cache per test (its per-function recompile
    limit would otherwise be shared between tests)."""
    import engine.train.compile as compile_mod
    if os.environ.get("MMBAL_TEST_COMPILE_INDUCTOR") != "1":
        monkeypatch.setattr(compile_mod, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


SLOW = os.environ.get("MMBAL_SLOW", "") not in ("", "0")


# The modules whose tests are each many short runs (every method through resume, kill, processes), which
# take most of the suite's time as the methods grow: marked ``long``, left out of a plain ``pytest`` and
# run by ``pytest --full`` (the README's test command, what .ci/run runs).
LONG_MODULES = {"test_method_registry", "test_kill_resume", "test_ddp", "test_long_runs", "test_host_sync",
                "test_disk_faults", "test_tui_live", "test_tui_launch", "test_training_real_data"}


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="mmbal: also run the long tests (marked 'long'), as CI does")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of minutes (real data, every method x fusion); skipped unless "
                                       "MMBAL_SLOW=1")
    config.addinivalue_line("markers", "long: part of the full suite (pytest --full, CI), not of a plain pytest")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with MMBAL_SLOW=1; tests of :data:`LONG_MODULES` (marked ``long``)
    only with ``--full`` (a plain ``pytest`` is the quick subset)."""
    full = config.getoption("--full")
    named = {Path(arg.split("::")[0]).resolve() for arg in config.args}   # a file named on the command line runs
    kept, left = [], []
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in LONG_MODULES:
            item.add_marker(pytest.mark.long)
        (kept if full or "long" not in item.keywords or Path(item.path).resolve() in named else left).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept
        config._mmbal_long_left = len(left)
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: set MMBAL_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left = getattr(config, "_mmbal_long_left", 0)
    if left:
        terminalreporter.write_line(f"mmbal: {left} long tests left out (the quick subset); `pytest --full` runs "
                                    f"the whole suite, as CI does")
