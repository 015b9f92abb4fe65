"""Network bodies shared by teachers and students.

:class:`GridCNN` is a small CNN for grid-rendered images whose first layer has kernel = stride = ``cell`` pixels, so it
produces one feature vector per grid cell (MiniGrid renders 8 px per cell). Side inputs are concatenated after the
convolutions. :class:`NatureCNN` is the Atari body of Mnih et al. 2015 ("Human-level control through deep reinforcement
learning", Nature, Methods: three conv layers 32×8×8/4, 64×4×4/2, 64×3×3/1, then 512 units), the same layers as SB3's
``NatureCNN`` that RL-Zoo Atari teachers use.
"""

from __future__ import annotations

import torch as th
from torch import nn

__all__ = ["ARCHS", "GridCNN", "NatureCNN", "PolicyNet"]

ARCHS = ("grid", "nature")


class GridCNN(nn.Module):
    """Conv(C→32, k=s=cell) → ReLU → Conv(32→64, 3×3, pad 1) → ReLU → Conv(64→64, 3×3, pad 1) → ReLU → flatten
    [→ concat side] → Linear(→features_dim) → ReLU.

    :param image_shape: ``(C, H, W)``; H and W must be multiples of ``cell``.
    :param side_dim: length of the side-input vector (0 for none).
    :raises ValueError: H or W not a multiple of ``cell``.
    """

    def __init__(self, image_shape: tuple[int, int, int], side_dim: int = 0, cell: int = 8, features_dim: int = 256):
        super().__init__()
        c, h, w = image_shape
        if h % cell or w % cell:
            raise ValueError(f"image {h}×{w} is not a multiple of cell={cell}; set teacher.cell to the tile size")
        self.side_dim = side_dim
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, cell, stride=cell), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * (h // cell) * (w // cell) + side_dim, features_dim), nn.ReLU())
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
        if min(h, w) < 36:
            raise ValueError(f"NatureCNN needs images of at least 36×36 pixels, got {h}×{w}; use arch 'grid' for small renders")
        self.side_dim = side_dim
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n = self.conv(th.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n + side_dim, features_dim), nn.ReLU())
        self.features_dim = features_dim

    forward = GridCNN.forward


class PolicyNet(nn.Module):
    """A student policy: a :class:`GridCNN` (``arch="grid"``) or :class:`NatureCNN` (``arch="nature"``) body and a
    linear head giving action logits ``[B, A]`` (float32).

    Constructor arguments are stored in ``self.spec`` (JSON-safe) so that a saved state dict can be rebuilt.

    :raises ValueError: unknown ``arch`` or an image shape the body cannot take.
    """

    def __init__(self, image_shape: tuple[int, int, int], n_actions: int, side_dim: int = 0, cell: int = 8, features_dim: int = 256,
                 arch: str = "grid"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not one of {ARCHS}")
        self.spec = {"image_shape": list(image_shape), "n_actions": n_actions, "side_dim": side_dim, "cell": cell, "features_dim": features_dim}
        if arch != "grid":
            self.spec["arch"] = arch
        self.body = (GridCNN(tuple(image_shape), side_dim, cell, features_dim) if arch == "grid"
                     else NatureCNN(tuple(image_shape), side_dim, features_dim))
        self.head = nn.Linear(features_dim, n_actions)

    def forward(self, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
        """:param image: float ``[B, C, H, W]`` in [0, 1]; :param side: ``[B, K]`` or None. :returns: logits ``[B, A]``."""
        return self.head(self.body(image, side))
