"""Joint training on real data reaches the reference of the best single modality (shared/data/README.md).

Logistic regression on the best single modality: uci_mfeat fac 0.98, avdigits audio 0.977.
These run on MMBAL_TEST_DEVICE (cpu by default).
"""

import pytest

from conftest import ROOT, needs_shared_data
from engine.run import start_run


@needs_shared_data
@pytest.mark.parametrize("preset, reference", [("uci_mfeat.toml", 0.98), ("avdigits.toml", 0.977)])
def test_joint_reaches_best_single_modality(preset, reference, tmp_path, test_device):
    result = start_run(ROOT / "presets" / preset, runs_dir=tmp_path, device=test_device)
    test = result.summary["test"]
    assert test["test/acc/fused"] >= reference, test
    assert test["test/f1/fused"] >= reference - 0.01, test
