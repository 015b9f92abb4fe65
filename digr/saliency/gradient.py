"""Input-gradient saliency and the differentiable input gradient used by DIGR's penalty.

Vanilla gradient saliency: Simonyan, Vedaldi, Zisserman 2013, "Deep Inside Convolutional Networks" (arXiv 1312.6034),
map = max over channels of |∂g/∂x|. Gradient × input: Shrikumar et al. 2016, "Not Just a Black Box" (arXiv
1605.01713), attribution = x ⊙ ∂g/∂x. The score g is chosen by ``target`` (see :data:`TARGETS`).

Captum's gradients are computed without ``create_graph`` and cannot be trained through, so the penalty path owns this
code: :func:`input_gradient` with ``create_graph=True`` supports double backpropagation.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F

from digr.contracts import Policy
from digr.saliency.base import Cost, SaliencyMethod, check_inputs

__all__ = [
    "TARGETS",
    "GradientXInput",
    "VanillaGradient",
    "act_and_explain",
    "batched_input_gradient",
    "gradient_saliency",
    "input_gradient",
    "target_score",
]

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


def input_gradient(
    policy: Policy,
    image: th.Tensor,
    action: th.Tensor,
    side: th.Tensor | None = None,
    target: str = "log_prob",
    create_graph: bool = False,
) -> th.Tensor:
    """∂g(π(image, side))/∂image for each sample, float ``[B, C, H, W]`` (units: score per [0, 1] pixel value).

    Samples are independent, so the gradient of Σ_b g_b gives every sample's own gradient in one backward pass.
    With ``create_graph=True`` the result is differentiable w.r.t. the policy's parameters (double backprop).

    :param image: float ``[B, C, H, W]`` in [0, 1]; not modified.
    :param action: int64 ``[B]``.
    :raises ValueError: unknown ``target`` (see :data:`TARGETS`).
    """
    x = image.detach().requires_grad_(True)
    with th.enable_grad():
        score = target_score(policy(x, side), action, target)
        (grad,) = th.autograd.grad(score.sum(), x, create_graph=create_graph)
    return grad


def gradient_saliency(
    policy: Policy, image: th.Tensor, action: th.Tensor, side: th.Tensor | None = None, target: str = "log_prob"
) -> th.Tensor:
    """Vanilla gradient saliency map, float ``[B, H, W]`` ≥ 0: max over channels of |∂g/∂x| (Simonyan et al. 2013).

    One forward and one backward pass for the whole batch. See :func:`input_gradient` for arguments.
    """
    return input_gradient(policy, image, action, side, target).abs().amax(dim=1)


def act_and_explain(
    policy: Policy, image: th.Tensor, side: th.Tensor | None = None, target: str = "log_prob"
) -> tuple[th.Tensor, th.Tensor]:
    """Greedy action and its gradient saliency map from ONE forward and ONE backward pass (DIGR's deployment path).

    A deployed agent runs the forward pass anyway to choose its action; the map then costs one backward pass on top.
    Equals ``gradient_saliency(policy, image, greedy_action(policy, image, side), side, target)`` without the second
    forward pass.

    :param image: float ``[B, C, H, W]`` in [0, 1]; not modified. :param side: float ``[B, K]`` or None.
    :returns: ``(action int64 [B], saliency float [B, H, W] >= 0)``, the map being max_c |∂g/∂x| for g at the action.
    :raises ValueError: unknown ``target``.
    """
    x = image.detach().requires_grad_(True)
    with th.enable_grad():
        logits = policy(x, side)
        action = logits.detach().argmax(dim=1)
        (grad,) = th.autograd.grad(target_score(logits, action, target).sum(), x)
    return action, grad.abs().amax(dim=1)


def batched_input_gradient(
    policy: Policy,
    image: th.Tensor,
    action: th.Tensor,
    side: th.Tensor | None = None,
    target: str = "log_prob",
    batch_size: int = 256,
) -> th.Tensor:
    """:func:`input_gradient` over chunks of at most ``batch_size`` images (bounds memory), float ``[N, C, H, W]``.

    :raises ValueError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = [
        input_gradient(
            policy,
            image[i : i + batch_size],
            action[i : i + batch_size],
            None if side is None else side[i : i + batch_size],
            target,
        )
        for i in range(0, len(image), batch_size)
    ]
    return th.cat(out) if out else image.new_zeros(image.shape)


class VanillaGradient(SaliencyMethod):
    """Vanilla gradient (Simonyan et al. 2013, eq. for the class saliency map: w = ∂S_c/∂I).

    ``attribute`` → float ``[B, C, H, W]``: ∂g/∂x, signed, per [0, 1] pixel unit. One forward + one backward pass
    per batch. Equals ``captum.attr.Saliency(f).attribute(x, target=a, abs=False)`` for ``target="logit"``.

    :param target: the score g (see :data:`TARGETS`); ``log_prob`` (default) is DIGR's deployment map.
    :param batch_size: at most this many images per backward pass.
    """

    name = "gradient"

    def __init__(self, target: str = "log_prob", batch_size: int = 256, reduce: str = "abs_max"):
        super().__init__(reduce)
        if target not in TARGETS:
            raise ValueError(f"target={target!r} is not one of {TARGETS}")
        self.target, self.batch_size = target, batch_size

    def attribute(self, policy, image, action, side=None):
        check_inputs(image, action, side)
        return batched_input_gradient(policy, image, action, side, self.target, self.batch_size)

    def cost(self, image_shape):
        return Cost(1, 1)


class GradientXInput(VanillaGradient):
    """Gradient × input (Shrikumar et al. 2016): ``attribute`` → ``x ⊙ ∂g/∂x``, float ``[B, C, H, W]`` (units of g).

    Equals ``captum.attr.InputXGradient(f).attribute(x, target=a)`` for ``target="logit"``. Note that black pixels
    (x = 0) always get zero attribution: a known weakness on Atari frames.
    """

    name = "grad_x_input"

    def attribute(self, policy, image, action, side=None):
        return image * super().attribute(policy, image, action, side)
