"""Metrics against hand-computed values and slow loops; the plot without pyplot state."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from fertool.core.labels import LABELS
from fertool.evaluate.metrics import EvalResult, evaluate, plot_confusion, summarise


def slow_scores(y_true, y_pred, labels):
    """Accuracy, confusion, recall and macro-F1 by counting, straight from the definitions."""
    k = len(labels)
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred):
        cm[labels.index(t)][labels.index(p)] += 1
    acc = sum(cm[i][i] for i in range(k)) / len(y_true)
    recall, f1s = [], []
    for i in range(k):
        tp = cm[i][i]
        support = sum(cm[i])
        predicted = sum(cm[r][i] for r in range(k))
        recall.append(tp / support if support else float("nan"))
        if support or predicted:
            prec = tp / predicted if predicted else 0.0
            rec = tp / support if support else 0.0
            f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return acc, np.array(cm), recall, sum(f1s) / len(f1s)


def test_small_example_by_hand():
    r = evaluate(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"], ["a", "b", "c"])
    assert r.n == 5 and r.labels == ("a", "b", "c")
    assert r.accuracy == pytest.approx(3 / 5, abs=1e-12)
    np.testing.assert_array_equal(r.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert r.per_class_recall == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.0})
    # F1: a = 2 * (1/2 * 1/2) / 1 = 0.5; b = 2 * (2/3 * 1) / (5/3) = 0.8; c = 0
    assert r.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_counting(seed):
    rng = np.random.default_rng(seed)
    labels = list(LABELS)
    y_true = rng.choice(labels[:6], 200)  # "surprise" never occurs in y_true
    y_pred = np.where(rng.random(200) < 0.4, y_true, rng.choice(labels, 200))
    acc, cm, recall, f1 = slow_scores(list(y_true), list(y_pred), labels)
    r = evaluate(y_true, y_pred, labels)
    assert r.accuracy == pytest.approx(acc, abs=1e-12)
    assert r.macro_f1 == pytest.approx(f1, abs=1e-12)
    np.testing.assert_array_equal(r.confusion, cm)
    np.testing.assert_allclose(list(r.per_class_recall.values()), recall, rtol=1e-12)
    assert np.isnan(r.per_class_recall["surprise"])


def test_integer_ids_index_named_labels():
    # fertool's Manifest.y holds indices into LABELS; names key the result
    y_true, y_pred = np.array([0, 3, 3, 6]), np.array([0, 3, 4, 6])
    r = evaluate(y_true, y_pred, LABELS)
    named = evaluate(np.asarray(LABELS)[y_true], np.asarray(LABELS)[y_pred], LABELS)
    assert r.to_dict() == named.to_dict()
    assert r.per_class_recall["happy"] == 0.5 and r.labels == LABELS


def test_integer_labels_and_to_dict_is_json():
    r = evaluate(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), np.arange(4))
    assert set(r.per_class_recall) == {"0", "1", "2", "3"}
    d = r.to_dict()
    text = json.dumps(d)  # plain types only; NaN became None
    assert json.loads(text)["per_class_recall"]["3"] is None
    assert d["labels"] == [0, 1, 2, 3] and d["confusion"][2] == [0, 1, 1, 0]
    assert d["accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((["a"], ["a", "b"], ["a", "b"]), "y_true has 1 labels but y_pred has 2"),
        (([], [], ["a"]), "empty"),
        (
            (["a", "x"], ["a", "a"], ["a", "b"]),
            r"y_true holds labels not in labels=\['a', 'b'\]: \['x'\]",
        ),
        (([0, 2], [0, 1], ["angry", "disgust"]), r"class ids outside 0..1"),
        ((["a"], ["a"], ["a", "a"]), "distinct"),
        (([["a"]], [["a"]], ["a"]), "1-D"),
    ],
)
def test_evaluate_validation(args, match):
    with pytest.raises(ValueError, match=match):
        evaluate(*args)


def test_summarise():
    labels = ["a", "b"]
    runs = [
        evaluate(["a", "a", "b", "b"], ["a", "a", "b", "b"], labels),  # acc 1
        evaluate(["a", "a", "b", "b"], ["a", "b", "a", "b"], labels),  # acc 0.5
        evaluate(["a", "a", "a", "a"], ["a", "a", "b", "b"], labels),  # acc 0.5, b absent
    ]
    s = summarise(runs)
    assert s["n_runs"] == 3 and s["n_total"] == 12
    assert s["accuracy_mean"] == pytest.approx(2 / 3, abs=1e-12)
    assert s["accuracy_std"] == pytest.approx(np.std([1, 0.5, 0.5], ddof=1), abs=1e-12)
    assert s["macro_f1_mean"] == pytest.approx(np.mean([r.macro_f1 for r in runs]), abs=1e-12)
    assert s["per_class_recall_mean"]["a"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert s["per_class_recall_mean"]["b"] == pytest.approx((1 + 0.5) / 2)  # NaN run skipped
    assert s["confusion_sum"] == [[5, 3], [1, 3]]
    json.dumps(s)
    single = summarise(runs[:1])
    assert single["accuracy_std"] == 0.0 and single["accuracy_mean"] == 1.0
    with pytest.raises(ValueError, match="empty"):
        summarise([])
    with pytest.raises(ValueError, match="different labels"):
        summarise([runs[0], evaluate(["a"], ["a"], ["a", "c"])])
    assert isinstance(runs[0], EvalResult)


def test_plot_confusion_without_pyplot_state():
    import matplotlib
    from matplotlib.figure import Figure

    backend = matplotlib.rcParams["backend"]
    pyplot = sys.modules.get("matplotlib.pyplot")
    open_before = pyplot.get_fignums() if pyplot else None
    cm = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])
    fig = plot_confusion(cm, ["angry", "happy", "sad"], title="seed 0")
    assert isinstance(fig, Figure)
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"
    ax = fig.axes[0]
    np.testing.assert_allclose(
        ax.images[0].get_array(), [[0.8, 0.2, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-12
    )
    assert [t.get_text() for t in ax.texts] == [str(v) for v in cm.ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["angry", "happy", "sad"]
    assert ax.get_title() == "seed 0"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    # no pyplot import, no figure registered with pyplot, backend setting untouched
    if pyplot is None:
        assert "matplotlib.pyplot" not in sys.modules
    else:
        assert pyplot.get_fignums() == open_before
    assert matplotlib.rcParams["backend"] == backend
    with pytest.raises(ValueError, match="square"):
        plot_confusion(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="labels has 1 names"):
        plot_confusion(np.zeros((2, 2)), ["a"])
