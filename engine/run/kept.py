"""Models kept in the run directory by a method's stages (``ctx.kept``, see :mod:`engine.methods.stages`).

``checkpoints/kept/<name>.pt``: written atomically with a checksum (rank 0 only), read back with
``weights_only=True`` and the checksum verified (:mod:`engine.store.checkpoints`). What a process
saved it also keeps in memory, so a later stage of the same process never waits for another rank's write.
"""

from __future__ import annotations

from pathlib import Path

from ..methods.stages import check_kept_name, clone_state
from ..store import RunPaths, load_checkpoint, write_checkpoint


class RunKept:
    """:class:`~engine.methods.stages.KeptModels` over ``<run_dir>/checkpoints/kept/``."""

    def __init__(self, run_dir: Path, write: bool = True):
        self.paths = RunPaths(run_dir)
        self.dir = self.paths.kept_dir
        self.write = write
        self._memory: dict[str, dict] = {}

    def path(self, name: str) -> Path:
        return self.paths.kept(check_kept_name(name))

    def save(self, name: str, state: dict) -> None:
        path = self.path(name)
        self._memory[name] = clone_state(state)
        if self.write:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_checkpoint(path, {"kept": name, "state": self._memory[name]})

    def load(self, name: str) -> dict:
        if name in self._memory:
            return self._memory[name]
        path = self.path(name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: the kept model '{name}' that this run's method needs is missing "
                                    f"from the run directory")
        state = load_checkpoint(path)["state"]
        self._memory[name] = state
        return state

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._memory or self.path(name).exists())
