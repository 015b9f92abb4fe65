"""DIGR's student objective and training loop.

Loss (our reconstruction of Xing et al. 2022, arXiv 2205.08685, built from its abstract, the RRR loss of Ross, Hughes,
Doshi-Velez 2017 eq. 1, and policy distillation of Rusu et al. 2016):

    L(θ) = E_s[ KL( π_T(·|s; τ) ‖ π_S(·|s) ) ] + λ · E_s[ ‖ M(s) ⊙ ∇_s g(π_S, s) ‖²₂ ]

* π_T(·|s; τ) = softmax(teacher logits / τ); the KL is averaged over the batch ("batchmean").
* g = log π_S(a*|s) with a* = argmax π_T (default), Σ_a log π_S(a|s), or the logit of a* (``target``).
* M(s) ∈ {0,1}^{H×W} is broadcast over channels; ‖·‖² sums over channels and pixels, then averages over the batch.
* The penalty is differentiated through (double backpropagation, ``create_graph=True``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch as th
import torch.nn.functional as F
from torch import nn

from digr.checkpoint import load_training_state, save_training_state
from digr.saliency.gradient import input_gradient

__all__ = ["kl_teacher_student", "masked_gradient_penalty", "digr_loss", "DistillData", "train_student"]


def kl_teacher_student(teacher_logits: th.Tensor, student_logits: th.Tensor, tau: float = 1.0) -> th.Tensor:
    """KL(softmax(t/τ) ‖ softmax(s)), averaged over the batch, in nats (scalar float ≥ 0).

    :param teacher_logits: float ``[B, A]`` (no gradient flows into it).
    :param student_logits: float ``[B, A]``.
    :param tau: teacher temperature > 0 (Rusu et al. 2016).
    """
    p_log = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    q_log = F.log_softmax(student_logits, dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(dim=1).mean()


def masked_gradient_penalty(student: nn.Module, image: th.Tensor, action: th.Tensor, mask: th.Tensor,
                            side: th.Tensor | None = None, target: str = "log_prob") -> th.Tensor:
    """mean_b Σ_{c,h,w} (M_bhw · ∂g_b/∂x_bchw)², differentiable w.r.t. the student's parameters (scalar float ≥ 0).

    :param image: float ``[B, C, H, W]`` in [0, 1]. :param action: int64 ``[B]`` (a* for ``log_prob``/``logit``).
    :param mask: float ``[B, H, W]`` (or ``[B, C, H, W]``) in {0, 1}; 1 = penalised. Units of the result:
        (score per [0, 1] pixel value)².
    """
    grad = input_gradient(student, image, action, side, target, create_graph=True)
    m = mask.unsqueeze(1) if mask.ndim == 3 else mask
    return (m * grad).pow(2).flatten(1).sum(dim=1).mean()


def digr_loss(student: nn.Module, image: th.Tensor, teacher_logits: th.Tensor, mask: th.Tensor | None, lam: float,
              side: th.Tensor | None = None, tau: float = 1.0, target: str = "log_prob",
              penalty_rows: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Total DIGR loss and its two terms ``(total, kl, penalty)``.

    With ``lam == 0`` or ``mask is None`` the penalty is not computed (returned as 0) and the loss is plain
    distillation. a* = argmax of the teacher logits. ``penalty_rows`` (int64 ``[k]``, optional) computes the penalty's
    batch mean on those rows only: an unbiased estimate of the full-batch mean when the rows are drawn uniformly,
    at k/B of the double-backprop cost.
    """
    student_logits = student(image, side)
    kl = kl_teacher_student(teacher_logits, student_logits, tau)
    if lam == 0 or mask is None:
        return kl, kl.detach(), th.zeros((), device=kl.device)
    a_star = teacher_logits.argmax(dim=1)
    if penalty_rows is not None:
        image, a_star, mask = image[penalty_rows], a_star[penalty_rows], mask[penalty_rows]
        side = None if side is None else side[penalty_rows]
    pen = masked_gradient_penalty(student, image, a_star, mask, side, target)
    return kl + lam * pen, kl.detach(), pen.detach()


