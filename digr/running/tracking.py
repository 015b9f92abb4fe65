"""Optional experiment tracking with Weights & Biases (off unless ``track: true``).

Honours ``WANDB_MODE`` (``offline`` writes under the run folder for a later ``wandb sync``; ``disabled`` turns it off).
All metrics are logged against one global step, never reset between stages.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Tracker"]


class Tracker:
    """Thin wrapper: ``log(dict, step)`` and ``finish()``; a no-op when ``enabled`` is False.

    :raises ImportError: ``enabled`` but wandb is not installed (``pip install wandb``).
    """

    def __init__(self, enabled: bool, project: str, name: str, config: dict, run_dir: Path):
        self.run = None
        if enabled:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("track: true needs wandb; `pip install wandb` or set track: false") from e
            run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir), reinit="finish_previous")

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
