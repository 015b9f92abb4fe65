"""Penalty masks M(s) ∈ {0, 1}^{H×W}: where the student's input gradient is penalised (1) or left free (0).

:func:`penalty_mask` is the one place that chooses a student's mask by its kind: ``selective`` (DIGR: 1 on the pixels
the teacher's saliency marks as non-salient, :func:`selective_mask`), ``all`` (M ≡ 1, non-selective input-gradient
regularisation) or ``none`` (no penalty: plain distillation).

DIGR (Xing et al. 2022, arXiv 2205.08685) penalises the student's input gradient only where M = 1. The paper's exact
mask rule is not public; this is our reconstruction: per-frame max-normalised teacher perturbation saliency
thresholded at κ, or the top-p % pixels kept salient, with optional dilation of the salient set (the RRR annotation
matrix A of Ross et al. 2017 with A = M).
"""

from __future__ import annotations

import numpy as np
import torch as th
import torch.nn.functional as F

__all__ = ["MASK_KINDS", "normalize_per_frame", "penalty_mask", "selective_mask"]

#: The kinds of penalty mask a student can have (``distill.students[i].mask``).
MASK_KINDS = ("selective", "all", "none")


def normalize_per_frame(saliency: th.Tensor, eps: float = 1e-12) -> th.Tensor:
    """Divide each map by its maximum: float ``[B, H, W]`` ≥ 0 → values in [0, 1]. All-zero maps stay zero."""
    peak = saliency.flatten(1).amax(dim=1).clamp_min(eps)
    return saliency / peak.view(-1, 1, 1)


def selective_mask(saliency: th.Tensor, kappa: float = 0.1, top_p: float | None = None, dilate: int = 0) -> th.Tensor:
    """Non-salient mask, float32 ``[B, H, W]`` with values in {0, 1} (1 = non-salient = penalised).

    :param saliency: teacher saliency, float ``[B, H, W]`` ≥ 0 (any scale; normalised per frame here).
    :param kappa: threshold in [0, 1] on the max-normalised map: salient where ``S/max S ≥ κ``.
    :param top_p: if given, a percentage in (0, 100): the top-p % pixels of each frame are salient (overrides κ).
    :param dilate: grow the salient set by this many pixels (square structuring element of side 2r+1).
    :raises ValueError: arguments out of range or ``saliency`` not 3-D.
    """
    if saliency.ndim != 3:
        raise ValueError(f"saliency must be [B, H, W], got {tuple(saliency.shape)}")
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must be in [0, 1], got {kappa}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
    s = normalize_per_frame(saliency.float())
    if top_p is not None:
        if not 0.0 < top_p < 100.0:
            raise ValueError(f"top_p must be a percentage in (0, 100), got {top_p}")
        flat = s.flatten(1)
        k = max(1, round(flat.shape[1] * top_p / 100.0))
        thresh = flat.topk(k, dim=1).values[:, -1:]
        salient = (flat >= thresh).view_as(s)
    else:
        salient = s >= kappa
        salient &= s > 0  # an all-zero map has nothing salient
    if dilate:
        salient = F.max_pool2d(salient.float().unsqueeze(1), 2 * dilate + 1, stride=1, padding=dilate).squeeze(1) > 0
    return (~salient).float()


def penalty_mask(
    kind: str,
    shape: tuple[int, int, int],
    teacher_saliency: np.ndarray | None = None,
    *,
    kappa: float = 0.1,
    top_p: float | None = None,
    dilate: int = 0,
    chunk: int = 1024,
) -> np.ndarray | None:
    """The penalty mask of a student of mask kind ``kind`` for ``shape = (N, H, W)`` frames.

    :param kind: ``selective`` (:func:`selective_mask` of ``teacher_saliency`` with ``kappa``, ``top_p``, ``dilate``),
        ``all`` (ones) or ``none`` (no penalty: returns None).
    :param teacher_saliency: float ``[N, H, W]`` ≥ 0, the teacher's perturbation maps (needed for ``selective`` only).
    :param chunk: frames thresholded per call (bounds memory).
    :returns: float32 ``[N, H, W]`` in {0, 1} (1 = penalised), or None for ``none``.
    :raises ValueError: unknown ``kind``, or ``selective`` without saliency of shape ``shape``.
    """
    if kind == "none":
        return None
    if kind == "all":
        return np.ones(shape, np.float32)
    if kind != "selective":
        raise ValueError(f"mask kind {kind!r} is not one of {MASK_KINDS}")
    if teacher_saliency is None or tuple(teacher_saliency.shape) != tuple(shape):
        got = None if teacher_saliency is None else tuple(teacher_saliency.shape)
        raise ValueError(f"a selective mask needs the teacher's saliency maps of shape {tuple(shape)}, got {got}")
    return np.concatenate(
        [
            selective_mask(th.as_tensor(teacher_saliency[i : i + chunk]), kappa, top_p, dilate).numpy()
            for i in range(0, len(teacher_saliency), chunk)
        ]
    )
