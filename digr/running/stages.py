"""Finished-stage markers and config diffing: what makes a rerun skip, resume, redo or refuse.

Every stage, when finished, writes ``stages/<stage>[-<student>].json`` holding the part of the config it depends on
(:func:`stage_config`). On a rerun, :meth:`Stages.is_done` compares that with the current config:

* the same → the stage is skipped;
* different, for a stage that made artefacts (teacher, dataset, saliency, distill) → :class:`StageConfigMismatch`
  naming every changed field; nothing is overwritten (use a new ``name:``);
* different, for a measurement (evaluate, saliency_bench) → redone;
* the same, but a file the stage writes is missing (deleted because it was corrupt) → redone (for the teacher and
  the students from their last checkpoint, so the result is the same).

Fields added to DIGR after a stage finished, left at their defaults, do not count as changes (:func:`drop_new_defaults`),
and neither do fields a stage no longer depends on. Dependencies: teacher ← seed, env, teacher; dataset ← + dataset;
saliency ← + perturbation; distill (per student) ← + the distill settings, that student's spec and, for a selective
mask only, the mask settings (``dagger_frames`` only with DAgger rounds); evaluate and saliency_bench ← the whole config.

Checkpoints record the same dependency dict as the marker their stage will write, and :meth:`Stages.check_recorded`
judges them the same way: resuming under another config is refused with every changed field listed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from digr.checkpoint import checkpoint_config, write_text_atomic
from digr.errors import StageConfigMismatch, StageError
from digr.running.run_folder import RunFolder

__all__ = ["BUILD", "MEASUREMENTS", "STAGES", "Stages", "config_diff", "drop_new_defaults", "keep_used", "stage_config"]

STAGES = ("teacher", "dataset", "saliency", "distill", "evaluate", "saliency_bench")
#: Stages that make the artefacts later stages use (refused, not redone, under another config).
BUILD = ("teacher", "dataset", "saliency", "distill")
#: Stages that only measure: redone, not refused, when the config changed.
MEASUREMENTS = ("evaluate", "saliency_bench")


def stage_config(cfg: dict, stage: str, student: str | None = None) -> dict:
    """The part of the config dict ``cfg`` that ``stage`` depends on (module docstring).

    :raises ValueError: unknown stage. :raises StopIteration: ``distill`` for a student not in ``cfg``.
    """
    teacher = {k: v for k, v in cfg["teacher"].items() if k != "checkpoint_every"}  # resume is exact at any interval
    deps = {"teacher": {"seed": cfg["seed"], "env": cfg["env"], "teacher": teacher}}
    deps["dataset"] = {**deps["teacher"], "dataset": cfg["dataset"]}
    deps["saliency"] = {**deps["dataset"], "perturbation": cfg["perturbation"]}
    if stage == "distill":
        spec = next(s for s in cfg["distill"]["students"] if s["name"] == student)
        common = {k: v for k, v in cfg["distill"].items() if k not in ("students", "checkpoint_every")}
        if not common.get("dagger_rounds"):
            common.pop("dagger_frames", None)
        out = {**deps["saliency"], "distill": common, "student": spec}
        return {**out, "mask": cfg["mask"]} if spec.get("mask") == "selective" else out
    if stage in MEASUREMENTS:
        return cfg
    if stage not in deps:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    return deps[stage]


def config_diff(old, new, prefix: str = "") -> list[str]:
    """Every changed leaf between two config dicts, as ``"path: old → new"`` lines (dotted paths, sorted keys)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += config_diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [f"{prefix}: {old!r} → {new!r}"] if old != new else []


def keep_used(old, new):
    """``old`` without the keys that ``new`` lacks (fields a stage no longer depends on do not count as changes)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old
    return {k: keep_used(v, new[k]) for k, v in old.items() if k in new}


def drop_new_defaults(old, new, default):
    """``new`` without the keys that ``old`` lacks and whose value is the config default (fields added to DIGR after
    the stage finished, left at their defaults, do not invalidate it)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    out = {}
    for k, v in new.items():
        d = default.get(k) if isinstance(default, dict) else None
        if k not in old and v == d:
            continue
        out[k] = drop_new_defaults(old.get(k), v, d)
    return out


