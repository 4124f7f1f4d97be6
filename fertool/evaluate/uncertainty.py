"""How sure a figure is: group bootstrap intervals and paired differences over test folds.

The unit of resampling is the group (an SFEW movie, a subject), never the image: frames of one
movie are near-duplicates, so resampling images would pretend there is far more independent
evidence than there is. One bootstrap replicate draws ``G`` groups with replacement out of the
``G`` groups that appear in the test parts; a group drawn ``m`` times counts ``m`` times in every
test part that holds it (with several seeds a movie is in one test part per seed). The statistic
of a replicate is computed exactly like the point estimate: per test part, then the mean over the
parts. The interval is the percentile interval of the replicates.

Everything is vectorised: the replicates are a ``(B, G)`` matrix of draw counts, each test part
is summarised as per-group confusion matrices ``(G, K, K)``, and one matrix product gives every
replicate's confusion matrices. The draws come from ``numpy.random.default_rng(seed)``; the same
seed gives the same intervals, and two methods evaluated on the same groups share the same
replicates (which is what makes :func:`paired_difference` paired).

::

    folds = [FoldPredictions("seed0-fold0", y_true, y_pred, groups), ...]
    s = bootstrap_scores(folds, n_classes=7)
    s["accuracy"]  # {"mean": 0.31, "low": 0.27, "high": 0.35}
    d = paired_difference(folds_a, folds_b, n_classes=7)
    d["distinguishable"]  # False when the interval holds 0
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bootstrap replicates when none are given.
N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class FoldPredictions:
    """The predictions of one method on one test part: class ids and each image's group."""

    split: str
    y_true: np.ndarray
    y_pred: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.y_true)
        if len(self.y_pred) != n or len(self.groups) != n:
            raise ValueError(
                f"fold {self.split}: y_true, y_pred and groups must have the same length "
                f"({n}, {len(self.y_pred)}, {len(self.groups)})"
            )
        if n == 0:
            raise ValueError(f"fold {self.split} has no test images")


def _group_index(folds: Sequence[FoldPredictions]) -> np.ndarray:
    return np.unique(np.concatenate([np.asarray(f.groups).astype(str) for f in folds]))


def group_confusions(folds: Sequence[FoldPredictions], names: np.ndarray,
                     n_classes: int) -> np.ndarray:
    """``(F, G, K, K)`` counts: per test part and group, true class x predicted class."""
    out = np.zeros((len(folds), len(names), n_classes, n_classes))
    for i, f in enumerate(folds):
        g = np.searchsorted(names, np.asarray(f.groups).astype(str))
        np.add.at(out[i], (g, np.asarray(f.y_true), np.asarray(f.y_pred)), 1)
    return out


