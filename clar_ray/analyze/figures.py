"""A study's figures as PNG bytes: the augmentation-pair heatmap and accuracy against epoch."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from clar_ray.analyze.tables import with_means
from clar_ray.analyze.trials import METRIC, TrialRecord

__all__ = ["curves_png", "heatmap_png", "mean_curve"]


def heatmap_png(matrix: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """The Figure-4 heatmap (percent) with a mean column, a mean row and the overall mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    full = 100 * with_means(matrix)
    n = len(names)
    fig = Figure(figsize=(1.1 * n + 3.0, 0.9 * n + 2.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(full)
    finite = full[np.isfinite(full)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    image = ax.imshow(masked, cmap="viridis", vmin=low, vmax=max(high, low + 1e-6))
    ax.set_facecolor("#d0d0d0")
    for i in range(n + 1):
        for j in range(n + 1):
            missing = not np.isfinite(full[i, j])
            text = "×" if missing and i < n and j < n else ("" if missing else f"{full[i, j]:.1f}")
            shade = 0.0 if missing else (full[i, j] - low) / max(high - low, 1e-6)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if shade > 0.6 else "white",
                    fontweight="bold" if i == n or j == n else "normal")
    ax.axhline(n - 0.5, color="white", linewidth=3)
    ax.axvline(n - 0.5, color="white", linewidth=3)
    ax.set_xticks(range(n + 1), [*names, "mean"], rotation=45, ha="right")
    ax.set_yticks(range(n + 1), [*names, "mean"])
    ax.set_xlabel("second augmentation")
    ax.set_ylabel("first augmentation")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="linear top-1 (%)", shrink=0.8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def curves_png(panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float],
                                                            Sequence[float]]]]]) -> bytes:
    """Linear top-1 (%) against epoch: one panel per ``(title, [(label, epochs, acc)])``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, epochs, accuracy in lines:
            ax.plot(epochs, [100 * a for a in accuracy], marker="o", markersize=3, label=label)
        ax.set_title(title or "linear top-1", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("linear top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def mean_curve(records: Sequence[TrialRecord]) -> tuple[list[float], list[float]]:
    """Epochs (1-based) and the mean probe accuracy over the records that reached them."""
    by_epoch: dict[int, list[float]] = {}
    for record in records:
        for point in record.curve:
            by_epoch.setdefault(int(point["epoch"]), []).append(float(point[METRIC]))
    epochs = sorted(by_epoch)
    return [e + 1 for e in epochs], [float(np.mean(by_epoch[e])) for e in epochs]
