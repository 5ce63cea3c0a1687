"""The built-in synthetic multimodal dataset with controllable unique, shared and synergistic information.

The MCR paper's synthetic generator (``Synthetic_FCL_Dataloader``) is not public; this is a
reconstruction built on the generator the MCR repository does ship (FactorCL/MultiBench,
``datasets/Factor_CL_Datasets/MultiBench/FactorCL/Synthetic/dataset.py``), generalised from two to
M modalities:

* latents, one row per sample: a unique block u_m ~ N(0, I_k) and a nuisance block e_m ~ N(0, I_k)
  per modality, and one shared block s ~ N(0, I_k) (k = ``latent_dim``);
* observations: x_m = [u_m, s, e_m] @ T_m + noise_m * N(0, I_{d_m}), with T_m a fixed random
  (3k x d_m) Gaussian matrix whose rows are normalised to unit length. Each latent coordinate thus
  reaches the modality with unit energy whatever d_m is, so ``noise`` alone sets how well a
  modality reveals its latents (matched-filter SNR 1/noise^2 per coordinate);
* class scores (C): unique_m * A_m u_m summed over modalities + shared * A_s s + synergy * A_x z,
  with z_j = prod over ALL modalities of sign(u_m[j]) for j < k' and
  k' = min(k, ceil(log2 C)) (just enough bits to name every class). A_m and A_s are random
  Gaussian, centred over classes, with unit rows, so each term gives every class score unit
  variance at strength 1; A_x's rows are distinct +-1 sign codes / sqrt(k') (seeded order), so
  that z, when it equals a class's code, points at that class;
* label: y = argmax(score + b + label_noise * Gumbel), where the per-class offsets b are
  calibrated on the drawn sample (damped log-frequency updates) so that classes come out near
  balanced; b is not a data feature and carries no information.

Because the sign of u_m[j] of the modality left out is a fair coin independent of everything
else, z is independent of every proper subset of modalities, yet determined by all together: a
synergy-only label (unique = 0, shared = 0) is independent of every single modality and every
proper subset. (When other modalities also carry unique information, the unique and synergy terms
share the signs of the same latents, so a single modality can then hold a little interaction
information.) With unique_m = 0 and shared = synergy = 0 a modality's observations are independent
of the label (pure noise).

Deviations from section 1.13: M >= 2 modalities instead of two; Gaussian (not uniform) projection
matrices with unit rows; a nuisance block e_m; sign-code rows for A_x instead of a random matrix
(a random one can map several sign patterns to one class and waste the synergy); the
class-balancing offsets b.
Everything is drawn from numpy Generators seeded from ``cfg.seed`` (structure, samples and split
from three spawned child seeds), so the same config always gives the same dataset.
"""

from __future__ import annotations

import math

import numpy as np

from ..schema import to_dict
from .config import SynthConfig
from .parquet import ModalityInfo, RawDataset
from .split import stratified_split

_BALANCE_STEPS = 60


