"""Resumable training checkpoints: weights, optimizer, loop state, RNG states and the data cursor.

A checkpoint is a folder ``<root>/step_000012`` written under a temporary name and renamed when
complete, so a process killed mid-write never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from crucible.train.backend import TrainingBackend

_PREFIX = "step_"
_LOOP_STATE = "loop_state.json"
_RNG_STATE = "rng_state.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators, as a fresh run does before step 0."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"{_PREFIX}{step:06d}"


def save_checkpoint(
    backend: TrainingBackend,
    root: str | Path,
    step: int,
    loop_state: dict[str, Any],
    *,
    keep_last: int | None = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically; keep only the newest ``keep_last`` (None: all)."""
    import torch

    final = checkpoint_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    backend.save_state(tmp)
    torch.save(capture_rng_state(), tmp / _RNG_STATE)
    (tmp / _LOOP_STATE).write_text(json.dumps({"step": step, **loop_state}))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep_last is not None:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(backend: TrainingBackend, path: str | Path) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states from ``path``; returns the loop state (with ``step``)."""
    import torch

    path = Path(path)
    if not (path / _LOOP_STATE).exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint: {_LOOP_STATE} is missing")
    backend.load_state(path)
    restore_rng_state(torch.load(path / _RNG_STATE, weights_only=False))
    return json.loads((path / _LOOP_STATE).read_text())
