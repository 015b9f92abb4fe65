"""DAgger for distillation: the student visits states, the teacher labels them, the student trains on the union.

Ross, Gordon, Bagnell 2011, "A Reduction of Imitation Learning and Structured Prediction to No-Regret Online
Learning" (AISTATS, Algorithm 3.1 with β = 0 after the first round); for policy distillation see Czarnecki et al.
2019, "Distilling Policy Distillation" (AISTATS). Round 0 trains on the teacher's own states; each later round rolls
the current student out greedily, keeps ``frames`` of the states it visits, labels them with the teacher's logits (and
the penalty masks the student's kind needs), appends them to the student's data and trains ``steps`` more.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from digr.checkpoint import save_npy_atomic
from digr.method.dataset import StateDataset, load_dataset, load_maps, save_dataset
from digr.method.distill import DistillData

__all__ = ["dagger_seed", "labelled_round", "run_dagger"]


def dagger_seed(seed: int, round_: int) -> int:
    """Seed of the first episode of DAgger round ``round_`` ≥ 1 of a run seeded ``seed`` (apart from the dataset's
    splits, :func:`digr.method.dataset.split_seed`, and from other rounds)."""
    return seed * 1_000_003 + 700_001 + 100_000 * round_


def labelled_round(
    states_path: Path,
    maps_path: Path,
    collect: Callable[[], StateDataset],
    teacher_maps: Callable[[StateDataset], np.ndarray] | None = None,
) -> tuple[StateDataset, np.ndarray | None]:
    """The states of one DAgger round, cached on disk: visited by the student, labelled by the teacher.

    If ``states_path`` exists (an interrupted run), the round is read back instead of collected again. Otherwise
    ``collect()`` gathers the states (e.g. :func:`digr.method.dataset.collect_states` with ``actor=student``, seeded
    with :func:`dagger_seed`) and, with ``teacher_maps``, the teacher's saliency maps are computed and written to
    ``maps_path`` first, then the states to ``states_path``, so a cached round always has its maps.

    :param teacher_maps: maps a dataset to the teacher's saliency float ``[N, H, W]`` (selective masks need them), or
        None when the student's mask does not use them.
    :returns: ``(states, maps or None)``.
    """
    if states_path.is_file():
        return load_dataset(states_path), (load_maps(maps_path) if teacher_maps is not None else None)
    ds = collect()
    maps = None
    if teacher_maps is not None:
        maps = teacher_maps(ds)
        save_npy_atomic(maps, maps_path)
    save_dataset(ds, states_path)
    return ds, maps


def run_dagger(
    data: DistillData,
    *,
    rounds: int,
    steps: int,
    round_data: Callable[[int], DistillData],
    train: Callable[[DistillData, int], list[dict]],
) -> list[dict]:
    """Train for ``steps`` on ``data``, then ``rounds`` times: add ``round_data(r)`` (the student's labelled states of
    round r = 1..rounds) and train to ``steps·(r + 1)`` steps in total.

    :param train: ``train(data, total_steps) -> history``; it continues from the student's checkpoint, so every round
        resumes where the previous one stopped (and an interrupted run where it was interrupted).
    :returns: the history of the last call to ``train``.
    """
    history = train(data, steps)
    for r in range(1, rounds + 1):
        data = data.concat(round_data(r))
        history = train(data, steps * (r + 1))
    return history
