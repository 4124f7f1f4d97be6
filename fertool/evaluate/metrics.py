"""Classification metrics: accuracy, macro-F1, per-class recall, confusion matrices and their plot.

Pure computation on label arrays; the plot is returned as a matplotlib ``Figure`` drawn with the
Agg canvas, without touching pyplot's global state (no window, nothing left open).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EvalResult:
    """Scores of one set of predictions.

    Attributes
    ----------
    accuracy : float
        Fraction of correct predictions.
    macro_f1 : float
        Unweighted mean of the per-class F1 over the classes present in ``y_true`` or ``y_pred``.
    per_class_recall : dict
        ``{str(label): recall}``, NaN for a class absent from ``y_true``.
    confusion : (K, K) ndarray
        int64 counts; row = true class, column = predicted class, in ``labels`` order.
    n : int
        Number of predictions.
    labels : tuple
        The classes, in the order of the confusion matrix.
    """

    accuracy: float
    macro_f1: float
    per_class_recall: dict
    confusion: np.ndarray = field(repr=False)
    n: int
    labels: tuple = ()

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None, arrays become lists)."""
        return {
            "n": int(self.n),
            "accuracy": _json_float(self.accuracy),
            "macro_f1": _json_float(self.macro_f1),
            "per_class_recall": {k: _json_float(v) for k, v in self.per_class_recall.items()},
            "labels": [_json_label(x) for x in self.labels],
            "confusion": np.asarray(self.confusion).astype(int).tolist(),
        }


def _json_float(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _json_label(x):
    return x.item() if isinstance(x, np.generic) else x


def _as_labels(y, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of labels, got shape {arr.shape}")
    return arr


def _ids_to_names(y: np.ndarray, labels: tuple, name: str) -> np.ndarray:
    """Integer class ids (fertool's ``Manifest.y`` convention) -> names; other arrays unchanged."""
    if not np.issubdtype(y.dtype, np.integer):
        return y
    if y.size and (y.min() < 0 or y.max() >= len(labels)):
        raise ValueError(
            f"{name} holds class ids outside 0..{len(labels) - 1}, the indices of labels="
            f"{list(labels)}"
        )
    return np.asarray(labels, dtype=object)[y]


def evaluate(y_true, y_pred, labels: Sequence) -> EvalResult:
    """Accuracy, macro-F1, per-class recall and the confusion matrix of predictions.

    Parameters
    ----------
    y_true, y_pred : (n,) array_like
        True and predicted labels: values taken from ``labels``, or, when ``labels`` are names,
        integer indices into ``labels`` (as :attr:`fertool.data.dataset.Manifest.y` holds them).
    labels : sequence
        All classes, in the order wanted for the confusion matrix (for example
        :data:`fertool.LABELS`, or integer class ids).

    Returns
    -------
    EvalResult

    Raises
    ------
    ValueError
        If the inputs are empty or of different lengths, if ``labels`` has duplicates, or if a
        label in ``y_true`` / ``y_pred`` is not in ``labels`` (or, for integer ids, not an index
        of it).
    """
    from sklearn.metrics import confusion_matrix, f1_score

    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if len(yt) != len(yp):
        raise ValueError(f"y_true has {len(yt)} labels but y_pred has {len(yp)}; they must match")
    if len(yt) == 0:
        raise ValueError("y_true and y_pred are empty; need at least one prediction")
    labels = tuple(_json_label(x) for x in labels)
    if len(labels) == 0 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of distinct classes, got {list(labels)}")
    if all(isinstance(x, str) for x in labels):
        yt, yp = _ids_to_names(yt, labels, "y_true"), _ids_to_names(yp, labels, "y_pred")
    known = set(labels)
    for name, arr in (("y_true", yt), ("y_pred", yp)):
        unknown = sorted({_json_label(v) for v in np.unique(arr)} - known, key=str)
        if unknown:
            raise ValueError(
                f"{name} holds labels not in labels={list(labels)}: {unknown[:5]}; pass every "
                "class in labels"
            )
    cm = confusion_matrix(yt, yp, labels=list(labels)).astype(np.int64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(cm) / support, np.nan)
    present = [lab for lab, s, p in zip(labels, support, cm.sum(axis=0)) if s or p]
    macro_f1 = f1_score(yt, yp, labels=present, average="macro", zero_division=0)
    return EvalResult(
        accuracy=float(np.trace(cm) / cm.sum()),
        macro_f1=float(macro_f1),
        per_class_recall={str(lab): float(r) for lab, r in zip(labels, recall)},
        confusion=cm,
        n=len(yt),
        labels=labels,
    )


def summarise(results: Sequence[EvalResult]) -> dict:
    """Mean and spread of several evaluations (seeds or folds) over the same classes.

    Returns
    -------
    summary : dict
        ``n_runs``; ``accuracy_mean``, ``accuracy_std``, ``macro_f1_mean``, ``macro_f1_std``
        (sample standard deviation, ddof=1; 0.0 for a single run); ``per_class_recall_mean``
        (mean over the runs where the class was present, None where it never was);
        ``labels``; ``confusion_sum`` (the summed confusion matrix, as lists); ``n_total``.

    Raises
    ------
    ValueError
        If ``results`` is empty or the results have different labels.
    """
    results = list(results)
    if not results:
        raise ValueError("results is empty; pass at least one EvalResult")
    labels = results[0].labels
    for r in results[1:]:
        if tuple(r.labels) != tuple(labels):
            raise ValueError(
                f"results have different labels ({list(labels)} vs {list(r.labels)}); "
                "evaluate every run with the same labels"
            )

    def mean_std(values):
        v = np.asarray(values, dtype=float)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    acc_mean, acc_std = mean_std([r.accuracy for r in results])
    f1_mean, f1_std = mean_std([r.macro_f1 for r in results])
    recall = {}
    for key in results[0].per_class_recall:
        vals = np.array([r.per_class_recall[key] for r in results], dtype=float)
        recall[key] = None if np.all(np.isnan(vals)) else float(np.nanmean(vals))
    return {
        "n_runs": len(results),
        "accuracy_mean": acc_mean,
        "accuracy_std": acc_std,
        "macro_f1_mean": f1_mean,
        "macro_f1_std": f1_std,
        "per_class_recall_mean": recall,
        "labels": [_json_label(x) for x in labels],
        "confusion_sum": np.sum([r.confusion for r in results], axis=0).astype(int).tolist(),
        "n_total": int(sum(r.n for r in results)),
    }


def plot_confusion(cm, labels: Sequence, title: str | None = None):
    """Confusion matrix figure: cells coloured by row-normalised rate, annotated with counts.

    Parameters
    ----------
    cm : (K, K) array_like
        Counts; row = true class, column = predicted class.
    labels : sequence of str
        K class names, in the matrix order.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Drawn on an Agg canvas and not registered with pyplot; save it with
        :func:`fertool.core.io.save_figure` (or ``fig.savefig``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {cm.shape}")
    if len(labels) != cm.shape[0]:
        raise ValueError(f"labels has {len(labels)} names but cm is {cm.shape[0]}x{cm.shape[1]}")
    if np.any(cm < 0):
        raise ValueError("cm must hold non-negative counts")
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)

    k = cm.shape[0]
    side = 1.2 + 0.65 * k
    fig = Figure(figsize=(side + 1.2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), [str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            count = float(cm[i, j])
            text = str(int(count)) if count.is_integer() else f"{count:.3g}"
            colour = "white" if rate[i, j] > 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


__all__ = ["EvalResult", "evaluate", "plot_confusion", "summarise"]
