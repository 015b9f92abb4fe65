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
    "EnvContractError",
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
