"""Training state a checkpoint carries beyond the weights: RNG capture and restore, and seeding.

Everything captured is a tensor or a Python primitive so that ``torch.load(weights_only=True)``
loads it (numpy's RNG state is stored as lists). Writing, rotating and verifying checkpoint files
is the run store's (:mod:`engine.store.checkpoints`).
"""

from __future__ import annotations

import random

import numpy as np
import torch

SCHEMA = 1


def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_to_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_lists(obj):
    if isinstance(obj, tuple):
        return [_to_lists(v) for v in obj]
    return obj


def _to_tuples(obj):
    if isinstance(obj, list):
        return tuple(_to_tuples(v) for v in obj)
    return obj
