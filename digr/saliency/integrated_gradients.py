"""Integrated gradients: Sundararajan, Taly, Yan 2017, "Axiomatic Attribution for Deep Networks" (ICML, arXiv
1703.01365, eq. 1 and its Riemann approximation eq. 3):

    IG_i(x) = (x_i − x'_i) · ∫₀¹ ∂g(x' + α(x − x'))/∂x_i dα  ≈  (x_i − x'_i) · Σ_k w_k ∂g(x' + α_k(x − x'))/∂x_i.

Quadrature (``method``): ``gausslegendre`` (default, as Captum), ``riemann_left``, ``riemann_right``,
``riemann_middle`` (nodes and weights as Captum) and ``riemann_trapezoid`` (the trapezoid rule: n nodes 0..1, weights
1/(n−1) with halved ends, which sum to 1; Captum's trapezoid weights sum to 1 − 1/n instead).

Baselines x': ``"black"`` (zeros), ``"blur"`` (the Gaussian-blurred frame, σ = ``blur_sigma`` pixels, as in
Greydanus's perturbation; not black-biased on Atari frames), ``"uniform"`` (the mid-grey 0.5 image) or a tensor
broadcastable to ``[B, C, H, W]``.
"""

from __future__ import annotations

import numpy as np
import torch as th

from digr.saliency.base import Cost, SaliencyMethod, check_inputs
from digr.saliency.gradient import TARGETS, batched_input_gradient
from digr.saliency.perturbation import gaussian_blur

__all__ = ["QUADRATURES", "IntegratedGradients", "quadrature"]

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α_k ∈ [0, 1] and weights w_k (float64 ``[n]`` each) of an n-point rule on [0, 1].

    :raises ValueError: unknown method, or n < 1 (n < 2 for the trapezoid rule).
    """
    if n < 1 or (method == "riemann_trapezoid" and n < 2):
        raise ValueError(f"n_steps must be >= {2 if method == 'riemann_trapezoid' else 1}, got {n}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (x + 1.0), 0.5 * w
    w = np.full(n, 1.0 / n)
    if method == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / n, n), w
    if method == "riemann_right":
        return np.linspace(1.0 / n, 1.0, n), w
    if method == "riemann_middle":
        return np.linspace(0.5 / n, 1.0 - 0.5 / n, n), w
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    raise ValueError(f"method={method!r} is not one of {QUADRATURES}")


class IntegratedGradients(SaliencyMethod):
    """Integrated gradients (Sundararajan et al. 2017, eq. 1, approximated by an ``n_steps``-point quadrature).

    ``attribute`` → float ``[B, C, H, W]`` in units of g; the attributions of a frame sum to about
    g(x) − g(x') (completeness; exact as ``n_steps`` → ∞). Cost: ``n_steps`` forward + backward passes per map.
    Equals ``captum.attr.IntegratedGradients(f).attribute(x, baselines, target=a, n_steps=n, method=m)`` for
    ``target="logit"`` and the Gauss–Legendre or left/right/middle Riemann rules.

    :param n_steps: quadrature points (default 50).
    :param baseline: ``"black"``, ``"blur"``, ``"uniform"`` or a tensor broadcastable to the image.
    :param blur_sigma: σ in pixels of the ``"blur"`` baseline.
    :param batch_size: at most this many interpolated images per backward pass.
    :raises ValueError: unknown target, method or baseline name.
    """

    name = "integrated_gradients"

    def __init__(
        self,
        n_steps: int = 50,
        baseline: str | th.Tensor = "black",
        method: str = "gausslegendre",
        target: str = "log_prob",
        blur_sigma: float = 3.0,
        batch_size: int = 256,
        reduce: str = "abs_max",
    ):
        super().__init__(reduce)
        if target not in TARGETS:
            raise ValueError(f"target={target!r} is not one of {TARGETS}")
        if isinstance(baseline, str) and baseline not in ("black", "blur", "uniform"):
            raise ValueError(
                f"baseline={baseline!r}: use 'black', 'blur', 'uniform' or a tensor broadcastable to [B, C, H, W]"
            )
        quadrature(method, n_steps)  # validates
        self.n_steps, self.baseline, self.method, self.target = n_steps, baseline, method, target
        self.blur_sigma, self.batch_size = blur_sigma, batch_size

    def _baseline(self, image: th.Tensor) -> th.Tensor:
        if isinstance(self.baseline, th.Tensor):
            return self.baseline.to(image).expand_as(image)
        if self.baseline == "black":
            return th.zeros_like(image)
        if self.baseline == "uniform":
            return th.full_like(image, 0.5)
        return gaussian_blur(image, self.blur_sigma)

    def attribute(self, policy, image, action, side=None):
        check_inputs(image, action, side)
        alphas, weights = quadrature(self.method, self.n_steps)
        base = self._baseline(image)
        delta = image - base
        total = th.zeros_like(image)
        frames = max(1, self.batch_size // self.n_steps)  # whole integration paths of `frames` frames per chunk
        a = th.as_tensor(alphas, dtype=image.dtype, device=image.device).view(1, -1, 1, 1, 1)
        w = th.as_tensor(weights, dtype=image.dtype, device=image.device).view(1, -1, 1, 1, 1)
        for i in range(0, len(image), frames):
            sl = slice(i, i + frames)
            n = len(image[sl])
            path = (base[sl, None] + a * delta[sl, None]).reshape(n * self.n_steps, *image.shape[1:])
            act = action[sl].repeat_interleave(self.n_steps)
            sd = None if side is None else side[sl].repeat_interleave(self.n_steps, dim=0)
            g = batched_input_gradient(policy, path, act, sd, self.target, self.batch_size).view(
                n, self.n_steps, *image.shape[1:]
            )
            total[sl] = (g * w).sum(dim=1)
        return delta * total

    def cost(self, image_shape):
        return Cost(self.n_steps, self.n_steps)