@dataclass
class DistillData:
    """Training arrays for distillation.

    images uint8 ``[N, C, H, W]``; side float32 ``[N, K]`` or None; teacher_logits float32 ``[N, A]``;
    masks float32 ``[N, H, W]`` in {0, 1} or None (no penalty).
    """

    images: np.ndarray
    teacher_logits: np.ndarray
    side: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def train_student(student: nn.Module, data: DistillData, *, lam: float, steps: int, batch_size: int, lr: float,
                  tau: float = 1.0, target: str = "log_prob", seed: int = 0, checkpoint_path: str | Path | None = None,
                  checkpoint_every: int = 500, log: Callable[[dict], None] | None = None,
                  progress: Callable[[int], None] | None = None, device: str = "cpu", penalty_batch_size: int | None = None) -> list[dict]:
    """Train ``student`` on ``data`` with Adam for ``steps`` minibatch steps; resumes from ``checkpoint_path``.

    ``penalty_batch_size`` (< ``batch_size``) estimates the penalty on that many rows of each minibatch, drawn
    uniformly by the seeded sampler (see :func:`digr_loss`); the KL term always uses the whole minibatch.

    Minibatches are drawn by a seeded permutation per epoch; the checkpoint stores model, optimizer, step, the
    sampler's RNG state and the loss history, so an interrupted run continues bit-for-bit where it stopped.

    :returns: the loss history, one dict per logged step ``{"step", "loss", "kl", "penalty", "sec"}``.
    :raises CheckpointError: a corrupt checkpoint (delete it to restart).
    """
    student.to(device).train()
    opt = th.optim.Adam(student.parameters(), lr=lr)
    rng = np.random.Generator(np.random.PCG64(seed))
    th.manual_seed(seed)
    step, history, order, pos = 0, [], rng.permutation(len(data)), 0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None and ckpt.is_file():
        state = load_training_state(ckpt)
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, history, pos = int(state["step"]), list(state["history"]), int(state["pos"])
        order = state["order"].numpy()
        rng.bit_generator.state = _rng_state_from(state["rng"])
    use_mask = lam != 0 and data.masks is not None

    def save():
        if ckpt is not None:
            save_training_state({"model": student.state_dict(), "optim": opt.state_dict(), "step": step, "history": history,
                                 "pos": pos, "order": th.as_tensor(order), "rng": _rng_state_to(rng.bit_generator.state)}, ckpt)

    t0 = time.perf_counter()
    while step < steps:
        if pos + batch_size > len(order):
            order, pos = rng.permutation(len(data)), 0
        idx = np.sort(order[pos : pos + batch_size])
        pos += batch_size
        image = th.as_tensor(data.images[idx], device=device).float() / 255.0
        t_logits = th.as_tensor(data.teacher_logits[idx], device=device)
        side = th.as_tensor(data.side[idx], device=device) if data.side is not None else None
        mask = th.as_tensor(data.masks[idx], device=device) if use_mask else None
        rows = None
        if use_mask and penalty_batch_size is not None and penalty_batch_size < len(idx):
            rows = th.as_tensor(np.sort(rng.choice(len(idx), penalty_batch_size, replace=False)), device=device)
        loss, kl, pen = digr_loss(student, image, t_logits, mask, lam, side, tau, target, rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step == steps:
            rec = {"step": step, "loss": float(loss.detach()), "kl": float(kl), "penalty": float(pen), "sec": time.perf_counter() - t0}
            history.append(rec)
            if log:
                log(rec)
        if progress:
            progress(step)
        if ckpt is not None and (step % checkpoint_every == 0 or step == steps):
            save()
    student.eval()
    return history


def _rng_state_to(state: dict) -> dict:
    s = state["state"]
    return {"state": str(s["state"]), "inc": str(s["inc"]), "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def _rng_state_from(saved: dict) -> dict:
    return {"bit_generator": "PCG64", "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
            "has_uint32": int(saved["has_uint32"]), "uinteger": int(saved["uinteger"])}
