"""``digr bench saliency``: which networks to time and on which frames; the timing itself is
:func:`digr.evaluation.latency.bench_latency` and the table :func:`digr.report.bench.latency_table`."""

from __future__ import annotations

import functools

from digr.evaluation.latency import bench_latency, random_frames
from digr.policies import load_student, load_teacher, new_student
from digr.running.config import ExperimentConfig
from digr.running.run_folder import RunFolder

__all__ = ["bench_saliency_latency"]


def bench_saliency_latency(
    folder: RunFolder, cfg: ExperimentConfig, env_fn, batches, repeats: int, threads
) -> tuple[list[dict], str]:
    """``digr bench saliency``: latency rows at each thread count, with the run's trained teacher and last student when
    the run folder has them (every student has the teacher's architecture, so which one does not matter), else untrained
    networks of the configured architecture, on frames of the run's env under random actions.

    :param batches: batch sizes ≥ 1. :param repeats: timed calls of the gradient map (perturbation: a quarter, ≥ 3).
    :param threads: torch thread counts, or None for the current one.

    :returns: ``(rows, source)``; ``source`` says which networks were timed.
    """
    env = env_fn()
    n_actions = env.action_space.n
    env.close()
    image, side = random_frames(env_fn, max(batches), cfg.seed, n_actions)
    untrained = functools.partial(
        new_student, tuple(image.shape[1:]), n_actions, 0 if side is None else side.shape[1], cfg.teacher
    )
    trained = folder.teacher.weights.is_file()
    teacher = load_teacher(folder.teacher.weights) if trained else untrained(cfg.seed).eval()
    last = folder.student(cfg.distill.students[-1].name).weights
    student = load_student(last) if last.is_file() else untrained(cfg.seed + 1).eval()
    source = f"trained teacher/student from {folder.root}" if trained else "untrained networks of the configured architecture"
    return bench_latency(teacher, student, image, side, cfg.perturbation, batches, repeats, threads), source
