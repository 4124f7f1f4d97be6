"""Training curves (matplotlib Figure objects; no pyplot global state)."""

from __future__ import annotations

from matplotlib.figure import Figure


def plot_curves(history: list[dict]) -> Figure:
    """Loss, accuracy / macro-F1 and learning rate per epoch from ``metrics.jsonl`` rows."""
    fig = Figure(figsize=(11, 3.4))
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ep = [r["epoch"] for r in history]
    ax_loss.plot(ep, [r["train_loss"] for r in history], "o-", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss")
    ax_loss.legend()
    for key, style in (("train_accuracy", "o-"), ("val_accuracy", "s-"), ("val_macro_f1", "^--")):
        ax_acc.plot(ep, [100 * r.get(key, float("nan")) for r in history], style,
                    label=key.replace("_", " "))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("%")
    ax_acc.set_title("accuracy")
    ax_acc.legend(fontsize=8)
    ax_lr.plot(ep, [r.get("lr", float("nan")) for r in history], "o-")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_title("learning rate (end of epoch)")
    stuck = [r["epoch"] for r in history if r.get("angles_stuck")]
    for e in stuck:
        ax_loss.axvline(e, color="red", alpha=0.3)
    if stuck:
        ax_loss.text(0.02, 0.02, "red: angle monitor says stuck", transform=ax_loss.transAxes,
                     fontsize=7, color="red")
    fig.tight_layout()
    return fig
