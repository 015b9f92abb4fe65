"""The files of a teacher folder: the ``teacher/`` folder of a run, or a committed teacher under
``experiments/teachers/`` (what each file holds: :mod:`digr.policies.teacher`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TeacherFolder"]


@dataclass(frozen=True)
class TeacherFolder:
    """The files of a teacher folder (module docstring). Knows paths only; creates nothing.

    :param root: the folder, e.g. ``runs/<name>/teacher`` or ``experiments/teachers/breakout``.
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def weights(self) -> Path:
        return self.root / "teacher.safetensors"

    @property
    def spec(self) -> Path:
        return self.root / "teacher.json"

    @property
    def sb3_zip(self) -> Path:
        return self.root / "teacher.zip"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def curve(self) -> Path:
        return self.root / "curve.csv"

    @property
    def imitation(self) -> Path:
        """The rounds of an imitation teacher (:mod:`digr.policies.imitation`): states, loss, agreement, returns."""
        return self.root / "imitation.json"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoint"

    @property
    def checkpoint_state(self) -> Path:
        """The resumable checkpoint: one file (policy weights, optimiser, RNG states, env actions, config)."""
        return self.checkpoint_dir / "state.pt"
