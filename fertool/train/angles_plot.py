"""Plots of an :class:`~fertool.train.angles.AngleMonitor` history.

Figures are built with :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot and no
global state); save them with :func:`fertool.core.io.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fertool.train.angles import COMPLEMENT_DEG, DUPLICATE_DEG, AngleStats

_STUCK_COLOUR = "tab:red"


def _check(history: Sequence[AngleStats]) -> None:
    if len(history) == 0:
        raise ValueError("history is empty: measure at least one epoch before plotting")


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres ``x`` (half-way between neighbours)."""
    if x.size == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def angle_shares(history: Sequence[AngleStats]) -> np.ndarray:
    """Histogram of each epoch as shares of its pairs: ``(n_bins, n_epochs)``, columns sum to 1
    (or 0 for an epoch without pairs)."""
    _check(history)
    counts = np.stack([np.asarray(s.histogram, dtype=np.float64) for s in history], axis=1)
    totals = counts.sum(axis=0, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_angle_heatmap(history: Sequence[AngleStats]) -> Figure:
    """Heat map of the angle distribution per epoch.

    Parameters
    ----------
    history : sequence of AngleStats
        As kept by :attr:`fertool.train.angles.AngleMonitor.history`.

    Returns
    -------
    matplotlib.figure.Figure
        x: epoch, y: angle in degrees (0 to 180, bins of the stored histograms), colour: share
        of neuron pairs; dashed lines at the duplicate (15) and complementary (165) thresholds.
    """
    shares = angle_shares(history)
    epochs = np.array([s.epoch for s in history], dtype=np.float64)
    y_edges = np.linspace(0.0, 180.0, shares.shape[0] + 1)
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(_edges(epochs), y_edges, shares, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="share of neuron pairs")
    for y in (DUPLICATE_DEG, COMPLEMENT_DEG):
        ax.axhline(y, color="white", linestyle="--", linewidth=0.8)
    ax.set_ylim(0.0, 180.0)
    ax.set_yticks(np.arange(0, 181, 30))
    ax.set_xlabel("epoch")
    ax.set_ylabel("angle between neurons (degrees)")
    last = history[-1]
    ax.set_title(f"Angular separation: {last.n_neurons} neurons, {last.n_dead} dead (last epoch)")
    return fig


def plot_angle_summary(
    history: Sequence[AngleStats], losses: Sequence[float | None] | None = None
) -> Figure:
    """Per-epoch summary of the angular separation, with the epochs judged stuck marked.

    Parameters
    ----------
    history : sequence of AngleStats
        As kept by :attr:`fertool.train.angles.AngleMonitor.history`.
    losses : sequence of float, optional
        Training loss per epoch of ``history`` (same length); by default the losses recorded in
        the history, where there are any.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels over the epochs: minimum and mean angle (degrees); share of pairs below 15
        and above 165 degrees (%); shift from the previous epoch (Wasserstein distance, degrees)
        with the loss on a second axis. Epochs where the monitor judged the layer stuck are
        shaded red in every panel.

    Raises
    ------
    ValueError
        If ``history`` is empty or ``losses`` does not match its length.
    """
    _check(history)
    if losses is None:
        losses = [s.loss for s in history]
    elif len(losses) != len(history):
        raise ValueError(f"losses has {len(losses)} values for {len(history)} epochs of history")
    epochs = np.array([s.epoch for s in history], dtype=np.float64)

    def col(values) -> np.ndarray:
        return np.array([math.nan if v is None else float(v) for v in values])

    fig = Figure(figsize=(7.0, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax_angle, ax_share, ax_shift = fig.subplots(3, 1, sharex=True)

    ax_angle.plot(epochs, col(s.mean_angle for s in history), "o-", label="mean angle")
    ax_angle.plot(epochs, col(s.min_angle for s in history), "s-", label="min angle")
    ax_angle.axhline(DUPLICATE_DEG, color="grey", linestyle=":", linewidth=0.8)
    ax_angle.set_ylim(0.0, 180.0)
    ax_angle.set_ylabel("degrees")

    ax_share.plot(
        epochs, 100 * col(s.share_below_15 for s in history), "o-",
        label=f"< {DUPLICATE_DEG:g} deg (duplicates)",
    )  # fmt: skip
    ax_share.plot(
        epochs, 100 * col(s.share_above_165 for s in history), "s-",
        label=f"> {COMPLEMENT_DEG:g} deg (complementary)",
    )  # fmt: skip
    ax_share.set_ylim(bottom=0.0)
    ax_share.set_ylabel("% of pairs")

    ax_shift.plot(epochs, col(s.shift for s in history), "o-", color="tab:green", label="shift")
    ax_shift.set_ylabel("shift (degrees)")
    ax_shift.set_xlabel("epoch")
    loss_values = col(losses)
    if np.isfinite(loss_values).any():
        ax_loss = ax_shift.twinx()
        ax_loss.plot(epochs, loss_values, "--", color="tab:grey", label="loss")
        ax_loss.set_ylabel("training loss")
        ax_loss.legend(loc="upper right", fontsize="small")

    stuck = [e for e, s in zip(epochs, history) if s.stuck]
    half = (np.min(np.diff(epochs)) / 2) if epochs.size > 1 else 0.5
    for ax in (ax_angle, ax_share, ax_shift):
        for i, e in enumerate(stuck):
            ax.axvspan(
                e - half, e + half, color=_STUCK_COLOUR, alpha=0.15, linewidth=0,
                label="stuck" if i == 0 and ax is ax_angle else None,
            )  # fmt: skip
        ax.legend(loc="upper left", fontsize="small")
    ax_angle.set_title("Angular separation per epoch")
    return fig
