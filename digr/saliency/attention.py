"""Saliency maps of attention students, read off the network (:mod:`digr.policies.attention`).

* :class:`AttentionMap` (``attention``): the student's own attention map from the forward pass that chooses the action
  — the maps summed over their k channels and upsampled bilinearly from the trunk's h×w grid to the frame's H×W. This
  is the "saliency for free" of Yang et al. 2018 and Free-Lunch Saliency (Nikulin et al. 2019): no extra pass.
* :class:`AttentionGradient` (``attention_gradient``): the input gradient of an attention aggregate, rl-attention's
  ``saliency_renderer.py`` visualisation (Nikulin et al. 2019, "Regularization and visualization of attention in
  reinforcement learning agents"), here with the aggregate max over positions of the channel-summed map (a spatial
  softmax sums to 1 over positions, so the sum aggregate has zero gradient); squared as rl-attention renders it.

Both explain the attention, not a particular action: ``action`` is accepted and ignored. A policy without attention
(``policy.attention_map`` missing, or raising) gives a ValueError that says which students have one.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F

from digr.saliency.base import Cost, SaliencyMethod, check_inputs

__all__ = ["AttentionGradient", "AttentionMap", "attention_of", "has_attention", "upsample_attention"]


def attention_of(policy, image: th.Tensor, side: th.Tensor | None) -> th.Tensor:
    """Run ``policy`` on ``image`` and return its attention maps, float ``[B, k, h, w]`` (with the graph attached when
    gradients are enabled).

    :raises ValueError: the policy has no built-in attention map.
    """
    if not has_attention(policy):
        raise ValueError(
            f"{type(policy).__name__} has no built-in attention map; attention saliency needs a student distilled with "
            "attention: region, fls_sparse or fls_dense (distill.students[*].attention)"
        )
    policy(image, side)
    return policy.attention_map()


def has_attention(policy) -> bool:
    """Whether ``policy`` has a built-in attention map (an attention student, :mod:`digr.policies.attention`)."""
    return bool(getattr(policy, "has_attention", False))


def upsample_attention(maps: th.Tensor, size: tuple[int, int]) -> th.Tensor:
    """Attention maps ``[B, k, h, w]`` → a saliency attribution ``[B, 1, H, W]``: the sum over the k maps, upsampled
    bilinearly to the frame's ``size`` = (H, W) (unchanged when h×w = H×W)."""
    summed = maps.sum(dim=1, keepdim=True)
    return summed if summed.shape[2:] == size else F.interpolate(summed, size=size, mode="bilinear", align_corners=False)


class AttentionMap(SaliencyMethod):
    """The attention student's own map, upsampled to the frame: ``attribute`` → float ``[B, 1, H, W]`` ≥ 0 (units of the
    attention: probability mass per grid cell for ``region``, softplus activation for FLS). Cost: 1 forward pass (the
    acting pass; nothing extra when read during a rollout)."""

    name = "attention"

    def applies_to(self, policy) -> bool:
        return has_attention(policy)

    def attribute(self, policy, image, action=None, side=None):
        check_inputs(image, action, side, need_action=False)
        with th.no_grad():
            return upsample_attention(attention_of(policy, image, side), tuple(image.shape[2:]))

    def cost(self, image_shape):
        return Cost(1, 0)


class AttentionGradient(SaliencyMethod):
    """(∂ max_{h,w} Σ_k A_k / ∂x)², rl-attention's gradient-of-attention rendering: ``attribute`` → float
    ``[B, C, H, W]`` ≥ 0. Cost: 1 forward + 1 backward pass."""

    name = "attention_gradient"

    def applies_to(self, policy) -> bool:
        return has_attention(policy)

    def attribute(self, policy, image, action=None, side=None):
        check_inputs(image, action, side, need_action=False)
        x = image.detach().clone().requires_grad_(True)
        with th.enable_grad():
            score = attention_of(policy, x, side).sum(dim=1).flatten(1).amax(dim=1)  # [B]
            (grad,) = th.autograd.grad(score.sum(), x)
        return grad.pow(2)

    def cost(self, image_shape):
        return Cost(1, 1)
