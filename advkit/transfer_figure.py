"""The heatmap of a transfer matrix: victim accuracy per source and victim, one panel per budget."""

from __future__ import annotations

from matplotlib.figure import Figure

from .transfer import TransferRecord

# Panels per row of the figure.
COLUMNS = 3


def eps_label(eps: float) -> str:
    """`eps=0.0314 (8/255)`: the budget in pixel units and in 8-bit levels."""
    levels = eps * 255
    if abs(levels - round(levels)) < 1e-6:
        return f"eps={eps:.4g} ({round(levels)}/255)"
    return f"eps={eps:.4g} ({levels:.3g}/255)"


def transfer_figure(record: TransferRecord) -> Figure:
    """Victim accuracy on the 8-bit images: rows are sources, columns victims.

    Each cell holds the accuracy; the clean accuracy of each victim is under its name.
    """
    n = len(record.settings.epsilons)
    columns = min(n, COLUMNS)
    rows = (n + columns - 1) // columns
    width = 1.2 + 0.9 * len(record.victims)
    height = 1.4 + 0.5 * len(record.sources)
    fig = Figure(figsize=(width * columns + 1.5, height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    clean = [
        f"{v}\n(clean {a:.2f})" for v, a in zip(record.victims, record.clean_accuracy, strict=True)
    ]
    image = None
    for ax, eps, grid in zip(axes, record.settings.epsilons, record.accuracy, strict=False):
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                color = "black" if value > 0.6 else "white"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=9)
        ax.set_xticks(range(len(record.victims)), clean, fontsize=8)
        ax.set_yticks(range(len(record.sources)), record.sources, fontsize=8)
        ax.set_xlabel("victim")
        ax.set_ylabel("source")
        ax.set_title(eps_label(eps), fontsize=10)
    for ax in axes[n:]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:n].tolist(), label="victim accuracy", shrink=0.8)
    attack = record.settings.attack or "images from files"
    fig.suptitle(f"Transfer: {attack}, {record.n_samples} {record.dataset} samples (8-bit)")
    return fig
