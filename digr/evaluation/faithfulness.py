"""Saliency-map metrics that need the policy: faithfulness curves and the weight-randomisation sanity check.

* :func:`deletion_curve` / :func:`insertion_curve` (:func:`perturbation_curve`): Petsiuk, Das, Saenko 2018, "RISE:
  Randomized Input Sampling for Explanation of Black-box Models" (BMVC, arXiv 1806.07421, Sec. 4.1 "deletion" and
  "insertion" metrics), here for a policy. Pixels are removed from the frame (deletion) or revealed on a blank canvas
  (insertion) in the order the map ranks them, and at each fraction the policy's probability of its chosen action
  and KL(π(·|s) ‖ π(·|s')) to the clean frame s are recorded. The area under each curve summarises it: a faithful map
  makes the probability collapse fast under deletion and recover fast under insertion.
* :func:`sanity_check` with :func:`randomize_weights`: the model-parameter randomisation test of Adebayo et al. 2018,
  "Sanity Checks for Saliency Maps" (NeurIPS, arXiv 1810.03292, Sec. 3.1): a saliency method whose maps barely change
  when all of the network's weights are re-initialised does not explain the network.

A policy is ``policy(image [N,C,H,W] float in [0,1], side [N,K] | None) -> logits [N, A]`` (:class:`digr.contracts.Policy`);
a saliency method is ``method(policy, image, action, side) -> [B, H, W]`` (see :mod:`digr.saliency`). The policy is
used as it is (call ``.eval()`` first if it has dropout or batch norm). Per-frame float64 results are aggregated with
:func:`digr.evaluation.metrics.nanmean_ci`.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch as th
import torch.nn.functional as F
from torch import nn

from digr.contracts import Policy, categorical_kl
from digr.evaluation.metrics import spearman
from digr.saliency.perturbation import gaussian_blur

__all__ = [
    "MODES",
    "FaithfulnessCurves",
    "deletion_curve",
    "insertion_curve",
    "perturbation_curve",
    "randomize_weights",
    "sanity_check",
]

MODES = ("deletion", "insertion")


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Result of :func:`perturbation_curve` for B frames and S = n_steps + 1 fractions (all float64 numpy arrays).

    :ivar mode: ``"deletion"`` or ``"insertion"``.
    :ivar fractions: ``[S]``, the x-axis: fraction of the H·W pixels deleted (deletion) or inserted (insertion),
        ``linspace(0, 1, S)``.
    :ivar prob: ``[B, S]``, π(a|s') of the frame's chosen action a on the modified frame s', in [0, 1].
    :ivar kl: ``[B, S]``, KL(π(·|s) ‖ π(·|s')) in nats, ≥ 0, s the clean frame. Deletion starts at 0 (fraction 0 is the
        clean frame); insertion ends at 0 (fraction 1 is the clean frame).
    :ivar prob_auc: ``[B]``, trapezoidal area under ``prob`` over fractions in [0, 1], in [0, 1]. Deletion: LOWER is
        better (the map's top pixels carry the decision). Insertion: HIGHER is better.
    :ivar kl_auc: ``[B]``, area under ``kl``, ≥ 0. Deletion: HIGHER is better. Insertion: LOWER is better.
    """

    mode: str
    fractions: np.ndarray
    prob: np.ndarray
    kl: np.ndarray
    prob_auc: np.ndarray
    kl_auc: np.ndarray


def _replacement(image: th.Tensor, replacement, sigma: float) -> th.Tensor:
    if replacement is None:
        return gaussian_blur(image, sigma)
    rep = th.as_tensor(replacement, dtype=image.dtype, device=image.device)
    try:
        return th.broadcast_to(rep, image.shape)
    except RuntimeError as e:
        raise ValueError(
            f"replacement of shape {tuple(rep.shape)} does not broadcast to the image shape {tuple(image.shape)}; "
            "pass a float, a [C, 1, 1] colour, a [B, C, H, W] image, or None for the blurred image"
        ) from e


def _forward_logits(policy: Policy, x: th.Tensor, side: th.Tensor | None, batch_size: int) -> th.Tensor:
    """The policy's logits on ``x`` in passes of at most ``batch_size`` images, as float64 ``[N, A]``."""
    out = []
    for j in range(0, x.shape[0], batch_size):
        out.append(policy(x[j : j + batch_size], None if side is None else side[j : j + batch_size]))
    return th.cat(out).double()


