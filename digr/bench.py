"""``digr bench saliency``: per-frame latency of the student's gradient map vs the teacher's perturbation map.

Uses the run's trained teacher and student when the run folder has them, otherwise freshly initialised networks of
the same architecture (latency does not depend on the weights), on frames from the run's environment.
"""

from __future__ import annotations

import numpy as np
import torch as th

from digr.config import ExperimentConfig, PerturbationConfig
from digr.evaluate import time_per_map
from digr.nets import PolicyNet
from digr.policies import load_student, obs_to_tensors
from digr.saliency import act_and_explain, perturbation_saliency

__all__ = ["bench_saliency", "latency_rows"]


def _frames(env_fn, n: int, seed: int):
    env = env_fn()
    obs, _ = env.reset(seed=seed)
    images, sides = [], []
    rng = np.random.default_rng(seed)
    for _ in range(n):
        images.append(obs["image"])
        if "side" in obs:
            sides.append(obs["side"])
        obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
    env.close()
    batch = {"image": np.stack(images)}
    if sides:
        batch["side"] = np.stack(sides)
    return obs_to_tensors(batch)


def latency_rows(teacher, student, image: th.Tensor, side: th.Tensor | None, p: PerturbationConfig, batches=(1, 32), repeats: int = 20) -> list[dict]:
    """Median per-frame latency of the student's gradient map and the teacher's perturbation map at each batch size.

    The perturbation row also gives the achieved forward passes per second and, for comparison, that of a plain
    batched forward pass of the same teacher network on as many images (the rate the convolutions allow).

    :param image: float ``[N, C, H, W]`` in [0, 1] with N ≥ max(batches). :param side: ``[N, K]`` or None.
    :returns: rows ``{"map", "batch", "ms_per_frame", "passes", ...}``.
    """
    h, w = image.shape[2:]
    passes = -(-h // p.stride) * -(-w // p.stride) + 1
    rows = []
    for b in batches:
        g = time_per_map(lambda x, s: act_and_explain(student, x, s), image, side, b, repeats)  # the acting forward pass + 1 backward
        q = time_per_map(lambda x, s: perturbation_saliency(teacher, x, None, s, sigma_mask=p.sigma_mask, sigma_blur=p.sigma_blur,
                                                            stride=p.stride, internal_batch_size=p.internal_batch_size),
                         image, side, b, max(3, repeats // 4))
        n = min(p.internal_batch_size, b * passes)  # one forward pass of the size the perturbation map uses
        xs = image[:b].repeat(passes, 1, 1, 1)[:n].contiguous()
        ss = None if side is None else side[:b].repeat(passes, 1)[:n].contiguous()
        with th.inference_mode():
            f = time_per_map(lambda x, s: teacher(xs, ss), image, side, b, max(3, repeats // 4))
        rows.append({"map": "student gradient", "batch": b, "ms_per_frame": g["ms_per_frame"], "passes": "1 fwd (which also picks the greedy action) + 1 bwd"})
        rows.append({"map": f"teacher perturbation (stride {p.stride})", "batch": b, "ms_per_frame": q["ms_per_frame"], "passes": f"{passes} fwd",
                     "forward_passes_per_s": b * passes / (q["ms_per_call"] / 1000), "plain_forward_passes_per_s": n / (f["ms_per_call"] / 1000)})
    return rows


def bench_saliency(cfg: ExperimentConfig, env_fn, batches=(1, 32), repeats: int = 20, threads: tuple[int, ...] | None = None) -> list[dict]:
    """Time both maps at each batch size with the run's trained teacher and student when the run folder has them (else
    untrained networks of the configured architecture); rows of :func:`latency_rows` plus ``"source"`` and ``"threads"``.

    :param threads: torch thread counts to time both maps at (the same count for both, so each ratio compares like with
        like); None = the current count. The previous count is restored afterwards.
    :raises ValueError: a thread count below 1.
    """
    threads = tuple(threads) if threads else (th.get_num_threads(),)
    if min(threads) < 1:
        raise ValueError(f"thread counts must be >= 1, got {threads}")
    image, side = _frames(env_fn, max(batches), cfg.seed)
    c, h, w = image.shape[1:]
    n_actions = env_fn().action_space.n
    t = cfg.teacher
    teacher_path = cfg.run_path / "teacher" / "teacher.safetensors"
    if teacher_path.is_file():
        from digr.teacher import load_teacher

        teacher, source = load_teacher(teacher_path), f"trained teacher/student from {cfg.run_path}"
    else:
        teacher = PolicyNet((c, h, w), n_actions, 0 if side is None else side.shape[1], t.cell, t.features_dim, arch=t.arch, channels=t.channels).eval()
        source = "untrained networks of the configured architecture"
    names = [s.name for s in cfg.distill.students]
    spath = cfg.run_path / "students" / f"{names[-1]}.safetensors" if names else None
    student = load_student(spath) if spath is not None and spath.is_file() else PolicyNet(
        (c, h, w), n_actions, 0 if side is None else side.shape[1], t.cell, t.features_dim, arch=t.arch, channels=t.channels).eval()
    rows, before = [], th.get_num_threads()
    try:
        for n in threads:
            th.set_num_threads(n)
            rows += [{**r, "source": source, "threads": n} for r in latency_rows(teacher, student, image, side, cfg.perturbation, batches, repeats)]
    finally:
        th.set_num_threads(before)
    return rows
