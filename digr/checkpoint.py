"""Safe, atomic saving and loading of weights and training state.

Weights are safetensors files; training state (optimizer, RNG, counters) is a ``torch.save`` file of tensors and
plain containers read back with ``torch.load(..., weights_only=True)``. Nothing is ever unpickled. Every write goes to
a temporary file first and is moved into place with ``os.replace``, so an interrupted write never corrupts what was
already saved.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch as th
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from digr.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "load_module",
    "load_state_dict",
    "load_training_state",
    "save_module",
    "save_npy_atomic",
    "save_state_dict",
    "save_training_state",
    "sha256_file",
    "write_json_atomic",
    "write_text_atomic",
]


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes as 64 lowercase hex characters, read in 1 MiB blocks (weights fingerprints).

    :raises CheckpointError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; run the stage that produces it (see `digr --help`)")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers see the old or the new file, never
    a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (NaN and infinities refused: ``allow_nan=False``) through :func:`write_text_atomic`.

    :raises ValueError: ``obj`` holds NaN or an infinity (write None for undefined numbers).
    """
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False))


def save_npy_atomic(array: np.ndarray, path: str | Path) -> None:
    """``np.save`` through a temporary file and ``os.replace`` (readers never see a truncated array)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def save_state_dict(state: dict[str, th.Tensor], path: str | Path) -> None:
    """Write a state dict (tensors only) to ``path`` as safetensors, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def load_state_dict(path: str | Path) -> dict[str, th.Tensor]:
    """Read a safetensors state dict.

    :raises CheckpointError: the file is missing or not a valid safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; run the stage that produces it (see `digr --help`)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not safetensors ({e}); delete it and re-run its stage") from e


def save_module(module: nn.Module, path: str | Path) -> None:
    """Write ``module``'s weights as safetensors atomically; tensors shared between submodules are stored once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(module, str(tmp))
    os.replace(tmp, path)


def load_module(module: nn.Module, path: str | Path) -> nn.Module:
    """Load weights written by :func:`save_module` into ``module`` (strict).

    :raises CheckpointError: missing, corrupt or mismatching file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; run the stage that produces it (see `digr --help`)")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or does not fit the model ({e}); delete it and re-run its stage"
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return module


def save_training_state(state: dict, path: str | Path) -> None:
    """Atomically ``torch.save`` a dict of tensors / numbers / strings / lists / dicts (loadable with weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    th.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)``.

    :raises CheckpointError: missing or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} not found")
    try:
        return th.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        raise CheckpointError(
            f"training state {path} is corrupt ({type(e).__name__}: {e}); delete it to restart that stage"
        ) from e
