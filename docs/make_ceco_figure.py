"""Draws docs/ceco.png: the two branches of CeCo and the geometry of a simplex ETF.

Run: python docs/make_ceco_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402


def box(ax, xy, text, color):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - 0.9, y - 0.32), 1.8, 0.64, boxstyle="round,pad=0.04", fc=color, ec="0.3"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def arrow(ax, a, b, style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=10, lw=1.1, ls=ls, color="0.25"))


def main() -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 3.6), gridspec_kw={"width_ratios": [3.4, 1]})
    ax.set_xlim(0, 16.6)
    ax.set_ylim(0, 4)
    ax.axis("off")
    box(ax, (1.1, 2.9), "voxelized points\n(colour, 2 cm)", "#e8eef7")
    box(ax, (3.5, 2.9), "MinkUNet34C\n(sparse U-Net)", "#e8eef7")
    box(ax, (6.0, 2.9), "point features\n$z_i$ (96-d)", "#e8eef7")
    box(ax, (8.5, 2.9), "learned point\nclassifier", "#e8eef7")
    box(ax, (10.9, 2.9), "$L_{PR}$ (CE,\nLovász, …)", "#fdf1d6")
    # The center branch of the default (released-code) head, step by step.
    box(ax, (6.0, 1.0), "frozen 1×1 → 128\n+ BN (batch stats)", "#fde2e2")
    box(ax, (8.4, 1.0), "center_pool\n$\\bar z_k$ = class means", "#fde2e2")
    box(ax, (10.8, 1.0), "frozen Linear → 512\n+ ReLU, L2, dropout", "#fde2e2")
    box(ax, (13.2, 1.0), "fixed ETF $W^*$ × 5\n+ log class prior", "#fde2e2")
    box(ax, (15.6, 1.0), "$\\lambda\\, L_{CR}$\n(CE of centers)", "#fdf1d6")
    for a, b in [((2.0, 2.9), (2.6, 2.9)), ((4.4, 2.9), (5.1, 2.9)), ((6.9, 2.9), (7.6, 2.9)),
                 ((9.4, 2.9), (10.0, 2.9)), ((6.0, 2.55), (6.0, 1.35)), ((6.9, 1.0), (7.5, 1.0)),
                 ((9.3, 1.0), (9.9, 1.0)), ((11.7, 1.0), (12.3, 1.0)), ((14.1, 1.0), (14.7, 1.0))]:
        arrow(ax, a, b)
    ax.text(3.3, 1.0, "training only:\ndropped at inference\n(zero extra cost)", ha="center", va="center",
            fontsize=8.5, color="#b03030")
    ax.set_title("CeCo = point branch + center branch, loss $L_{PR} + \\lambda L_{CR}$ "
                 "(center branch: the released code's head, the default)", fontsize=10)

    # A simplex ETF for K = 3 in the plane: equal norms, pairwise cosine -1/(K-1) = -0.5.
    ang = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    w = np.stack([np.cos(ang), np.sin(ang)], 1)
    collapsed = np.array([[0.0, 1.0], [0.97, -0.25], [0.85, -0.52]])
    colors = ["#3b6fb6", "#e08a1e", "#c0392b"]
    for k in range(3):
        ax2.annotate("", w[k], (0, 0), arrowprops=dict(arrowstyle="-|>", color=colors[k], lw=2))
        ax2.plot(*collapsed[k], "o", color=colors[k], ms=7, mfc="white", mew=2)
    ax2.text(0.55, -0.95, "tail classes\ncollapse", fontsize=8, color="#c0392b")
    ax2.text(-1.15, 1.05, "arrows: simplex ETF $W^*$\ncircles: imbalanced centers", fontsize=8)
    ax2.set_xlim(-1.25, 1.25)
    ax2.set_ylim(-1.1, 1.35)
    ax2.set_aspect("equal")
    ax2.axis("off")
    ax2.set_title("target geometry (K = 3)", fontsize=10)
    fig.tight_layout()
    out = Path(__file__).with_name("ceco.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
