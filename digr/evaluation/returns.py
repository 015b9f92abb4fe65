"""Closed-loop returns and success of an agent, summarised with confidence intervals.

Conventions: agents act greedily (argmax of the logits) unless ``deterministic=False``; episode ``i`` uses seed
``seed + i`` for every agent, so all agents face the same layouts (:func:`digr.rollout.run_episodes`). Each episode is
fingerprinted (:class:`digr.rollout.Fingerprints`) so that reports count how many *different* games were played.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch as th

from digr.contracts import Policy, policy_device
from digr.evaluation.metrics import nanmean_ci
from digr.rollout import Episode, Fingerprints, GreedyActor, SampleActor, run_episodes

__all__ = ["distinct_episodes", "rollout_returns", "summarize_episodes"]


def rollout_returns(
    env_fn: Callable[[], gym.Env],
    policy: Policy,
    episodes: int,
    seed: int,
    deterministic: bool = True,
    progress: Callable[[int], None] | None = None,
    n_envs: int = 1,
) -> dict:
    """Run ``episodes`` full episodes (seeds ``seed + i``) and summarise them (:func:`summarize_episodes`).

    :param deterministic: greedy actions; otherwise actions are sampled from the policy with a generator seeded ``seed``.
    :param n_envs: episodes stepped in lockstep (see :func:`digr.rollout.run_episodes`; 1 = one at a time, the
        protocol of every committed result).
    :returns: the summary dict of :func:`summarize_episodes`, with ``trajectory_ids``.
    """
    actor = GreedyActor(policy) if deterministic else SampleActor(policy, 1.0, th.Generator().manual_seed(seed))
    fingerprints = Fingerprints()
    done = run_episodes(env_fn, actor, episodes=episodes, seed=seed, n_envs=n_envs, hooks=[fingerprints], progress=progress,
                        device=policy_device(policy))  # fmt: skip
    return summarize(done, fingerprints)


def summarize(done: list[Episode], fingerprints: Fingerprints | None = None) -> dict:
    """:func:`summarize_episodes` of finished :class:`digr.rollout.Episode` objects (in index order)."""
    ids = None if fingerprints is None else [fingerprints.ids[e.index] for e in done]
    return summarize_episodes([e.ret for e in done], [e.success for e in done], [e.length for e in done], ids)


def summarize_episodes(
    returns: list[float], successes: list[float], lengths: list[int], trajectory_ids: list[str] | None = None
) -> dict:
    """Summary of finished episodes (one entry per episode; success NaN where the env reports none).

    :param trajectory_ids: per-episode :class:`digr.rollout.TrajectoryHash` digests, kept as ``"trajectory_ids"``.
    :returns: ``{"episodes", "return_mean", "return_std", "return_ci95", "success_rate", "success_ci95", "mean_length",
        "returns", "successes", "lengths"}`` (+ ``"trajectory_ids"``); CIs are normal-approximation 95 % half-widths,
        NaN success is skipped.
    """
    r, s = np.asarray(returns, dtype=np.float64), np.asarray(successes, dtype=np.float64)
    _, r_ci, _ = nanmean_ci(r)
    s_mean, s_ci, _ = nanmean_ci(s)
    return {
        "episodes": len(r),
        "return_mean": float(r.mean()),
        "return_std": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
        "return_ci95": r_ci,
        "success_rate": s_mean,
        "success_ci95": s_ci,
        "mean_length": float(np.mean(lengths)),
        "returns": returns,
        "successes": successes,
        "lengths": lengths,
        **({} if trajectory_ids is None else {"trajectory_ids": list(trajectory_ids)}),
    }


def distinct_episodes(rollout: dict) -> int:
    """How many different games an agent actually played among a summary's episodes (:func:`summarize_episodes`): the
    number of different ``trajectory_ids`` (fingerprints of the observation sequences); for summaries written before
    those were recorded, the number of different (return, length) pairs, a lower bound (different games can share
    return and length).

    :raises KeyError: the summary has neither ``trajectory_ids`` nor ``returns`` and ``lengths``.
    """
    if rollout.get("trajectory_ids"):
        return len(set(rollout["trajectory_ids"]))
    return len(set(zip(rollout["returns"], rollout["lengths"])))
