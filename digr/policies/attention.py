"""Attention students: the saliency map is built into the network and read off the forward pass.

Two families, both placed on a convolutional trunk's feature map ``x`` float ``[B, C, h, w]``:

* :class:`RegionAttention`, the region-sensitive module of Yang, Ji & Zhao 2018, "Learn to Interpret Atari Agents"
  (arXiv 1812.11276), as reimplemented in rl-attention (Nikulin, Kosch, Steuer, Cunningham 2019, "Regularization and
  visualization of attention in reinforcement learning agents", ``models.py: attention_cnn``): L2-normalise ``x`` over
  channels → 1×1 conv (512) → ELU → 1×1 conv (2) → a spatial softmax per channel → the two maps summed and multiplied
  into ``x``. Its maps sum to 1 over positions, so their entropy (:func:`attention_entropy`) is defined; rl-attention
  adds ``c · H(A)`` to the loss (c ≈ 0.001–0.005; ≥ 0.01 stopped learning there), which sharpens the maps.
* :class:`FreeLunchAttention`, Free-Lunch Saliency (Nikulin, Ianina, Aliev, Nikolenko 2019, arXiv 1908.02511,
  ``models_baselines.py: fls_module``): ``h = softplus(conv3×3→1(ReLU(conv3×3→256(x))))``, one non-negative,
  un-normalised channel multiplied into ``x`` (the *sparse* variant on the 7×7 Nature-CNN features), or, in the *dense*
  variant, on the features of three stride-1 convolutions of the whole frame (7×7×32, 5×5×64, 3×3×64, SAME padding)
  followed by attention-weighted sum pooling ``Σ_hw h·x`` (``einsum('bchw,bhw->bc')``): a map at the frame's
  resolution.

:class:`AttentionBody` puts one of them on a trunk and keeps the last forward pass's map (:meth:`AttentionBody.attention`,
float ``[B, k, h, w]``), so the map costs nothing beyond the forward pass that chose the action.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from torch import nn

__all__ = ["ATTENTIONS", "AttentionBody", "FreeLunchAttention", "RegionAttention", "attention_entropy"]

ATTENTIONS = ("none", "region", "fls_sparse", "fls_dense")
"""Student attention kinds: none (plain CNN), region (Yang et al. 2018 / rl-attention), fls_sparse and fls_dense
(Free-Lunch Saliency, Nikulin et al. 2019)."""

ENTROPY_EPS = 1e-8  # ε inside log(p + ε) (rl-attention's ``attention_entropy``)


class RegionAttention(nn.Module):
    """Region-sensitive module (Yang et al. 2018; rl-attention). ``forward(x [B, C, h, w]) → (x ⊙ Σ_k A_k, A)`` with
    ``A`` float ``[B, 2, h, w]``, each channel a softmax over the h·w positions (sums to 1).

    :param channels: C, the trunk's feature channels. :param hidden: width of the 1×1 conv (512 in the paper).
    :param maps: number of attention maps k (2 in the paper).
    """

    def __init__(self, channels: int, hidden: int = 512, maps: int = 2):
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ELU(), nn.Conv2d(hidden, maps, 1))

    def forward(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        b, _, h, w = x.shape
        logits = self.score(F.normalize(x, p=2.0, dim=1))  # L2 over channels
        attn = logits.flatten(2).softmax(dim=2).view(b, -1, h, w)
        return x * attn.sum(dim=1, keepdim=True), attn


class FreeLunchAttention(nn.Module):
    """Free-Lunch Saliency module (Nikulin et al. 2019). ``forward(x [B, C, h, w]) → (x ⊙ h, h)`` with ``h`` float
    ``[B, 1, h, w]`` ≥ 0 (softplus, not normalised).

    :param channels: C. :param hidden: channels of the first 3×3 conv (256 in the paper).
    """

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 3, padding=1), nn.Softplus()
        )

    def forward(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        h = self.score(x)
        return x * h, h


def attention_entropy(attn: th.Tensor) -> th.Tensor:
    """H(A) = −Σ_{h,w} p log(p + ε) per map, summed over the k maps, averaged over the batch (rl-attention's
    ``attention_entropy``, with its minus sign: minimising ``c · H`` sharpens the maps). Scalar float ≥ 0 (nats).

    :param attn: float ``[B, k, h, w]``, each map a distribution over positions (sums to 1).
    :raises ValueError: ``attn`` is not 4-D.
    """
    if attn.ndim != 4:
        raise ValueError(f"attention maps must be [B, k, h, w], got shape {tuple(attn.shape)}")
    return -(attn * (attn + ENTROPY_EPS).log()).sum(dim=(1, 2, 3)).mean()


class AttentionBody(nn.Module):
    """A conv trunk, an attention module and a fully connected layer: trunk → attention → flatten (sparse, region) or
    attention-weighted sum pooling (fls_dense) [→ concat side] → Linear(→features_dim) → ReLU.

    After every forward pass :meth:`attention` returns that pass's maps, float ``[B, k, h, w]`` (k = 2 for region, 1
    for FLS; h×w = the trunk's grid, or the frame for fls_dense), with gradients attached.

    :param trunk: conv layers (no flatten), applied to the image. :param image_shape: ``(C, H, W)``.
    :param kind: ``region``, ``fls_sparse`` or ``fls_dense``. :param side_dim: side-input length (0 for none).
    :raises ValueError: an unknown ``kind``.
    """

    def __init__(self, trunk: list[nn.Module], image_shape: tuple[int, int, int], kind: str, side_dim: int, features_dim: int):
        super().__init__()
        if kind not in ATTENTIONS[1:]:
            raise ValueError(f"attention={kind!r} is not one of {ATTENTIONS[1:]}")
        self.kind, self.side_dim, self.features_dim = kind, side_dim, features_dim
        self.trunk = nn.Sequential(*trunk)
        with th.no_grad():
            c, h, w = self.trunk(th.zeros(1, *image_shape)).shape[1:]
        self.attend = RegionAttention(c) if kind == "region" else FreeLunchAttention(c)
        n = c if kind == "fls_dense" else c * h * w
        self.fc = nn.Sequential(nn.Linear(n + side_dim, features_dim), nn.ReLU())
        self._attention: th.Tensor | None = None

    def attention(self) -> th.Tensor:
        """The maps of the last forward pass, float ``[B, k, h, w]``. :raises RuntimeError: no forward pass yet."""
        if self._attention is None:
            raise RuntimeError("no attention map yet: run the policy's forward pass first")
        return self._attention

    def forward(self, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
        """:param image: float ``[B, C, H, W]`` in [0, 1]. :param side: float ``[B, side_dim]`` or None.
        :returns: float ``[B, features_dim]``. :raises ValueError: a side input is needed and missing."""
        weighted, self._attention = self.attend(self.trunk(image))
        x = weighted.sum(dim=(2, 3)) if self.kind == "fls_dense" else weighted.flatten(1)
        if self.side_dim:
            if side is None:
                raise ValueError(f"this network needs a side input of length {self.side_dim}")
            x = th.cat([x, side.to(x.dtype)], dim=1)
        return self.fc(x)
