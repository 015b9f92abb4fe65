"""Saliency maps of agents on stored frames, and their quality: agreement with a reference map and localisation on
ground-truth pixels (metric definitions in :mod:`digr.evaluation.metrics`).

A student's deployment map is its vanilla input gradient for its own greedy action (one forward + one backward pass,
:func:`digr.saliency.gradient_saliency`); the teacher's reference map is its perturbation map (Greydanus et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch as th

from digr.contracts import Policy, greedy_action
from digr.evaluation.metrics import mass_inside, mean_ci, pointing_game, spearman, topk_iou
from digr.saliency import AttentionMap, gradient_saliency

__all__ = ["agree_actions", "attention_maps", "batched", "gradient_maps", "map_quality"]


def batched(fn: Callable[..., th.Tensor], image: th.Tensor, side: th.Tensor | None, batch: int, *args) -> th.Tensor:
    """Apply ``fn(image_chunk, side_chunk, *arg_chunks)`` over chunks of ``batch`` frames and concatenate the results
    along the first axis (bounds memory)."""
    outs = []
    for i in range(0, len(image), batch):
        sl = slice(i, i + batch)
        outs.append(fn(image[sl], None if side is None else side[sl], *(a[sl] for a in args)))
    return th.cat(outs)


def gradient_maps(policy: Policy, image: th.Tensor, side: th.Tensor | None, batch: int = 256) -> np.ndarray:
    """The policy's vanilla gradient map for its own greedy action on every frame, float32 ``[N, H, W]`` ≥ 0.

    :param image: float ``[N, C, H, W]`` in [0, 1]. :param side: float ``[N, K]`` or None.
    """
    action = greedy_action(policy, image, side)
    return batched(lambda x, s, a: gradient_saliency(policy, x, a, s), image, side, batch, action).cpu().numpy()


def attention_maps(policy: Policy, image: th.Tensor, side: th.Tensor | None, batch: int = 256) -> np.ndarray:
    """An attention student's own map (:class:`digr.saliency.AttentionMap`, read off its forward pass and upsampled to
    the frame) on every frame, float32 ``[N, H, W]`` ≥ 0. :raises ValueError: the policy has no built-in attention."""
    method = AttentionMap()
    return batched(lambda x, s: method(policy, x, None, s), image, side, batch).cpu().numpy()


def map_quality(
    maps: th.Tensor,
    reference: th.Tensor | None,
    target_mask: np.ndarray | None,
    top_percent: float = 10.0,
    regions: dict[str, np.ndarray] | None = None,
) -> dict:
    """Agreement of ``maps`` ``[B, H, W]`` with ``reference`` ``[B, H, W]`` and localisation on ``target_mask`` (bool
    ``[B, H, W]``) and on each of ``regions`` (name → bool ``[B, H, W]``, e.g. CarRacing's road ahead of the car).

    :returns: ``{metric: {"mean", "ci95", "n"}}`` for ``spearman``, ``iou_top{p}`` (if ``reference``),
        ``mass_inside``, ``pointing_game`` (if ``target_mask``) and ``mass_inside_<name>``, ``pointing_game_<name>``
        per region; 95 % normal-approximation half-widths.
    """
    out = {}

    def put(name, values):
        out[name] = mean_ci(values)

    if reference is not None:
        put("spearman", spearman(maps, reference))
        put(f"iou_top{top_percent:g}", topk_iou(maps, reference, top_percent))
    if target_mask is not None:
        put("mass_inside", mass_inside(maps, target_mask))
        put("pointing_game", pointing_game(maps, target_mask))
    for name, region in (regions or {}).items():
        put(f"mass_inside_{name}", mass_inside(maps, region))
        put(f"pointing_game_{name}", pointing_game(maps, region))
    return out


def agree_actions(a: Policy, b: Policy, image: th.Tensor, side: th.Tensor | None) -> float:
    """Fraction of frames where the greedy actions of ``a`` and ``b`` agree, in [0, 1]."""
    return float((greedy_action(a, image, side) == greedy_action(b, image, side)).float().mean())
