"""Draw book/figures/book_map.svg: the parts of the book and what flows between them.

Run ``python book/figures/make_book_map.py`` after changing the book's structure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {
    "funnel": (0.0, 0.62, "Chapter 1\nThe funnel and its data\n(spend → impressions →\nclicks → acquisitions)"),
    "part1": (0.25, 0.62, "Part I\nBayesian channel\nresponse (Stan, PyMC)"),
    "part2": (0.5, 0.62, "Part II\nPosterior simulator\n+ PPO budget allocation"),
    "part3": (0.0, 0.12, "Part III\nOffline RL for messaging\n(CQL, PulseRL)"),
    "part4": (0.25, 0.12, "Part IV\nCoupons under a budget\n(λ-generalized R-BCQ,\nREME)"),
    "part5": (0.5, 0.12, "Part V\nHybrid next best action\n(bandits, bounded OPE)"),
    "lib": (0.78, 0.37, "pulse_lib\nloaders · simulators ·\nalgorithms · estimators"),
}
ARROWS = [("funnel", "part1", "data"), ("part1", "part2", "posterior"), ("part3", "part5", "off-policy\nestimators")]


def main() -> Path:
    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set_axis_off()
    width, height = 0.19, 0.28
    centres = {}
    for name, (x, y, text) in BOXES.items():
        colour = "#e8f0fb" if name != "lib" else "#fdf1dc"
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.01", fc=colour, ec="#34567a"))
        ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=9.5)
        centres[name] = (x, y)
    for start, end, label in ARROWS:
        (x0, y0), (x1, y1) = centres[start], centres[end]
        if x1 - x0 < 0.3:  # neighbours: a straight arrow between the boxes, label above it
            a, b = (x0 + width, y0 + height / 2), (x1, y1 + height / 2)
            ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color="#34567a"))
            ax.text((a[0] + b[0]) / 2, a[1] + 0.04, label, ha="center", fontsize=8, color="#34567a")
        else:  # further apart: an arc under the boxes in between
            a, b = (x0 + width / 2, y0), (x1 + width / 2, y1)
            ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color="#34567a",
                                         connectionstyle="arc3,rad=0.25"))
            ax.text((a[0] + b[0]) / 2, y0 - 0.1, label.replace("\n", " "), ha="center", fontsize=8, color="#34567a")
    lib_x, lib_y = centres["lib"]
    for name in ("part2", "part5"):
        x, y = centres[name]
        ax.add_patch(FancyArrowPatch((lib_x, lib_y + height / 2), (x + width, y + height / 2), arrowstyle="-",
                                     linestyle="--", color="#b07d2b"))
    ax.set(xlim=(-0.01, 1.0), ylim=(-0.08, 0.95))
    out = Path(__file__).with_name("book_map.svg")
    fig.savefig(out, bbox_inches="tight")
    return out


if __name__ == "__main__":
    print(main())
