"""Optional experiment tracking with Weights & Biases (off unless ``track: true``).

Honours ``WANDB_MODE`` (``offline`` writes under the run folder for a later ``wandb sync``; ``disabled`` turns it off).
All metrics are logged against one global step, never reset between stages.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Tracker"]


class Tracker:
    """Thin wrapper: ``log(dict, step)`` and ``finish()``; a no-op when ``enabled`` is False. The wandb run starts at
    the first :meth:`log` (a command that only skips finished stages starts none).

    :raises ImportError: (at the first log) ``enabled`` but wandb is not installed (``pip install wandb``).
    """

    def __init__(self, enabled: bool, project: str, name: str, config: dict, run_dir: Path):
        self.enabled, self.project, self.name, self.config, self.run_dir = enabled, project, name, config, Path(run_dir)
        self.run = None

    def _start(self) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("track: true needs wandb; `pip install wandb` or set track: false") from e
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project, name=self.name, config=self.config, dir=str(self.run_dir), reinit="finish_previous"
        )

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Log ``metrics`` (name → number) at ``step`` (None: wandb's own step)."""
        if self.enabled and self.run is None:
            self._start()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
