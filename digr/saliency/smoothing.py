"""Gradient smoothing: SmoothGrad, SmoothGrad², VarGrad, AdaptGrad and other mollifier kernels, as one wrapper.

Every method here is a Monte Carlo estimate of an inner attribution A (by default the vanilla gradient) averaged over
noisy copies of the input, x + ξ_k with ξ_k drawn from a kernel K:

* SmoothGrad (Smilkov et al. 2017, arXiv 1706.03825, eq. 3): (1/N) Σ_k A(x + ξ_k), K = N(0, σ²I).
* SmoothGrad² (``aggregate="mean_sq"``): (1/N) Σ_k A(x + ξ_k)² (Smilkov et al. 2017's squared variant; the default
  ``magnitude=True`` of PAIR-code/saliency; Captum ``nt_type="smoothgrad_sq"``).
* VarGrad (Adebayo et al. 2018, "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter
  Values", arXiv 1810.03307): the variance over k, (1/N) Σ_k A_k² − ((1/N) Σ_k A_k)² (Captum ``nt_type="vargrad"``).
* Gradient mollification (Zhou, Shi, Ma, Wang 2024, "Axiomatization of Gradient Smoothing in Neural Networks", arXiv
  2407.00371): the smoothed gradient is the gradient convolved with a mollifier kernel, estimated by Monte Carlo; the
  Gaussian is one kernel among many. **The other kernels below are this project's instantiation of that framework,
  not kernels taken from the paper**: uniform box, Laplace and the compact-support bump η(u) ∝ exp(−1/(1 − u²)) on
  (−1, 1). All kernels are separable (i.i.d. per input coordinate) and parametrised by their standard deviation σ, so
  equal σ means equal noise power. (A radial bump in d ≈ 10⁴ dimensions would put almost all samples on a thin shell,
  i.e. near a fixed-norm perturbation; the separable form keeps the per-pixel behaviour the 1-D kernel describes.)
* AdaptGrad (Zhou, Ma, Wang, Wu, Shi, NeurIPS 2025, arXiv 2410.07711; official code AiShare-WHU/AdaptGrad): a
  Gaussian with a per-coordinate σ_i = d_i / (√2·erfinv(c)), d_i = min(x_i − x_min, x_max − x_i) the distance to the
  nearer bound of the valid input range, so each noisy coordinate stays inside the range with probability c; the
  clean gradient counts as one of the N + 1 samples. Pixels sitting exactly at a bound (0 or 1) get no noise at all:
  on MiniGrid renders and Atari frames that is most pixels (see ``docs/saliency.md``); ``sigma_floor`` (our option,
  off by default) gives every coordinate at least that σ.

Noise scale: ``noise_level`` is relative to the input range, σ = level·(x_max − x_min) with ``value_range`` =
(x_min, x_max) = (0, 1) for DIGR images (SmoothGrad's "noise level"), or ``stdev`` gives an absolute σ in [0, 1] pixel
units (Captum's ``stdevs``). Samples are drawn with ``generator`` (or the global torch RNG), frame by frame and sample
by sample in the layout ``[B, N, C, H, W]``; with the Gaussian kernel this is the same stream Captum's NoiseTunnel
draws, so results match it under the same seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch as th
import torch.nn.functional as F

from digr.saliency.base import Cost, SaliencyMethod, check_inputs
from digr.saliency.gradient import VanillaGradient

__all__ = [
    "AGGREGATES",
    "KERNELS",
    "AdaptGrad",
    "Mollified",
    "SmoothGrad",
    "SmoothGradSq",
    "Smoothed",
    "VarGrad",
    "adaptive_sigma",
    "bump_std",
    "sample_kernel",
]

KERNELS = ("gaussian", "box", "laplace", "bump")
AGGREGATES = ("mean", "mean_sq", "var")


def _bump_table(points: int = 8193) -> tuple[np.ndarray, float]:
    """Inverse CDF of the unit bump density on a uniform grid of probabilities (``points`` values), and its std."""
    u = np.linspace(-1.0, 1.0, points)
    with np.errstate(divide="ignore", over="ignore"):
        dens = np.where(np.abs(u) < 1, np.exp(-1.0 / np.clip(1.0 - u**2, 1e-300, None)), 0.0)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(u))])
    cdf /= cdf[-1]
    std = math.sqrt(np.trapezoid(u**2 * dens, u) / np.trapezoid(dens, u))
    keep = np.concatenate([[True], np.diff(cdf) > 0])  # strictly increasing for interpolation
    ppf = np.interp(np.linspace(0.0, 1.0, points), cdf[keep], u[keep])
    return ppf, std


_BUMP_PPF, _BUMP_STD = _bump_table()


def bump_std() -> float:
    """Standard deviation of the unit bump density η(u) ∝ exp(−1/(1 − u²)) on (−1, 1) (≈ 0.3729)."""
    return _BUMP_STD


def sample_kernel(
    kernel: str,
    shape: tuple[int, ...],
    sigma: th.Tensor | float,
    generator: th.Generator | None = None,
    dtype=th.float32,
    device="cpu",
) -> th.Tensor:
    """I.i.d. noise of the given kernel with standard deviation ``sigma`` (scalar or broadcastable tensor), float ``shape``.

    ``gaussian``: N(0, σ²). ``box``: U(−σ√3, σ√3). ``laplace``: Laplace(0, σ/√2). ``bump``: density ∝ exp(−1/(1 − (u/r)²))
    on (−r, r), r = σ / std(unit bump), drawn by interpolating its inverse CDF tabulated at 8193 probabilities (support
    exactly inside [−r, r]).

    :raises ValueError: unknown kernel.
    """
    if kernel == "gaussian":
        z = th.randn(shape, generator=generator, dtype=dtype, device=device)
        return z * sigma
    u = th.rand(shape, generator=generator, dtype=dtype, device=device)
    if kernel == "box":
        return (2.0 * u - 1.0) * math.sqrt(3.0) * sigma
    if kernel == "laplace":
        v = u - 0.5  # inverse CDF of Laplace(0, b): −b·sign(v)·log(1 − 2|v|), b = σ/√2
        return -(sigma / math.sqrt(2.0)) * th.sign(v) * th.log1p(-2.0 * v.abs().clamp(max=0.5 - 1e-7))
    if kernel == "bump":
        ppf = th.as_tensor(_BUMP_PPF, dtype=dtype, device=device).view(1, 1, 1, -1)
        grid = th.stack([2.0 * u.reshape(-1) - 1.0, th.zeros(u.numel(), dtype=dtype, device=device)], -1).view(1, 1, -1, 2)
        # linear interpolation of the tabulated inverse CDF (grid_sample is the fastest batched 1-D lerp on CPU)
        x = F.grid_sample(ppf, grid, mode="bilinear", padding_mode="border", align_corners=True).view(shape)
        return x * (sigma / _BUMP_STD)
    raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")


def adaptive_sigma(
    image: th.Tensor, confidence: float = 0.95, value_range: tuple[float, float] = (0.0, 1.0), sigma_floor: float | None = None
) -> th.Tensor:
    """AdaptGrad's per-coordinate σ_i = d_i / (√2·erfinv(c)) (Zhou et al. 2025, arXiv 2410.07711), float like ``image``.

    d_i = min(x_i − x_min, x_max − x_i) ≥ 0, so P(x_i + ξ_i ∈ [x_min, x_max]) ≥ c for ξ_i ~ N(0, σ_i²). ``sigma_floor``
    (ours, not the paper's) raises every σ_i to at least that value, in [0, 1] pixel units.

    :raises ValueError: ``confidence`` outside (0, 1) or a negative floor.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if sigma_floor is not None and sigma_floor < 0:
        raise ValueError(f"sigma_floor must be >= 0, got {sigma_floor}")
    lo, hi = value_range
    d = th.minimum(image - lo, hi - image).clamp_min(0.0)
    sigma = d / (math.sqrt(2.0) * float(th.special.erfinv(th.tensor(confidence, dtype=th.float64))))
    return sigma if sigma_floor is None else sigma.clamp_min(sigma_floor)


class Smoothed(SaliencyMethod):
    """Monte Carlo smoothing of an inner attribution method (see the module docstring for the methods it covers).

    ``attribute`` → float ``[B, C, H, W]``: the ``aggregate`` (``mean``, ``mean_sq`` or ``var``) of the inner method's
    attributions at x + ξ_k, k = 1..N, plus the clean input as one more sample if ``include_clean``. Cost per map:
    (N + include_clean) × the inner method's cost. Memory is bounded by ``batch_size`` noisy images per inner call.

    :param inner: the attribution method at each sample (default: :class:`VanillaGradient` with ``target``).
    :param kernel: ``gaussian``, ``box``, ``laplace``, ``bump`` or ``adaptive`` (AdaptGrad's per-pixel Gaussian).
    :param n_samples: N ≥ 1.
    :param noise_level: σ / (x_max − x_min) (SmoothGrad's noise level; default 0.15 when ``stdev`` is not given).
    :param stdev: absolute σ in [0, 1] pixel units (overrides ``noise_level``).
    :param confidence: c for ``kernel="adaptive"``.
    :param sigma_floor: minimum σ for ``kernel="adaptive"`` (ours; None = the paper's rule).
    :param value_range: (x_min, x_max) of valid inputs; noisy inputs are NOT clipped to it (as in the papers).
    :param seed: seeds a private generator per call, so maps reproduce; None uses the global torch RNG.
    :raises ValueError: bad kernel, aggregate, N or noise parameters.
    """

    name = "smoothed"

    def __init__(
        self,
        inner: SaliencyMethod | None = None,
        kernel: str = "gaussian",
        n_samples: int = 50,
        aggregate: str = "mean",
        noise_level: float | None = None,
        stdev: float | None = None,
        include_clean: bool = False,
        confidence: float = 0.95,
        sigma_floor: float | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        seed: int | None = 0,
        batch_size: int = 256,
        target: str = "log_prob",
        reduce: str = "abs_max",
    ):
        super().__init__(reduce)
        if kernel not in (*KERNELS, "adaptive"):
            raise ValueError(f"kernel={kernel!r} is not one of {(*KERNELS, 'adaptive')}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r} is not one of {AGGREGATES}")
        if n_samples < 1 or batch_size < 1:
            raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
        if (stdev is not None and stdev < 0) or (noise_level is not None and noise_level < 0):
            raise ValueError(f"noise must be >= 0, got stdev={stdev}, noise_level={noise_level}")
        if kernel == "adaptive":
            adaptive_sigma(th.zeros(1), confidence, value_range, sigma_floor)  # validates
        self.inner = inner if inner is not None else VanillaGradient(target=target, batch_size=batch_size)
        self.kernel, self.n_samples, self.aggregate, self.include_clean = kernel, n_samples, aggregate, include_clean
        self.noise_level = 0.15 if noise_level is None and stdev is None else noise_level
        self.stdev, self.confidence, self.sigma_floor = stdev, confidence, sigma_floor
        self.value_range, self.seed, self.batch_size = value_range, seed, batch_size

    @property
    def sigma(self) -> float | None:
        """The absolute σ in [0, 1] pixel units (None for the adaptive kernel)."""
        if self.kernel == "adaptive":
            return None
        return self.stdev if self.stdev is not None else self.noise_level * (self.value_range[1] - self.value_range[0])

    def attribute(self, policy, image, action, side=None):
        check_inputs(image, action, side)
        gen = None if self.seed is None else th.Generator(device=image.device).manual_seed(self.seed)
        n, (b, c, h, w) = self.n_samples, image.shape
        s1 = th.zeros_like(image)
        s2 = th.zeros_like(image) if self.aggregate != "mean" else None
        frames = max(1, self.batch_size // n)
        for i in range(0, b, frames):
            sl = slice(i, i + frames)
            x = image[sl]
            k = len(x)
            sigma = (
                adaptive_sigma(x, self.confidence, self.value_range, self.sigma_floor)[:, None]
                if self.kernel == "adaptive"
                else self.sigma
            )
            noise = sample_kernel(
                "gaussian" if self.kernel == "adaptive" else self.kernel,
                (k, n, c, h, w),
                sigma,
                gen,
                image.dtype,
                image.device,
            )
            noisy = (x[:, None] + noise).reshape(k * n, c, h, w)
            act = None if action is None else action[sl].repeat_interleave(n)
            sd = None if side is None else side[sl].repeat_interleave(n, dim=0)
            outs = [
                self.inner.attribute(
                    policy,
                    noisy[j : j + self.batch_size],
                    None if act is None else act[j : j + self.batch_size],
                    None if sd is None else sd[j : j + self.batch_size],
                )
                for j in range(0, k * n, self.batch_size)
            ]
            a = th.cat(outs).view(k, n, *outs[0].shape[1:])
            if self.include_clean:
                a = th.cat(
                    [
                        self.inner.attribute(
                            policy, x, None if action is None else action[sl], None if side is None else side[sl]
                        )[:, None],
                        a,
                    ],
                    1,
                )
            if s1.shape[1:] != a.shape[2:]:
                s1 = image.new_zeros((b, *a.shape[2:]))
                s2 = None if s2 is None else image.new_zeros((b, *a.shape[2:]))
            s1[sl] = a.mean(1)
            if s2 is not None:
                s2[sl] = a.pow(2).mean(1)
        if self.aggregate == "mean":
            return s1
        if self.aggregate == "mean_sq":
            return s2
        return (s2 - s1.pow(2)).clamp_min(0.0)  # rounding can make a zero variance slightly negative

    def cost(self, image_shape):
        inner = self.inner.cost(image_shape)
        k = self.n_samples + int(self.include_clean)
        return Cost(k * inner.forward, k * inner.backward)


class SmoothGrad(Smoothed):
    """SmoothGrad (Smilkov et al. 2017, eq. 3): mean gradient over N Gaussian-noised copies. See :class:`Smoothed`."""

    name = "smoothgrad"

    def __init__(self, n_samples: int = 50, noise_level: float | None = None, stdev: float | None = None, **kw):
        super().__init__(kernel="gaussian", n_samples=n_samples, aggregate="mean", noise_level=noise_level, stdev=stdev, **kw)


class SmoothGradSq(Smoothed):
    """SmoothGrad²: mean squared gradient over N Gaussian-noised copies (Smilkov et al. 2017). See :class:`Smoothed`."""

    name = "smoothgrad_sq"

    def __init__(self, n_samples: int = 50, noise_level: float | None = None, stdev: float | None = None, **kw):
        super().__init__(
            kernel="gaussian", n_samples=n_samples, aggregate="mean_sq", noise_level=noise_level, stdev=stdev, **kw
        )


class VarGrad(Smoothed):
    """VarGrad (Adebayo et al. 2018, arXiv 1810.03307): variance of the gradient over N noised copies.
    See :class:`Smoothed`."""

    name = "vargrad"

    def __init__(self, n_samples: int = 50, noise_level: float | None = None, stdev: float | None = None, **kw):
        super().__init__(kernel="gaussian", n_samples=n_samples, aggregate="var", noise_level=noise_level, stdev=stdev, **kw)


class AdaptGrad(Smoothed):
    """AdaptGrad (Zhou et al. 2025, arXiv 2410.07711): mean gradient over the clean input and N samples with
    σ_i = d_i/(√2·erfinv(c)).

    See :class:`Smoothed` and :func:`adaptive_sigma`; c = ``confidence`` (default 0.95, the paper's default).
    """

    name = "adaptgrad"

    def __init__(self, n_samples: int = 50, confidence: float = 0.95, sigma_floor: float | None = None, **kw):
        super().__init__(
            kernel="adaptive",
            n_samples=n_samples,
            aggregate="mean",
            include_clean=True,
            confidence=confidence,
            sigma_floor=sigma_floor,
            **kw,
        )


class Mollified(Smoothed):
    """Gradient mollification with a non-Gaussian kernel (``box``, ``laplace`` or ``bump``; our instantiation of Zhou et
    al. 2024, arXiv 2407.00371): mean gradient over N samples, σ = the kernel's standard deviation. See :class:`Smoothed`."""

    name = "mollified"

    def __init__(
        self, kernel: str = "bump", n_samples: int = 50, noise_level: float | None = None, stdev: float | None = None, **kw
    ):
        super().__init__(kernel=kernel, n_samples=n_samples, aggregate="mean", noise_level=noise_level, stdev=stdev, **kw)
        self.name = f"mollify_{kernel}"
