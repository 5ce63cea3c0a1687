"""Shared pieces of the end-to-end tests: a tiny synthetic preset, an interrupting reporter, checkpoints."""

import os
import signal

import torch

from engine.run import NullReporter


def tiny_preset(method_table: str, *, name: str = "tiny", seed: int = 3, unique: str = "[1.0, 0.4]",
                noise: str = "[0.5, 0.8]", epochs: int = 3, optimizer: str = "sgd", lr: float = 0.05) -> str:
    """300 synthetic samples (210 train: 7 steps of 32 per epoch), two small MLP encoders with dropout."""
    return f"""
name = "{name}"
seed = {seed}
[data]
source = "synthetic"
[data.synthetic]
n_samples = 300
n_classes = 3
modalities = ["a", "b"]
dims = [8, 6]
unique = {unique}
noise = {noise}
[modalities.a]
encoder = "mlp"
hidden = [16]
dim = 8
dropout = 0.2
[modalities.b]
encoder = "mlp"
hidden = [16]
dim = 8
dropout = 0.2
[method]
{method_table.strip()}
[train]
epochs = {epochs}
batch_size = 32
log_every = 3
optimizer = "{optimizer}"
lr = {lr}
"""


class InterruptAt(NullReporter):
    """Sends SIGINT to this process after optimiser step ``step`` (as Ctrl-C would)."""

    def __init__(self, step):
        self.step = step

    def progress(self, pos, n_batches, epochs, values):
        if pos.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def last_checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
