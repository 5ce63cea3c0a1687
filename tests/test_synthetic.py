"""The synthetic generator: determinism, shapes, balance, and that unique, noise and synergy
settings put the label information where they say (checked with small probes)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from engine.data import SynthConfig, generate
from engine.data.synthetic import synergy_bits
from engine.schema import build


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def ridge_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray, n_classes: int, l2: float = 1e-2) -> float:
    """Test accuracy of a least-squares one-hot classifier (with bias) fitted on the train rows."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    tr, te = torch.as_tensor(split == 0), torch.as_tensor(split == 2)
    a, b = _standardise(xt[tr], xt[te])
    a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    b = torch.cat([b, torch.ones(len(b), 1, dtype=b.dtype)], 1)
    targets = torch.nn.functional.one_hot(torch.as_tensor(y[split == 0]), n_classes).to(a.dtype)
    w = torch.linalg.solve(a.T @ a + l2 * len(a) * torch.eye(a.shape[1], dtype=a.dtype), a.T @ targets)
    return float(((b @ w).argmax(1).numpy() == y[split == 2]).mean())


def knn_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray, k: int = 25) -> float:
    """Test accuracy of a k-nearest-neighbour majority vote (a nonlinear probe)."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    a, b = _standardise(xt[torch.as_tensor(split == 0)], xt[torch.as_tensor(split == 2)])
    nearest = torch.cdist(b, a).topk(k, largest=False).indices
    votes = torch.as_tensor(y[split == 0])[nearest]
    pred = torch.mode(votes, dim=1).values.numpy()
    return float((pred == y[split == 2]).mean())


def quadratic(*blocks: np.ndarray) -> np.ndarray:
    """Linear terms plus every pairwise product of the features of ``blocks`` (together)."""
    x = np.concatenate(blocks, axis=1)
    return np.concatenate([x, (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)], axis=1)


def test_deterministic_given_seed_and_different_across_seeds():
    cfg = SynthConfig(n_samples=300)
    a, b = generate(cfg), generate(cfg)
    c = generate(SynthConfig(n_samples=300, seed=1))
    for m in ("a", "b"):
        np.testing.assert_array_equal(a.features[m], b.features[m])
        assert not np.allclose(a.features[m], c.features[m])
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.split, b.split)


def test_shapes_names_metadata_and_split():
    cfg = SynthConfig(n_samples=1000, n_classes=5, modalities=["x", "y", "z"], dims=[7, 3, 12],
                      unique=[1.0, 0.5, 0.0], noise=[0.1, 0.5, 1.0], val_fraction=0.2, test_fraction=0.1)
    raw = generate(cfg)
    assert raw.name == "synthetic" and raw.classes == ["0", "1", "2", "3", "4"]
    assert list(raw.features) == ["x", "y", "z"]
    assert {m: raw.features[m].shape for m in raw.features} == {"x": (1000, 7), "y": (1000, 3), "z": (1000, 12)}
    assert all(f.dtype == np.float32 for f in raw.features.values())
    assert all(p.all() and p.shape == (1000,) for p in raw.present.values())
    assert {m: (i.shape, i.kind) for m, i in raw.modalities.items()} == {"x": ((7,), "vector"), "y": ((3,), "vector"),
                                                                         "z": ((12,), "vector")}
    assert raw.labels.dtype == np.int64 and raw.split.dtype == np.int8
    assert tuple(np.bincount(raw.split)) == (700, 200, 100)
    assert raw.metadata["generator"]["dims"] == [7, 3, 12]


@pytest.mark.parametrize("n_classes", [2, 4, 10])
def test_classes_are_balanced(n_classes):
    raw = generate(SynthConfig(n_samples=3000, n_classes=n_classes))
    freq = np.bincount(raw.labels, minlength=n_classes) / 3000
    assert np.abs(freq - 1 / n_classes).max() < 0.02


def test_informative_modality_above_chance_and_pure_noise_modality_at_chance():
    cfg = SynthConfig(n_samples=4000, n_classes=4, unique=[1.0, 0.0], noise=[0.5, 0.5], shared=0.0, synergy=0.0,
                      test_fraction=0.25)
    raw = generate(cfg)
    informative = ridge_probe(raw.features["a"], raw.labels, raw.split, 4)
    noise = ridge_probe(raw.features["b"], raw.labels, raw.split, 4)
    assert informative > 0.45
    assert abs(noise - 0.25) < 0.06
    assert abs(knn_probe(raw.features["b"], raw.labels, raw.split) - 0.25) < 0.06


def test_shared_information_is_seen_by_every_modality():
    raw = generate(SynthConfig(n_samples=4000, unique=[0.0, 0.0], noise=[0.3, 0.3], shared=1.0, test_fraction=0.25))
    assert ridge_probe(raw.features["a"], raw.labels, raw.split, 4) > 0.45
    assert ridge_probe(raw.features["b"], raw.labels, raw.split, 4) > 0.45


def test_more_noise_means_less_information():
    raw = generate(SynthConfig(n_samples=4000, unique=[1.0, 1.0], noise=[0.2, 3.0], shared=0.0, test_fraction=0.25))
    clean = ridge_probe(raw.features["a"], raw.labels, raw.split, 4)
    noisy = ridge_probe(raw.features["b"], raw.labels, raw.split, 4)
    assert clean > noisy + 0.1


def _synergy_only(n_classes: int, latent_dim: int) -> SynthConfig:
    return SynthConfig(n_samples=4000, n_classes=n_classes, dims=[6, 6], unique=[0.0, 0.0], noise=[0.2, 0.2],
                       shared=0.0, synergy=1.0, latent_dim=latent_dim, test_fraction=0.25)


def test_synergy_is_invisible_to_each_modality_but_learnable_from_both():
    cfg = _synergy_only(n_classes=2, latent_dim=1)   # y = XOR of sign(u_a[0]) and sign(u_b[0]), plus label noise
    assert synergy_bits(cfg) == 1
    raw = generate(cfg)
    a, b, y, split = raw.features["a"], raw.features["b"], raw.labels, raw.split
    for single in (a, b):
        assert abs(ridge_probe(single, y, split, 2) - 0.5) < 0.06
        assert abs(ridge_probe(quadratic(single), y, split, 2) - 0.5) < 0.06
        assert abs(knn_probe(single, y, split) - 0.5) < 0.06
    assert abs(ridge_probe(np.concatenate([a, b], 1), y, split, 2) - 0.5) < 0.06  # XOR is not linear
    assert ridge_probe(quadratic(a, b), y, split, 2) > 0.75
    assert knn_probe(np.concatenate([a, b], 1), y, split) > 0.7


def test_synergy_with_four_classes_uses_two_sign_products():
    cfg = _synergy_only(n_classes=4, latent_dim=2)
    assert synergy_bits(cfg) == 2
    raw = generate(cfg)
    a, b, y, split = raw.features["a"], raw.features["b"], raw.labels, raw.split
    for single in (a, b):
        assert abs(ridge_probe(quadratic(single), y, split, 4) - 0.25) < 0.06
        assert abs(knn_probe(single, y, split) - 0.25) < 0.06
    assert ridge_probe(quadratic(a, b), y, split, 4) > 0.4


def test_synergy_needs_all_modalities_not_just_a_pair():
    cfg = SynthConfig(n_samples=4000, n_classes=2, modalities=["a", "b", "c"], dims=[5, 5, 5], unique=[0.0] * 3,
                      noise=[0.2] * 3, shared=0.0, synergy=1.0, latent_dim=1, test_fraction=0.25)
    raw = generate(cfg)
    pair = quadratic(raw.features["a"], raw.features["b"])
    assert abs(ridge_probe(pair, raw.labels, raw.split, 2) - 0.5) < 0.06
    assert abs(knn_probe(np.concatenate([raw.features["a"], raw.features["b"]], 1), raw.labels, raw.split) - 0.5) < 0.06


@pytest.mark.parametrize("raw, message", [
    ({"modalities": ["a"], "dims": [3], "unique": [1.0], "noise": [1.0]}, "at least two"),
    ({"modalities": ["a", "a"]}, "duplicate"),
    ({"dims": [3, 4, 5]}, "dims has 3 value(s)"),
    ({"unique": [1.0]}, "unique has 1 value(s)"),
    ({"noise": [1.0, 1.0, 1.0]}, "noise has 3 value(s)"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "below 1"),
])
def test_inconsistent_config_raises_value_error_and_is_a_preset_problem(raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SynthConfig(**raw)
    problems: list[str] = []
    assert build(SynthConfig, raw, "data.synthetic", problems) is None
    assert len(problems) == 1 and message in problems[0], problems


@pytest.mark.parametrize("raw, message", [
    ({"n_samples": 10}, "n_samples: must be >= 30"),
    ({"dims": [0, 3]}, "dims[0]: must be >= 1"),
    ({"n_classes": 1}, "n_classes: must be >= 2"),
    ({"noise": [1.0, -1.0]}, "noise[1]: must be >= 0"),
])
def test_out_of_range_options_are_preset_problems(raw, message):
    problems: list[str] = []
    assert build(SynthConfig, raw, "data.synthetic", problems) is None
    assert len(problems) == 1 and problems[0].startswith(f"data.synthetic.{message}"), problems
