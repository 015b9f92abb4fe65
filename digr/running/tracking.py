"""Optional experiment tracking with Weights & Biases (off unless ``track: true``).

What a tracked run logs (one wandb run per ``digr`` command, named after the experiment, grouped by it):

* the resolved config (``wandb.config``);
* ``digr teacher`` / ``digr run``: the teacher's PPO learning curve (``teacher/*`` against env steps) and every student's
  loss history (``distill/<student>/*``);
* ``digr evaluate`` / ``digr run``: every number of ``metrics.json`` (``eval/<agent>/return``, ``success_rate``,
  ``action_agreement``, ``saliency/<map>/<statistic>``), the table of map quality (``eval/saliency_table``) and the
  report's figures (saliency overlays, learning and loss curves) as images;
* ``digr attack``: the attack grid as a table (``attack/table``, one row per agent × attack × ε) and the return-vs-ε
  figure;
* ``digr drive --video``: the MP4 (``drive/video``).

Honours ``WANDB_MODE``: ``offline`` writes everything under ``<run folder>/wandb/offline-run-*`` for a later
``wandb sync``; ``disabled`` turns it off. Every call is one wandb step; the teacher's curve is plotted against env steps
(``teacher/steps``) and each student's losses against its own training step (``distill/<student>/step``), declared with
``define_metric`` rather than passed as wandb's ``step`` (which must never decrease, so a resumed teacher's rows would be
dropped once later stages have logged). Media and tables go in as wandb ``Image``, ``Table`` and ``Video`` objects.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Tracker"]


class Tracker:
    """Thin wrapper over a wandb run: :meth:`log` scalars, :meth:`log_media` images, tables and videos,
    :meth:`finish`. A no-op when ``enabled`` is False. The wandb run starts at the first log call (a command that only
    skips finished stages starts none).

    :param project: wandb project. :param name: run name (also its group). :param config: the resolved config (dict).
    :param run_dir: the wandb files go in ``run_dir/wandb``.
    :raises ImportError: (at the first log) ``enabled`` but wandb is not installed (``pip install 'digr[track]'``).
    """

    def __init__(self, enabled: bool, project: str, name: str, config: dict, run_dir: Path):
        self.enabled, self.project, self.name, self.config, self.run_dir = enabled, project, name, config, Path(run_dir)
        self.run, self._axes = None, set()

    def _start(self) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("track: true needs wandb; `pip install 'digr[track]'` (or wandb) or set track: false") from e
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=self.project, name=self.name, group=self.name, config=self.config,
                              dir=str(self.run_dir), reinit="finish_previous")  # fmt: skip

    def log(self, metrics: dict, axis: str | None = None) -> None:
        """Log ``metrics`` (name → number) as one wandb step. ``axis``: a key of ``metrics`` that every key sharing its
        prefix (up to the last ``/``) is plotted against, e.g. ``teacher/steps`` for ``teacher/*``; None: wandb's step.

        :raises KeyError: ``axis`` is not in ``metrics``."""
        if axis is not None and axis not in metrics:
            raise KeyError(f"axis {axis!r} is not among the logged metrics {sorted(metrics)}")
        if self.enabled and self.run is None:
            self._start()
        if self.run is None:
            return
        if axis is not None and axis not in self._axes:
            self.run.define_metric(f"{axis.rsplit('/', 1)[0]}/*", step_metric=axis)
            self._axes.add(axis)
        self.run.log(metrics)

    def log_media(
        self,
        images: dict[str, Path] | None = None,
        tables: dict[str, tuple[list[str], list[list]]] | None = None,
        videos: dict[str, Path] | None = None,
    ) -> None:
        """Log image files (PNG), tables (``(columns, rows)``, cells str or numbers) and MP4 files under their keys, in
        one wandb step. Paths that do not exist are left out (a figure a run did not draw)."""
        if not self.enabled:
            return
        import wandb

        entry = {k: wandb.Image(str(p)) for k, p in (images or {}).items() if Path(p).is_file()}
        entry |= {k: wandb.Table(columns=list(c), data=[list(r) for r in rows]) for k, (c, rows) in (tables or {}).items()}
        entry |= {k: wandb.Video(str(p), format="mp4") for k, p in (videos or {}).items() if Path(p).is_file()}
        if entry:
            self.log(entry)

    def finish(self) -> None:
        """Close the wandb run (flushes an offline run to disk); safe to call twice."""
        if self.run is not None:
            self.run.finish()
            self.run = None
