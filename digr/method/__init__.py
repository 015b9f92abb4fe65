"""The method: DIGR's loss (:mod:`.loss`), penalty masks (:mod:`.masks`), distillation training (:mod:`.distill`),
the teacher-labelled states it trains on (:mod:`.dataset`) and DAgger (:mod:`.dagger`).

Data flow: teacher rollout → states + teacher logits → teacher perturbation maps → penalty mask M(s) →
KL + λ·‖M ⊙ ∇ₛ log π_S(a*|s)‖² → student (see README, "Architecture").
"""

from digr.method.distill import DistillData, train_student
from digr.method.loss import digr_loss, kl_teacher_student, masked_gradient_penalty
from digr.method.masks import MASK_KINDS, normalize_per_frame, penalty_mask, selective_mask

__all__ = [
    "MASK_KINDS",
    "DistillData",
    "digr_loss",
    "kl_teacher_student",
    "masked_gradient_penalty",
    "normalize_per_frame",
    "penalty_mask",
    "selective_mask",
    "train_student",
]
