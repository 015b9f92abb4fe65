"""Evaluation of teachers and students: closed-loop return and success, saliency agreement and localisation on
held-out frames, and time per saliency map.

Conventions: agents act greedily (argmax of the logits) unless ``deterministic=False``; episode ``i`` uses seed
``seed + i`` for every agent, so all agents face the same layouts. A student's deployment saliency is its vanilla
input gradient for its own greedy action; the teacher's reference saliency is its perturbation map.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from digr.metrics import mass_inside, nanmean_ci, pointing_game, spearman, topk_iou
from digr.policies import greedy_action, obs_to_tensors

__all__ = ["rollout_returns", "summarize_episodes", "TrajectoryHash", "map_quality", "time_per_map", "batched"]


def rollout_returns(env_fn: Callable[[], gym.Env], policy: nn.Module, episodes: int, seed: int, deterministic: bool = True,
                    progress: Callable[[int], None] | None = None) -> dict:
    """Run ``episodes`` full episodes (seeds ``seed + i``) and summarise them.

    :returns: ``{"returns": [...], "successes": [...], "lengths": [...], "trajectory_ids": [...], "return_mean",
        "return_std", "return_ci95", "success_rate", "success_ci95", "episodes"}``; CIs are normal-approximation 95 %
        half-widths; ``trajectory_ids`` fingerprint each episode's observations (:class:`TrajectoryHash`). Success comes from
        ``info["is_success"]`` at the episode's end; envs without it (Atari: the score is the metric) give NaN.
    """
    env = env_fn()
    gen = th.Generator().manual_seed(seed)
    returns, successes, lengths, ids = [], [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        done, total, n = False, 0.0, 0
        trajectory = TrajectoryHash()
        while not done:
            trajectory.update(obs)
            image, side = obs_to_tensors(obs)
            with th.no_grad():
                logits = policy(image, side)
            action = int(logits.argmax(1)) if deterministic else int(th.multinomial(th.softmax(logits[0], 0), 1, generator=gen))
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            n += 1
            done = terminated or truncated
        returns.append(total)
        successes.append(float(info["is_success"]) if "is_success" in info else float("nan"))
        lengths.append(n)
        ids.append(trajectory.hexdigest())
        if progress:
            progress(i + 1)
    env.close()
    return summarize_episodes(returns, successes, lengths, ids)


class TrajectoryHash:
    """Running fingerprint of the observations of one episode, to count how many *different* games were played.

    ``update(obs)`` adds one observation (a dict of numpy arrays, e.g. ``{"image": uint8 [C, H, W], "side": float [K]}``,
    or an array), keys in sorted order, dtype and shape included; ``hexdigest()`` gives 16 hex characters (BLAKE2b,
    8 bytes). Two episodes get the same id exactly when (up to a 2⁻⁶⁴ collision) they showed the agent the same
    sequence of observations, so a greedy agent replaying one game from equivalent starts (Atari no-op starts) is
    counted once, while different layouts with equal return and length (MiniGrid) are counted apart.
    """

    def __init__(self):
        self._h = hashlib.blake2b(digest_size=8)

    def update(self, obs) -> None:
        items = sorted(obs.items()) if isinstance(obs, dict) else [("", obs)]
        for key, value in items:
            a = np.ascontiguousarray(value)
            self._h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
            self._h.update(a.tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def summarize_episodes(returns: list[float], successes: list[float], lengths: list[int],
                       trajectory_ids: list[str] | None = None) -> dict:
    """Summary of finished episodes (one entry per episode; success NaN where the env reports none).

    :param trajectory_ids: per-episode :class:`TrajectoryHash` digests, kept as ``"trajectory_ids"`` if given.
    :returns: ``{"episodes", "return_mean", "return_std", "return_ci95", "success_rate", "success_ci95", "mean_length",
        "returns", "successes", "lengths"}`` (+ ``"trajectory_ids"``); CIs are normal-approximation 95 % half-widths,
        NaN success is skipped.
    """
    r, s = np.asarray(returns, dtype=np.float64), np.asarray(successes, dtype=np.float64)
    _, r_ci, _ = nanmean_ci(r)
    s_mean, s_ci, _ = nanmean_ci(s)
    return {"episodes": len(r), "return_mean": float(r.mean()), "return_std": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
            "return_ci95": r_ci, "success_rate": s_mean, "success_ci95": s_ci,
            "mean_length": float(np.mean(lengths)), "returns": returns, "successes": successes, "lengths": lengths,
            **({} if trajectory_ids is None else {"trajectory_ids": list(trajectory_ids)})}


def map_quality(maps: th.Tensor, reference: th.Tensor | None, target_mask: np.ndarray | None, top_percent: float = 10.0) -> dict:
    """Agreement of ``maps`` ``[B, H, W]`` with ``reference`` ``[B, H, W]`` and localisation on ``target_mask`` (bool ``[B, H, W]``).

    :returns: ``{metric: {"mean", "ci95", "n"}}`` for ``spearman``, ``iou_top{p}`` (if ``reference``) and
        ``mass_inside``, ``pointing_game`` (if ``target_mask``).
    """
    out = {}

    def put(name, values):
        m, ci, n = nanmean_ci(values)
        out[name] = {"mean": m, "ci95": ci, "n": n}

    if reference is not None:
        put("spearman", spearman(maps, reference))
        put(f"iou_top{top_percent:g}", topk_iou(maps, reference, top_percent))
    if target_mask is not None:
        put("mass_inside", mass_inside(maps, target_mask))
        put("pointing_game", pointing_game(maps, target_mask))
    return out


def batched(fn: Callable[..., th.Tensor], image: th.Tensor, side: th.Tensor | None, batch: int, *args) -> th.Tensor:
    """Apply ``fn(image_chunk, side_chunk, *arg_chunks)`` over chunks of ``batch`` frames and concatenate."""
    outs = []
    for i in range(0, len(image), batch):
        sl = slice(i, i + batch)
        outs.append(fn(image[sl], None if side is None else side[sl], *(a[sl] for a in args)))
    return th.cat(outs)


def time_per_map(fn: Callable[[th.Tensor, th.Tensor | None], th.Tensor], image: th.Tensor, side: th.Tensor | None, batch: int,
                 repeats: int, warmup: int = 1) -> dict:
    """Median wall time of ``fn`` on the first ``batch`` frames, per frame.

    :returns: ``{"batch", "repeats", "ms_per_frame" (median), "ms_per_frame_min", "ms_per_call"}``.
    """
    x = image[:batch]
    s = None if side is None else side[:batch]
    for _ in range(warmup):
        fn(x, s)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x, s)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"batch": len(x), "repeats": repeats, "ms_per_call": 1000 * med, "ms_per_frame": 1000 * med / len(x),
            "ms_per_frame_min": 1000 * min(times) / len(x)}


def agree_actions(a: nn.Module, b: nn.Module, image: th.Tensor, side: th.Tensor | None) -> float:
    """Fraction of frames where the greedy actions of ``a`` and ``b`` agree."""
    return float((greedy_action(a, image, side) == greedy_action(b, image, side)).float().mean())
