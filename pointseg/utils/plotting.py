"""Headless figures shared by the evaluation report and the analysis tools.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, not ``pyplot``: no global
backend state (nothing calls ``matplotlib.use``), nothing needs a display, and many figures can be
drawn in one process.
"""

from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pointseg.utils.io import atomic_path

# One colour per ScanNet200 split, in every figure of the project.
SPLIT_COLORS = {"head": "tab:blue", "common": "tab:orange", "tail": "tab:red", "overall": "black"}
OTHER_COLOR = "tab:gray"


def new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
