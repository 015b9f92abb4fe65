"""Time per saliency map: the student's one-pass gradient map against the teacher's perturbation map.

:func:`latency_rows` times both on the same frames at each batch size; :func:`bench_latency` repeats that at each torch
thread count (``digr bench saliency``); :func:`random_frames` gives frames from the run's environment under a uniformly
random policy (through the rollout engine) when no stored frames are at hand. Latency does not depend on the weights,
so untrained networks of the right architecture time the same. Numbers are medians of repeated calls after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import gymnasium as gym
import torch as th

from digr.contracts import Policy, obs_to_tensors, stack_obs
from digr.rollout import Hook, RandomActor, Step, run_episodes
from digr.saliency import PerturbationSaliency, act_and_explain

__all__ = ["bench_latency", "latency_rows", "latency_summary", "random_frames", "time_per_map"]


def time_per_map(
    fn: Callable[[th.Tensor, th.Tensor | None], th.Tensor],
    image: th.Tensor,
    side: th.Tensor | None,
    batch: int,
    repeats: int,
    warmup: int = 1,
) -> dict:
    """Median wall time of ``fn(image[:batch], side[:batch])``, per frame, after ``warmup`` untimed calls.

    :returns: ``{"batch", "repeats", "ms_per_frame" (median), "ms_per_frame_min", "ms_per_call"}`` (milliseconds).
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
    return {
        "batch": len(x),
        "repeats": repeats,
        "ms_per_call": 1000 * med,
        "ms_per_frame": 1000 * med / len(x),
        "ms_per_frame_min": 1000 * min(times) / len(x),
    }


def latency_rows(
    teacher: Policy, student: Policy, image: th.Tensor, side: th.Tensor | None, p, batches=(1, 32), repeats: int = 20
) -> list[dict]:
    """Median per-frame latency of the student's gradient map and the teacher's perturbation map at each batch size.

    The student's map is :func:`digr.saliency.act_and_explain` (the acting forward pass + one backward pass). The
    perturbation row also gives the achieved forward passes per second and, for comparison, that of a plain batched
    forward pass of the same teacher network on as many images (the rate the convolutions allow).

    :param image: float ``[N, C, H, W]`` in [0, 1]; batch sizes above N are timed at N (and labelled so).
    :param side: ``[N, K]`` or None.
    :param p: the perturbation config section (``sigma_mask``, ``sigma_blur``, ``stride`` in pixels,
        ``internal_batch_size``).
    :returns: rows ``{"map", "batch", "ms_per_frame", "passes", ...}``, two per batch size (student first).
    """
    method = PerturbationSaliency.from_params(p)
    passes = method.cost(tuple(image.shape[1:])).forward
    rows = []
    for b in dict.fromkeys(min(b, len(image)) for b in batches):  # a batch can hold at most the frames there are
        g = time_per_map(lambda x, s: act_and_explain(student, x, s), image, side, b, repeats)
        q = time_per_map(lambda x, s: method(teacher, x, None, s), image, side, b, max(3, repeats // 4))
        n = min(p.internal_batch_size, b * passes)  # one forward pass of the size the perturbation map uses
        xs = image[:b].repeat(passes, 1, 1, 1)[:n].contiguous()
        ss = None if side is None else side[:b].repeat(passes, 1)[:n].contiguous()
        with th.inference_mode():
            f = time_per_map(lambda x, s, xs=xs, ss=ss: teacher(xs, ss), image, side, b, max(3, repeats // 4))
        rows.append(
            {
                "map": "student gradient",
                "batch": b,
                "ms_per_frame": g["ms_per_frame"],
                "passes": "1 fwd (which also picks the greedy action) + 1 bwd",
            }
        )
        rows.append(
            {
                "map": f"teacher perturbation (stride {p.stride})",
                "batch": b,
                "ms_per_frame": q["ms_per_frame"],
                "passes": f"{passes} fwd",
                "forward_passes_per_s": b * passes / (q["ms_per_call"] / 1000),
                "plain_forward_passes_per_s": n / (f["ms_per_call"] / 1000),
            }
        )
    return rows


def latency_summary(rows: list[dict]) -> dict:
    """``{"threads", "rows", "ratio"}`` with ``ratio[str(batch)]`` = teacher perturbation ms / student gradient ms."""
    ratio = {}
    for b in dict.fromkeys(r["batch"] for r in rows):
        at = {r["map"] == "student gradient": r["ms_per_frame"] for r in rows if r["batch"] == b}
        ratio[str(b)] = at[False] / at[True]
    return {"threads": th.get_num_threads(), "rows": rows, "ratio": ratio}


class _Frames(Hook):
    def __init__(self, n: int):
        self.n, self.obs = n, []

    def on_step(self, step: Step) -> None:
        self.obs.extend(step.obs[: self.n - len(self.obs)])


def random_frames(env_fn: Callable[[], gym.Env], n: int, seed: int, n_actions: int) -> tuple[th.Tensor, th.Tensor | None]:
    """``n`` observations of the env under uniformly random actions (episodes seeded ``seed + i``), as
    ``(image float [n, C, H, W] in [0, 1], side float [n, K] or None)``.

    :raises ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"need at least one frame, got n={n}")
    frames = _Frames(n)
    run_episodes(
        env_fn, RandomActor(n_actions, seed), episodes=None, seed=seed, hooks=[frames], stop=lambda: len(frames.obs) >= n
    )
    return obs_to_tensors(stack_obs(frames.obs))


def bench_latency(
    teacher: Policy,
    student: Policy,
    image: th.Tensor,
    side: th.Tensor | None,
    p,
    batches: Sequence[int] = (1, 32),
    repeats: int = 20,
    threads: Sequence[int] | None = None,
) -> list[dict]:
    """:func:`latency_rows` at each torch thread count in ``threads`` (the same count for both maps, so each ratio
    compares like with like); rows carry ``"threads"``. The thread count in force before is restored afterwards.

    :param threads: thread counts ≥ 1; None = the current count.
    :raises ValueError: a thread count below 1.
    """
    threads = tuple(threads) if threads else (th.get_num_threads(),)
    if min(threads) < 1:
        raise ValueError(f"thread counts must be >= 1, got {threads}")
    rows, before = [], th.get_num_threads()
    try:
        for n in threads:
            th.set_num_threads(n)
            rows += [{**r, "threads": n} for r in latency_rows(teacher, student, image, side, p, batches, repeats)]
    finally:
        th.set_num_threads(before)
    return rows
