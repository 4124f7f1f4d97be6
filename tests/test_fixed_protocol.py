"""The ``fixed`` protocol (a dataset's own train / validation / test parts, from the path or a
CSV), selection on a validation part, and the heads that scale to large training sets.

Generated file names and features only (no image is decoded except in the last test).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fertool.core.errors import DatasetError
from fertool.data.dataset import discover, make_splits
from fertool.data.fixed import FixedSpec, parse_rules, part_of_samples
from fertool.evaluate.classify import LARGE_DATA, fit_head, make_head, scalable_head

PREFIXES = (("train", "Training"), ("test", "PublicTest"), ("test", "PrivateTest"))


def _fer_like(root, per=4, labels=("happy", "sad", "angry")):
    k = 0
    for label in labels:
        for part, prefix in PREFIXES:
            folder = root / part / label
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(per):
                pixels = np.random.default_rng(k).integers(0, 256, (24, 24), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{prefix}_{k:05d}.png")
                k += 1
    return root


def test_rules_parse_with_commas_inside_a_regex_and_presets():
    assert parse_rules("Training_=train,PublicTest_=val,PrivateTest_=test") == [
        ("Training_", "train"), ("PublicTest_", "val"), ("PrivateTest_", "test")]
    assert parse_rules("fer2013") == parse_rules("Training_=train,PublicTest_=val,"
                                                 "PrivateTest_=test")
    assert parse_rules(r"^a\d{1,3}_=training, b=validation") == [
        (r"^a\d{1,3}_", "train"), ("b", "val")]
    for bad in ("Training_", "x=holdout", "(=train", ""):
        with pytest.raises(ValueError, match="split_regex"):
            parse_rules(bad)
    with pytest.raises(ValueError, match="exactly one of `split_regex`"):
        FixedSpec()


def test_regex_and_csv_give_the_same_split_and_its_hash(tmp_path):
    data = _fer_like(tmp_path / "fer")
    m = discover(data, group="none")
    by_regex = make_splits(m, "fixed", fixed=FixedSpec(regex="fer2013"))
    rows = ["path,label,usage"]
    for s in m.samples:
        rel = m.relpath(s.path)
        rows.append(f"{rel},{s.label},{rel.split('/')[-1].split('_')[0]}")
    (tmp_path / "parts.csv").write_text("\n".join(rows) + "\n")
    by_csv = make_splits(m, "fixed", fixed=FixedSpec(csv=str(tmp_path / "parts.csv")))
    (a,), (b,) = by_regex, by_csv
    assert len(a.train) == len(a.val) == len(a.test) == 12
    assert all("Training_" in str(m.samples[i].path) for i in a.train)
    assert all("PublicTest_" in str(m.samples[i].path) for i in a.val)
    assert all("PrivateTest_" in str(m.samples[i].path) for i in a.test)
    assert a.hash == b.hash and (a.val == b.val).all() and a.name == "fixed-seed0-fold0"
    # the hash covers the parts: moving the validation part into train changes it
    merged = make_splits(m, "fixed", fixed=FixedSpec(regex="Training_|PublicTest_=train,"
                                                           "PrivateTest_=test"))[0]
    assert len(merged.val) == 0 and len(merged.train) == 24 and merged.hash != a.hash


def test_images_without_a_part_and_empty_parts_are_errors(tmp_path):
    m = discover(_fer_like(tmp_path / "fer"), group="none")
    with pytest.raises(DatasetError, match="gives no part to 12 of 36 images"):
        part_of_samples(m, FixedSpec(regex="Training_=train,PrivateTest_=test"))
    with pytest.raises(DatasetError, match="no image in the test part"):
        make_splits(m, "fixed", fixed=FixedSpec(regex="Training_=train,Test_=val"))
    (tmp_path / "bad.csv").write_text("file,part\nx,train\n")
    with pytest.raises(DatasetError, match="`path` and `part`"):
        part_of_samples(m, FixedSpec(csv=str(tmp_path / "bad.csv")))


def test_finetune_plan_takes_the_datasets_validation_part(tmp_path):
    from fertool.train.config import TrainConfig
    from fertool.train.plan import plan

    data = _fer_like(tmp_path / "fer")
    p = plan(TrainConfig(data=str(data), out=str(tmp_path / "run"), protocol="fixed",
                         split_regex="fer2013", group="none", weights=None))
    m = p.manifest
    assert sorted(p.fit.tolist()) == sorted(p.split.train.tolist())
    assert all("PublicTest_" in str(m.samples[i].path) for i in p.val) and len(p.val) == 12
    assert "fixed-seed0-fold0" in p.describe()


def _blobs(n, seed, d=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(3, d)[y]
    return X, y


def test_selection_on_a_validation_part_keeps_the_best_candidate():
    X, y = _blobs(300, 0)
    Xv, yv = _blobs(150, 1)
    fitted = fit_head("logreg", X, y, validation=(Xv, yv))
    scores = fitted.cv["scores"]
    assert len(scores) == 4 and fitted.cv["validation"] == 150 and fitted.cv["n_splits"] == 0
    best = max(scores, key=lambda s: s["score"])
    assert fitted.best_params_ == best["params"] and fitted.cv_score_ == best["score"]
    # the kept estimator is the one fitted on X with those parameters (no refit on X + Xv)
    again = make_head("logreg").set_params(**best["params"]).fit(X, y)
    np.testing.assert_allclose(fitted.estimator.predict_proba(Xv), again.predict_proba(Xv))
    assert fitted.cv_score_ == pytest.approx((again.predict(Xv) == yv).mean())


@pytest.mark.parametrize("head", ["nystroem-svm", "pca+nystroem-svm", "pca+logreg"])
def test_selection_fits_each_transformer_once_per_setting_and_matches_full_fits(head):
    """The kernel map (and scaler, PCA) is fitted once per gamma, not once per alpha; every
    candidate equals a full fit of its own parameters (a slow reference)."""
    from sklearn.kernel_approximation import Nystroem

    X, y = _blobs(300, 5)
    Xv, yv = _blobs(120, 6)
    calls = []
    original = Nystroem.fit

    def counted(self, *a, **k):
        calls.append(self.gamma)
        return original(self, *a, **k)

    Nystroem.fit = counted
    try:
        fitted = fit_head(head, X, y, validation=(Xv, yv))
    finally:
        Nystroem.fit = original
    grid = fitted.cv["grid"]
    gammas = grid.get("clf__map__gamma", [])
    assert sorted(calls) == sorted(gammas)  # one map per gamma (two), not one per candidate
    for cand in fitted.cv["scores"]:
        ref = make_head(head).set_params(**cand["params"]).fit(X, y)
        assert cand["score"] == pytest.approx((ref.predict(Xv) == yv).mean(), abs=0)
    best = make_head(head).set_params(**fitted.best_params_).fit(X, y)
    np.testing.assert_array_equal(fitted.estimator.predict(Xv), best.predict(Xv))


@pytest.mark.parametrize("head", ["nystroem-svm", "sgd", "linear-svm"])
def test_the_scalable_heads_learn(head):
    X, y = _blobs(400, 2)
    Xt, yt = _blobs(200, 3)
    fitted = fit_head(head, X, y, validation=_blobs(100, 4))
    assert (fitted.predict(Xt) == yt).mean() > 0.8  # chance is 1/3


def test_heads_are_replaced_above_the_large_data_size():
    assert scalable_head("svm-rbf", LARGE_DATA) == "svm-rbf"
    assert scalable_head("svm-rbf", LARGE_DATA + 1) == "nystroem-svm"
    assert scalable_head("pca+svm-linear", LARGE_DATA + 1) == "pca+sgd"
    assert scalable_head("logreg", 10 ** 6) == "logreg"


def test_compare_baselines_on_a_fixed_split(tmp_path):
    from fertool.compare import CompareConfig, DescriptorSettings, run_comparison
    from fertool.faces.config import FaceConfig

    data = _fer_like(tmp_path / "fer", per=6)
    cfg = CompareConfig(
        data=str(data), out=str(tmp_path / "report"), protocol="fixed", split_regex="fer2013",
        group="none", methods=("phog/logreg",), face=FaceConfig(faces="crop", size=32),
        descriptors=DescriptorSettings(phog_size=32, phog_levels=2), n_boot=100,
    )
    outcome = run_comparison(cfg, progress=False)
    (r,) = outcome.results
    assert r.status == "ok" and r.n_folds == 1
    fold = r.folds[0]
    assert fold["n_train"] == 18 and fold["n_test"] == 18
    assert fold["selected_on"] == "validation part (18 images)"
    text = outcome.report_md.read_text()
    assert "dataset's own validation part" in text and "--faces crop" in text
    with pytest.raises(Exception, match="protocol='fixed'"):
        run_comparison(CompareConfig(data=str(data), out=str(tmp_path / "r2"),
                                     split_regex="fer2013"), progress=False)
