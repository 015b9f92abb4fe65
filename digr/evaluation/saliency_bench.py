"""``digr saliency-bench``: every saliency method on the teacher and on each student, quality against cost, one table.

For each agent (the teacher and every student of the run) and each method of ``saliency_bench.methods``, on the same
held-out frames (the agent explains its own greedy action), it measures

* cost: forward/backward passes per map and the median wall time per frame at batch 1 and at ``latency_batch``
  (timed once per network architecture: latency does not depend on the weights, and all students share one);
* agreement with the reference, the teacher's perturbation map (Greydanus et al. 2018) of the run: Spearman and
  Pearson correlation, IoU of the top-k % pixels, ROC AUC of predicting the reference's top-k % pixels;
* localisation on the ground-truth target cells (where the environment gives them): mass inside, pointing game;
* faithfulness: area under the deletion and insertion curves of the agent's action probability (Petsiuk et al. 2018;
  :mod:`digr.evaluation.faithfulness`), replacement = blurred frame;
* the sanity check (Adebayo et al. 2018): Spearman correlation with the same method on a weight-randomised copy;
* complexity: Gini index of the map.

:func:`bench_methods` returns the results as JSON-safe rows; the pipeline writes them to the run's
``saliency_bench/`` folder and :mod:`digr.report.bench` renders the table, figure and report section.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch as th

from digr.contracts import Policy, greedy_action
from digr.evaluation.faithfulness import deletion_curve, insertion_curve, randomize_weights, sanity_check
from digr.evaluation.latency import time_per_map
from digr.evaluation.maps import batched
from digr.evaluation.metrics import gini, mass_inside, mean_ci, pearson, pointing_game, spearman, topk_auc, topk_iou
from digr.method.dataset import StateDataset
from digr.saliency import SAMPLING_METHODS, PerturbationSaliency, SaliencyMethod, make_method

__all__ = ["bench_heldout", "bench_methods", "build_methods"]


def build_methods(sb, p, seed: int = 0) -> dict[str, SaliencyMethod]:
    """The configured methods, labelled (e.g. ``smoothgrad-50``), with the run's perturbation parameters.

    :param sb: the ``saliency_bench`` config section (``methods``, ``n_samples``, ``noise_level``, ``confidence``,
        ``ig_steps``, ``ig_baseline``, ``occlusion_window``, ``occlusion_stride``).
    :param p: the ``perturbation`` config section. :param seed: seeds the sampling methods.
    :raises ValueError: an unknown method name (the config loader already rejects those).
    """
    out = {}
    for name in sb.methods:
        if name in SAMPLING_METHODS:
            kw = {"n_samples": sb.n_samples, "seed": seed}
            if name == "adaptgrad":
                kw["confidence"] = sb.confidence
            else:
                kw["noise_level"] = sb.noise_level
            out[f"{name}-{sb.n_samples}"] = make_method(name, **kw)
        elif name == "integrated_gradients":
            out[f"integrated_gradients-{sb.ig_steps} ({sb.ig_baseline})"] = make_method(
                name, n_steps=sb.ig_steps, baseline=sb.ig_baseline
            )
        elif name == "occlusion":
            out[f"occlusion {sb.occlusion_window}px/{sb.occlusion_stride}"] = make_method(
                name, window=sb.occlusion_window, stride=sb.occlusion_stride
            )
        elif name == "perturbation":
            out[f"perturbation (stride {p.stride})"] = PerturbationSaliency.from_params(p)
        else:
            out[name] = make_method(name)
    return out


def bench_methods(
    agents: dict[str, Policy],
    image: th.Tensor,
    side: th.Tensor | None,
    reference: th.Tensor,
    target: np.ndarray | None,
    methods: dict[str, SaliencyMethod],
    sb,
    *,
    top: float,
    seed: int,
    reference_label: str,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Every method on every agent, on the same frames (module docstring); returns the results dict.

    :param agents: name → policy (``"teacher"`` and the students). :param image: float ``[N, C, H, W]`` in [0, 1].
    :param side: float ``[N, K]`` or None. :param reference: the teacher's perturbation maps, float ``[N, H, W]``.
    :param target: ground-truth target pixels, bool ``[N, H, W]``, or None.
    :param methods: label → method (:func:`build_methods`).
    :param sb: the ``saliency_bench`` config section (``latency_batch``, ``latency_repeats``, ``deletion_steps``,
        ``sanity_frames``). :param top: k of the top-k % metrics. :param seed: seeds the weight randomisation.
    :param reference_label: how the reference is named in tables.
    :param progress: ``progress(what, done, total)`` after each (agent, method).
    :returns: ``{"frames", "top_percent", "threads", "latency_batch", "reference", "rows"}``; one row per (agent,
        method) with ``cost``, ``forward``, ``backward``, ``ms_per_frame`` (by batch size, as strings), and each metric
        (``spearman``, ``pearson``, ``iou``, ``auc``, ``mass_inside``, ``pointing_game``, ``deletion_auc``,
        ``insertion_auc``, ``sanity_rho``, ``gini``) as ``{"mean", "ci95", "n"}``.
    """
    n = len(image)
    ref = reference
    shape = tuple(image.shape[1:])
    results = {
        "frames": n,
        "top_percent": top,
        "threads": th.get_num_threads(),
        "latency_batch": sb.latency_batch,
        "reference": reference_label,
        "rows": [],
    }
    latency_cache: dict[tuple[str, str], dict] = {}
    total = sum(m.applies_to(p) for p in agents.values() for m in methods.values())
    done = 0
    for agent_name, policy in agents.items():
        arch = "teacher" if agent_name == "teacher" else "student"
        action = greedy_action(policy, image, side)
        randomized = randomize_weights(policy, seed=seed)
        for label, method in methods.items():
            if not method.applies_to(policy):  # attention maps: only students with built-in attention
                continue
            t0 = time.perf_counter()
            maps = batched(lambda x, s, a, m=method, p=policy: m(p, x, a, s), image, side, 32, action).detach().cpu()
            compute_s = time.perf_counter() - t0
            row = {
                "agent": agent_name,
                "method": label,
                "cost": str(method.cost(shape)),
                "forward": method.cost(shape).forward,
                "backward": method.cost(shape).backward,
                "bench_compute_s": compute_s,
            }
            row["spearman"] = mean_ci(spearman(maps, ref))
            row["pearson"] = mean_ci(pearson(maps, ref))
            row["iou"] = mean_ci(topk_iou(maps, ref, top))
            row["auc"] = mean_ci(topk_auc(maps, ref, top))
            if target is not None:
                row["mass_inside"] = mean_ci(mass_inside(maps.clamp_min(0), target))
                row["pointing_game"] = mean_ci(pointing_game(maps, target))
            rank_map = maps.abs()
            row["deletion_auc"] = mean_ci(
                deletion_curve(policy, image, rank_map, action, side, n_steps=sb.deletion_steps).prob_auc
            )
            row["insertion_auc"] = mean_ci(
                insertion_curve(policy, image, rank_map, action, side, n_steps=sb.deletion_steps).prob_auc
            )
            k = min(sb.sanity_frames, n)
            row["sanity_rho"] = mean_ci(
                sanity_check(
                    lambda p, x, a, s, m=method: m(p, x, a, s),
                    policy,
                    image[:k],
                    action[:k],
                    None if side is None else side[:k],
                    randomized=randomized,
                )
            )
            row["gini"] = mean_ci(gini(maps))
            key = (agent_name if getattr(policy, "has_attention", False) else arch, label)  # same network, same time
            if key not in latency_cache:
                lat = {}
                for b in sorted({1, sb.latency_batch}):
                    t = time_per_map(
                        lambda x, s, m=method, p=policy: m(p, x, greedy_action(p, x, s), s), image, side, b, sb.latency_repeats
                    )
                    lat[str(b)] = t["ms_per_frame"]
                latency_cache[key] = lat
            row["ms_per_frame"] = latency_cache[key]
            results["rows"].append(row)
            done += 1
            log(
                f"saliency-bench: {agent_name:>8s} {label:<34s} ρ={row['spearman']['mean']:.3f} "
                f"{row['ms_per_frame'][str(sb.latency_batch)]:.2f} ms/frame (batch {sb.latency_batch})"
            )
            if progress:
                progress(f"{agent_name}: {label}", done, total)
    return results


def bench_heldout(
    agents: dict[str, Policy],
    held: StateDataset,
    reference: np.ndarray,
    sb,
    perturbation,
    *,
    top: float,
    seed: int,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """:func:`bench_methods` on ``sb.frames`` evenly spaced held-out states of a run, with the configured methods
    (:func:`build_methods`) and the teacher's perturbation maps as the reference.

    :param held: held-out states. :param reference: their teacher perturbation maps, float ``[N, H, W]``.
    :param sb: the ``saliency_bench`` config section. :param perturbation: the ``perturbation`` config section.
    :returns: the results of :func:`bench_methods`.
    """
    idx = np.linspace(0, len(held) - 1, min(sb.frames, len(held))).round().astype(int)
    image, side = held.tensors(idx, device)
    target = held.target_mask[idx] if held.target_mask[idx].any() else None
    methods = build_methods(sb, perturbation, seed)
    label = f"teacher perturbation (stride {perturbation.stride})"
    return bench_methods(
        agents,
        image,
        side,
        th.as_tensor(reference[idx]),
        target,
        methods,
        sb,
        top=top,
        seed=seed,
        reference_label=label,
        log=log,
        progress=progress,
    )
