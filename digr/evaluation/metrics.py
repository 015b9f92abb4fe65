"""Saliency-map quality metrics, per frame, on float maps ``[B, H, W]``.

* Agreement with a reference map: Spearman rank correlation (:func:`spearman`), Pearson correlation
  (:func:`pearson`), IoU of the top-k % pixels (:func:`topk_iou`), ROC AUC of a map's scores for the reference's
  top-k % pixels (:func:`topk_auc`).
* Concentration of a single map: Gini index (:func:`gini`; Chalasani et al. 2020, Quantus ``Sparseness``).
* Localisation against a ground-truth mask ``[B, H, W]`` (bool): relevance mass inside the mask (Arras et al. 2022,
  "CLEVR-XAI", relevance mass accuracy) and the pointing game (Zhang et al. 2016, "Top-down Neural Attention by
  Excitation Backprop": a hit when the map's maximum lies inside the mask).

All functions return float64 numpy arrays ``[B]``; frames whose result is undefined (constant map, empty mask) give NaN
and are skipped by :func:`nanmean_ci`.

Metrics that need the policy (deletion/insertion curves, the model-parameter randomisation sanity check) live in
:mod:`digr.evaluation.faithfulness`.
"""

from __future__ import annotations

import numpy as np
import torch as th
from scipy.stats import rankdata

__all__ = ["gini", "mass_inside", "mean_ci", "nanmean_ci", "pearson", "pointing_game", "spearman", "topk_auc", "topk_iou"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, th.Tensor) else np.asarray(x, dtype=np.float64)


def _pair(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two maps as float64 ``[B, N]`` after checking that their shapes agree."""
    a, b = _np(a), _np(b)
    if a.ndim < 2 or a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must be maps of the same shape [B, H, W], got {a.shape} and {b.shape}; "
            "compute both maps on the same frames (and reshape any [B, 1, H, W] map to [B, H, W])"
        )
    return a.reshape(len(a), -1), b.reshape(len(b), -1)


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation between maps ``a`` and ``b`` (``[B, H, W]``) per frame, float64 ``[B]`` in [−1, 1];
    ties by average rank; NaN if a map is constant."""
    a, b = _np(a).reshape(len(a), -1), _np(b).reshape(len(b), -1)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        ra, rb = rankdata(a[i]), rankdata(b[i])
        sa, sb = ra.std(), rb.std()
        if sa > 0 and sb > 0:
            out[i] = float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))
    return out


def pearson(a, b) -> np.ndarray:
    """Pearson (linear) correlation between maps ``a`` and ``b`` per frame.

    r = Σ (a_i − ā)(b_i − b̄) / sqrt(Σ (a_i − ā)² · Σ (b_i − b̄)²) over the H·W pixels of each frame (Pearson 1896;
    the standard saliency-map similarity "CC" of Bylinskii et al. 2019, "What do different evaluation metrics tell us
    about saliency models?", TPAMI). Invariant to positive affine rescaling of either map, so raw and normalised maps
    compare equally.

    :param a: float ``[B, H, W]`` (torch tensor or array-like; any trailing shape works, it is flattened per frame).
    :param b: float, same shape as ``a``.
    :returns: float64 ``[B]`` in [−1, 1]; NaN for frames where either map is constant or contains NaN/inf.
    :raises ValueError: ``a`` and ``b`` differ in shape.
    """
    a, b = _pair(a, b, ("a", "b"))
    ca, cb = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.sqrt((ca * ca).sum(1) * (cb * cb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ca * cb).sum(1) / den
    # constant maps are detected exactly (max == min): their centred values may be rounding noise, not zeros
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1) & (np.ptp(a, 1) > 0) & (np.ptp(b, 1) > 0) & (den > 0)
    return np.where(ok, np.clip(out, -1.0, 1.0), np.nan)


def _top_mask(x: np.ndarray, percent: float) -> np.ndarray:
    k = max(1, round(x.shape[1] * percent / 100.0))
    idx = np.argsort(-x, axis=1, kind="stable")[:, :k]
    m = np.zeros_like(x, dtype=bool)
    np.put_along_axis(m, idx, True, axis=1)
    return m


def topk_iou(a, b, percent: float = 10.0) -> np.ndarray:
    """IoU of the top-``percent`` % pixels of ``a`` and of ``b`` (ties broken by position), per frame, in [0, 1]."""
    a, b = _np(a).reshape(len(a), -1), _np(b).reshape(len(b), -1)
    ma, mb = _top_mask(a, percent), _top_mask(b, percent)
    return (ma & mb).sum(1) / np.maximum(1, (ma | mb).sum(1))


