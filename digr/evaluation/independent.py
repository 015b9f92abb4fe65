"""Saliency evidence that does not depend on the map that built DIGR's training mask.

DIGR's selective mask is the κ-threshold of the teacher's perturbation map (Greydanus et al. 2018), so agreement with
that same map (Spearman ρ, top-k % IoU) partly measures the target DIGR was trained toward. The run report therefore
also grades every map against evidence that did not make the mask:

* **agreement with the teacher's occlusion map** (Zeiler & Fergus 2014, ECCV, arXiv 1311.2901, Sec. 4.2; a constant
  patch instead of a Gaussian blur, so a different reference of the same teacher): ``spearman_occlusion`` and
  ``iou_top{k}_occlusion``;
* **faithfulness of the map to the policy it explains** — the teacher's maps to the teacher, a student's map to that
  student — by the deletion and insertion curves of Petsiuk, Das & Saenko 2018 (RISE, BMVC, arXiv 1806.07421,
  Sec. 4.1; :mod:`digr.evaluation.faithfulness`): ``deletion_auc`` (area under π(a|s') as the map's top pixels are
  replaced by the blurred frame; LOWER is better), ``insertion_auc`` (as they are revealed on the blurred frame;
  HIGHER is better) and ``insertion_minus_deletion`` (HIGHER is better). A map that looks like the teacher's but does
  not explain the student it comes from is caught here;
* localisation on the env's ground-truth masks (object cells, the road) is computed by
  :func:`digr.evaluation.maps.map_quality` and does not depend on the teacher either.
"""

from __future__ import annotations

import numpy as np
import torch as th

from digr.contracts import Policy, greedy_action, is_gaussian
from digr.evaluation.faithfulness import deletion_curve, insertion_curve
from digr.evaluation.maps import batched
from digr.evaluation.metrics import mean_ci, spearman, topk_iou
from digr.saliency.occlusion import Occlusion

__all__ = ["LOWER_IS_BETTER", "independent_quality", "occlusion_maps"]

LOWER_IS_BETTER = frozenset({"deletion_auc"})
"""Statistics of :func:`independent_quality` for which a lower value is the better map."""


def occlusion_maps(
    policy: Policy, image: th.Tensor, side: th.Tensor | None, window: int = 8, stride: int = 4, batch: int = 64
) -> np.ndarray:
    """The policy's occlusion map (Zeiler & Fergus 2014, :class:`digr.saliency.occlusion.Occlusion`, black patch,
    score log π(a|s)) for its own greedy action, float32 ``[N, H, W]`` ≥ 0 (magnitude of the score change).

    :param image: float ``[N, C, H, W]`` in [0, 1]. :param side: float ``[N, K]`` or None.
    :param window: patch side, pixels. :param stride: patch stride, pixels.
    Cost: (windows + 1) forward passes per frame.
    :raises ValueError: a window larger than the frame, or a non-positive window/stride.
    """
    method = Occlusion(window=window, stride=stride)
    action = greedy_action(policy, image, side)
    return batched(lambda x, s, a: method(policy, x, a, s), image, side, batch, action).cpu().numpy()


def independent_quality(
    policy: Policy,
    maps,
    image: th.Tensor,
    side: th.Tensor | None,
    occlusion: np.ndarray | None,
    top_percent: float = 10.0,
    deletion_steps: int = 16,
) -> dict:
    """Mask-independent quality of ``maps`` (float ``[n, H, W]``, higher = more important) on the frames ``image``
    (float ``[n, C, H, W]`` in [0, 1]) for the ``policy`` whose decisions the maps claim to explain.

    :param occlusion: the teacher's occlusion maps of the same frames, float ``[n, H, W]``, or None to skip the
        agreement metrics (e.g. for the occlusion map itself).
    :param top_percent: k of the top-k % IoU. :param deletion_steps: intervals of the deletion/insertion curves.
    :returns: ``{stat: {"mean", "ci95", "n"}}`` for ``spearman_occlusion``, ``iou_top{k}_occlusion`` (with
        ``occlusion``) and, for a categorical policy, ``deletion_auc``, ``insertion_auc`` and
        ``insertion_minus_deletion`` (probability AUCs in [0, 1] at the policy's greedy action; a Gaussian policy
        has no action probability, so these are left out). 95 % normal-approximation half-widths over frames.
    :raises ValueError: shapes that do not fit (from the metric functions).
    """
    maps = th.as_tensor(np.asarray(maps, dtype=np.float32))
    out = {}
    if occlusion is not None:
        out["spearman_occlusion"] = mean_ci(spearman(maps, occlusion))
        out[f"iou_top{top_percent:g}_occlusion"] = mean_ci(topk_iou(maps, occlusion, top_percent))
    if not is_gaussian(policy):
        action = greedy_action(policy, image, side)
        rank = maps.abs()
        deletion = deletion_curve(policy, image, rank, action, side, n_steps=deletion_steps).prob_auc
        insertion = insertion_curve(policy, image, rank, action, side, n_steps=deletion_steps).prob_auc
        out["deletion_auc"] = mean_ci(deletion)
        out["insertion_auc"] = mean_ci(insertion)
        out["insertion_minus_deletion"] = mean_ci(insertion - deletion)
    return out