class Stages:
    """The stage markers of one run folder, judged against one config.

    :param folder: the run folder. :param cfg: the current config as a plain dict (``config_to_dict``).
    :param default: the default config as a plain dict (for :func:`drop_new_defaults`).
    """

    def __init__(self, folder: RunFolder, cfg: dict, default: dict):
        self.folder = folder
        self.cfg = json.loads(json.dumps(cfg))  # what a marker holds after a JSON round trip (tuples → lists)
        self.default = json.loads(json.dumps(default))
        students = self.default.get("distill", {}).get("students") or [{}]
        self.default.setdefault("student", students[0])  # a distill stage's student spec: its fields' defaults

    def recorded_config(self, stage: str, student: str | None = None) -> dict | None:
        """The config dict stored in the stage's marker, or None if the stage has no marker.

        :raises StageError: the marker cannot be read (the message names it and says to delete it to redo the stage).
        """
        marker = self.folder.marker(stage, student)
        if not marker.is_file():
            return None
        try:
            cfg = json.loads(marker.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StageError(
                f"stage marker {marker} is unreadable ({type(e).__name__}: {e}); delete it and rerun the same command "
                "to redo that stage (its checkpoints make the redo cheap)"
            ) from e
        if not isinstance(cfg, dict):
            raise StageError(f"stage marker {marker} holds no config; delete it and rerun the same command")
        return cfg

    def changes(self, recorded: dict, stage: str, student: str | None = None) -> list[str]:
        """Every field the stage depends on whose value in ``recorded`` (a marker's or a checkpoint's config) differs
        from the current config, as ``"path: old → new"`` lines; [] when they agree. Fields the stage does not use, and
        fields added since that are left at their defaults, do not count."""
        new = stage_config(self.cfg, stage, student)
        old = keep_used(recorded, new)
        return config_diff(old, drop_new_defaults(old, new, self.default))

    def check_recorded(self, recorded: dict, stage: str, student: str | None, what: Path) -> None:
        """Refuse to continue from ``what`` (a checkpoint or marker) made under another config.

        :raises StageConfigMismatch: the changed fields, every one of them, and the files to delete to redo the stage
            under the new config; nothing is changed.
        """
        changes = self.changes(recorded, stage, student)
        if changes:
            lines = "\n  ".join(changes)
            ckpt = self.folder.checkpoint(stage, student)
            redo = [p for p in (self.folder.marker(stage, student), ckpt) if p is not None and p.exists()]
            raise StageConfigMismatch(
                f"{what} in {self.folder.root} was made with a different config; {len(changes)} changed "
                f"field{'s' if len(changes) > 1 else ''}:\n  {lines}\nNothing was changed. Use a new `name:` for this "
                f"config, or, to redo stage {stage!r}{f' ({student})' if student else ''} under the new config, delete "
                f"{' and '.join(str(p) for p in redo)} and rerun (later stages made from it are then refused in turn)."
            )

    def missing_artefacts(self, stage: str, student: str | None = None) -> list[Path]:
        """The files a finished ``stage`` wrote that are not there (e.g. deleted because they were corrupt)."""
        return [p for p in self.folder.artefacts(stage, student) if not p.is_file()]

    def is_done(self, stage: str, student: str | None = None) -> bool:
        """True if ``stage`` finished with the current config and its files are there; False if it has not finished,
        if a file it wrote is missing (it is then redone), or, for a measurement, if it finished with another config.

        :raises StageConfigMismatch: it finished with another config (every changed field listed; nothing changed).
        :raises StageError: its marker is unreadable.
        """
        recorded = self.recorded_config(stage, student)
        if recorded is None:
            return False
        marker = self.folder.marker(stage, student)
        if stage in MEASUREMENTS:
            return not self.changes(recorded, stage, student) and not self.missing_artefacts(stage, student)
        self.check_recorded(recorded, stage, student, marker)
        return not self.missing_artefacts(stage, student)

    def is_current(self, stage: str) -> bool:
        """True if the measurement ``stage`` is done (:meth:`is_done`) and its marker is newer than every build stage's
        (the teacher, dataset, teacher maps and each configured student): a student retrained since makes it stale.

        :raises StageError: an unreadable marker."""
        if not self.is_done(stage):
            return False
        students = [s["name"] for s in self.cfg["distill"]["students"]]
        built = [self.folder.marker(b) for b in BUILD if b != "distill"] + [self.folder.marker("distill", s) for s in students]
        measured = self.folder.marker(stage).stat().st_mtime
        return all(not p.is_file() or p.stat().st_mtime <= measured for p in built)

    def config_for(self, stage: str, student: str | None = None) -> dict:
        """The part of the current config ``stage`` depends on (what its marker and its checkpoints record)."""
        return stage_config(self.cfg, stage, student)

    def preflight(self, stages: tuple[str, ...] = BUILD, students: list[str] | None = None) -> None:
        """Before a command writes anything: every finished stage among ``stages`` (``distill`` for each of
        ``students``, default: every configured student) and every checkpoint of an unfinished one must agree with the
        current config.

        :raises StageConfigMismatch: the stage or checkpoint and every changed field. :raises StageError: an
            unreadable marker. :raises CheckpointError: an unreadable checkpoint.
        """
        students = [s["name"] for s in self.cfg["distill"]["students"]] if students is None else students
        for stage in stages:
            for student in students if stage == "distill" else [None]:
                if self.is_done(stage, student):
                    continue
                ckpt = self.folder.checkpoint(stage, student)
                recorded = checkpoint_config(ckpt) if ckpt is not None else None
                if recorded is not None:
                    self.check_recorded(recorded, stage, student, ckpt)

    def mark_done(self, stage: str, student: str | None = None, started: float | None = None, **extra) -> None:
        """Write the stage's marker atomically; ``started`` (a ``time.perf_counter()`` value) records the wall time of this
        invocation as ``elapsed_s``; ``extra`` adds JSON-safe fields."""
        if started is not None:
            extra["elapsed_s"] = round(time.perf_counter() - started, 1)
        marker = self.folder.marker(stage, student)
        write_text_atomic(marker, json.dumps({"config": stage_config(self.cfg, stage, student), **extra}, indent=2))

    def config_of(self, stage: str) -> dict | None:
        """The config a finished stage was made with (its marker's ``config``), or None if it has not finished.

        :raises StageError: the marker is unreadable."""
        return self.recorded_config(stage)
