"""The metrics of a run (``metrics.json``): every agent's returns, its agreement with the teacher, and the quality of
every agent's saliency map on the held-out frames.

Layout of the dict :func:`evaluate_agents` returns (the pipeline adds ``latency``, ``mask_fraction``, the teacher's
``num_timesteps`` and each student's ``lam`` and ``mask``)::

    {"eval_episodes", "eval_seed", "heldout_frames", "top_percent",
     "teacher": {"rollout": summary},
     "students": {name: {"rollout": summary, "action_agreement": float}},
     "maps": {"teacher perturbation" | "teacher gradient" | "<student> gradient": {metric: {"mean", "ci95", "n"}}}}

with summaries of :func:`digr.evaluation.returns.summarize_episodes` and map metrics of
:func:`digr.evaluation.maps.map_quality`.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch as th

from digr.contracts import Policy
from digr.evaluation.maps import agree_actions, gradient_maps, map_quality
from digr.evaluation.returns import rollout_returns
from digr.method.dataset import StateDataset

__all__ = ["evaluate_agents"]


def evaluate_agents(agents: dict[str, Policy], held: StateDataset, reference: np.ndarray, *, env_fn: Callable[[], gym.Env],
                    episodes: int, seed: int, deterministic: bool = True, top_percent: float = 10.0, device: str = "cpu",
                    progress: Callable[[str, int, int], None] | None = None,
                    log: Callable[[str], None] | None = None) -> tuple[dict, dict[str, np.ndarray]]:  # fmt: skip
    """Evaluate the teacher (``agents["teacher"]``) and every student (the other entries).

    :param held: held-out states (images uint8 ``[N, C, H, W]``, target masks bool ``[N, H, W]``).
    :param reference: the teacher's perturbation maps of those states, float ``[N, H, W]``.
    :param env_fn, episodes, seed, deterministic: closed-loop returns (:func:`digr.evaluation.returns.rollout_returns`).
    :param top_percent: k of the top-k % IoU. :param progress: ``progress(agent, episodes_done, episodes)``.
    :returns: ``(metrics, maps)``: the metrics dict (module docstring) and each map, float ``[N, H, W]``, by name.
    :raises KeyError: no ``"teacher"`` in ``agents``.
    """
    teacher, students = agents["teacher"], {k: v for k, v in agents.items() if k != "teacher"}
    image = th.as_tensor(held.images, device=device).float() / 255.0
    side = None if held.side is None else th.as_tensor(held.side, device=device)
    target = held.target_mask if held.target_mask.any() else None
    metrics = {"eval_episodes": episodes, "eval_seed": seed, "heldout_frames": len(held), "top_percent": top_percent,
               "teacher": {}, "students": {name: {} for name in students}, "maps": {}}  # fmt: skip
    for name, policy in agents.items():
        r = rollout_returns(env_fn, policy, episodes, seed, deterministic,
                            progress=None if progress is None else lambda k, name=name: progress(name, k, episodes))  # fmt: skip
        (metrics["teacher"] if name == "teacher" else metrics["students"][name])["rollout"] = r
        if log is not None:
            log(f"evaluate: {name}: success {r['success_rate']:.3f}, return {r['return_mean']:.3f} over {episodes} episodes")
    for name, student in students.items():
        metrics["students"][name]["action_agreement"] = agree_actions(student, teacher, image, side)
    maps = {"teacher perturbation": reference, "teacher gradient": gradient_maps(teacher, image, side)}
    maps.update({f"{name} gradient": gradient_maps(student, image, side) for name, student in students.items()})
    ref = th.as_tensor(reference)
    for name, m in maps.items():
        metrics["maps"][name] = map_quality(th.as_tensor(m), None if name == "teacher perturbation" else ref, target, top_percent)
    return metrics, maps
