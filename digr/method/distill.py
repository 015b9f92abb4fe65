"""Distillation training: the student's data and the resumable training loop for the loss of :mod:`digr.method.loss`.

Minibatches are drawn by a seeded permutation per epoch and the checkpoint stores model, optimiser, step, the
sampler's RNG state and the loss history, so an interrupted run continues bit-for-bit where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch as th
from torch import nn

from digr.checkpoint import load_training_state, save_training_state
from digr.contracts import weights_finite
from digr.errors import CheckpointError, NonFiniteError
from digr.method.loss import digr_loss

__all__ = ["CHECKPOINT_KEYS", "DistillData", "train_student"]

#: What a student checkpoint holds (a file without one of these is refused, not half-used).
CHECKPOINT_KEYS = ("model", "optim", "step", "history", "pos", "order", "rng", "config")


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

    def concat(self, other: DistillData) -> DistillData:
        """Rows of ``self`` followed by those of ``other`` (DAgger adds the student's states to its data).

        :raises ValueError: one has side inputs or masks and the other has not.
        """
        if (self.side is None) != (other.side is None) or (self.masks is None) != (other.masks is None):
            raise ValueError("concat needs both datasets with side inputs and masks, or both without")
        side = None if self.side is None else np.concatenate([self.side, other.side])
        masks = None if self.masks is None else np.concatenate([self.masks, other.masks])
        return DistillData(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.teacher_logits, other.teacher_logits]),
            side,
            masks,
        )


def train_student(
    student: nn.Module,
    data: DistillData,
    *,
    lam: float,
    steps: int,
    batch_size: int,
    lr: float,
    tau: float = 1.0,
    target: str = "log_prob",
    seed: int = 0,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 500,
    log: Callable[[dict], None] | None = None,
    progress: Callable[[int], None] | None = None,
    device: str = "cpu",
    penalty_batch_size: int | None = None,
    config: dict | None = None,
    attention_entropy: float = 0.0,
) -> list[dict]:
    """Train ``student`` on ``data`` with Adam for ``steps`` minibatch steps; resumes from ``checkpoint_path``.

    The loss is :func:`digr.method.loss.digr_loss`. ``penalty_batch_size`` (< ``batch_size``) estimates the penalty on
    that many rows of each minibatch, drawn uniformly by the seeded sampler; the KL term always uses the whole minibatch.
    Minibatches are drawn by a seeded permutation per epoch; the checkpoint stores model, optimizer, step, the
    sampler's RNG state and the loss history, so an interrupted run continues bit-for-bit where it stopped.

    :param student: an ``nn.Module`` policy (:class:`digr.contracts.Policy`); trained in place, left in eval mode.
    :param data: images uint8 ``[N, C, H, W]``, teacher logits, side inputs and penalty masks (:class:`DistillData`).
    :param lam: λ ≥ 0, weight of the penalty (units: (score per [0, 1] pixel)⁻²). :param steps: total minibatch steps
        (a resumed call continues up to this count). :param batch_size: states per minibatch. :param lr: Adam's
        learning rate. :param tau: teacher temperature τ > 0. :param target: the penalised score g
        (:data:`digr.saliency.TARGETS`). :param seed: seeds the sampler. :param checkpoint_every: steps between
        checkpoints. :param log: called with each history row (every 50 steps). :param progress: called with the step.
    :param attention_entropy: c of the attention-entropy term c·H(A) (attention students; 0 = none).
    :param config: the config the student depends on, stored in every checkpoint (the caller refuses to resume from a
        checkpoint whose config differs: :func:`digr.checkpoint.checkpoint_config`).
    :returns: the loss history, one dict per logged step ``{"step", "loss", "kl", "penalty", "sec"}``.
    :raises CheckpointError: a corrupt checkpoint, or one that does not fit ``student`` (delete it to restart).
    :raises NonFiniteError: the loss became NaN or infinite; nothing is saved after the last good checkpoint.
    """
    student.to(device).train()
    opt = th.optim.Adam(student.parameters(), lr=lr)
    rng = np.random.Generator(np.random.PCG64(seed))
    th.manual_seed(seed)
    step, history, order, pos = 0, [], rng.permutation(len(data)), 0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None and ckpt.is_file():
        state = load_training_state(ckpt, CHECKPOINT_KEYS)
        try:
            student.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            step, history, pos = int(state["step"]), list(state["history"]), int(state["pos"])
            order = state["order"].numpy()
            rng.bit_generator.state = _rng_state_from(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"student checkpoint {ckpt} does not fit this student ({e}); delete it and rerun to restart its training"
            ) from e
    use_mask = lam != 0 and data.masks is not None

    saved = step if ckpt is not None and ckpt.is_file() else None  # step of the last good checkpoint

    def save():
        nonlocal saved
        saved = step
        if ckpt is not None:
            save_training_state(
                {
                    "model": student.state_dict(),
                    "optim": opt.state_dict(),
                    "step": step,
                    "history": history,
                    "pos": pos,
                    "order": th.as_tensor(order),
                    "rng": _rng_state_to(rng.bit_generator.state),
                    "config": json.dumps(config or {}, sort_keys=True),
                },
                ckpt,
            )

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
        loss, kl, pen = digr_loss(student, image, t_logits, mask, lam, side, tau, target, rows, attention_entropy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if not (th.isfinite(loss.detach()) and weights_finite(student)):  # a NaN loss also leaves NaN weights here
            last = f"{ckpt}, step {saved}" if ckpt is not None and saved is not None else "none"
            raise NonFiniteError(
                f"distillation: step {step} gave a non-finite loss or weights (loss {loss.detach().item()}, KL "
                f"{float(kl)}, penalty {float(pen)}); training stopped, the last good checkpoint is kept ({last}). "
                "Lower distill.learning_rate or the student's lam and use a new `name:`"
            )
        if step % 50 == 0 or step == steps:
            rec = {
                "step": step,
                "loss": float(loss.detach()),
                "kl": float(kl),
                "penalty": float(pen),
                "sec": time.perf_counter() - t0,
            }
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
    return {
        "state": str(s["state"]),
        "inc": str(s["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _rng_state_from(saved: dict) -> dict:
    return {
        "bit_generator": "PCG64",
        "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
        "has_uint32": int(saved["has_uint32"]),
        "uinteger": int(saved["uinteger"]),
    }
