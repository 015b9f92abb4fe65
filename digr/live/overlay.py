"""Saliency overlays for live views: the map drawn over the frame the agent saw, with a small head-up display.

The map is a ``[h, w]`` array ≥ 0 (already reduced over channels, e.g. max_c |∂g/∂x| from
:func:`digr.saliency.act_and_explain`). It is normalised per frame by a high percentile (robust to a few extreme
pixels), coloured with a matplotlib colormap and alpha-blended over the frame in proportion to its value, so
non-salient pixels show the frame unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np
from matplotlib import colormaps

__all__ = ["display_frame", "hud", "overlay", "side_by_side"]


def display_frame(image: np.ndarray) -> np.ndarray:
    """The newest frame of an observation image, as RGB for display.

    :param image: uint8 ``[C, H, W]``: stacked RGB frames (C a multiple of 3, newest last) or stacked grey frames.
    :returns: uint8 ``[H, W, 3]``.
    :raises ValueError: ``image`` is not 3-D.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be [C, H, W], got shape {image.shape}")
    if image.shape[0] % 3 == 0:
        return np.ascontiguousarray(image[-3:].transpose(1, 2, 0))
    return np.repeat(image[-1][..., None], 3, axis=2)


def overlay(frame: np.ndarray, saliency: np.ndarray, alpha: float = 0.6, percentile: float = 99.0,
            cmap: str = "inferno", scale: int = 4) -> np.ndarray:  # fmt: skip
    """Blend a saliency map over a frame.

    :param frame: uint8 ``[H, W, 3]``. :param saliency: float ``[h, w]`` ≥ 0 (resized to ``H × W`` if it differs).
    :param alpha: opacity in [0, 1] of the colour at the map's normalised maximum (0 leaves the frame unchanged).
    :param percentile: the map is divided by this percentile of its values, then clipped to [0, 1].
    :param cmap: a matplotlib colormap name. :param scale: integer upscaling of the result (nearest neighbour).
    :returns: uint8 ``[H·scale, W·scale, 3]``.
    :raises ValueError: ``alpha`` outside [0, 1], ``scale`` < 1, or shapes that are not an image and a map.
    """
    if not 0.0 <= alpha <= 1.0 or scale < 1:
        raise ValueError(f"alpha must be in [0, 1] and scale ≥ 1, got alpha={alpha}, scale={scale}")
    if frame.ndim != 3 or frame.shape[2] != 3 or saliency.ndim != 2:
        raise ValueError(f"frame must be [H, W, 3] and saliency [h, w], got {frame.shape} and {saliency.shape}")
    s = np.asarray(saliency, np.float32)
    if s.shape != frame.shape[:2]:
        s = cv2.resize(s, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    top = float(np.percentile(s, percentile)) if s.size else 0.0
    s = np.clip(s / top, 0.0, 1.0) if top > 0 else np.zeros_like(s)
    colour = colormaps[cmap](s)[..., :3] * 255.0
    weight = (alpha * s)[..., None]
    out = (frame.astype(np.float32) * (1.0 - weight) + colour * weight).round().astype(np.uint8)
    if scale > 1:
        out = cv2.resize(out, (out.shape[1] * scale, out.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    return out


def hud(image: np.ndarray, lines: list[str], height: int = 18) -> np.ndarray:
    """``image`` (uint8 ``[H, W, 3]``) with a black band on top holding ``lines`` of text (white, OpenCV's Hershey font).

    :returns: uint8 ``[H + height·len(lines), W, 3]``.
    """
    band = np.zeros((height * len(lines), image.shape[1], 3), np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, height * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """Images (uint8 ``[H_i, W_i, 3]``) in a row, top-aligned, separated by ``gap`` black columns."""
    height = max(im.shape[0] for im in images)
    parts = []
    for k, im in enumerate(images):
        pad = np.zeros((height - im.shape[0], im.shape[1], 3), np.uint8)
        parts.append(np.concatenate([im, pad], axis=0))
        if k < len(images) - 1:
            parts.append(np.zeros((height, gap, 3), np.uint8))
    return np.concatenate(parts, axis=1)