def perturbation_curve(
    policy: Policy,
    image: th.Tensor,
    saliency,
    action: th.Tensor,
    side: th.Tensor | None = None,
    *,
    mode: str = "deletion",
    n_steps: int = 16,
    replacement=None,
    sigma: float = 3.0,
    batch_size: int = 256,
) -> FaithfulnessCurves:
    """Deletion or insertion curve of a saliency map for a policy (Petsiuk et al. 2018, RISE, Sec. 4.1).

    Pixels are ordered by decreasing ``saliency`` (ties by flattened pixel index, first pixel first: a stable argsort
    of −saliency, so the order is deterministic). At fraction f the top k = round(f·H·W) pixels, all channels, are

    * ``deletion``: replaced by the ``replacement`` image's pixels (fraction 0 = the clean frame, 1 = the replacement);
    * ``insertion``: copied from the clean frame onto the replacement (fraction 0 = the replacement, 1 = the clean frame).

    At each of the S = ``n_steps`` + 1 fractions ``linspace(0, 1, S)`` the policy's probability of ``action`` and
    KL(π(·|clean) ‖ π(·|modified)) are recorded. RISE deletes to zero and inserts into a blurred copy; here both modes
    use the same replacement, by default the Gaussian-blurred frame (as in the perturbation saliency of Greydanus et
    al. 2018), so that the frame stays in the policy's input distribution and deletion's end point equals insertion's
    start point. The saliency map is used signed: pass ``saliency.abs()`` to rank signed maps by magnitude.

    Cost: B·(S + 1) forward passes, no backward pass; up to ``batch_size`` images per forward pass (all fractions of
    ``batch_size // S`` frames at a time).

    :param policy: ``(image [N,C,H,W], side [N,K] | None) -> logits [N, A]``; run under ``torch.no_grad``.
    :param image: float ``[B, C, H, W]`` in [0, 1]; not modified.
    :param saliency: float ``[B, H, W]`` (tensor or array), higher = more important; must be finite.
    :param action: int ``[B]``, the action whose probability is tracked (normally the policy's greedy action on the
        clean frame, :func:`digr.contracts.greedy_action`).
    :param side: float ``[B, K]`` or None; passed unchanged with every modified frame.
    :param mode: ``"deletion"`` or ``"insertion"``.
    :param n_steps: number of intervals on the fraction axis (≥ 1); H·W/n_steps pixels change per step.
    :param replacement: None (Gaussian blur of ``image`` with std ``sigma``), a float (constant image, e.g. 0.0 as in
        RISE's deletion), or a tensor broadcastable to ``[B, C, H, W]``.
    :param sigma: blur std in pixels for the default replacement (3.0 suits 64–84 px frames).
    :param batch_size: at most this many images per forward pass (bounds memory).
    :returns: :class:`FaithfulnessCurves` (curves ``[B, S]``, fractions ``[S]``, AUCs ``[B]``).
    :raises ValueError: bad ``mode``, ``n_steps``, ``batch_size`` or ``sigma``; shapes of ``image``/``saliency``/
        ``action``/``side``/``replacement`` that do not fit; non-finite saliency; an action outside [0, A).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    n_steps, batch_size = int(n_steps), int(batch_size)
    if image.ndim != 4:
        raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}; add a batch axis with image[None]")
    b, c, h, w = image.shape
    sal = (
        saliency.detach().to("cpu", th.float64)
        if isinstance(saliency, th.Tensor)
        else th.as_tensor(np.asarray(saliency, dtype=np.float64))
    )
    if tuple(sal.shape) != (b, h, w):
        raise ValueError(
            f"saliency must be [B, H, W] = {(b, h, w)} to match the image, got {tuple(sal.shape)}; "
            "reduce channels first (e.g. .amax(1)) and compute it on the same frames"
        )
    if not th.isfinite(sal).all():
        raise ValueError("saliency contains NaN or inf; replace them (e.g. torch.nan_to_num) before ranking pixels")
    action = th.as_tensor(action, device=image.device).long()
    if tuple(action.shape) != (b,):
        raise ValueError(f"action must be int [B] = [{b}], got shape {tuple(action.shape)}")
    if side is not None and side.shape[0] != b:
        raise ValueError(f"side has {side.shape[0]} rows for {b} frames; pass one side vector per frame or None")

    s = n_steps + 1
    npx = h * w
    fractions = np.linspace(0.0, 1.0, s)
    counts = th.as_tensor(np.rint(fractions * npx).astype(np.int64), device=image.device)  # [S] pixels changed
    # rank[b, p] = position of pixel p in the order of decreasing saliency (stable: ties by index); +0.0 maps −0 to 0
    order = th.argsort(sal.reshape(b, npx).neg() + 0.0, dim=1, stable=True)
    rank = th.empty_like(order).scatter_(1, order, th.arange(npx).expand(b, npx).contiguous()).to(image.device)

    frames_per_chunk = max(1, batch_size // s)
    probs, kls = [], []
    with th.no_grad():
        rep = _replacement(image, replacement, sigma)
        clean = _forward_logits(policy, image, side, batch_size)  # [B, A]
        n_act = clean.shape[1]
        if int(action.min()) < 0 or int(action.max()) >= n_act:
            raise ValueError(
                f"action values must lie in [0, {n_act}) for this policy, got min {int(action.min())}, max {int(action.max())}"
            )
        for start in range(0, b, frames_per_chunk):
            sl = slice(start, start + frames_per_chunk)
            n = rank[sl].shape[0]
            top = (rank[sl, None, :] < counts[None, :, None]).view(n, s, 1, h, w)  # [n, S, 1, H, W]
            img, blr = image[sl, None], rep[sl, None]  # [n, 1, C, H, W]
            x = th.where(top, blr, img) if mode == "deletion" else th.where(top, img, blr)
            x = x.reshape(n * s, c, h, w)
            sd = side[sl].repeat_interleave(s, dim=0) if side is not None else None
            logits = _forward_logits(policy, x, sd, batch_size).view(n, s, n_act)
            lp = F.log_softmax(logits, dim=-1)
            kls.append(categorical_kl(clean[sl, None], logits).clamp_min(0.0))  # KL(π(·|s) ‖ π(·|s')), [n, S]
            probs.append(lp.gather(2, action[sl, None, None].expand(n, s, 1)).squeeze(2).exp())
    prob = th.cat(probs).cpu().numpy()
    kl = th.cat(kls).cpu().numpy()
    return FaithfulnessCurves(
        mode=mode,
        fractions=fractions,
        prob=prob,
        kl=kl,
        prob_auc=np.trapezoid(prob, fractions, axis=1),
        kl_auc=np.trapezoid(kl, fractions, axis=1),
    )


def deletion_curve(
    policy: Policy, image: th.Tensor, saliency, action: th.Tensor, side: th.Tensor | None = None, **kwargs
) -> FaithfulnessCurves:
    """Deletion curve (Petsiuk et al. 2018): :func:`perturbation_curve` with ``mode="deletion"``; keyword arguments
    (``n_steps``, ``replacement``, ``sigma``, ``batch_size``) as there. LOWER ``prob_auc`` and HIGHER ``kl_auc`` are
    better (deleting the top-ranked pixels first should change the decision fastest)."""
    return perturbation_curve(policy, image, saliency, action, side, mode="deletion", **kwargs)


def insertion_curve(
    policy: Policy, image: th.Tensor, saliency, action: th.Tensor, side: th.Tensor | None = None, **kwargs
) -> FaithfulnessCurves:
    """Insertion curve (Petsiuk et al. 2018): :func:`perturbation_curve` with ``mode="insertion"``; keyword arguments
    as there. HIGHER ``prob_auc`` and LOWER ``kl_auc`` are better (revealing the top-ranked pixels first should restore
    the decision fastest)."""
    return perturbation_curve(policy, image, saliency, action, side, mode="insertion", **kwargs)


def _detached_nonleaf_memo(root, max_depth: int = 8) -> dict:
    """A ``copy.deepcopy`` memo that maps every non-leaf tensor reachable from ``root`` to a detached clone.

    ``torch.Tensor.__deepcopy__`` refuses tensors with a ``grad_fn``. Such tensors are left behind as caches by some
    policies: SB3's ``CategoricalDistribution`` keeps ``.distribution`` (a ``torch.distributions.Categorical`` holding
    the last logits), so an :class:`digr.policies.SB3Teacher` that has run one forward pass with gradients (e.g. for
    a gradient saliency map) cannot be deep-copied. Objects are searched through instance ``__dict__``s, dicts, lists
    and tuples, at most ``max_depth`` levels deep.
    """
    memo: dict = {}
    seen: set[int] = set()
    stack = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or depth > max_depth:
            continue
        seen.add(id(obj))
        if isinstance(obj, th.Tensor):
            if obj.grad_fn is not None:
                memo[id(obj)] = obj.detach().clone()
            continue
        if isinstance(obj, dict):
            children = obj.values()
        elif isinstance(obj, (list, tuple)):
            children = obj
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.FunctionType, types.MethodType, types.ModuleType)):
            children = vars(obj).values()
        else:
            continue
        stack.extend((child, depth + 1) for child in children)
    return memo


def randomize_weights(policy: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``policy`` with every parameter re-initialised (Adebayo et al. 2018, NeurIPS, Sec. 3.1, the
    "full" model-parameter randomisation; all layers at once, not the cascading variant).

    Every submodule with a ``reset_parameters()`` method (``nn.Linear``, ``nn.Conv2d``, norms, … — this is PyTorch's
    default initialisation, not e.g. SB3's orthogonal one) re-draws its own parameters; a parameter not owned by such a
    module is re-drawn from N(0, std²) with std its current standard deviation (its RMS, or 1 if that is 0, when the
    std is 0 or it has a single element). Batch-norm running statistics are reset along with their module. The copy
    keeps the original's device, dtype and train/eval mode; ``policy`` itself is not modified. Works on
    :class:`digr.policies.SB3Teacher` (the wrapped SB3 policy is deep-copied with it).

    Seeded: the same ``seed`` gives the same weights. The global CPU (and, for CUDA parameters, CUDA) random state is
    forked, so calling this does not change the caller's random stream.

    :param policy: any ``nn.Module``.
    :param seed: integer seed of the re-initialisation.
    :returns: the randomised copy (``nn.Module`` of the same class).
    Non-leaf tensors cached on the policy (e.g. the last action distribution kept by an SB3 policy after a forward
    pass with gradients), which ``copy.deepcopy`` refuses, are copied detached.

    :raises ValueError: ``policy`` cannot be deep-copied (an unpicklable attribute).
    """
    try:
        rnd = copy.deepcopy(policy, memo=_detached_nonleaf_memo(policy))
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"cannot deep-copy the policy ({e}); remove unpicklable attributes or build the randomised "
            "copy yourself and pass it as sanity_check(..., randomized=copy)"
        ) from e
    cuda = sorted(
        {
            p.device.index if p.device.index is not None else th.cuda.current_device()
            for p in rnd.parameters()
            if p.device.type == "cuda"
        }
    )
    with th.random.fork_rng(devices=cuda), th.no_grad():
        th.default_generator.manual_seed(int(seed))
        for i in cuda:
            th.cuda.default_generators[i].manual_seed(int(seed))
        covered: set[int] = set()
        for module in rnd.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in module.parameters(recurse=False))
        for p in rnd.parameters():
            if id(p) in covered:
                continue
            std = float(p.double().std()) if p.numel() > 1 else 0.0
            if not std > 0:
                std = float(p.double().pow(2).mean().sqrt()) or 1.0
            p.normal_(0.0, std)
    return rnd


