"""Occlusion saliency: Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks" (ECCV, arXiv
1311.2901, Sec. 4.2): slide a constant patch over the image and record how much the explained score drops.

For windows W of ``window``×``window`` pixels (all channels) at stride ``stride``, with x_W the image whose window is
set to ``fill``, the attribution of pixel p is the mean over the windows that cover p of g(x) − g(x_W) — the same
definition and normalisation as ``captum.attr.Occlusion`` with sliding window (C, k, k), strides (C, s, s) and a
constant baseline. Pixels that no window covers get 0. Batched: many occluded copies per forward pass.
"""

from __future__ import annotations

import torch as th

from digr.saliency.base import Cost, SaliencyMethod, check_inputs
from digr.saliency.gradient import TARGETS, target_score

__all__ = ["Occlusion", "window_starts"]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets 0, s, 2s, … of the windows that fit inside ``size`` pixels (as Captum: (size − window)//stride + 1).

    :raises ValueError: window larger than the image or non-positive window/stride.
    """
    if window < 1 or stride < 1 or window > size:
        raise ValueError(f"need 1 <= window <= image size and stride >= 1, got window={window}, stride={stride}, size={size}")
    return list(range(0, size - window + 1, stride))


class Occlusion(SaliencyMethod):
    """Occlusion with a constant patch (Zeiler & Fergus 2014). ``attribute`` → float ``[B, 1, H, W]`` in units of g
    (positive where occluding lowers the score). Cost: (number of windows + 1) forward passes, no backward pass.

    :param window: patch side in pixels (default 8 = one MiniGrid cell).
    :param stride: patch stride in pixels (default 4).
    :param fill: value written into the patch, in [0, 1] (default 0, black).
    :param target: the score g (see :data:`digr.saliency.gradient.TARGETS`).
    :param batch_size: at most this many occluded images per forward pass.
    """

    name = "occlusion"

    def __init__(
        self,
        window: int = 8,
        stride: int = 4,
        fill: float = 0.0,
        target: str = "log_prob",
        batch_size: int = 1024,
        reduce: str = "abs_max",
    ):
        super().__init__(reduce)
        if target not in TARGETS:
            raise ValueError(f"target={target!r} is not one of {TARGETS}")
        self.window, self.stride, self.fill, self.target, self.batch_size = window, stride, fill, target, batch_size

    def _windows(self, h: int, w: int) -> list[tuple[int, int]]:
        return [(y, x) for y in window_starts(h, self.window, self.stride) for x in window_starts(w, self.window, self.stride)]

    def attribute(self, policy, image, action, side=None):
        check_inputs(image, action, side)
        b, c, h, w = image.shape
        wins = self._windows(h, w)
        masks = image.new_zeros((len(wins), 1, h, w))
        for k, (y, x) in enumerate(wins):
            masks[k, 0, y : y + self.window, x : x + self.window] = 1.0
        coverage = masks.sum(0)  # [1, H, W]
        m = len(wins)
        out = image.new_zeros((b, 1, h, w))
        frames = max(1, self.batch_size // m)
        with th.inference_mode():
            for i in range(0, b, frames):
                sl = slice(i, i + frames)
                x, a = image[sl], action[sl]
                n = len(x)
                sd = None if side is None else side[sl]
                clean = target_score(policy(x, sd), a, self.target)  # [n]
                occ = (x[:, None] * (1 - masks[None]) + self.fill * masks[None]).reshape(n * m, c, h, w)
                act = a.repeat_interleave(m)
                sdr = None if sd is None else sd.repeat_interleave(m, dim=0)
                scores = th.cat(
                    [
                        target_score(
                            policy(occ[j : j + self.batch_size], None if sdr is None else sdr[j : j + self.batch_size]),
                            act[j : j + self.batch_size],
                            self.target,
                        )
                        for j in range(0, n * m, self.batch_size)
                    ]
                )
                diff = clean[:, None] - scores.view(n, m)  # [n, m]
                out[sl] = th.einsum("nm,mchw->nchw", diff, masks) / coverage.clamp_min(1.0)
        return out.clone()

    def cost(self, image_shape):
        _, h, w = image_shape
        return Cost(len(self._windows(h, w)) + 1, 0)