def bootstrap_weights(n_groups: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(B, G)`` draw counts: each row, ``G`` groups drawn with replacement (a multinomial)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(
        np.float64)


def _resample(W: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Every replicate's confusion matrices: ``(B, G) x (F, G, K, K) -> (F, B, K, K)``."""
    F, G, K, _ = C.shape
    return np.matmul(W[None], C.reshape(F, G, K * K)).reshape(F, len(W), K, K)


def _scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 and per-class recall of confusion matrices ``(..., K, K)``.

    As :func:`fertool.evaluate.metrics.evaluate`: macro-F1 over the classes present in the truth
    or the predictions; recall NaN for a class absent from the truth; accuracy NaN for an empty
    matrix.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true = cm.sum(-1)
    pred = cm.sum(-2)
    total = true.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = tp.sum(-1) / total
        recall = np.where(true > 0, tp / true, np.nan)
        denom = true + pred
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
        present = denom > 0
        macro = np.where(present.any(-1), np.nansum(f1, -1) / present.sum(-1), np.nan)
    return {"accuracy": acc, "macro_f1": macro, "recall": recall}


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def _summary(point: float, replicates: np.ndarray, level: float) -> dict[str, float | None]:
    lo, hi = _interval(replicates, level)

    def clean(x):
        return None if np.isnan(x) else float(x)

    return {"mean": clean(point), "low": clean(lo), "high": clean(hi)}


def _mean_over_folds(x: np.ndarray) -> np.ndarray:
    """Mean over the fold axis (0), NaN-aware (a part a replicate left empty, a class absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": stays NaN
        return np.nanmean(x, axis=0)


def bootstrap_scores(
    folds: Sequence[FoldPredictions],
    n_classes: int,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    labels: Sequence[str] | None = None,
) -> dict:
    """Mean over the test parts of accuracy, macro-F1 and per-class recall, each with its
    group-bootstrap interval; the per-part figures too.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``: ``{"mean", "low", "high"}``; ``per_class_recall``:
        ``{label: {"mean", "low", "high"}}`` (recall averaged over the parts that hold the
        class); ``per_fold``: ``[{"split", "n", "groups", "accuracy", "macro_f1"}]``;
        ``n_boot``, ``level``, ``seed``, ``n_groups``, ``unit`` ("group").
    """
    if not folds:
        raise ValueError("folds is empty; pass the predictions of at least one test part")
    labels = list(labels) if labels is not None else [str(c) for c in range(n_classes)]
    names = _group_index(folds)
    C = group_confusions(folds, names, n_classes)  # (F, G, K, K)
    point = _scores(C.sum(1))  # (F, ...)
    W = bootstrap_weights(len(names), n_boot, seed)
    boot = _scores(_resample(W, C))  # (F, B, ...)
    out = {
        "accuracy": _summary(float(np.mean(point["accuracy"])),
                             _mean_over_folds(boot["accuracy"]), level),
        "macro_f1": _summary(float(np.mean(point["macro_f1"])),
                             _mean_over_folds(boot["macro_f1"]), level),
        "per_class_recall": {},
        "per_fold": [
            {"split": f.split, "n": len(f.y_true),
             "groups": len(set(np.asarray(f.groups).astype(str).tolist())),
             "accuracy": float(point["accuracy"][i]), "macro_f1": float(point["macro_f1"][i])}
            for i, f in enumerate(folds)
        ],
        "n_boot": int(n_boot), "level": level, "seed": int(seed), "n_groups": len(names),
        "unit": "group",
    }
    rec_point = _mean_over_folds(point["recall"])
    rec_boot = _mean_over_folds(boot["recall"])
    for c, label in enumerate(labels):
        if not np.isnan(rec_point[c]):
            out["per_class_recall"][label] = _summary(float(rec_point[c]), rec_boot[:, c], level)
    return out


def _same_images(a: Sequence[FoldPredictions], b: Sequence[FoldPredictions]) -> None:
    if [f.split for f in a] != [f.split for f in b]:
        raise ValueError(
            f"paired comparison needs the same test parts: {[f.split for f in a]} vs "
            f"{[f.split for f in b]}"
        )
    for fa, fb in zip(a, b):
        if not (np.array_equal(fa.y_true, fb.y_true)
                and np.array_equal(np.asarray(fa.groups), np.asarray(fb.groups))):
            raise ValueError(f"test part {fa.split}: the two methods were not scored on the same "
                             "images (labels or groups differ)")


def paired_difference(
    a: Sequence[FoldPredictions],
    b: Sequence[FoldPredictions],
    n_classes: int,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict:
    """Accuracy and macro-F1 of ``a`` minus ``b`` on the same test images, with group-bootstrap
    intervals (both methods resampled with the same groups in every replicate).

    Returns ``{"accuracy": {"mean", "low", "high"}, "macro_f1": {...}, "distinguishable": bool}``;
    ``distinguishable`` is false when the accuracy interval holds 0.

    Raises
    ------
    ValueError
        When ``a`` and ``b`` do not cover the same test parts with the same images.
    """
    _same_images(a, b)
    names = _group_index(a)
    Ca = group_confusions(a, names, n_classes)
    Cb = group_confusions(b, names, n_classes)
    W = bootstrap_weights(len(names), n_boot, seed)
    pa, pb = _scores(Ca.sum(1)), _scores(Cb.sum(1))
    ba = _scores(_resample(W, Ca))
    bb = _scores(_resample(W, Cb))
    out = {}
    for key in ("accuracy", "macro_f1"):
        point = float(np.mean(pa[key]) - np.mean(pb[key]))
        out[key] = _summary(point, _mean_over_folds(ba[key]) - _mean_over_folds(bb[key]), level)
    lo, hi = out["accuracy"]["low"], out["accuracy"]["high"]
    out["distinguishable"] = bool(lo is not None and (lo > 0 or hi < 0))
    return out


__all__ = [
    "LEVEL", "N_BOOT", "FoldPredictions", "bootstrap_scores", "bootstrap_weights",
    "group_confusions", "paired_difference",
]
