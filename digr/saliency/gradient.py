"""Input-gradient saliency and the differentiable input gradient used by DIGR's penalty.

Vanilla gradient saliency: Simonyan, Vedaldi, Zisserman 2013, "Deep Inside Convolutional Networks" (arXiv 1312.6034),
map = max over channels of |∂g/∂x|. The score g is chosen by ``target`` (see :data:`TARGETS`).

Captum's gradients are computed without ``create_graph`` and cannot be trained through, so the penalty path owns this
code: :func:`input_gradient` with ``create_graph=True`` supports double backpropagation.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from torch import nn

__all__ = ["TARGETS", "target_score", "input_gradient", "gradient_saliency"]

TARGETS = ("log_prob", "sum_log_prob", "logit")


def target_score(logits: th.Tensor, action: th.Tensor, target: str = "log_prob") -> th.Tensor:
    """Per-sample scalar score g whose input gradient is taken, float ``[B]``.

    :param logits: float ``[B, A]``.
    :param action: int64 ``[B]`` (ignored for ``sum_log_prob``).
    :param target: ``log_prob`` = log π(a|s) (DIGR default); ``sum_log_prob`` = Σ_a log π(a|s) (Ross, Hughes,
        Doshi-Velez 2017, "Right for the Right Reasons", eq. 1); ``logit`` = the unnormalised score of a.
    :raises ValueError: unknown target.
    """
    if target == "log_prob":
        return F.log_softmax(logits, dim=1).gather(1, action.view(-1, 1)).squeeze(1)
    if target == "sum_log_prob":
        return F.log_softmax(logits, dim=1).sum(dim=1)
    if target == "logit":
        return logits.gather(1, action.view(-1, 1)).squeeze(1)
    raise ValueError(f"target={target!r} is not one of {TARGETS}")


def input_gradient(policy: nn.Module, image: th.Tensor, action: th.Tensor, side: th.Tensor | None = None,
                   target: str = "log_prob", create_graph: bool = False) -> th.Tensor:
    """∂g(π(image, side))/∂image for each sample, float ``[B, C, H, W]`` (units: score per [0, 1] pixel value).

    Samples are independent, so the gradient of Σ_b g_b gives every sample's own gradient in one backward pass.
    With ``create_graph=True`` the result is differentiable w.r.t. the policy's parameters (double backprop).

    :param image: float ``[B, C, H, W]`` in [0, 1]; not modified.
    :param action: int64 ``[B]``.
    """
    x = image.detach().requires_grad_(True)
    with th.enable_grad():
        score = target_score(policy(x, side), action, target)
        (grad,) = th.autograd.grad(score.sum(), x, create_graph=create_graph)
    return grad


def gradient_saliency(policy: nn.Module, image: th.Tensor, action: th.Tensor, side: th.Tensor | None = None,
                      target: str = "log_prob") -> th.Tensor:
    """Vanilla gradient saliency map, float ``[B, H, W]`` ≥ 0: max over channels of |∂g/∂x| (Simonyan et al. 2013).

    One forward and one backward pass for the whole batch. See :func:`input_gradient` for arguments.
    """
    return input_gradient(policy, image, action, side, target).abs().amax(dim=1)