def sanity_check(
    method: Callable,
    policy: nn.Module,
    image: th.Tensor,
    action: th.Tensor,
    side: th.Tensor | None = None,
    seed: int = 0,
    randomized: nn.Module | None = None,
) -> np.ndarray:
    """Model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS, Sec. 3.1):
    Spearman rank correlation, per frame, between ``method``'s map for ``policy`` and for a copy of ``policy`` with
    re-initialised weights (:func:`randomize_weights`). The paper reports Spearman rank correlation (with and without
    absolute values) between the two maps; :func:`digr.evaluation.metrics.spearman` is used on the maps as returned.

    LOW correlation means the map depends on the learned weights (the method passes); a correlation near 1 means the
    method would draw the same map for an untrained network (e.g. an edge detector), so it cannot explain the policy.

    Both maps explain the SAME ``action`` (normally the trained policy's greedy action): the test asks whether the map
    changes when only the weights change. Using the randomised network's own argmax would also change the explained
    output, so a difference could come from the changed target rather than from the weights, and the randomised net's
    argmax is itself an arbitrary function of the random weights.

    :param method: ``method(policy, image, action, side) -> [B, H, W]`` (e.g. :func:`digr.saliency.gradient_saliency`).
    :param policy: the trained policy (not modified).
    :param image: float ``[B, C, H, W]`` in [0, 1].
    :param action: int64 ``[B]``.
    :param side: float ``[B, K]`` or None.
    :param seed: seed of the re-initialisation (ignored when ``randomized`` is given).
    :param randomized: a ready randomised copy, to reuse one copy across calls/methods; default: built here.
    :returns: float64 ``[B]`` in [−1, 1]; NaN for frames where either map is constant (e.g. an all-zero gradient map of
        a randomised ReLU net with all units dead).
    :raises ValueError: the two maps differ in shape, or the policy cannot be deep-copied.
    """
    if randomized is None:
        randomized = randomize_weights(policy, seed)
    a = method(policy, image, action, side)
    b = method(randomized, image, action, side)
    a = a.detach() if isinstance(a, th.Tensor) else a
    b = b.detach() if isinstance(b, th.Tensor) else b
    if tuple(np.shape(a)) != tuple(np.shape(b)):
        raise ValueError(
            f"method returned maps of shape {tuple(np.shape(a))} for the policy and {tuple(np.shape(b))} "
            "for its randomised copy; the method must return [B, H, W] for both"
        )
    return spearman(a, b)
