"""DIGR's student objective: distillation KL plus the masked input-gradient penalty, on one screen.

Loss (our reconstruction of Xing et al. 2022, arXiv 2205.08685, built from its abstract, the RRR loss of Ross, Hughes,
Doshi-Velez 2017 eq. 1, and policy distillation of Rusu et al. 2016):

    L(θ) = E_s[ KL( π_T(·|s; τ) ‖ π_S(·|s) ) ] + λ · E_s[ ‖ M(s) ⊙ ∇_s g(π_S, s) ‖²₂ ]

* π_T(·|s; τ) = softmax(teacher logits / τ); the KL is averaged over the batch ("batchmean").
* g = log π_S(a*|s) with a* = argmax π_T (default), Σ_a log π_S(a|s), or the logit of a* (``target``).
* M(s) ∈ {0,1}^{H×W} is broadcast over channels; ‖·‖² sums over channels and pixels, then averages over the batch.
* The penalty is differentiated through (double backpropagation, ``create_graph=True``).
* Attention students (:mod:`digr.policies.attention`) may add c·H(A), the entropy of their attention maps
  (rl-attention's penalty), so the two ideas combine: KL + c·H(A) + λ·masked penalty.
"""

from __future__ import annotations

import torch as th

from digr.contracts import Policy, categorical_kl
from digr.policies.attention import attention_entropy as _entropy
from digr.saliency.gradient import input_gradient

__all__ = ["digr_loss", "kl_teacher_student", "masked_gradient_penalty"]


def kl_teacher_student(teacher_logits: th.Tensor, student_logits: th.Tensor, tau: float = 1.0) -> th.Tensor:
    """KL(softmax(t/τ) ‖ softmax(s)), averaged over the batch, in nats (scalar float ≥ 0).

    :param teacher_logits: float ``[B, A]`` (no gradient flows into it).
    :param student_logits: float ``[B, A]``.
    :param tau: teacher temperature > 0 (Rusu et al. 2016).
    """
    return categorical_kl(teacher_logits.detach() / tau, student_logits).mean()


def masked_gradient_penalty(
    student: Policy,
    image: th.Tensor,
    action: th.Tensor,
    mask: th.Tensor,
    side: th.Tensor | None = None,
    target: str = "log_prob",
) -> th.Tensor:
    """mean_b Σ_{c,h,w} (M_bhw · ∂g_b/∂x_bchw)², differentiable w.r.t. the student's parameters (scalar float ≥ 0).

    :param image: float ``[B, C, H, W]`` in [0, 1]. :param action: int64 ``[B]`` (a* for ``log_prob``/``logit``).
    :param mask: float ``[B, H, W]`` (or ``[B, C, H, W]``) in {0, 1}; 1 = penalised. Units of the result:
        (score per [0, 1] pixel value)².
    :raises ValueError: unknown ``target`` (see :data:`digr.saliency.TARGETS`).
    """
    grad = input_gradient(student, image, action, side, target, create_graph=True)
    m = mask.unsqueeze(1) if mask.ndim == 3 else mask
    return (m * grad).pow(2).flatten(1).sum(dim=1).mean()


def digr_loss(
    student: Policy,
    image: th.Tensor,
    teacher_logits: th.Tensor,
    mask: th.Tensor | None,
    lam: float,
    side: th.Tensor | None = None,
    tau: float = 1.0,
    target: str = "log_prob",
    penalty_rows: th.Tensor | None = None,
    attention_entropy: float = 0.0,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Total DIGR loss and its two terms ``(total, kl, penalty)``, scalar floats (``kl`` and ``penalty`` detached).

    With ``lam == 0`` or ``mask is None`` the penalty is not computed (returned as 0) and the loss is plain
    distillation. a* = argmax of the teacher logits. ``penalty_rows`` (int64 ``[k]``, optional) computes the penalty's
    batch mean on those rows only: an unbiased estimate of the full-batch mean when the rows are drawn uniformly,
    at k/B of the double-backprop cost.

    :param image: float ``[B, C, H, W]`` in [0, 1]. :param teacher_logits: float ``[B, A]``.
    :param mask: float ``[B, H, W]`` in {0, 1} (1 = penalised) or None. :param lam: λ ≥ 0.
    :param attention_entropy: c ≥ 0; adds c·H(A) of the student's attention maps on the batch (rl-attention's penalty,
        :func:`digr.policies.attention.attention_entropy`; the student must have ``attention_map()``).
    """
    student_logits = student(image, side)
    kl = kl_teacher_student(teacher_logits, student_logits, tau)
    base = kl + attention_entropy * _entropy(student.attention_map()) if attention_entropy else kl  # before the penalty's pass
    if lam == 0 or mask is None:
        return base, kl.detach(), th.zeros((), device=kl.device)
    a_star = teacher_logits.argmax(dim=1)
    if penalty_rows is not None:
        image, a_star, mask = image[penalty_rows], a_star[penalty_rows], mask[penalty_rows]
        side = None if side is None else side[penalty_rows]
    pen = masked_gradient_penalty(student, image, a_star, mask, side, target)
    return base + lam * pen, kl.detach(), pen.detach()
