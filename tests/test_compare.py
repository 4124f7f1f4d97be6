"""compare-baselines: method names, one report over shared faces and splits, unavailable and
fine-tuned methods, no leakage from test labels, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from fertool.cli import main
from fertool.compare import (
    CompareConfig,
    DescriptorSettings,
    MethodPlan,
    UnknownMethodError,
    evaluate_plan,
    plan_methods,
    run_comparison,
)
from fertool.data.dataset import discover, make_splits, splits_hash
from fertool.evaluate.classify import UnknownHeadError

FAST = ("lpq", "phog", "lpq+phog")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """28 synthetic frames in 6 'movies', and a face cache warmed once for the whole module."""
    from fertool.data.synthetic import make_dataset
    from fertool.faces.stage import FaceConfig, face_crops

    root = tmp_path_factory.mktemp("compare")
    data = make_dataset(root / "data", n_per_class=4, seed=3, width=200, height=160, n_groups=6,
                        multi_face_rate=0.0)
    cache = root / "cache"
    face_crops([str(p) for p in discover(data).paths], FaceConfig(), cache_dir=cache,
               progress=False)
    return data, cache


def _config(dataset, out, **kw) -> CompareConfig:
    data, cache = dataset
    base = {"data": str(data), "out": str(out), "protocol": "paper", "seeds": (0, 1),
            "methods": FAST, "cache_dir": str(cache), "cv": 2}
    base.update(kw)
    return CompareConfig(**base)


# -- method names ---------------------------------------------------------------------------


def test_plan_methods_names():
    plans = plan_methods(["lpq", "phog", "lpq+phog", "facenet", "facenet-pool"],
                         heads=["svm-rbf", "logreg"], weights="casia-webface")
    assert [p.name for p in plans] == [
        "lpq", "phog", "lpq+phog",
        "facenet-casia-webface/svm-rbf", "facenet-casia-webface/logreg",
        "facenet-casia-webface-pool/svm-rbf", "facenet-casia-webface-pool/logreg",
    ]
    assert plans[0] == MethodPlan("lpq", "lpq", "svm-rbf")
    # one head for one source, in both spellings; duplicates collapse; file weights by stem
    plans = plan_methods(["facenet/knn", "facenet-knn", "facenet-pool-pca+logreg", "lpq/logreg"],
                         weights="/models/my-net.pt")
    assert [(p.name, p.source, p.head) for p in plans] == [
        ("facenet-my-net/knn", "facenet", "knn"),
        ("facenet-my-net-pool/pca+logreg", "facenet-pool", "pca+logreg"),
        ("lpq/logreg", "lpq", "logreg"),
    ]
    assert (
        plan_methods(["facenet"], heads=["svm-rbf"], weights="none")[0].name
        == "facenet-none/svm-rbf"
    )


def test_plan_methods_errors():
    with pytest.raises(UnknownMethodError, match="unknown method 'hog'; known: lpq, phog"):
        plan_methods(["lpq", "hog"])
    with pytest.raises(UnknownHeadError, match="known heads"):
        plan_methods(["lpq/forest"])
    with pytest.raises(UnknownHeadError):
        plan_methods(["facenet"], heads=["svm-rfb"])
    with pytest.raises(UnknownMethodError, match="no methods"):
        plan_methods([" "])


# -- one comparison -------------------------------------------------------------------------


def test_report_paper_protocol(dataset, tmp_path):
    out = tmp_path / "paper"
    outcome = run_comparison(_config(dataset, out), progress=False)
    report = json.loads((out / "report.json").read_text())

    manifest = discover(dataset[0])
    splits = make_splits(manifest, "paper", seeds=(0, 1))
    assert report["protocol"] == "paper"
    assert report["split_hash"] == splits_hash(splits) == outcome.split_hash
    assert [s["hash"] for s in report["splits"]] == [s.hash for s in splits]
    assert report["seeds"] == [0, 1]
    assert report["faces"]["images"] == len(manifest) == 28
    assert report["face_fallbacks"] == report["faces"]["fallback_centre_crop"]
    assert report["inner_cv"]["grouped"] is False  # the paper split is not grouped
    assert "versions" in report and report["command"]

    assert [r["method"] for r in report["results"]] == list(FAST)
    for r in report["results"]:
        assert r["status"] == "ok"
        assert 0.0 <= r["accuracy_mean"] <= 1.0 and r["accuracy_std"] >= 0.0
        assert 0.0 <= r["macro_f1"] <= 1.0
        assert r["n_folds"] == 2 and len(r["folds"]) == 2
        accs = [f["accuracy"] for f in r["folds"]]
        assert r["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert r["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
        # every test part is scored in full, and the confusion matrix sums them
        assert [f["n_test"] for f in r["folds"]] == [len(s.test) for s in splits]
        assert np.sum(r["details"]["confusion_sum"]) == sum(len(s.test) for s in splits)
        assert set(r["per_class_recall"]) == set(manifest.classes)
    # lpq+phog is the two descriptors side by side
    details = {r["method"]: r["details"] for r in report["results"]}
    assert (
        details["lpq+phog"]["features"]
        == details["lpq"]["features"] + details["phog"]["features"]
    )
    assert details["lpq"]["features"] == 8 * 8 * 256  # defaults: 8x8 cells, 12 bins, 3 levels
    assert details["phog"]["features"] == 12 * (1 + 4 + 16 + 64)

    md = (out / "report.md").read_text()
    assert "| method | accuracy % [95% CI] | std over parts | macro-F1 % [95% CI] |" in md
    # every ok method has its group-bootstrap interval around its mean, and per-part figures
    for r in report["results"]:
        u = r["uncertainty"]
        assert u["n_boot"] == 2000 and u["unit"] == "group" and u["n_groups"] == 6
        assert u["accuracy"]["low"] <= r["accuracy_mean"] <= u["accuracy"]["high"]
        assert u["accuracy"]["mean"] == pytest.approx(r["accuracy_mean"])
        assert [f["accuracy"] for f in u["per_fold"]] == pytest.approx(
            [f["accuracy"] for f in r["folds"]])
        assert set(u["per_class_recall"]) == set(manifest.classes)
    comp = report["comparisons"]
    assert comp["best"] == outcome.best().method
    assert {c["method"] for c in comp["against"]} == set(FAST) - {comp["best"]}
    assert "## Paired differences to the best method" in md and "## Per-class recall" in md
    for name in FAST:
        assert f"| {name} |" in md
    assert f"split hash: `{outcome.split_hash}`" in md and "face_fallbacks" in md
    assert sorted(p.name for p in out.glob("*.png")) == sorted(outcome.figures.values())
    assert len(outcome.figures) == 3


def test_refuses_to_overwrite_and_force(dataset, tmp_path):
    from fertool.core.errors import FertoolError

    out = tmp_path / "r"
    cfg = _config(dataset, out, methods=("phog",), seeds=(0,))
    run_comparison(cfg, progress=False)
    before = (out / "report.json").read_text()
    with pytest.raises(FertoolError, match="already exists; use --force"):
        run_comparison(cfg, progress=False)
    assert (out / "report.json").read_text() == before
    cfg.force = True
    run_comparison(cfg, progress=False)
    assert json.loads((out / "report.json").read_text())["results"][0]["method"] == "phog"


def test_movie_protocol_is_grouped_inside(dataset, tmp_path):
    out = tmp_path / "movie"
    cfg = _config(dataset, out, protocol="movie", seeds=None, methods=("phog",),
                  descriptors=DescriptorSettings(phog_levels=2, feature_map="none"))
    outcome = run_comparison(cfg, progress=False)
    report = json.loads((out / "report.json").read_text())
    # movie default: 2 folds, seeds 0-4
    assert report["seeds"] == [0, 1, 2, 3, 4] and report["n_splits"] == 10
    assert report["inner_cv"]["grouped"] is True
    assert report["descriptors"]["feature_map"] == "none"
    (r,) = outcome.results
    assert r.status == "ok" and r.details["features"] == 12 * (1 + 4 + 16)
    assert r.details["inner_cv"]["grouped"] is True


def test_a_method_that_fails_is_listed(dataset, tmp_path):
    # 3 movies per training part cannot make 4 grouped inner folds: listed as failed, with why
    outcome = run_comparison(_config(dataset, tmp_path / "f", protocol="movie", seeds=None,
                                     methods=("phog",), cv=4), progress=False)
    (r,) = outcome.results
    assert r.status == "failed" and "needs at least 4 groups" in r.reason
    md = (tmp_path / "f" / "report.md").read_text()
    assert "| phog | not run: grouped 4-fold cross-validation needs at least 4 groups" in md
    assert outcome.best() is None


def test_test_labels_never_reach_the_fit(dataset):
    """Changing the labels of a test part changes its score, never the model fitted for it."""
    from fertool.faces.stage import FaceConfig, face_crops
    from fertool.features.descriptors import PHOGTransformer

    data, cache = dataset
    manifest = discover(data)
    crops, _ = face_crops([str(p) for p in manifest.paths], FaceConfig(), cache_dir=cache,
                          progress=False)
    X = PHOGTransformer().transform(crops)
    y = manifest.y
    split = make_splits(manifest, "paper", seeds=(0,))[0]
    parts = [(split, split.train, split.test)]
    plan = MethodPlan("phog", "phog", "svm-rbf")
    a = evaluate_plan(plan, X, y, None, parts, cv=2)
    y_scrambled = y.copy()
    y_scrambled[split.test] = np.roll(y[split.test], 3)
    b = evaluate_plan(plan, X, y_scrambled, None, parts, cv=2)
    fa, fb = a.folds[0], b.folds[0]
    assert fa["best_params"] == fb["best_params"]
    assert fa["inner_cv_accuracy"] == fb["inner_cv_accuracy"]
    # same predictions: the confusion matrices hold the same column sums
    ca, cb = np.array(a.details["confusion_sum"]), np.array(b.details["confusion_sum"])
    np.testing.assert_array_equal(ca.sum(axis=0), cb.sum(axis=0))
    assert not np.array_equal(ca, cb)


def test_unavailable_weights_are_listed(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("FERTOOL_OFFLINE", "1")
    out = tmp_path / "offline"
    cfg = _config(dataset, out, methods=("phog", "facenet", "facenet-pool"),
                  heads=("svm-rbf", "logreg"), weights="vggface2", seeds=(0,))
    outcome = run_comparison(cfg, progress=False)
    by_name = {r.method: r for r in outcome.results}
    assert by_name["phog"].status == "ok"
    names = ["facenet-vggface2/svm-rbf", "facenet-vggface2/logreg",
             "facenet-vggface2-pool/svm-rbf", "facenet-vggface2-pool/logreg"]
    for name in names:
        assert by_name[name].status == "unavailable"
        assert "20180402-114759-vggface2.pt" in by_name[name].reason
    md = (out / "report.md").read_text()
    assert "| facenet-vggface2/svm-rbf | not run: weights unavailable" in md
    assert json.loads((out / "report.json").read_text())["weights"]["name"] == "vggface2"
    assert list(outcome.figures) == ["phog (summed over 1 test parts)"]


def test_bad_descriptor_settings_fail_before_any_work(dataset, tmp_path):
    data, cache = dataset
    result = CliRunner().invoke(main, [
        "compare-baselines", "--data", str(data), "--methods", "lpq", "--lpq-size", "32",
        "--lpq-grid", "8x8", "--out", str(tmp_path / "x"), "--cache-dir", str(cache),
    ])
    assert result.exit_code == 1
    assert "lpq settings" in result.output and "needs at least 56x56" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_with_random_facenet(dataset, tmp_path):
    data, cache = dataset
    out = tmp_path / "cli"
    args = ["compare-baselines", "--data", str(data), "--protocol", "paper", "--seeds", "0",
            "--methods", "phog,facenet", "--heads", "logreg", "--weights", "none", "--cv", "2",
            "--cache-dir", str(cache), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("paper: 2 methods on 28 faces (0 centre crops), best ")
    assert str(out) in summary
    report = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in report["results"]] == ["phog", "facenet-none/logreg"]
    fn = report["results"][1]
    assert fn["status"] == "ok" and fn["details"]["features"] == 512
    assert report["weights"]["name"] == "none"
    assert (out / "confusion_facenet-none_logreg.png").is_file()

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists; use --force" in again.output


@pytest.mark.slow
def test_finetuned_run_same_split_and_other_split(dataset, tmp_path):
    from fertool.train.loop import TrainConfig, run

    data, cache = dataset
    run_dir = tmp_path / "run"
    trained = run(TrainConfig(data=str(data), out=str(run_dir), weights=None, unfreeze=1, epochs=1,
                              batch_size=8, protocol="paper", split_seed=1, fold=0,
                              val_fraction=0.5, augment=None, tta_flip=False,
                              cache_dir=str(cache)), progress=False)
    method = trained["results"][0]["method"]

    out = tmp_path / "with-run"
    outcome = run_comparison(_config(dataset, out, methods=("phog",), seeds=(0, 1),
                                     finetuned=(str(run_dir),)), progress=False)
    by_name = {r.method: r for r in outcome.results}
    ft = by_name[method]
    assert ft.status == "ok" and ft.n_folds == 1
    (fold,) = ft.folds
    assert fold["split"] == "paper-seed1-fold0" and fold["hash"] == trained["split_hash"]
    # re-evaluated from best.pt on the same crops: the run's own test score, reproduced
    assert fold["accuracy"] == pytest.approx(trained["results"][0]["accuracy_mean"])
    assert ft.details["covers"] == "1 of 2 test parts"
    md = (out / "report.md").read_text()
    assert (
        f"`{method}` covers 1 of 2 test parts (paper-seed1-fold0); "
        "on the same part(s): phog"
    ) in md

    assert fold["evaluated_from"] == "best.pt" and (out / f"confusion_{method}.png").is_file()

    # a recorded copy without checkpoints: the run's own test scores, from its report.json
    copy = tmp_path / "recorded"
    copy.mkdir()
    for f in run_dir.iterdir():
        if f.suffix != ".pt":
            shutil.copy(f, copy / f.name)
    outcome = run_comparison(_config(dataset, tmp_path / "copy", methods=("phog",), seeds=(0, 1),
                                     finetuned=(str(copy),)), progress=False)
    ft = {r.method: r for r in outcome.results}[method]
    assert ft.status == "ok" and ft.details["evaluated_from"] == ["report.json"]
    assert ft.accuracy_mean == pytest.approx(trained["results"][0]["accuracy_mean"])
    assert ft.per_class_recall == pytest.approx(
        {k: v for k, v in trained["results"][0]["per_class_recall"].items() if v is not None})
    assert "confusion_sum" not in ft.details and len(outcome.figures) == 1  # phog only
    assert "holds no checkpoint" in (tmp_path / "copy" / "report.md").read_text()

    # the movie protocol has other splits: listed as not comparable, with the reason
    out2 = tmp_path / "movie"
    outcome = run_comparison(_config(dataset, out2, protocol="movie", seeds=(0,), methods=("phog",),
                                     finetuned=(str(run_dir),)), progress=False)
    ft = {r.method: r for r in outcome.results}[f"{method}@run"]
    assert ft.status == "unavailable" and ft.reason.startswith("not comparable")
    assert trained["split_hash"] in ft.reason


def test_finetuned_run_of_a_resizing_backbone_is_re_evaluated_on_larger_crops(dataset, tmp_path):
    """A mini-Xception run (64 px grey, resizing its input) scored on the comparison's 160 px
    crops: re-evaluated from best.pt, reproducing the run's own test figure."""
    from fertool.train.loop import TrainConfig, run

    data, cache = dataset
    run_dir = tmp_path / "mx"
    trained = run(TrainConfig(data=str(data), out=str(run_dir), backbone="minixception",
                              weights=None, unfreeze=2, epochs=1, batch_size=8, protocol="paper",
                              split_seed=1, fold=0, val_fraction=0.5, augment=None,
                              tta_flip=False, cache_dir=str(cache)), progress=False)
    method = trained["results"][0]["method"]
    outcome = run_comparison(_config(dataset, tmp_path / "out", methods=("phog",), seeds=(1,),
                                     finetuned=(str(run_dir),)), progress=False)
    ft = {r.method: r for r in outcome.results}[method]
    assert ft.status == "ok", ft.reason
    (fold,) = ft.folds
    assert fold["evaluated_from"] == "best.pt"
    assert fold["accuracy"] == pytest.approx(trained["results"][0]["accuracy_mean"])


