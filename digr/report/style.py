"""The one plotting style of DIGR's figures, applied without global side effects.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure` on an Agg canvas): no ``pyplot``,
no change of matplotlib's global backend or rcParams, so importing :mod:`digr.report` leaves a user's matplotlib
session as it was. :func:`figure` applies :data:`STYLE` while the figure is built and saved (``rc_context``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from digr.checkpoint import write_bytes_atomic

__all__ = ["AGENT_COLORS", "STYLE", "figure", "saliency_cmap"]

#: rcParams of every DIGR figure.
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
}

#: Colour of each agent by name, so an agent looks the same in every figure (others cycle through the default colours).
AGENT_COLORS = {"teacher": "0.2", "plain": "C0", "igr_all": "C1", "digr": "C3"}


def saliency_cmap() -> str:
    """Colormap of saliency overlays."""
    return "inferno"


@contextmanager
def figure(path: str | Path, width: float, height: float, nrows: int = 1, ncols: int = 1, **subplots) -> Iterator[tuple]:
    """Build one figure in DIGR's style and save it to ``path`` (format from the suffix) on leaving the block.

    ``with figure(path, 6, 3, 1, 2) as (fig, axes): ...`` — ``axes`` is a 2-D array ``[nrows, ncols]`` of Axes.

    :param width, height: inches. :param subplots: more keyword arguments for ``Figure.subplots``.
    """
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
        yield fig, axes
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png")
        write_bytes_atomic(path, buf.getvalue())
