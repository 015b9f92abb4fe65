"""The one writer of DIGR's files, and the safe readers of weights and training state.

Every file a run writes goes through :func:`write_bytes_atomic` (or :func:`atomic_path` for a library that insists on
writing a path itself): the bytes go to a temporary file with a unique name in the target folder, are flushed to disk
(``fsync``), and the file is renamed over the target (``os.replace``), then the folder is synced. Readers therefore
see the old file or the new one, never a truncated one; a killed process or a full disk leaves the previous version in
place. A checkpoint is one file, so it is one unit: all of it appears, or the previous checkpoint stays.

A full disk is reported as :class:`digr.errors.DiskFullError` naming the file, a read-only folder as
:class:`digr.errors.NotWritableError`; in both cases the temporary file is removed and nothing saved before is touched.

Weights are safetensors files written deterministically: a tensor shared under several names (SB3's features
extractor) is stored once under its alphabetically first name, and no alias metadata is written (safetensors writes
metadata in hash order, which differs between processes; :func:`load_module` finds the aliases from the model), so
identical weights give identical bytes and SHA-256. Training state (optimizer, RNG, counters) is a ``torch.save`` file
of tensors and plain containers read back with ``torch.load(..., weights_only=True)``. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch as th
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model
from safetensors.torch import save as safetensors_bytes
from torch import nn

from digr.errors import CheckpointError, DiskFullError, NotWritableError

__all__ = [
    "CheckpointError",
    "atomic_path",
    "checkpoint_config",
    "load_module",
    "load_state_dict",
    "load_training_state",
    "require_keys",
    "save_module",
    "save_npy_atomic",
    "save_npz_atomic",
    "save_state_dict",
    "save_training_state",
    "sha256_file",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_FULL = (errno.ENOSPC, errno.EDQUOT)
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: new files get the usual 0o666 & ~umask, not mkstemp's private 0o600
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


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


def _os_error(e: OSError, path: Path) -> Exception:
    """The DIGR error for an ``OSError`` met while writing ``path`` (or ``e`` itself when it is neither case)."""
    if e.errno in _FULL:
        return DiskFullError(
            e.errno,
            f"no space left on device while writing {path}; the previous version of that file and everything saved "
            "before are kept. Free some space (or point run_dir elsewhere) and rerun the same command to resume",
        )
    if e.errno in _READ_ONLY:
        return NotWritableError(
            e.errno,
            f"cannot write {path} ({os.strerror(e.errno)}); make the run folder writable, or set another run_dir/name",
        )
    return e


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; when the block ends without an error, the temporary file is
    synced and renamed over ``path``. For libraries that write a path themselves (SB3's ``model.save``; ``suffix``
    for writers that choose the format by extension, e.g. ``.tmp.mp4``).

    :raises DiskFullError: the disk filled up (``path`` keeps its previous version). :raises NotWritableError: the
        folder is read-only. Any other error of the block propagates; the temporary file is removed in every case.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
    except OSError as e:
        raise _os_error(e, path) from e
    tmp = Path(tmp_name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _os_error(e, path) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (module docstring): unique temporary file in the same folder,
    ``fsync``, ``os.replace``, folder ``fsync``.

    :raises DiskFullError: no space left (``path`` keeps its previous version). :raises NotWritableError: read-only.
    """
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) through :func:`write_bytes_atomic`: readers see the old or the new file, never a truncated
    one. :raises DiskFullError, NotWritableError: as :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (NaN and infinities refused: ``allow_nan=False``) through :func:`write_bytes_atomic`.

    :raises ValueError: ``obj`` holds NaN or an infinity (write None for undefined numbers).
    """
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False))


def save_npy_atomic(array: np.ndarray, path: str | Path) -> None:
    """``np.save`` of ``array`` (no pickle) through :func:`write_bytes_atomic`."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def save_npz_atomic(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """``np.savez_compressed`` of named arrays through :func:`write_bytes_atomic`."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


def _unique_tensors(state: dict[str, th.Tensor]) -> dict[str, th.Tensor]:
    """One name per shared tensor (the alphabetically first), so the same weights always give the same file."""
    groups: dict[tuple, list[str]] = {}
    for name in sorted(state):
        t = state[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)
        if t.numel() == 0:
            key = (name,)  # empty tensors share no data
        groups.setdefault(key, []).append(name)
    return {names[0]: state[names[0]].detach().contiguous().cpu() for names in groups.values()}


def save_state_dict(state: dict[str, th.Tensor], path: str | Path) -> None:
    """Write a state dict (tensors only) to ``path`` as safetensors, atomically and deterministically (tensors shared
    under several names are stored once, under the alphabetically first name)."""
    write_bytes_atomic(path, safetensors_bytes(_unique_tensors(state)))


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
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not safetensors ({e}); delete it and rerun `digr run` with "
            "the same config: the stage that writes it is redone"
        ) from e


def save_module(module: nn.Module, path: str | Path) -> None:
    """Write ``module``'s weights as safetensors (:func:`save_state_dict`: atomic, deterministic, shared tensors once)."""
    save_state_dict(module.state_dict(), path)


def load_module(module: nn.Module, path: str | Path) -> nn.Module:
    """Load weights written by :func:`save_module` into ``module`` (strict: every name and shape must match).

    :raises CheckpointError: missing, corrupt or mismatching file (names and shapes listed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; run the stage that produces it (see `digr --help`)")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or does not fit the model ({e}); delete it and rerun `digr run` with "
            "the same config: the stage that writes it is redone"
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}; "
            "it was written for another architecture: delete it and rerun the same command"
        )
    return module


def save_training_state(state: dict, path: str | Path) -> None:
    """``torch.save`` a dict of tensors / numbers / strings / lists / dicts (loadable with ``weights_only``) through
    :func:`write_bytes_atomic`: one file, so the whole checkpoint appears at once or not at all."""
    buf = io.BytesIO()
    th.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_training_state(path: str | Path, keys: tuple[str, ...] = ()) -> dict:
    """``torch.load(path, weights_only=True)`` of a dict holding at least ``keys``.

    :raises CheckpointError: missing or corrupt file, not a dict, or a key of ``keys`` absent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} not found")
    try:
        state = th.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        raise CheckpointError(
            f"training state {path} is corrupt ({type(e).__name__}: {e}); delete it and rerun the same command to "
            "restart that stage from its beginning"
        ) from e
    return require_keys(state, keys, path)


def require_keys(state, keys: tuple[str, ...], path: str | Path) -> dict:
    """``state`` if it is a dict holding every key of ``keys``.

    :raises CheckpointError: it is not a dict or lacks a key (the missing keys are named)."""
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is not a DIGR checkpoint of this kind or was written by an older DIGR (missing "
            f"{missing}); delete it and rerun the same command to restart that stage from its beginning"
        )
    return state


def checkpoint_config(path: str | Path, keys: tuple[str, ...] = ("config",)) -> dict | None:
    """The config dict a checkpoint was made with (its ``config`` entry, JSON), or None when ``path`` does not exist.

    :param keys: the keys a checkpoint of this kind must hold (a file without them is refused, not half-used).
    :raises CheckpointError: a corrupt checkpoint, or one without ``keys`` (written by an older DIGR): delete it and
        rerun to restart that stage.
    """
    path = Path(path)
    if not path.is_file():
        return None
    state = load_training_state(path, (*keys, "config"))
    try:
        return json.loads(state["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable config ({e}); delete it and rerun the same command") from e
