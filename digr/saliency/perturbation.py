"""Perturbation saliency of Greydanus, Koul, Dodge, Fern 2018, "Visualizing and Understanding Atari Agents"
(ICML 2018, arXiv 1711.00138, Sec. 4, eqs. 1–2), computed batched.

For each centre (i, j) on a grid of stride d, the perturbed image is

    Φ(I, i, j) = I ⊙ (1 − M_ij) + G(I; σ_blur) ⊙ M_ij,

with M_ij a Gaussian bump of std σ_mask and peak 1 centred at (i, j), and G a Gaussian blur. The score is
S(i, j) = ½ ‖L(I) − L(Φ)‖², L = the policy's output (the paper's "logistic units"): what the policy returns, i.e. raw
logits for DIGR's students, and log-probabilities log π(·|s) for SB3 teachers (:class:`digr.policies.SB3Teacher`
returns the normalised logits of torch's ``Categorical``), so for those the score is ½‖Δ log π‖². The (H/d)×(W/d)
grid of scores is upsampled bilinearly to H×W. Differences from the reference code (``greydanus/visualize_atari``):
masks are exact Gaussians rather than a blurred 5-pixel plus, centres sit at the middle of each d×d block ((d−1)/2
offset) so the grid covers the image symmetrically, and the blur is a separable Gaussian truncated at 4σ with
PyTorch's ``reflect`` padding, which is scipy's ``mode="mirror"`` (the edge pixel is not repeated; the reference
code's ``scipy.ndimage.gaussian_filter`` defaults to ``mode="reflect"``, which repeats it).

Cost: (H/d)·(W/d) + 1 forward passes per frame, no backward pass; all masks of many frames go through the network
in equal passes of at most ``internal_batch_size`` images (on 2 CPU cores ~256 is fastest: larger passes
fall out of cache and ran at half the rate, measured on MiniGrid and Breakout).
"""

from __future__ import annotations

import math

import torch as th
import torch.nn.functional as F

from digr.contracts import Policy
from digr.saliency.base import Cost, SaliencyMethod, check_inputs

__all__ = ["PerturbationSaliency", "gaussian_blur", "gaussian_masks", "perturbation_saliency"]


