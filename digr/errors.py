"""Every exception DIGR raises on purpose, in one place.

Each is a :class:`DigrError`: its message names the problem and the fix, and the ``digr`` command prints it and exits
with status 2 (bad input) instead of a traceback. Each also derives from the built-in type that fits it
(``ValueError``, ``RuntimeError``, ``TypeError``), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DigrError",
    "DiskFullError",
    "EnvContractError",
    "NonFiniteError",
    "NotWritableError",
    "RunLockedError",
    "StageConfigMismatch",
    "StageError",
    "UnknownEnvError",
]


class DigrError(Exception):
    """Base class: an error a user can fix; the message says what is wrong and what to do."""


class ConfigError(DigrError, ValueError):
    """A config field is unknown, has the wrong type or an invalid value; the message names the field
    (``distill.students[1].mask``) and what is allowed."""


class StageError(DigrError, RuntimeError):
    """A pipeline stage cannot run: its prerequisites are missing (run the stage the message names first)."""


class StageConfigMismatch(StageError):
    """A finished stage in the run folder was made with another config than the one given now; the message lists the
    changed fields. Nothing is overwritten."""


class CheckpointError(DigrError, RuntimeError):
    """A saved artefact (checkpoint, weights, dataset) is missing, corrupt or does not fit the model; the message names
    the file and what to do."""


class UnknownEnvError(DigrError, ValueError):
    """An env id (or the module before its colon) cannot be found; the message lists close matches."""


class EnvContractError(DigrError, TypeError):
    """An environment breaks the DIGR environment contract (:mod:`digr.contracts`); the message names the part."""


class RunLockedError(DigrError, RuntimeError):
    """Another ``digr`` command is writing to the same run folder; the message names the run and the holding command.
    Wait for it to finish (or stop it), then rerun."""


class DiskFullError(DigrError, OSError):
    """A write failed because the disk (or the quota) is full; the message names the file. The file's previous
    version, and every file already saved, is left as it was."""


class NotWritableError(DigrError, OSError):
    """The run folder (or a file in it) cannot be written: read-only file system or missing permission."""


class NonFiniteError(DigrError, FloatingPointError):
    """Training produced a non-finite loss or non-finite weights (NaN or ±inf). Training stops; the last good
    checkpoint is kept. The message names the stage, the step and the settings to lower."""
