"""Pictures written beside every evaluation's JSON: timelines, ROC and PR curves.

Uses matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from streamdet.evaluation.metrics import (
    label_segments,
    precision_recall_curve,
    roc_curve,
)


def score_timeline(
    path: Path,
    title: str,
    values: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    detections: np.ndarray | None = None,
    threshold: float | None = None,
) -> Path:
    """Series on top, score below; labelled spans shaded, detections marked."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 5), sharex=True)
    x = np.arange(len(values))
    top.plot(x, values, lw=0.7, color="tab:blue")
    bottom.plot(x, scores, lw=0.7, color="tab:gray", label="score")
    if labels is not None:
        for start, end in label_segments(labels):
            for axis in (top, bottom):
                axis.axvspan(start, max(end - 1, start + 0.5), color="tab:red", alpha=0.15)
    if detections is not None and np.any(detections):
        hits = np.flatnonzero(detections)
        top.scatter(hits, np.asarray(values)[hits], s=12, color="tab:red", zorder=3, label="alert")
        top.legend(loc="upper right")
    if threshold is not None:
        bottom.axhline(threshold, color="tab:red", ls="--", lw=0.8, label="threshold")
    bottom.legend(loc="upper right")
    top.set_title(title)
    bottom.set_xlabel("time step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def roc_pr_curves(path: Path, title: str, labels: np.ndarray, scores: np.ndarray) -> Path:
    """ROC curve and precision-recall curve side by side."""
    fpr, tpr = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    left.plot(fpr, tpr, color="tab:blue")
    left.plot([0, 1], [0, 1], ls=":", color="gray")
    left.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"{title}: ROC")
    right.step(recall, precision, where="post", color="tab:green")
    right.set(xlabel="recall", ylabel="precision", title=f"{title}: PR", ylim=(0, 1.02))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion_and_histogram(
    path: Path, title: str, labels: np.ndarray, scores: np.ndarray, threshold: float
) -> Path:
    """Confusion matrix at ``threshold`` and score histograms of normal vs anomalous."""
    y = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) > threshold
    matrix = np.array(
        [
            [np.sum(~y & ~predicted), np.sum(~y & predicted)],
            [np.sum(y & ~predicted), np.sum(y & predicted)],
        ]
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        left.text(j, i, str(count), ha="center", va="center", fontsize=12)
    left.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["normal", "anomaly"],
        yticklabels=["normal", "anomaly"],
        xlabel="predicted",
        ylabel="true",
        title=f"{title}: confusion matrix",
    )
    finite = np.asarray(scores)[np.isfinite(scores)]
    low, high = np.percentile(finite, [0.5, 99.5])
    bins = np.linspace(low, high, 60)
    right.hist(np.clip(scores[~y], low, high), bins=bins, alpha=0.6, label="normal", density=True)
    right.hist(np.clip(scores[y], low, high), bins=bins, alpha=0.6, label="anomalous", density=True)
    right.axvline(threshold, color="tab:red", ls="--", label="threshold")
    right.set(xlabel="score", ylabel="density", title=f"{title}: scores")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def roc_curves(path: Path, title: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Several ROC curves (name -> (labels, scores)) on one plot."""
    fig, axis = plt.subplots(figsize=(6, 5.5))
    for name, (labels, scores) in curves.items():
        fpr, tpr = roc_curve(labels, scores)
        axis.plot(fpr, tpr, label=name)
    axis.plot([0, 1], [0, 1], ls=":", color="gray")
    axis.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def image_rows(path: Path, rows: dict[str, np.ndarray]) -> Path:
    """One row of grey images per name (e.g. clean images and each attack's versions)."""
    columns = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.2 * columns + 1.5, 1.25 * len(rows)), squeeze=False
    )
    for r, (name, images) in enumerate(rows.items()):
        for c in range(columns):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c < len(images):
                axis.imshow(np.asarray(images[c]).squeeze(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def training_curves(
    path: Path, title: str, history: list[dict[str, float]], kept_epoch: int | None = None
) -> Path:
    """Per-epoch losses (train and validation, log scale when positive), the epoch kept by
    validation if any, and the gradient norm when ``fit`` recorded it."""
    epochs = np.arange(1, len(history) + 1)
    has_norm = any("grad_norm" in epoch for epoch in history)
    fig, axes = plt.subplots(1, 2 if has_norm else 1, figsize=(11 if has_norm else 6.5, 4))
    losses = axes[0] if has_norm else axes
    drawn: list[float] = []
    for key, style in (("loss", "-"), ("val_loss", "--"), ("recon", ":"), ("val_recon", "-.")):
        values = [epoch.get(key) for epoch in history]
        if any(v is not None for v in values):
            losses.plot(epochs, [np.nan if v is None else v for v in values], style, label=key)
            drawn += [float(v) for v in values if v is not None]
    if drawn and min(drawn) > 0:
        losses.set_yscale("log")
    if kept_epoch:
        losses.axvline(kept_epoch, color="tab:red", lw=1, label=f"kept epoch {kept_epoch}")
    losses.set(xlabel="epoch", ylabel="loss", title=f"{title}: losses")
    losses.legend()
    if has_norm:
        norm = [epoch.get("grad_norm", np.nan) for epoch in history]
        axes[1].plot(epochs, norm, "-o", color="tab:purple")
        axes[1].set(xlabel="epoch", ylabel="mean gradient norm", title=f"{title}: gradient norm")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def loss_distributions(
    path: Path, title: str, groups: dict[str, np.ndarray], threshold: float
) -> Path:
    """Histograms of scores per group (e.g. training vs test images) with a Gaussian kernel
    density estimate (Scott's bandwidth) over each, and the threshold line."""
    finite = np.concatenate([g[np.isfinite(g)] for g in groups.values()])
    low, high = np.percentile(finite, [0.5, 99.5])
    grid = np.linspace(low, high, 300)
    bins = np.linspace(low, high, 60)
    fig, axis = plt.subplots(figsize=(8, 4.5))
    for name, values in groups.items():
        clipped = np.clip(values[np.isfinite(values)], low, high)
        lines = axis.hist(clipped, bins=bins, alpha=0.45, density=True, label=name)
        bandwidth = max(1.06 * clipped.std() * len(clipped) ** -0.2, 1e-12)
        # Evaluated on a sample of at most 5,000 points: a density, not an exact sum.
        sample = clipped[:: max(1, len(clipped) // 5000)]
        density = np.exp(-0.5 * ((grid[:, None] - sample[None]) / bandwidth) ** 2).mean(axis=1)
        axis.plot(
            grid, density / (bandwidth * np.sqrt(2 * np.pi)), color=lines[2][0].get_fc(), alpha=1.0
        )
    axis.axvline(threshold, color="tab:red", ls="--", label="threshold")
    axis.set(xlabel="score (reconstruction loss)", ylabel="density", title=title)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def grouped_bars(
    path: Path,
    title: str,
    groups: list[str],
    series: dict[str, tuple[list[float], list[float]]],
) -> Path:
    """One bar per (group, series) with its standard deviation as an error bar: e.g. the
    AUROC of each detector on each table, over seeds."""
    positions = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    fig, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.5))
    for k, (name, (means, sds)) in enumerate(series.items()):
        axis.bar(positions + k * width, means, width, yerr=sds, capsize=3, label=name)
    axis.set_xticks(positions + width * (len(series) - 1) / 2, groups, rotation=30, ha="right")
    axis.set(title=title, ylim=(0, 1.05))
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
