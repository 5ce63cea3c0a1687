"""Shared test settings: the device tests train on (``MMBAL_TEST_DEVICE``, default cpu) and data paths."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_DEVICE = os.environ.get("MMBAL_TEST_DEVICE", "cpu")


@pytest.fixture()
def test_device() -> str:
    """The device named by MMBAL_TEST_DEVICE (cpu unless set, e.g. to cuda on a GPU machine)."""
    return TEST_DEVICE


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(),
                                       reason=f"{SHARED_DATA} is not present on this machine")
