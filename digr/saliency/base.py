"""The common interface of every saliency method in :mod:`digr.saliency`.

A method is an object with

* ``attribute(policy, image, action, side=None) -> attribution``: the raw attribution, float ``[B, C, H, W]`` for
  input-gradient methods (per channel, signed where the method is signed) and ``[B, 1, H, W]`` for perturbation and
  occlusion methods (one score per pixel);
* ``__call__(policy, image, action, side=None) -> saliency``: the saliency map, float ``[B, H, W]``, the raw
  attribution reduced over channels by ``reduce`` (default ``"abs_max"``: max over channels of the absolute value,
  as in Simonyan et al. 2013);
* ``cost(image_shape) -> Cost``: forward and backward passes of the policy per map (what makes a method expensive).

Arguments everywhere: ``policy`` is a :class:`digr.contracts.Policy`, ``(image [N,C,H,W] float in [0,1],
side [N,K] | None) -> logits [N,A]``; ``image`` is float ``[B,C,H,W]`` in [0,1] (raw uint8 / 255; attributions are per
[0,1] unit); ``action`` is int64 ``[B]`` (the action explained; perturbation saliency ignores it); ``side`` float
``[B,K]`` or None is passed through untouched. Methods never modify their inputs and leave no gradients on the
policy's parameters.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch as th

from digr.contracts import Policy

__all__ = ["REDUCTIONS", "Cost", "SaliencyMethod", "check_inputs", "reduce_channels"]

REDUCTIONS = ("abs_max", "abs_sum", "sum", "abs_mean")


@dataclass(frozen=True)
class Cost:
    """Passes of the policy network per saliency map (one frame): ``forward`` and ``backward`` counts."""

    forward: int
    backward: int

    def __str__(self) -> str:
        return f"{self.forward} fwd + {self.backward} bwd" if self.backward else f"{self.forward} fwd"


def reduce_channels(attribution: th.Tensor, reduce: str = "abs_max") -> th.Tensor:
    """Reduce ``[B, C, H, W]`` attributions to a ``[B, H, W]`` map.

    ``abs_max``: max_c |a| (Simonyan et al. 2013); ``abs_sum``: Σ_c |a|; ``abs_mean``: mean_c |a|; ``sum``: Σ_c a
    (signed; then |·| is not taken).

    :raises ValueError: unknown ``reduce`` or an attribution that is not 4-D.
    """
    if attribution.ndim != 4:
        raise ValueError(f"attribution must be [B, C, H, W], got shape {tuple(attribution.shape)}")
    if reduce == "abs_max":
        return attribution.abs().amax(dim=1)
    if reduce == "abs_sum":
        return attribution.abs().sum(dim=1)
    if reduce == "abs_mean":
        return attribution.abs().mean(dim=1)
    if reduce == "sum":
        return attribution.sum(dim=1)
    raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}")


def check_inputs(image: th.Tensor, action: th.Tensor | None, side: th.Tensor | None, need_action: bool = True) -> None:
    """Validate the common arguments.

    :raises ValueError: ``image`` not float ``[B,C,H,W]``; ``action`` missing (when needed) or not ``[B]``; ``side``
        with a batch size other than B.
    """
    if image.ndim != 4 or not image.is_floating_point():
        raise ValueError(f"image must be float [B, C, H, W] in [0, 1], got {image.dtype} of shape {tuple(image.shape)}")
    b = image.shape[0]
    if need_action:
        if action is None:
            raise ValueError(
                "this saliency method explains one action per frame: pass action (int64 [B]), e.g. the policy's greedy action"
            )
        if action.shape != (b,):
            raise ValueError(f"action must be int64 [B] = [{b}], got shape {tuple(action.shape)}")
    if side is not None and side.shape[0] != b:
        raise ValueError(f"side must have the batch size of image ({b}), got shape {tuple(side.shape)}")


class SaliencyMethod(abc.ABC):
    """Base class: subclasses implement :meth:`attribute` and :meth:`cost` and set ``name``.

    :param reduce: channel reduction applied by :meth:`__call__` (see :func:`reduce_channels`).
    """

    name = "method"

    def __init__(self, reduce: str = "abs_max"):
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}")
        self.reduce = reduce

    @abc.abstractmethod
    def attribute(
        self, policy: Policy, image: th.Tensor, action: th.Tensor | None, side: th.Tensor | None = None
    ) -> th.Tensor:
        """Raw attribution, float ``[B, C, H, W]`` (or ``[B, 1, H, W]``); see the module docstring."""

    @abc.abstractmethod
    def cost(self, image_shape: tuple[int, int, int]) -> Cost:
        """Forward/backward passes per map for a ``(C, H, W)`` frame."""

    def applies_to(self, policy: Policy) -> bool:
        """Whether this method can explain ``policy`` (every method can, except the attention maps, which need a
        student with built-in attention)."""
        return True

    def __call__(self, policy: Policy, image: th.Tensor, action: th.Tensor | None, side: th.Tensor | None = None) -> th.Tensor:
        """Saliency map, float ``[B, H, W]`` (≥ 0 unless ``reduce="sum"``)."""
        return reduce_channels(self.attribute(policy, image, action, side), self.reduce)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
