"""Shared test settings: the device tests train on (``MMBAL_TEST_DEVICE``, default cpu) and data paths."""

import os
from pathlib import Path

import pytest
import torch

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


SLOW = os.environ.get("MMBAL_SLOW", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of minutes (real data, every method x fusion); skipped unless "
                                       "MMBAL_SLOW=1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with MMBAL_SLOW=1 (the default suite must stay short on 2 cores)."""
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: set MMBAL_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
