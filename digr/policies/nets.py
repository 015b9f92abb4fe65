"""Network bodies shared by teachers and students.

:class:`GridCNN` is a small CNN for grid-rendered images whose first layer has kernel = stride = ``cell`` pixels, so it
produces one feature vector per grid cell (MiniGrid renders 8 px per cell). Side inputs are concatenated after the
convolutions. :class:`NatureCNN` is the Atari body of Mnih et al. 2015 ("Human-level control through deep reinforcement
learning", Nature, Methods: three conv layers 32×8×8/4, 64×4×4/2, 64×3×3/1, then 512 units), the same layers as SB3's
``NatureCNN`` that RL-Zoo Atari teachers use.
"""

from __future__ import annotations

import itertools

import torch as th
from torch import nn

from digr.policies.attention import ATTENTIONS, AttentionBody

__all__ = ["ARCHS", "DEFAULT_GRID_CHANNELS", "GridCNN", "NatureCNN", "PolicyNet", "dense_trunk", "grid_trunk", "nature_trunk"]

ARCHS = ("grid", "nature")
DEFAULT_GRID_CHANNELS = (32, 64, 64)


def grid_trunk(in_channels: int, cell: int = 8, channels: tuple[int, ...] = DEFAULT_GRID_CHANNELS) -> list[nn.Module]:
    """:class:`GridCNN`'s conv layers (no flatten): Conv(k = s = cell) → ReLU → [Conv 3×3 pad 1 → ReLU]…"""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], cell, stride=cell), nn.ReLU()]
    for c_in, c_out in itertools.pairwise(channels):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
    return layers


def _conv_relu(in_channels: int, layers: list[tuple[int, int, int, int]]) -> list[nn.Module]:
    """Conv2d → ReLU for each ``(out_channels, kernel, stride, padding)``."""
    out: list[nn.Module] = []
    for c_out, k, stride, pad in layers:
        out += [nn.Conv2d(in_channels, c_out, k, stride=stride, padding=pad), nn.ReLU()]
        in_channels = c_out
    return out


def nature_trunk(in_channels: int) -> list[nn.Module]:
    """:class:`NatureCNN`'s conv layers (no flatten): 32×8×8/4, 64×4×4/2, 64×3×3/1, each followed by ReLU."""
    return _conv_relu(in_channels, [(32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)])


def dense_trunk(in_channels: int) -> list[nn.Module]:
    """The stride-1 trunk of Free-Lunch Saliency's dense variant (Nikulin et al. 2019, ``cnn_dense_fls``): Conv 7×7×32,
    5×5×64, 3×3×64 with SAME padding and ReLU; the output keeps the frame's H×W."""
    return _conv_relu(in_channels, [(32, 7, 1, 3), (64, 5, 1, 2), (64, 3, 1, 1)])


def _check_grid(image_shape: tuple[int, ...], cell: int, channels: tuple[int, ...]) -> None:
    """:raises ValueError: H or W not a multiple of ``cell``, or an empty/non-positive ``channels``."""
    _, h, w = image_shape
    if h % cell or w % cell:
        raise ValueError(f"image {h}×{w} is not a multiple of cell={cell}; set teacher.cell to the tile size")
    if not channels or min(channels) < 1:
        raise ValueError(f"channels={channels!r}: give at least one positive channel count (teacher.channels)")


def _check_nature(image_shape: tuple[int, ...]) -> None:
    """:raises ValueError: an image too small for the Nature-DQN convolutions (under 36×36)."""
    _, h, w = image_shape
    if min(h, w) < 36:
        raise ValueError(f"NatureCNN needs images of at least 36×36 pixels, got {h}×{w}; use arch 'grid' for small renders")


