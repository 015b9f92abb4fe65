"""Saliency-map quality metrics, per frame, on float maps ``[B, H, W]``.

* Agreement with a reference map: Spearman rank correlation, IoU of the top-k % pixels.
* Localisation against a ground-truth mask ``[B, H, W]`` (bool): relevance mass inside the mask (Arras et al. 2022,
  "CLEVR-XAI", relevance mass accuracy) and the pointing game (Zhang et al. 2016, "Top-down Neural Attention by
  Excitation Backprop": a hit when the map's maximum lies inside the mask).

All functions return float64 numpy arrays ``[B]``; frames whose result is undefined (constant map, empty mask) give NaN
and are skipped by :func:`nanmean_ci`.
"""

from __future__ import annotations

import numpy as np
import torch as th
from scipy.stats import rankdata

__all__ = ["spearman", "topk_iou", "mass_inside", "pointing_game", "nanmean_ci"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, th.Tensor) else np.asarray(x, dtype=np.float64)


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation between maps ``a`` and ``b`` (``[B, H, W]``) per frame, ties by average rank; NaN if a map is constant."""
    a, b = _np(a).reshape(len(a), -1), _np(b).reshape(len(b), -1)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        ra, rb = rankdata(a[i]), rankdata(b[i])
        sa, sb = ra.std(), rb.std()
        if sa > 0 and sb > 0:
            out[i] = float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))
    return out


def _top_mask(x: np.ndarray, percent: float) -> np.ndarray:
    k = max(1, int(round(x.shape[1] * percent / 100.0)))
    idx = np.argsort(-x, axis=1, kind="stable")[:, :k]
    m = np.zeros_like(x, dtype=bool)
    np.put_along_axis(m, idx, True, axis=1)
    return m


def topk_iou(a, b, percent: float = 10.0) -> np.ndarray:
    """IoU of the top-``percent`` % pixels of ``a`` and of ``b`` (ties broken by position), per frame, in [0, 1]."""
    a, b = _np(a).reshape(len(a), -1), _np(b).reshape(len(b), -1)
    ma, mb = _top_mask(a, percent), _top_mask(b, percent)
    return (ma & mb).sum(1) / np.maximum(1, (ma | mb).sum(1))


def mass_inside(saliency, mask) -> np.ndarray:
    """Fraction of the (non-negative) saliency mass inside ``mask``, per frame, in [0, 1]; NaN for empty masks or zero maps."""
    s, m = _np(saliency).reshape(len(saliency), -1), _np(mask).reshape(len(mask), -1) > 0
    total = s.sum(1)
    out = (s * m).sum(1) / np.where(total > 0, total, 1.0)
    out[(total <= 0) | (m.sum(1) == 0)] = np.nan
    return out


def pointing_game(saliency, mask) -> np.ndarray:
    """1.0 if the map's maximum (first by position on ties) lies inside ``mask``, else 0.0; NaN for empty masks."""
    s, m = _np(saliency).reshape(len(saliency), -1), _np(mask).reshape(len(mask), -1) > 0
    hit = m[np.arange(len(s)), s.argmax(1)].astype(np.float64)
    hit[m.sum(1) == 0] = np.nan
    return hit


def nanmean_ci(x) -> tuple[float, float, int]:
    """(mean, 95 % normal-approximation half-width, n) over the finite entries of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), 0
    hw = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(hw), int(len(x))
