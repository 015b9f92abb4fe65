"""Agreement with the perturbation map of an independently trained teacher: a reference that did not build the mask.

DIGR's mask comes from its own teacher's perturbation map (Greydanus et al. 2018), so agreement with that map partly
measures DIGR's training target. A teacher trained from another seed on the same task learnt the task separately; its
perturbation map of the same frames is a reference no student saw. For every map of a run (its teacher's perturbation
and gradient maps, each student's gradient map) on the run's held-out frames, Spearman ρ and top-k % IoU with the
other teacher's perturbation map (same σ_mask, σ_blur and stride as the run) are written to ``cross_teacher.json`` in
the run folder, which :func:`digr.evaluation.aggregate.run_scores` reads as ``saliency spearman_other_teacher`` and
``saliency iou_top{k}_other_teacher``. The row ``teacher perturbation`` says how much two teachers agree at all: the
ceiling a student can reach on this reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch as th

from digr.checkpoint import sha256_file, write_text_atomic
from digr.errors import DigrError
from digr.evaluation.aggregate import CROSS_TEACHER_FILE
from digr.evaluation.maps import attention_maps, gradient_maps
from digr.evaluation.metrics import mean_ci, spearman, topk_iou
from digr.method.dataset import load_dataset, perturbation_maps
from digr.policies import load_student, load_teacher
from digr.running.config import config_from_dict
from digr.running.run_folder import RunFolder
from digr.saliency.attention import has_attention

__all__ = ["cross_teacher_quality", "write_cross_teacher"]


def cross_teacher_quality(run: Path, other: Path, frames: int = 256, device: str = "cpu") -> dict:
    """Agreement of every map of ``run`` with the perturbation map of ``other``'s teacher on ``run``'s first ``frames``
    held-out frames.

    :param run: a finished run folder (config.yml, dataset_heldout.npz, teacher_saliency_heldout.npy, teacher and
        student weights). :param other: a run folder whose teacher was trained separately (another seed).
    :returns: ``{"other_run": str, "other_teacher_sha256": str, "requested_frames": frames, "frames": n, "top_percent": k,
        "weights_sha256": {"teacher", "teacher_maps", <student>: SHA-256 of the files the maps came from},
        "maps": {map name: {"spearman_other_teacher" | "iou_top{k}_other_teacher": {"mean", "ci95", "n"}}}}``.
    :raises DigrError: a file of either run is missing, or both runs have the same teacher weights (no independent
        reference; e.g. student seeds on one committed teacher).
    """
    run, other = Path(run), Path(other)
    cfg = _config(run)
    folder, other_folder = RunFolder(run), RunFolder(other)
    for path in (
        folder.teacher.weights,
        other_folder.teacher.weights,
        folder.dataset("heldout"),
        folder.teacher_maps("heldout"),
        *(folder.student(s.name).weights for s in cfg.distill.students),
    ):
        if not path.is_file():
            raise DigrError(f"{path}: missing; cross-teacher agreement needs finished runs (`digr run`) on both sides")
    weights, other_sha = _fingerprint(run, cfg), sha256_file(other_folder.teacher.weights)
    if weights["teacher"] == other_sha:
        raise DigrError(f"{run} and {other} have the same teacher weights: there is no independent teacher to compare with")
    full = load_dataset(folder.dataset("heldout"))
    n = min(frames, len(full))
    held = full.subset(np.arange(n))
    image, side = held.tensors(device=device)
    reference = perturbation_maps(load_teacher(other_folder.teacher.weights, device), held, cfg.perturbation, device)
    teacher = load_teacher(folder.teacher.weights, device)
    maps = {"teacher perturbation": np.load(folder.teacher_maps("heldout"))[:n]}
    maps["teacher gradient"] = gradient_maps(teacher, image, side)
    for s in cfg.distill.students:
        student = load_student(folder.student(s.name).weights, device)
        maps[f"{s.name} gradient"] = gradient_maps(student, image, side)
        if has_attention(student):
            maps[f"{s.name} attention"] = attention_maps(student, image, side)
    k = cfg.evaluate.top_percent
    ref = th.as_tensor(reference)
    quality = {
        name: {
            "spearman_other_teacher": mean_ci(spearman(th.as_tensor(m), ref)),
            f"iou_top{k:g}_other_teacher": mean_ci(topk_iou(th.as_tensor(m), ref, k)),
        }
        for name, m in maps.items()
    }
    return {"other_run": str(other), "other_teacher_sha256": other_sha, "requested_frames": frames, "frames": n,
            "top_percent": k, "weights_sha256": weights, "maps": quality}  # fmt: skip


def write_cross_teacher(
    runs: Sequence[Path], frames: int = 256, log: Callable[[str], None] | None = None, device: str = "cpu"
) -> int:
    """Pair each run with the next one in the given order (cyclically; seeds of one variant) and write
    ``cross_teacher.json`` in each. A file made with the same other run, frame count and weights (both teachers, the
    teacher maps, every student) is kept; anything retrained or added is recomputed.

    :returns: how many files were (re)written. Fewer than 2 runs: none.
    :raises DigrError: as :func:`cross_teacher_quality`.
    """
    runs = [Path(r) for r in runs]
    written = 0
    if len(runs) < 2:
        return written
    for i, run in enumerate(runs):
        other, path = runs[(i + 1) % len(runs)], run / CROSS_TEACHER_FILE
        if _current(path, run, other, frames):
            continue
        if log is not None:
            log(f"cross-teacher: maps of {run.name} against the teacher of {other.name}")
        write_text_atomic(path, json.dumps(cross_teacher_quality(run, other, frames, device), indent=2))
        written += 1
    return written


def _current(path: Path, run: Path, other: Path, frames: int) -> bool:
    """Whether ``path`` already holds the comparison with ``other`` on as many frames as asked, made from the weights
    (teachers, teacher maps, every configured student) that are in the two run folders now."""
    try:
        old = json.loads(path.read_text())
        now, other_now = _fingerprint(run), sha256_file(RunFolder(other).teacher.weights)
    except (OSError, ValueError, DigrError):
        return False  # missing or damaged: (re)write, or let cross_teacher_quality name what is missing
    return (old.get("other_run"), old.get("requested_frames"), old.get("weights_sha256"), old.get("other_teacher_sha256")) == (
        str(other), frames, now, other_now)  # fmt: skip


def _config(run: Path):
    """The run's config (``config.yml``), validated."""
    import yaml

    return config_from_dict(yaml.safe_load((run / "config.yml").read_text()))


def _fingerprint(run: Path, cfg=None) -> dict[str, str]:
    """SHA-256 of the files a run's maps come from: its teacher, its teacher maps and every configured student."""
    cfg = cfg or _config(run)
    folder = RunFolder(run)
    out = {"teacher": sha256_file(folder.teacher.weights), "teacher_maps": sha256_file(folder.teacher_maps("heldout"))}
    return out | {s.name: sha256_file(folder.student(s.name).weights) for s in cfg.distill.students}
