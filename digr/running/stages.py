"""Finished-stage markers and config diffing: what makes a rerun skip, resume, redo or refuse.

Every stage, when finished, writes ``stages/<stage>[-<student>].json`` holding the part of the config it depends on
(:func:`stage_config`). On a rerun, :meth:`Stages.is_done` compares that with the current config:

* the same → the stage is skipped;
* different, for a stage that made artefacts (teacher, dataset, saliency, distill) → :class:`StageConfigMismatch`
  naming every changed field; nothing is overwritten (use a new ``name:``);
* different, for a measurement (evaluate, saliency_bench) → redone.

Fields added to DIGR after a stage finished, left at their defaults, do not count as changes (:func:`drop_new_defaults`).
Dependencies: teacher ← seed, env, teacher; dataset ← + dataset; saliency ← + perturbation; distill (per student)
← + mask, the distill settings and that student's spec; evaluate and saliency_bench ← the whole config.
"""

from __future__ import annotations

import json
import time

from digr.checkpoint import write_text_atomic
from digr.errors import StageConfigMismatch
from digr.running.run_folder import RunFolder

__all__ = ["MEASUREMENTS", "STAGES", "Stages", "config_diff", "drop_new_defaults", "stage_config"]

STAGES = ("teacher", "dataset", "saliency", "distill", "evaluate", "saliency_bench")
#: Stages that only measure: redone, not refused, when the config changed.
MEASUREMENTS = ("evaluate", "saliency_bench")


def stage_config(cfg: dict, stage: str, student: str | None = None) -> dict:
    """The part of the config dict ``cfg`` that ``stage`` depends on (module docstring).

    :raises ValueError: unknown stage. :raises StopIteration: ``distill`` for a student not in ``cfg``.
    """
    deps = {"teacher": {"seed": cfg["seed"], "env": cfg["env"], "teacher": cfg["teacher"]}}
    deps["dataset"] = {**deps["teacher"], "dataset": cfg["dataset"]}
    deps["saliency"] = {**deps["dataset"], "perturbation": cfg["perturbation"]}
    if stage == "distill":
        spec = next(s for s in cfg["distill"]["students"] if s["name"] == student)
        common = {k: v for k, v in cfg["distill"].items() if k != "students"}
        return {**deps["saliency"], "mask": cfg["mask"], "distill": common, "student": spec}
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

    def is_done(self, stage: str, student: str | None = None) -> bool:
        """True if ``stage`` finished with the current config; False if it has not finished (or, for a measurement, if
        it finished with another config).

        :raises StageConfigMismatch: it finished with another config (every changed field listed; nothing changed).
        """
        marker = self.folder.marker(stage, student)
        if not marker.is_file():
            return False
        old = json.loads(marker.read_text())["config"]
        new = drop_new_defaults(old, stage_config(self.cfg, stage, student), self.default)
        if stage in MEASUREMENTS:
            return old == new
        if old != new:
            changes = "; ".join(config_diff(old, new))
            raise StageConfigMismatch(
                f"stage {marker.stem!r} in {self.folder.root} was made with a different config ({changes}). "
                f"Nothing was changed. Use a new `name:` for this config, or delete {marker} and the artefacts it names "
                "to redo that stage."
            )
        return True

    def mark_done(self, stage: str, student: str | None = None, started: float | None = None, **extra) -> None:
        """Write the stage's marker atomically; ``started`` (a ``time.perf_counter()`` value) records the wall time of this
        invocation as ``elapsed_s``; ``extra`` adds JSON-safe fields."""
        if started is not None:
            extra["elapsed_s"] = round(time.perf_counter() - started, 1)
        marker = self.folder.marker(stage, student)
        write_text_atomic(marker, json.dumps({"config": stage_config(self.cfg, stage, student), **extra}, indent=2))

    def config_of(self, stage: str) -> dict | None:
        """The config a finished stage was made with (its marker's ``config``), or None if it has not finished."""
        marker = self.folder.marker(stage)
        return json.loads(marker.read_text())["config"] if marker.is_file() else None
