"""Plots as PNG files (matplotlib, Agg backend), each written atomically next to its machine-readable twin."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from pacb_edge.core.fileio import atomic_write_with


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    plt = pyplot()
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_training_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train and val) from the trainer's history records."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * h["train_top1"] for h in history], label="train")
    ax_acc.plot(epochs, [100 * h["val_top1"] for h in history], label="val")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1 (%)")
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalized confusion matrix (rows: true class, columns: predicted)."""
    import numpy as np

    plt = pyplot()
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = max(3.5, 0.35 * n + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), labels=class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels=class_names, fontsize=7)
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        int(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)


def plot_layer_errors(
    names: Sequence[str],
    values: Sequence[float],
    path: str | Path,
    xlabel: str = "error",
    title: str = "",
    marked: Collection[str] = (),
) -> Path:
    """Horizontal bars of one error value per layer, first name at the top; `marked` layers are drawn in orange."""
    plt = pyplot()
    n = len(names)
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.3 * n + 1.0)))
    colors = ["tab:orange" if name in marked else "tab:blue" for name in names]
    ax.barh(range(n), list(values), color=colors)
    ax.set_yticks(range(n), labels=list(names), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title or "per-layer error")
    if marked:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="tab:orange", label="kept in float")], fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_latency_fit(samples: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Predicted against measured latency of a profile's models (fitted and held out), with the y = x line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for held, marker, label in ((False, "o", "fitted on"), (True, "x", "held out")):
        pts = [s for s in samples if s["label"].startswith("held out") == held]
        ax.scatter([s["measured_ms"] for s in pts], [s["predicted_ms"] for s in pts], marker=marker, label=label)
    values = [v for s in samples for v in (s["measured_ms"], s["predicted_ms"])]
    lo, hi = min(values), max(values)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("measured ms (p50)")
    ax.set_ylabel("predicted ms")
    ax.legend()
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