class GridCNN(nn.Module):
    """Conv(C→c₁, k=s=cell) → ReLU → [Conv(cᵢ→cᵢ₊₁, 3×3, pad 1) → ReLU]… → flatten [→ concat side]
    → Linear(→features_dim) → ReLU, with ``channels = (c₁, c₂, …)`` (default ``(32, 64, 64)``).

    :param image_shape: ``(C, H, W)``; H and W must be multiples of ``cell``.
    :param side_dim: length of the side-input vector (0 for none).
    :param channels: output channels of the cell conv and of each following 3×3 conv (at least one entry).
    :raises ValueError: H or W not a multiple of ``cell``, or an empty/non-positive ``channels``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        side_dim: int = 0,
        cell: int = 8,
        features_dim: int = 256,
        channels: tuple[int, ...] = DEFAULT_GRID_CHANNELS,
    ):
        super().__init__()
        c, h, w = image_shape
        _check_grid(image_shape, cell, channels)
        self.side_dim = side_dim
        self.conv = nn.Sequential(*grid_trunk(c, cell, channels), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(channels[-1] * (h // cell) * (w // cell) + side_dim, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
        """:param image: float ``[B, C, H, W]`` in [0, 1]. :param side: float ``[B, side_dim]`` or None.
        :returns: float ``[B, features_dim]``."""
        x = self.conv(image)
        if self.side_dim:
            if side is None:
                raise ValueError(f"this network needs a side input of length {self.side_dim}")
            x = th.cat([x, side.to(x.dtype)], dim=1)
        return self.fc(x)


class NatureCNN(nn.Module):
    """Conv(C→32, 8×8, s4) → ReLU → Conv(32→64, 4×4, s2) → ReLU → Conv(64→64, 3×3, s1) → ReLU → flatten
    [→ concat side] → Linear(→features_dim) → ReLU (Mnih et al. 2015; 84×84 input gives 64×7×7 = 3136 features).

    :param image_shape: ``(C, H, W)`` with H, W ≥ 36.
    :param side_dim: length of the side-input vector (0 for none).
    :raises ValueError: an image too small for the three convolutions.
    """

    def __init__(self, image_shape: tuple[int, int, int], side_dim: int = 0, features_dim: int = 512):
        super().__init__()
        c, h, w = image_shape
        _check_nature(image_shape)
        self.side_dim = side_dim
        self.conv = nn.Sequential(*nature_trunk(c), nn.Flatten())
        with th.no_grad():
            n = self.conv(th.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n + side_dim, features_dim), nn.ReLU())
        self.features_dim = features_dim

    forward = GridCNN.forward


class PolicyNet(nn.Module):
    """A student policy: a :class:`GridCNN` (``arch="grid"``) or :class:`NatureCNN` (``arch="nature"``) body and a
    linear head giving action logits ``[B, A]`` (float32). With ``attention`` other than ``"none"`` the body is an
    :class:`digr.policies.attention.AttentionBody` on that architecture's conv trunk (``region``, ``fls_sparse``) or on
    Free-Lunch Saliency's stride-1 trunk (``fls_dense``), and :meth:`attention_map` returns the last forward pass's map.

    Constructor arguments are stored in ``self.spec`` (JSON-safe) so that a saved state dict can be rebuilt.

    :raises ValueError: unknown ``arch`` or ``attention``, or an image shape the body cannot take.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_actions: int,
        side_dim: int = 0,
        cell: int = 8,
        features_dim: int = 256,
        arch: str = "grid",
        channels: tuple[int, ...] | list[int] = DEFAULT_GRID_CHANNELS,
        attention: str = "none",
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not one of {ARCHS}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r} is not one of {ATTENTIONS}")
        self.spec = {
            "image_shape": list(image_shape),
            "n_actions": n_actions,
            "side_dim": side_dim,
            "cell": cell,
            "features_dim": features_dim,
        }
        if arch != "grid":
            self.spec["arch"] = arch
        if tuple(channels) != DEFAULT_GRID_CHANNELS and arch == "grid":  # only non-defaults, so older specs stay valid
            self.spec["channels"] = list(channels)
        if attention != "none":
            self.spec["attention"] = attention
        shape, c = tuple(image_shape), image_shape[0]
        if attention == "none":
            self.body = (
                GridCNN(shape, side_dim, cell, features_dim, tuple(channels))
                if arch == "grid"
                else NatureCNN(shape, side_dim, features_dim)
            )
        else:
            if attention == "fls_dense":  # stride 1: any frame size
                trunk = dense_trunk(c)
            elif arch == "grid":  # the same shape rules as the trunk's own body
                _check_grid(shape, cell, tuple(channels))
                trunk = grid_trunk(c, cell, tuple(channels))
            else:
                _check_nature(shape)
                trunk = nature_trunk(c)
            self.body = AttentionBody(trunk, shape, attention, side_dim, features_dim)
        self.head = nn.Linear(features_dim, n_actions)

    @property
    def has_attention(self) -> bool:
        """Whether the network has a built-in attention map (:meth:`attention_map`)."""
        return isinstance(self.body, AttentionBody)

    def attention_map(self) -> th.Tensor:
        """The attention maps of the last forward pass, float ``[B, k, h, w]`` (module docstring of
        :mod:`digr.policies.attention`). :raises ValueError: the network has no attention. :raises RuntimeError: no
        forward pass yet."""
        if not self.has_attention:
            raise ValueError("this student has no attention map (attention: none); build it with attention: region/fls_*")
        return self.body.attention()

    def forward(self, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
        """:param image: float ``[B, C, H, W]`` in [0, 1]; :param side: ``[B, K]`` or None. :returns: logits ``[B, A]``."""
        return self.head(self.body(image, side))