def _unit_rows(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    m = rng.standard_normal((rows, cols))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _class_head(rng: np.random.Generator, n_classes: int, k: int) -> np.ndarray:
    """Random (C, k) head, centred over classes (a part common to all scores never moves the
    argmax) and with unit rows, so that every class score has unit variance per unit latent."""
    m = rng.standard_normal((n_classes, k))
    m -= m.mean(axis=0, keepdims=True)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def _code_head(rng: np.random.Generator, n_classes: int, bits: int) -> np.ndarray:
    """(C, k') head whose rows are distinct +-1 codes / sqrt(k'), in a seeded random order: the
    sign pattern z scores highest for the class whose code it equals, so z names the class.

    When ``latent_dim`` is too small for C distinct codes (C > 2^k'), the codes repeat in the same
    order (classes C' and C' + 2^k' share one), so synergy then tells those classes apart no more."""
    patterns = 1 - 2 * ((np.arange(2 ** bits)[:, None] >> np.arange(bits)) & 1)
    order = rng.permutation(2 ** bits)
    return patterns[order[np.arange(n_classes) % 2 ** bits]] / math.sqrt(bits)


def synergy_bits(cfg: SynthConfig) -> int:
    """k' = min(latent_dim, ceil(log2 n_classes)): the number of XOR-like sign products."""
    return min(cfg.latent_dim, max(1, math.ceil(math.log2(cfg.n_classes))))


def _balanced_argmax(scores: np.ndarray) -> np.ndarray:
    """argmax(scores + b) with offsets b tuned so that class frequencies are near uniform."""
    n, c = scores.shape
    bias = np.zeros(c)
    target = n / c
    for _ in range(_BALANCE_STEPS):
        counts = np.bincount(np.argmax(scores + bias, axis=1), minlength=c)
        bias -= 0.5 * np.log((counts + 1.0) / (target + 1.0))
    return np.argmax(scores + bias, axis=1)


def working_bytes(cfg: SynthConfig) -> int:
    """Peak bytes :func:`generate` allocates, for the memory budget: its float64 arrays (Gumbel noise
    and class scores, n x C each; latents; one modality's observations; projections and class
    heads) and the float32 features."""
    n, c, k, m = cfg.n_samples, cfg.n_classes, cfg.latent_dim, len(cfg.modalities)
    per_row = 2 * c + (2 * m + 1) * k + 3 * k + 2 * max(cfg.dims)
    return 8 * (n * per_row + 3 * k * sum(cfg.dims) + c * k * (m + 2)) + 4 * n * sum(cfg.dims)


def generate(cfg: SynthConfig) -> RawDataset:
    """Draw the dataset described by ``cfg`` (see the module docstring), with a stratified split."""
    structure_seed, sample_seed, split_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    fixed = np.random.default_rng(structure_seed)
    draw = np.random.default_rng(sample_seed)
    n, c, k, m = cfg.n_samples, cfg.n_classes, cfg.latent_dim, len(cfg.modalities)
    k_syn = synergy_bits(cfg)

    projections = [_unit_rows(fixed, 3 * k, d) for d in cfg.dims]  # each (3k, d_m), unit rows
    heads_unique = [_class_head(fixed, c, k) for _ in range(m)]        # A_m, (C, k)
    head_shared = _class_head(fixed, c, k)                             # A_s
    head_synergy = _code_head(fixed, c, k_syn)                         # A_x

    u = draw.standard_normal((m, n, k))
    s = draw.standard_normal((n, k))
    e = draw.standard_normal((m, n, k))
    gumbel = draw.gumbel(size=(n, c))

    features = {}
    for i, name in enumerate(cfg.modalities):
        latent = np.concatenate([u[i], s, e[i]], axis=1)
        obs = latent @ projections[i] + cfg.noise[i] * draw.standard_normal((n, cfg.dims[i]))
        features[name] = obs.astype(np.float32)

    z = np.prod(np.sign(u[:, :, :k_syn]), axis=0)                      # (n, k'), entries +-1
    scores = np.einsum("mnk,mck->nc", u * np.asarray(cfg.unique)[:, None, None], np.stack(heads_unique))
    scores += cfg.shared * s @ head_shared.T + cfg.synergy * z @ head_synergy.T
    labels = _balanced_argmax(scores + cfg.label_noise * gumbel).astype(np.int64)

    split = stratified_split(labels, cfg.val_fraction, cfg.test_fraction,
                             int(split_seed.generate_state(1)[0]))
    classes = [str(i) for i in range(c)]
    modalities = {name: ModalityInfo(name, name, (d,), "vector") for name, d in zip(cfg.modalities, cfg.dims)}
    metadata = {"format": 1, "name": "synthetic", "classes": classes,
                "modalities": {name: {"kind": "vector", "shape": [d]} for name, d in zip(cfg.modalities, cfg.dims)},
                "source": "mmbal synthetic generator (FactorCL/MultiBench-style, generalised to M modalities)",
                "generator": to_dict(cfg)}
    return RawDataset(name="synthetic", source=f"synthetic generator (seed {cfg.seed})", labels=labels, split=split,
                      features=features, present={name: np.ones(n, dtype=bool) for name in cfg.modalities},
                      modalities=modalities, classes=classes, metadata=metadata)