def test_finetuned_folder_without_report(dataset, tmp_path):
    bogus = tmp_path / "not-a-run"
    bogus.mkdir()
    outcome = run_comparison(_config(dataset, tmp_path / "o", methods=("phog",), seeds=(0,),
                                     finetuned=(str(bogus),)), progress=False)
    r = outcome.results[-1]
    assert r.status == "failed" and "has no report.json" in r.reason


def test_cli_defaults_match_library():
    from fertool.cli import compare_baselines as cli
    from fertool.compare import DEFAULT_HEADS, DEFAULT_METHODS

    assert cli.DEFAULT_METHODS.split(",") == list(DEFAULT_METHODS)
    assert cli.DEFAULT_HEADS.split(",") == list(DEFAULT_HEADS)
    result = CliRunner().invoke(main, ["compare-baselines", "--help"])
    assert result.exit_code == 0 and "--finetuned" in result.output
    assert "compare-baselines" in CliRunner().invoke(main, ["--help"]).output


def test_descriptor_features_once_with_hellinger_map(dataset):
    from fertool.compare import descriptor_features
    from fertool.faces.stage import FaceConfig, face_crops

    data, cache = dataset
    crops, _ = face_crops([str(p) for p in discover(data).paths][:5], FaceConfig(),
                          cache_dir=cache, progress=False)
    plain, _ = descriptor_features(crops, {"lpq", "phog", "lpq+phog"},
                                   DescriptorSettings(feature_map="none"), progress=False)
    mapped, seconds = descriptor_features(crops, {"lpq+phog"}, DescriptorSettings(), progress=False)
    assert set(mapped) == {"lpq+phog"} and set(seconds) == {"lpq", "phog"}
    np.testing.assert_allclose(plain["lpq"].sum(axis=1), 8 * 8, rtol=1e-5)  # a histogram per cell
    np.testing.assert_allclose(mapped["lpq+phog"],
                               np.sqrt(np.hstack([plain["lpq"], plain["phog"]])), rtol=1e-6)