def topk_auc(a, reference, percent: float = 10.0) -> np.ndarray:
    """ROC AUC of map ``a``'s pixel scores as a detector of the ``reference`` map's top-``percent`` % pixels, per frame.

    Positives are the k = max(1, round(N·percent/100)) pixels with the largest ``reference`` values (N = H·W; ties
    broken by pixel position, first pixel wins, exactly as in :func:`topk_iou`); all other pixels are negatives. The
    AUC is computed exactly through the Mann–Whitney U statistic (Hanley & McNeil 1982, "The meaning and use of the
    area under a ROC curve", Radiology): AUC = (R₊ − k(k+1)/2) / (k·(N−k)), with R₊ the sum of the average ranks
    (ties in ``a`` share their mean rank) of the positive pixels in ``a``. This equals P(a_pos > a_neg) + ½·P(a_pos =
    a_neg) for a random positive/negative pair. Unlike :func:`topk_iou` it uses all of ``a``'s ranking rather than
    only its own top-k (cf. the AUC-Judd / AUC-Borji family in Bylinskii et al. 2019, TPAMI, with the reference's
    top-k % playing the role of the fixation map).

    :param a: float ``[B, H, W]``, the scores under test (higher = more salient).
    :param reference: float, same shape as ``a``; defines the positives.
    :param percent: size of the positive set in % of the pixels, 0 < percent < 100 (percent large enough that
        round(N·percent/100) = N leaves no negatives and gives NaN).
    :returns: float64 ``[B]`` in [0, 1]: 1 = every positive outranks every negative, 0.5 = chance or a constant ``a``,
        0 = every positive ranks below every negative. NaN for frames with NaN/inf in either map or without negatives.
    :raises ValueError: shapes differ, or ``percent`` is outside (0, 100).
    """
    if not 0.0 < percent < 100.0:
        raise ValueError(f"percent must be in (0, 100), got {percent}; pass the size of the reference's top set in %")
    a, r = _pair(a, reference, ("a", "reference"))
    n = a.shape[1]
    pos = _top_mask(r, percent)
    k = pos.sum(1)
    ok = np.isfinite(a).all(1) & np.isfinite(r).all(1) & (k < n)
    ranks = rankdata(np.where(np.isfinite(a), a, 0.0), axis=1)  # average ranks, 1..N
    u = (ranks * pos).sum(1) - k * (k + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (k * (n - k))
    return np.where(ok, auc, np.nan)


def gini(saliency) -> np.ndarray:
    """Gini index of the absolute map values per frame: how concentrated the saliency mass is.

    With |x| sorted ascending x₍₁₎ ≤ … ≤ x₍ₙ₎ over the n = H·W pixels,
    G = Σᵢ (2i − n − 1) · x₍ᵢ₎ / (n · Σᵢ x₍ᵢ₎)  (Hurley & Rickard 2009, "Comparing Measures of Sparsity", IEEE Trans.
    Inf. Theory, the Gini index; used for attribution maps by Chalasani et al. 2020, "Concise Explanations of Neural
    Networks using Adversarial Training", ICML, and as Quantus' ``Sparseness`` metric). Known values: a constant map
    gives 0, a one-hot map gives (n−1)/n. Scale invariant: G(c·x) = G(x) for c ≠ 0. Quantus adds 1e-7 to every value
    before sorting (so that all-zero maps give 0); this function does not, so its results are exact and all-zero maps
    are NaN instead.

    :param saliency: float ``[B, H, W]`` (signed maps are taken in absolute value).
    :returns: float64 ``[B]`` in [0, (n−1)/n] ⊂ [0, 1): higher = sparser / more concentrated map. NaN for all-zero
        frames and frames containing NaN/inf.
    :raises ValueError: ``saliency`` has fewer than 2 dimensions (needs a batch axis).
    """
    x = _np(saliency)
    if x.ndim < 2:
        raise ValueError(f"saliency must be [B, H, W], got shape {x.shape}; add a batch axis with x[None]")
    x = np.sort(np.abs(x.reshape(len(x), -1)), axis=1)
    n = x.shape[1]
    total = x.sum(1)
    coef = 2.0 * np.arange(1, n + 1) - n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (x * coef).sum(1) / (n * total)
    ok = np.isfinite(x).all(1) & (total > 0)
    return np.where(ok, np.clip(g, 0.0, 1.0), np.nan)


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
    return float(x.mean()), float(hw), len(x)


def mean_ci(x) -> dict:
    """:func:`nanmean_ci` as the JSON record of every per-frame statistic in ``metrics.json``:
    ``{"mean": float, "ci95": float, "n": int}``."""
    m, ci, n = nanmean_ci(x)
    return {"mean": m, "ci95": ci, "n": n}