def _gaussian_kernel1d(sigma: float, dtype: th.dtype, device) -> th.Tensor:
    radius = max(1, int(4.0 * sigma + 0.5))  # scipy's truncate=4.0
    x = th.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = th.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(image: th.Tensor, sigma: float) -> th.Tensor:
    """Separable Gaussian blur (std ``sigma`` pixels, truncated at 4σ), per channel, float ``[B, C, H, W]`` → same shape.

    Padding: PyTorch's ``reflect`` = scipy's ``mode="mirror"`` (edge pixel not repeated); images smaller than the
    kernel radius fall back to ``replicate`` (scipy's ``nearest``).

    :raises ValueError: ``sigma`` ≤ 0.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    b, c, h, w = image.shape
    k = _gaussian_kernel1d(sigma, image.dtype, image.device)
    r = k.numel() // 2
    x = image.reshape(b * c, 1, h, w)
    # reflect padding needs pad < size; fall back to replicate for tiny images
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return x.reshape(b, c, h, w)


def gaussian_masks(height: int, width: int, sigma: float, stride: int, dtype=th.float32, device="cpu") -> th.Tensor:
    """Gaussian bumps of std ``sigma`` pixels, scaled to peak 1 on the pixel grid, one per grid centre, float
    ``[gh·gw, H, W]`` in [0, 1].

    Centres: ``(k·stride + (stride−1)/2)`` for ``k = 0 .. ceil(H/stride)−1`` (rows), likewise for columns, so that
    the bilinear upsampling in :func:`perturbation_saliency` maps each score back onto its own block.
    """
    gh, gw = math.ceil(height / stride), math.ceil(width / stride)
    cy = th.arange(gh, dtype=dtype, device=device) * stride + (stride - 1) / 2
    cx = th.arange(gw, dtype=dtype, device=device) * stride + (stride - 1) / 2
    ys = th.arange(height, dtype=dtype, device=device)
    xs = th.arange(width, dtype=dtype, device=device)
    gy = th.exp(-0.5 * ((ys[None, :] - cy[:, None]) / sigma) ** 2)  # [gh, H]
    gx = th.exp(-0.5 * ((xs[None, :] - cx[:, None]) / sigma) ** 2)  # [gw, W]
    gy = gy / gy.amax(dim=1, keepdim=True)  # peak exactly 1 on the pixel grid (Greydanus divide by the max)
    gx = gx / gx.amax(dim=1, keepdim=True)
    return (gy[:, None, :, None] * gx[None, :, None, :]).reshape(gh * gw, height, width)


def perturbation_saliency(
    policy: Policy,
    image: th.Tensor,
    action: th.Tensor | None = None,
    side: th.Tensor | None = None,
    *,
    sigma_mask: float = 5.0,
    sigma_blur: float = 3.0,
    stride: int = 5,
    internal_batch_size: int = 256,
    return_grid: bool = False,
) -> th.Tensor:
    """Greydanus perturbation saliency, float ``[B, H, W]`` ≥ 0 (units: ½·squared change of the policy's output, i.e.
    of the logits, or of log π for SB3 teachers; see the module docstring).

    :param policy: a :class:`digr.contracts.Policy`, ``(image [N,C,H,W] in [0,1], side [N,K] | None) -> [N, A]``.
    :param image: float ``[B, C, H, W]`` in [0, 1].
    :param action: unused (the score covers all logits, as in the paper); accepted for the common interface.
    :param side: float ``[B, K]`` or None; repeated unperturbed for every mask.
    :param sigma_mask: std of the mask bump, pixels (reference 5 on 80–84 px frames).
    :param sigma_blur: std of the blur that replaces the masked region, pixels (reference 3).
    :param stride: grid stride d, pixels (reference 5); cost is ceil(H/d)·ceil(W/d) + 1 forward passes per frame.
    :param internal_batch_size: at most this many perturbed images per forward pass (bounds memory).
    :param return_grid: also return the raw grid scores ``[B, gh, gw]``.
    :raises ValueError: ``image`` is not 4-D, or a σ/stride is not positive.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1 pixel, got {stride}")
    if not sigma_mask > 0:
        raise ValueError(f"sigma_mask must be > 0 pixels, got {sigma_mask}")
    b, c, h, w = image.shape
    masks = gaussian_masks(h, w, sigma_mask, stride, image.dtype, image.device)  # [M, H, W]
    m = masks.shape[0]
    gh, gw = math.ceil(h / stride), math.ceil(w / stride)
    frames_per_chunk = max(1, internal_batch_size // m)
    scores = []
    with th.inference_mode():
        blurred = gaussian_blur(image, sigma_blur)
        base = policy(image, side)  # [B, A]
        mk = masks[None, :, None]  # [1, M, 1, H, W]
        for start in range(0, b, frames_per_chunk):
            sl = slice(start, start + frames_per_chunk)
            img, blr = image[sl, None], blurred[sl, None]  # [n, 1, C, H, W]
            n = img.shape[0]
            pert = (img + (blr - img) * mk).reshape(n * m, c, h, w)
            s = side[sl].repeat_interleave(m, dim=0) if side is not None else None
            # equal passes of at most internal_batch_size images: 289 Atari masks at 256 become 145 + 144, not 256 + 33
            step = math.ceil(n * m / math.ceil(n * m / internal_batch_size))
            out = []
            for j in range(0, n * m, step):
                out.append(policy(pert[j : j + step], None if s is None else s[j : j + step]))
            logits = th.cat(out).view(n, m, -1)
            scores.append(0.5 * (logits - base[sl, None]).pow(2).sum(-1))
        grid = th.cat(scores).view(b, 1, gh, gw)
        sal = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).clamp_min_(0).squeeze(1)
    sal = sal.clone()
    if return_grid:
        return sal, grid.squeeze(1).clone()
    return sal


class PerturbationSaliency(SaliencyMethod):
    """Greydanus et al. 2018 perturbation saliency as a :class:`~digr.saliency.base.SaliencyMethod`.

    ``attribute`` → float ``[B, 1, H, W]`` ≥ 0 (½·squared change of the policy's output; the action is ignored, the
    score covers every action's logit). Cost: ceil(H/d)·ceil(W/d) + 1 forward passes, no backward pass. Parameters as
    :func:`perturbation_saliency`.
    """

    name = "perturbation"

    def __init__(
        self,
        sigma_mask: float = 5.0,
        sigma_blur: float = 3.0,
        stride: int = 5,
        internal_batch_size: int = 256,
        reduce: str = "abs_max",
    ):
        super().__init__(reduce)
        self.sigma_mask, self.sigma_blur, self.stride, self.internal_batch_size = (
            sigma_mask,
            sigma_blur,
            stride,
            internal_batch_size,
        )

    @classmethod
    def from_params(cls, p) -> PerturbationSaliency:
        """The method with the parameters of ``p``, any object with ``sigma_mask``, ``sigma_blur``, ``stride`` (pixels)
        and ``internal_batch_size`` (e.g. a run's ``perturbation`` config section)."""
        return cls(p.sigma_mask, p.sigma_blur, p.stride, p.internal_batch_size)

    def attribute(self, policy, image, action=None, side=None):
        check_inputs(image, action, side, need_action=False)
        return perturbation_saliency(
            policy,
            image,
            action,
            side,
            sigma_mask=self.sigma_mask,
            sigma_blur=self.sigma_blur,
            stride=self.stride,
            internal_batch_size=self.internal_batch_size,
        ).unsqueeze(1)

    def cost(self, image_shape):
        _, h, w = image_shape
        return Cost(math.ceil(h / self.stride) * math.ceil(w / self.stride) + 1, 0)
