"""Checkpoint contents: RNG capture and restore, and the state dict of a training position.

Everything stored is a tensor or a Python primitive so that ``torch.load(weights_only=True)``
loads it (numpy's RNG state is stored as lists, see ux-research.md section 5).
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

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


class CheckpointDamaged(Exception):
    """A checkpoint file that cannot be read or whose checksum does not match its contents."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def checksum(state: dict) -> str:
    """SHA-256 over every tensor's dtype, shape and bytes and every primitive, in a fixed order.

    Stored in the checkpoint itself (key ``checksum``), so the file stays loadable with a plain
    ``torch.load(weights_only=True)`` while truncation or a flipped bit is still detected.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def with_checksum(state: dict) -> dict:
    state["checksum"] = checksum(state)
    return state


def _unreadable_reason(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one phrase.

    A file holding Python objects other than tensors and plain values (a class instance, a
    ``__reduce__`` payload that would call a function) is refused by the weights-only unpickler
    before anything in it runs; torch's own message then advises retrying with
    ``weights_only=False``, which mmbal never does, so it is replaced by one that says so.
    """
    text = str(exc)
    if type(exc).__name__ == "UnpicklingError" and "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"holds a Python object{what} that is not a tensor or a plain value: refused without running it "
                f"(mmbal loads checkpoints with weights_only=True and never writes such objects, so this file was "
                f"not written by mmbal or was altered)")
    return f"cannot be read ({type(exc).__name__}: {text})"


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and verify a checkpoint with ``weights_only=True`` (no code can run from the file).

    Raises :class:`CheckpointDamaged` when the file is unreadable, truncated or does not match
    its checksum.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, pickle/zip errors, EOFError, ... on damage
        raise CheckpointDamaged(path, _unreadable_reason(exc)) from None
    if not isinstance(state, dict) or "checksum" not in state:
        raise CheckpointDamaged(path, "has no checksum: not an mmbal checkpoint")
    if checksum(state) != state["checksum"]:
        raise CheckpointDamaged(path, "its contents do not match the checksum stored in it (damaged)")
    return state
