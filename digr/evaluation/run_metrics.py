"""The metrics of a run (``metrics.json``): every agent's returns, its agreement with the teacher, and the quality of
every agent's saliency map on the held-out frames.

Layout of the dict :func:`evaluate_agents` returns (the pipeline adds ``mask_fraction``; ``info`` entries, such as
the teacher's ``num_timesteps`` and each student's ``lam`` and ``mask``, join their agent's dict)::

    {"eval_episodes", "eval_seed", "heldout_frames", "top_percent",
     "teacher": {"rollout": summary, ["rollout_compare": summary]},
     "students": {name: {"rollout": summary, ["rollout_compare": summary], "action_agreement": float}},
     "maps": {"teacher perturbation" | "teacher gradient" | "<student> gradient" | "<student> attention" (attention
              students) | "teacher occlusion": {metric: {"mean", "ci95", "n"}}},
     "latency": {"threads", "rows", "ratio"}}

with summaries of :func:`digr.evaluation.returns.summarize_episodes` and map metrics of
:func:`digr.evaluation.maps.map_quality`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch as th

from digr.contracts import Policy
from digr.evaluation.independent import independent_quality, occlusion_maps
from digr.evaluation.latency import latency_rows, latency_summary
from digr.evaluation.maps import agree_actions, attention_maps, gradient_maps, map_quality
from digr.evaluation.returns import distinct_episodes, rollout_returns
from digr.method.dataset import StateDataset

__all__ = ["evaluate_agents"]


def evaluate_agents(
    agents: dict[str, Policy],
    held: StateDataset,
    reference: np.ndarray,
    e,
    env_fn: Callable[[], gym.Env],
    compare_env_fn: Callable[[], gym.Env] | None = None,
    *,
    perturbation,
    device: str = "cpu",
    info: dict[str, dict] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    reuse: dict[tuple[str, str], dict] | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Evaluate the teacher (``agents["teacher"]``) and every student (the other entries); time the first student's
    gradient map against the teacher's perturbation map (:func:`digr.evaluation.latency.latency_rows`).

    :param held: held-out states (images uint8 ``[N, C, H, W]``, target masks bool ``[N, H, W]``).
    :param reference: the teacher's perturbation maps of those states, float ``[N, H, W]``.
    :param e: the ``evaluate`` config section: ``episodes``, ``seed``, ``deterministic`` (closed-loop returns,
        :func:`digr.evaluation.returns.rollout_returns`), ``top_percent`` (k of the top-k % IoU), ``latency_batch``
        and ``latency_repeats``. :param env_fn: builds the env of the evaluation protocol (closed-loop returns).
    :param compare_env_fn: builds the env of a second protocol whose returns are stored beside the first as each agent's
        ``rollout_compare`` (e.g. Atari's deterministic no-op protocol beside sticky actions), or None.
    :param perturbation: the ``perturbation`` config section (the timed teacher map).
    :param info: agent name → more JSON-safe fields for that agent's entry (e.g. ``{"digr": {"lam": 0.01}}``).
    :param progress: ``progress(agent, episodes_done, episodes)``. :param log: called with one line per agent.
    :param reuse: ``{(agent, "rollout" | "rollout_compare"): summary}`` measured earlier under the same weights and
        protocol (:func:`digr.evaluation.rollout_reuse.reusable_rollouts`): taken as they are, not replayed.
    :returns: ``(metrics, maps)``: the metrics dict (module docstring) and each map, float ``[N, H, W]``, by name.
    :raises KeyError: no ``"teacher"`` in ``agents``.
    """
    episodes, seed, top_percent = e.episodes, e.seed, e.top_percent
    teacher, students = agents["teacher"], {k: v for k, v in agents.items() if k != "teacher"}
    image, side = held.tensors(device=device)
    target = held.target_mask if held.target_mask.any() else None
    regions = {k: v for k, v in held.regions.items() if v.any()}
    metrics = {
        "eval_episodes": episodes,
        "eval_seed": seed,
        "heldout_frames": len(held),
        "top_percent": top_percent,
        "teacher": {},
        "students": {name: {} for name in students},
        "maps": {},
    }
    protocols = {"rollout": env_fn} | ({} if compare_env_fn is None else {"rollout_compare": compare_env_fn})
    for (key, fn), (name, policy) in itertools.product(protocols.items(), agents.items()):
        tick = None if progress is None else lambda k, name=name: progress(name, k, episodes)
        reused = (reuse or {}).get((name, key))
        r = reused if reused is not None else rollout_returns(fn, policy, episodes, seed, e.deterministic, progress=tick)
        (metrics["teacher"] if name == "teacher" else metrics["students"][name])[key] = r
        if log is not None:
            again = " (reused: same weights and protocol)" if reused is not None else ""
            log(f"evaluate: {name} ({key}): success {r['success_rate']:.3f}, return {r['return_mean']:.3f}, "
                f"{distinct_episodes(r)} distinct of {episodes} episodes{again}")  # fmt: skip
    for name, student in students.items():
        metrics["students"][name]["action_agreement"] = agree_actions(student, teacher, image, side)
    maps = {"teacher perturbation": reference, "teacher gradient": gradient_maps(teacher, image, side)}
    maps.update({f"{name} gradient": gradient_maps(student, image, side) for name, student in students.items()})
    attending = {name: student for name, student in students.items() if getattr(student, "has_attention", False)}
    maps.update({f"{name} attention": attention_maps(student, image, side) for name, student in attending.items()})
    ref = th.as_tensor(reference)
    for name, m in maps.items():
        metrics["maps"][name] = map_quality(
            th.as_tensor(m), None if name == "teacher perturbation" else ref, target, top_percent, regions
        )
    n = min(e.independent_frames, len(held))
    if n:
        owners = {"teacher perturbation": teacher, "teacher gradient": teacher}
        owners |= {f"{name} gradient": student for name, student in students.items()}
        owners |= {f"{name} attention": student for name, student in attending.items()}
        local = (None if target is None else target[:n], {k: v[:n] for k, v in regions.items()})
        _independent(metrics["maps"], maps, owners, teacher, image[:n], None if side is None else side[:n], local, e, log)
    student = next(iter(students.values()))
    rows = latency_rows(teacher, student, image, side, perturbation, sorted({1, e.latency_batch}), e.latency_repeats)
    metrics["latency"] = latency_summary(rows)
    for name, extra in (info or {}).items():
        (metrics["teacher"] if name == "teacher" else metrics["students"][name]).update(extra)
    return metrics, maps


def _independent(quality: dict, maps: dict[str, np.ndarray], owners: dict[str, Policy], teacher: Policy, image, side,
                 local: tuple, e, log):  # fmt: skip
    """Add the mask-independent statistics (:mod:`digr.evaluation.independent`) of every map on the first ``len(image)``
    held-out frames to ``quality``, and a ``teacher occlusion`` row (the reference itself: its localisation, its
    agreement with the perturbation map, its faithfulness to the teacher); ``local`` = (target mask, regions) of those
    frames for the row's localisation."""
    n = len(image)
    occ = occlusion_maps(teacher, image, side, e.occlusion_window, e.occlusion_stride)
    for name, m in maps.items():
        quality[name].update(independent_quality(owners[name], m[:n], image, side, occ, e.top_percent, e.deletion_steps))
    row = quality["teacher occlusion"] = map_quality(
        th.as_tensor(occ), th.as_tensor(maps["teacher perturbation"][:n]), local[0], e.top_percent, local[1]
    )
    row.update(independent_quality(teacher, occ, image, side, None, e.top_percent, e.deletion_steps))
    if log is not None:
        log(f"evaluate: occlusion reference and deletion/insertion faithfulness on {n} held-out frames")
