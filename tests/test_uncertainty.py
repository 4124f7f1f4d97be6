"""Group bootstrap: known answers, and the vectorised code against a slow loop."""

from __future__ import annotations

import numpy as np
import pytest

from fertool.evaluate.metrics import evaluate
from fertool.evaluate.uncertainty import (
    FoldPredictions,
    bootstrap_scores,
    bootstrap_weights,
    paired_difference,
)

K = 4


def make_folds(n_folds=3, n_groups=8, seed=0, acc=0.5):
    """Two seeds' worth of test parts over the same groups (each group once per seed)."""
    rng = np.random.default_rng(seed)
    folds = []
    for f in range(n_folds):
        n = int(rng.integers(30, 50))
        y = rng.integers(0, K, n)
        pred = np.where(rng.random(n) < acc, y, rng.integers(0, K, n))
        g = rng.integers(0, n_groups, n).astype(str)
        folds.append(FoldPredictions(f"s{f}", y, pred, g))
    return folds


def test_identical_predictions_differ_by_exactly_zero():
    folds = make_folds()
    d = paired_difference(folds, folds, K, n_boot=500)
    for key in ("accuracy", "macro_f1"):
        assert d[key] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert d["distinguishable"] is False


def test_always_right_is_100_plus_minus_0():
    folds = [FoldPredictions(f.split, f.y_true, f.y_true, f.groups) for f in make_folds()]
    s = bootstrap_scores(folds, K, n_boot=500)
    assert s["accuracy"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert s["macro_f1"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert all(v == {"mean": 1.0, "low": 1.0, "high": 1.0}
               for v in s["per_class_recall"].values())
    # and better than a coin: the right method is distinguishable from a poor one
    poor = make_folds(acc=0.3)
    right = [FoldPredictions(f.split, f.y_true, f.y_true, f.groups) for f in poor]
    d = paired_difference(right, poor, K, n_boot=500)
    assert d["distinguishable"] and d["accuracy"]["low"] > 0.5


def test_point_estimates_match_evaluate():
    folds = make_folds(seed=1)
    s = bootstrap_scores(folds, K, n_boot=200)
    evals = [evaluate(f.y_true, f.y_pred, list(range(K))) for f in folds]
    assert s["accuracy"]["mean"] == pytest.approx(np.mean([e.accuracy for e in evals]))
    assert s["macro_f1"]["mean"] == pytest.approx(np.mean([e.macro_f1 for e in evals]))
    assert [p["accuracy"] for p in s["per_fold"]] == pytest.approx([e.accuracy for e in evals])
    for c in range(K):
        assert s["per_class_recall"][str(c)]["mean"] == pytest.approx(
            np.nanmean([e.per_class_recall[str(c)] for e in evals]))


def slow_bootstrap(folds, n_boot, seed):
    """The definition, one replicate and one image at a time."""
    names = np.unique(np.concatenate([f.groups for f in folds]))
    W = bootstrap_weights(len(names), n_boot, seed)
    acc, f1 = [], []
    for b in range(n_boot):
        weight = dict(zip(names, W[b]))
        fold_acc, fold_f1 = [], []
        for f in folds:
            cm = np.zeros((K, K))
            for t, p, g in zip(f.y_true, f.y_pred, f.groups):
                cm[t, p] += weight[g]
            if cm.sum() == 0:
                continue
            fold_acc.append(np.trace(cm) / cm.sum())
            scores = []
            for c in range(K):
                tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c].sum() - cm[c, c]
                if tp + fp + fn > 0:
                    scores.append(2 * tp / (2 * tp + fp + fn))
            fold_f1.append(np.mean(scores))
        acc.append(np.mean(fold_acc))
        f1.append(np.mean(fold_f1))
    return np.percentile(acc, [2.5, 97.5]), np.percentile(f1, [2.5, 97.5])


def test_vectorised_matches_a_slow_loop():
    folds = make_folds(n_folds=2, n_groups=5, seed=2)
    s = bootstrap_scores(folds, K, n_boot=300, seed=7)
    acc, f1 = slow_bootstrap(folds, 300, 7)
    assert [s["accuracy"]["low"], s["accuracy"]["high"]] == pytest.approx(acc, abs=1e-12)
    assert [s["macro_f1"]["low"], s["macro_f1"]["high"]] == pytest.approx(f1, abs=1e-12)


def test_deterministic_and_groups_not_images():
    folds = make_folds(seed=3)
    a, b = bootstrap_scores(folds, K, seed=0), bootstrap_scores(folds, K, seed=0)
    assert a == b and a["n_boot"] == 2000
    # one group per image would pretend far more evidence: a narrower interval
    per_image = [FoldPredictions(f.split, f.y_true, f.y_pred,
                                 np.array([f"{f.split}-{i}" for i in range(len(f.y_true))]))
                 for f in folds]
    one_group = [FoldPredictions(f.split, f.y_true, f.y_pred, np.array(["all"] * len(f.y_true)))
                 for f in folds]
    width = lambda s: s["accuracy"]["high"] - s["accuracy"]["low"]
    assert width(bootstrap_scores(one_group, K)) == 0.0  # one group: nothing to resample
    assert width(bootstrap_scores(per_image, K)) > 0


def test_paired_needs_the_same_images():
    a = make_folds(seed=4)
    b = make_folds(seed=5)
    with pytest.raises(ValueError, match="not scored on the same images"):
        paired_difference(a, b, K)
    with pytest.raises(ValueError, match="same test parts"):
        paired_difference(a, a[:2], K)
