"""Classifier heads: registry, inner cross-validation (grouped), checksummed save and load."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from fertool.core.errors import DatasetError, FertoolError
from fertool.evaluate.classify import (
    HeadFileError,
    UnknownHeadError,
    cv_splitter,
    fit_head,
    head_names,
    load_head,
    make_head,
    save_head,
    sidecar_path,
)


def blobs(n_per_class=20, n_classes=3, n_features=12, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, n_features))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centres[y] + rng.normal(0, spread, (len(y), n_features))
    return X, y


def test_registry_and_unknown_name():
    names = head_names()
    for expected in ("svm-rbf", "svm-linear", "logreg", "knn", "pca+svm-rbf", "pca+knn"):
        assert expected in names
    with pytest.raises(UnknownHeadError, match=r"unknown head 'svm-rfb'; known heads: svm-rbf, "):
        make_head("svm-rfb")
    with pytest.raises(FertoolError, match="pca\\+logreg"):  # the list includes the variants
        fit_head("forest", np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError):  # also a ValueError, for library callers
        make_head("pca+")


def test_make_head_steps_and_params():
    from sklearn.decomposition import PCA
    from sklearn.svm import SVC

    head = make_head("svm-rbf", C=5.0)
    assert [s for s, _ in head.steps] == ["scale", "clf"]
    assert isinstance(head.named_steps["clf"], SVC) and head.named_steps["clf"].C == 5.0
    for h in (make_head("pca+logreg", seed=3), make_head("logreg", pca=True, seed=3)):
        assert [s for s, _ in h.steps] == ["scale", "pca", "clf"]
        pca = h.named_steps["pca"]
        assert isinstance(pca, PCA) and pca.n_components == 0.95 and pca.whiten
    assert make_head("knn", n_neighbors=7).named_steps["clf"].n_neighbors == 7
    with pytest.raises(ValueError, match="includes PCA but pca=False"):
        make_head("pca+knn", pca=False)
    with pytest.raises(ValueError, match="Invalid parameter"):
        make_head("knn", C=1.0)


@pytest.mark.parametrize("name", ["svm-rbf", "svm-linear", "logreg", "knn", "pca+svm-rbf"])
def test_fit_head_learns_separable_data(name):
    X, y = blobs()
    fitted = fit_head(name, X, y, cv=3, seed=0)
    assert fitted.name == name
    assert fitted.cv["n_splits"] == 3 and fitted.cv["grouped"] is False
    assert fitted.cv_score_ > 0.9
    assert (fitted.predict(X) == y).mean() > 0.9
    np.testing.assert_array_equal(fitted.classes_, [0, 1, 2])
    for key, value in fitted.best_params_.items():
        assert value in fitted.cv["grid"][key]


def test_fit_head_is_deterministic():
    X, y = blobs(spread=3.0)
    a, b = (fit_head("svm-rbf", X, y, cv=3, seed=4) for _ in range(2))
    assert a.best_params_ == b.best_params_ and a.cv_score_ == b.cv_score_


def test_gamma_grid_scales_with_features():
    X, y = blobs(n_features=40)
    fitted = fit_head("svm-rbf", X, y)
    np.testing.assert_allclose(fitted.cv["grid"]["clf__gamma"], [0.1 / 40, 0.3 / 40, 1 / 40])
    custom = fit_head("svm-rbf", X, y, grid={"C": [2.0], "gamma": ["scale"]})
    assert custom.best_params_ == {"clf__C": 2.0, "clf__gamma": "scale"}


def test_knn_grid_never_exceeds_training_fold():
    X, y = blobs(n_per_class=3)  # 9 samples, 3 folds -> 6 training samples per fold
    fitted = fit_head("knn", X, y)
    assert max(fitted.cv["grid"]["clf__n_neighbors"]) <= 6


def test_grouped_inner_cv_keeps_groups_on_one_side():
    X, y = blobs(n_per_class=30, n_features=6, spread=2.0)
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 12, len(y))  # 12 "movies", mixed classes
    group_sizes = np.bincount(groups)
    Xg = np.column_stack([groups.astype(float), X])  # column 0 carries the group to the scorer
    seen = []

    def record_groups(estimator, X_test, y_test):
        g = X_test[:, 0].astype(int)
        ids, counts = np.unique(g, return_counts=True)
        # every group in the test fold is there with all its samples: none left for training
        seen.append(bool(np.all(counts == group_sizes[ids])))
        return float((estimator.predict(X_test) == y_test).mean())

    fitted = fit_head("knn", Xg, y, groups=groups, cv=3, seed=0, scoring=record_groups)
    assert fitted.cv["grouped"] is True and fitted.cv["scoring"] == "record_groups"
    assert len(seen) == 3 * 5 and all(seen)  # 5 candidates x 3 folds

    # and without groups the same data does split groups (the check above is not vacuous)
    seen.clear()
    fit_head("knn", Xg, y, cv=3, seed=0, scoring=record_groups)
    assert not all(seen)


def test_cv_splitter_choice_and_errors():
    y = np.array([0, 1] * 6)
    assert isinstance(cv_splitter(y), StratifiedKFold)
    assert isinstance(cv_splitter(y, groups=np.arange(12) // 2), StratifiedGroupKFold)
    with pytest.raises(DatasetError, match="needs at least 3 groups; the training data has 2"):
        cv_splitter(y, groups=np.arange(12) // 6, cv=3)
    with pytest.raises(ValueError, match="cv must be an integer number of folds >= 2"):
        cv_splitter(y, cv=1)
    with pytest.raises(ValueError, match="groups must have one key per sample"):
        fit_head("knn", np.zeros((12, 2)), y, groups=[1, 2])


def test_save_load_round_trip(tmp_path):
    X, y = blobs()
    labels = np.array(["angry", "happy", "sad"])[y]
    fitted = fit_head("pca+svm-rbf", X, labels, cv=3)
    path = tmp_path / "heads" / "lpq-svm.joblib"
    meta = {"descriptor": "lpq", "params": {"size": 64, "grid": (4, 4)}, "n_features": np.int64(12)}
    assert save_head(fitted, path, meta) == path
    side = json.loads(sidecar_path(path).read_text())
    assert side["classes"] == ["angry", "happy", "sad"]
    assert side["features"] == {"descriptor": "lpq", "params": {"size": 64, "grid": [4, 4]},
                                "n_features": 12}
    assert side["head"] == "pca+svm-rbf" and side["file"] == "lpq-svm.joblib"
    assert side["best_params"] == fitted.best_params_ and side["cv_score"] == fitted.cv_score_
    assert "scikit-learn" in side["versions"] and len(side["sha256"]) == 64
    estimator, loaded_meta = load_head(path)
    np.testing.assert_array_equal(estimator.predict(X), fitted.predict(X))
    assert loaded_meta == side
    # no temporary files are left behind
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["lpq-svm.joblib", "lpq-svm.joblib.json"]


def test_save_refuses_to_overwrite_without_force(tmp_path):
    X, y = blobs()
    fitted = fit_head("knn", X, y, grid={"n_neighbors": [3]})
    path = tmp_path / "knn.joblib"
    save_head(fitted, path, {})
    before = path.read_bytes()
    with pytest.raises(FertoolError, match="already exists; use --force"):
        save_head(fitted, path, {"other": 1})
    assert path.read_bytes() == before
    save_head(fit_head("logreg", X, y, grid={"C": [1.0]}), path, {"other": 1}, force=True)
    assert json.loads(sidecar_path(path).read_text())["head"] == "logreg"
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_head(fitted, tmp_path / "bad.joblib", {"f": object()})
    assert not (tmp_path / "bad.joblib").exists()


class _Marker:
    """Unpickling this creates a file: proof that a pickle was (not) loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_tampered_or_unverifiable_files_are_refused_before_unpickling(tmp_path):
    X, y = blobs()
    path = tmp_path / "head.joblib"
    save_head(fit_head("logreg", X, y, grid={"C": [1.0]}), path, {})

    marker = tmp_path / "unpickled"
    path.write_bytes(pickle.dumps(_Marker(marker)))  # swapped for a different pickle
    with pytest.raises(HeadFileError, match=r"refusing to load .*head\.joblib: its sha256"):
        load_head(path)
    assert not marker.exists()

    sidecar_path(path).unlink()
    with pytest.raises(HeadFileError, match=r"checksum sidecar .*head\.joblib\.json is missing"):
        load_head(path)
    assert not marker.exists()

    sidecar_path(path).write_text("{not json")
    with pytest.raises(HeadFileError, match="unreadable"):
        load_head(path)
    with pytest.raises(HeadFileError, match="no such file"):
        load_head(tmp_path / "absent.joblib")
    assert not marker.exists()


def test_single_flipped_byte_is_refused(tmp_path):
    X, y = blobs()
    path = tmp_path / "head.joblib"
    save_head(fit_head("svm-linear", X, y, grid={"C": [1.0]}), path, {})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(HeadFileError, match="changed or corrupted"):
        load_head(path)


def test_rare_class_warning_names_the_class(caplog):
    """A class with fewer training samples than inner folds: one fertool warning naming it,
    not sklearn's generic one."""
    import logging
    import warnings

    rng = np.random.default_rng(0)
    y = np.array([0] * 12 + [1] * 12 + [2] * 2)
    X = rng.normal(size=(len(y), 4)) + y[:, None]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        fit_head("logreg", X, y, cv=3)
    assert not [w for w in caught if "least populated class" in str(w.message)]
    (record,) = [r for r in caplog.records if "fewer training samples than folds" in r.message]
    assert "2 (2)" in record.message and "0 (12)" not in record.message
