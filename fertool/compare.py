"""Compare hand-crafted baselines, FaceNet features and fine-tuned runs on the same faces and
splits.

::

    from fertool.compare import CompareConfig, run_comparison

    outcome = run_comparison(CompareConfig(data="sfew-675", out="baselines/x", protocol="movie"))
    for r in outcome.results:
        print(r.method, r.status, r.accuracy_mean)

What one comparison does, in order:

1. discover the dataset and make the protocol's splits (:func:`fertool.data.dataset.make_splits`);
2. run the face stage once over every image (:func:`fertool.faces.stage.face_crops`, cached on
   disk), so every method sees the same aligned crops;
3. compute each feature source once for all crops: LPQ, PHOG (both label-free, so computing them
   on every face is leak-free), FaceNet embeddings and pooled features;
4. for every method and every split, fit a named head
   (:func:`fertool.evaluate.classify.fit_head`) on the training part only, its hyperparameters
   chosen by cross-validation inside that training part, grouped like the outer protocol, then
   predict the test part (the predictions are kept for the report's bootstrap intervals and
   paired differences);
5. evaluate fine-tuned runs (``fertool finetune`` folders) on the test part of the split they were
   trained on, when that split is one of this comparison's splits; otherwise list them as not
   comparable, with the reason;
6. write ``report.md``, ``report.json`` and one confusion matrix PNG per method (summed over the
   test parts) with :func:`fertool.evaluate.report.write_report`.

A method that cannot run (weights unavailable, a run on another split) is kept in the results
with ``status != "ok"`` and a reason; nothing is dropped silently. This module never prints: it
logs, and shows tqdm progress bars on stderr when ``progress`` is true.

Method names
------------
``lpq``, ``phog``, ``lpq+phog``
    Descriptor, then the descriptor head (default ``svm-rbf``).
``facenet``, ``facenet-pool``
    The 512-d FaceNet embedding, or the 1792-d average pool before the bottleneck, then each head
    of ``heads``; reported as ``facenet-<weights>/<head>`` and ``facenet-<weights>-pool/<head>``.
``SOURCE/HEAD`` (or ``SOURCE-HEAD``)
    One source with one head, for example ``lpq/logreg``, ``facenet/pca+svm-rbf``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.core.labels import LABELS
from fertool.evaluate.report import MethodResult
from fertool.faces.config import FaceConfig
from fertool.features.backbone_sources import (
    BACKBONE_SOURCES,
    ZEROSHOT_HEAD,
    ZEROSHOT_METHODS,
    backbone_features,
    expand_sources,
    fuse,
    fusion_parts,
    zeroshot_predict,
)

log = logging.getLogger(__name__)

DESCRIPTOR_SOURCES = ("lpq", "phog", "lpq+phog")
FACENET_LAYERS = {"facenet": "embedding", "facenet-pool": "pool"}
SOURCES = (*DESCRIPTOR_SOURCES, *FACENET_LAYERS, *BACKBONE_SOURCES)
DEFAULT_METHODS = ("lpq", "phog", "lpq+phog", "facenet", "facenet-pool")
DEFAULT_HEADS = ("svm-rbf", "svm-linear", "logreg", "knn")
#: Split seeds when none are given: the paper protocol repeats its 50/50 split over three seeds,
#: the movie protocol draws five random 2-fold partitions of the movies (10 test parts);
#: ``movie-legacy`` keeps its one recorded seed.
DEFAULT_SEEDS = {"paper": (0, 1, 2), "movie": (0, 1, 2, 3, 4), "kfold": (0,),
                 "movie-legacy": (0,), "fixed": (0,)}
FEATURE_MAPS = ("none", "sqrt")
#: Crops per chunk when computing descriptors (bounds memory, drives the progress bar).
_CHUNK = 64


class UnknownMethodError(FertoolError, ValueError):
    """A method name that is not a known source, ``SOURCE/HEAD`` or ``SOURCE-HEAD``."""


@dataclass(frozen=True)
class DescriptorSettings:
    """Parameters of the hand-crafted descriptors (see ``docs/baselines-spec.md``).

    Attributes
    ----------
    lpq_size, phog_size : int
        Side of the grey face the descriptor sees (crops are resized, anti-aliased).
    lpq_grid : (int, int)
        LPQ cells (rows, columns); one 256-bin histogram per cell.
    lpq_window : int
        LPQ window (odd).
    phog_bins, phog_levels, phog_angle : int
        PHOG orientation bins, pyramid levels above level 0, orientation range (360 or 180).
    feature_map : {"none", "sqrt"}
        Map applied to every histogram before the head: ``sqrt`` is the Hellinger map (a linear or
        RBF kernel on square-rooted histograms compares them like the Hellinger kernel). It is a
        fixed per-sample function, nothing is fitted, so applying it to all faces is leak-free.

    The defaults (descriptors on the full 160-px crop, LPQ in 8x8 cells, 12 PHOG bins, Hellinger
    map) were chosen on SFEW-675 by the inner cross-validation accuracy inside the training parts
    of both protocols, never by test accuracy; ``baselines/README.md`` has the table. The
    reference implementations' usual face settings are 64 px, 4x4 cells, 8 bins, no map.
    """

    lpq_size: int = 160
    lpq_grid: tuple[int, int] = (8, 8)
    lpq_window: int = 7
    phog_size: int = 160
    phog_bins: int = 12
    phog_levels: int = 3
    phog_angle: int = 360
    feature_map: str = "sqrt"

    def __post_init__(self) -> None:
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"feature_map must be one of {', '.join(FEATURE_MAPS)}, got {self.feature_map!r}"
            )
        object.__setattr__(self, "lpq_grid", tuple(int(g) for g in self.lpq_grid))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lpq_grid"] = list(self.lpq_grid)
        return d


@dataclass(frozen=True)
class MethodPlan:
    """One row of the comparison: a feature source and a head."""

    name: str
    source: str
    head: str


@dataclass
class CompareConfig:
    """Everything that defines a comparison (recorded in its report).

    ``seeds=None`` takes the protocol's default (:data:`DEFAULT_SEEDS`); ``n_folds=None`` the
    protocol's (2 for movie, 5 for kfold). ``face`` is the face stage's
    :class:`~fertool.faces.config.FaceConfig`. ``cv`` is the number of inner folds of the
    hyperparameter search.
    """

    data: str
    out: str
    protocol: str = "movie"
    seeds: tuple[int, ...] | None = None
    n_folds: int | None = None
    group: str = "sfew"
    methods: tuple[str, ...] = DEFAULT_METHODS
    heads: tuple[str, ...] = DEFAULT_HEADS
    descriptor_head: str = "svm-rbf"
    descriptors: DescriptorSettings = field(default_factory=DescriptorSettings)
    weights: str = "casia-webface"
    finetuned: tuple[str, ...] = ()
    face: FaceConfig = field(default_factory=FaceConfig)
    cache_dir: str | None = None
    cv: int = 3
    device: str | None = None
    batch_size: int = 32
    force: bool = False
    n_boot: int = 2000
    #: The ``fixed`` protocol's parts: rules REGEX=PART or a preset, or a CSV (path,part).
    split_regex: str | None = None
    split_csv: str | None = None

    def fixed_spec(self):
        """The :class:`fertool.data.fixed.FixedSpec` of ``protocol="fixed"`` (else None)."""
        from fertool.data.fixed import FixedSpec

        if self.protocol != "fixed":
            if self.split_regex or self.split_csv:
                raise ValueError("`split_regex` and `split_csv` need protocol='fixed'")
            return None
        return FixedSpec(self.split_regex, self.split_csv)

    def resolved_seeds(self) -> tuple[int, ...]:
        return tuple(self.seeds) if self.seeds else DEFAULT_SEEDS.get(self.protocol, (0,))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["descriptors"] = self.descriptors.to_dict()
        d["face"] = self.face.to_dict()
        d["seeds"] = list(self.resolved_seeds())
        return d


@dataclass
class CompareOutcome:
    """What :func:`run_comparison` produced."""

    out: Path
    report_md: Path
    report_json: Path
    results: list[MethodResult]
    split_hash: str
    n_faces: int
    n_fallback: int
    seconds: float
    figures: dict[str, str] = field(default_factory=dict)

    def best(self) -> MethodResult | None:
        """The most accurate method among those scored on every test part."""
        return best_result(self.results)


# ------------------------------------------------------------------------------------------
# Method names


def weights_label(weights: str | None) -> str:
    """Short name of a ``--weights`` value for method names: the name, ``none``, or a file stem."""
    from fertool.models.weights import NONE_NAMES, PRETRAINED

    if weights is None or str(weights).lower() in NONE_NAMES:
        return "none"
    if weights in PRETRAINED:
        return str(weights)
    return Path(str(weights)).stem or "file"


def _split_method(item: str) -> tuple[str, str | None]:
    """``SOURCE``, ``SOURCE/HEAD`` or ``SOURCE-HEAD`` -> (source, head or None)."""
    from fertool.evaluate.classify import head_names

    if "/" in item:
        source, head = item.split("/", 1)
        return source, head
    if item in SOURCES or item in ZEROSHOT_METHODS:
        return item, None
    for source in sorted(SOURCES, key=len, reverse=True):
        if item.startswith(source + "-") and item[len(source) + 1:] in head_names():
            return source, item[len(source) + 1:]
    return item, None


def plan_methods(
    methods: tuple[str, ...] | list[str],
    heads: tuple[str, ...] | list[str] = DEFAULT_HEADS,
    weights: str | None = "casia-webface",
    descriptor_head: str = "svm-rbf",
) -> list[MethodPlan]:
    """Expand method names into rows (source, head, report name), without duplicates.

    Raises
    ------
    UnknownMethodError
        For an unknown source; :class:`fertool.evaluate.classify.UnknownHeadError` for an unknown
        head.
    """
    from fertool.evaluate.classify import make_head

    w = weights_label(weights)
    plans: list[MethodPlan] = []
    for head in (*heads, descriptor_head):
        make_head(head)  # fail early, with the list of known heads
    for item in methods:
        item = item.strip()
        if not item:
            continue
        source, head = _split_method(item)
        if source in ZEROSHOT_METHODS and head is None:  # no head: the backbone's own classifier
            if all(p.name != item for p in plans):
                plans.append(MethodPlan(item, ZEROSHOT_METHODS[source], ZEROSHOT_HEAD))
            continue
        fused = fusion_parts(source, SOURCES) is not None
        if source not in SOURCES and not fused:
            raise UnknownMethodError(
                f"unknown method {item!r}; known: {', '.join(SOURCES)}, optionally with a head "
                f"as SOURCE/HEAD (for example facenet/logreg, lpq/svm-linear), fusions A+B "
                f"(facenet-pool+minixception), and {', '.join(ZEROSHOT_METHODS)}"
            )
        if head is not None:
            make_head(head)
        if source in DESCRIPTOR_SOURCES:
            chosen = [head or descriptor_head]
            names = [source if head is None else f"{source}/{h}" for h in chosen]
        elif fused or source in BACKBONE_SOURCES:
            chosen = [head] if head else list(heads)
            names = [f"{source}/{h}" for h in chosen]
        else:
            chosen = [head] if head else list(heads)
            suffix = "-pool" if source == "facenet-pool" else ""
            names = [f"facenet-{w}{suffix}/{h}" for h in chosen]
        for name, h in zip(names, chosen):
            if all(p.name != name for p in plans):
                plans.append(MethodPlan(name, source, h))
    if not plans:
        raise UnknownMethodError("no methods given; for example --methods lpq,phog,facenet")
    return plans


# ------------------------------------------------------------------------------------------
# Features


def _feature_map(X: np.ndarray, kind: str) -> np.ndarray:
    return np.sqrt(np.maximum(X, 0.0)) if kind == "sqrt" else X


def _descriptor_transformers(settings: DescriptorSettings) -> dict:
    from fertool.features.descriptors import LPQTransformer, PHOGTransformer

    s = settings
    return {
        "lpq": LPQTransformer(size=s.lpq_size, grid=s.lpq_grid, window=s.lpq_window),
        "phog": PHOGTransformer(size=s.phog_size, bins=s.phog_bins, levels=s.phog_levels,
                                angle=s.phog_angle),
    }


def check_descriptors(settings: DescriptorSettings) -> None:
    """Raise ValueError now, before the face stage, when a descriptor setting cannot work."""
    blank = np.zeros((1, 16, 16), np.uint8)
    for name, transformer in _descriptor_transformers(settings).items():
        try:
            transformer.transform(blank)
        except ValueError as exc:
            raise ValueError(f"{name} settings: {exc}") from None


def descriptor_features(
    crops: np.ndarray, sources: set[str], settings: DescriptorSettings, progress: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """LPQ / PHOG features of every crop (computed once, in chunks, with a progress bar).

    Returns the features of each requested source (``lpq+phog`` is the two concatenated) and the
    seconds each descriptor took.
    """
    from tqdm import tqdm

    s = settings
    needed = {d for d in ("lpq", "phog") if d in sources or "lpq+phog" in sources}
    transformers = _descriptor_transformers(settings)
    feats: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name in ("lpq", "phog"):
        if name not in needed:
            continue
        t0 = time.perf_counter()
        parts = []
        with tqdm(total=len(crops), desc=name, unit="face", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, len(crops), _CHUNK):
                chunk = crops[start:start + _CHUNK]
                parts.append(transformers[name].transform(chunk).astype(np.float32))
                bar.update(len(chunk))
        X = np.concatenate(parts) if parts else np.zeros((0, transformers[name]._n_features_out))
        feats[name] = _feature_map(X, s.feature_map)
        seconds[name] = time.perf_counter() - t0
        log.info("%s: %s features in %.1f s", name, feats[name].shape, seconds[name])
    if "lpq+phog" in sources:
        feats["lpq+phog"] = np.hstack([feats["lpq"], feats["phog"]])
    return {k: v for k, v in feats.items() if k in sources}, seconds


def facenet_features(
    crops: np.ndarray,
    layers: list[str],
    weights: str | None,
    *,
    device: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
):
    """FaceNet features of every crop for each layer (``embedding``, ``pool``).

    Returns ``(features by layer, WeightsInfo or None, seconds)``.

    Raises
    ------
    WeightsUnavailableError, WeightsFormatError
        From :func:`fertool.models.fernet.create_model`.
    """
    from fertool.features.embed import embed_crops
    from fertool.models.fernet import create_model

    t0 = time.perf_counter()
    from fertool.core.env import default_device

    model, info = create_model(weights, device=default_device(device))
    out = {
        layer: embed_crops(model, crops, layer=layer, batch_size=batch_size, progress=progress)
        for layer in layers
    }
    return out, info, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
# Evaluation


def _inner_groups(protocol: str, groups: np.ndarray) -> np.ndarray | None:
    """Groups for the inner CV, grouped like the outer protocol (none for the paper's split)."""
    if protocol == "paper" or len(set(groups.tolist())) == len(groups):
        return None
    return groups


def best_result(results: list[MethodResult]) -> MethodResult | None:
    """The most accurate ``ok`` result among those covering the most test parts."""
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return None
    most = max(r.n_folds for r in ok)
    return max((r for r in ok if r.n_folds == most), key=lambda r: r.accuracy_mean)


def paired_comparisons(results: list[MethodResult], n_boot: int = 2000,
                       seed: int = 0) -> dict | None:
    """The best method (:func:`best_result`) minus each other method with test predictions, on
    the test parts both were scored on, with group-bootstrap intervals
    (:func:`fertool.evaluate.uncertainty.paired_difference`). None without a best with
    predictions."""
    from fertool.evaluate.uncertainty import paired_difference

    best = best_result(results)
    if best is None or not best.predictions:
        return None
    by_split = {f.split: f for f in best.predictions}
    against = []
    for r in results:
        if r is best or r.status != "ok":
            continue
        if not r.predictions:
            against.append({"method": r.method, "n_parts": 0, "accuracy": None,
                            "macro_f1": None, "distinguishable": False,
                            "note": "no per-image predictions (scores taken from a report)"})
            continue
        mine = [f for f in r.predictions if f.split in by_split]
        d = paired_difference([by_split[f.split] for f in mine], mine, len(LABELS),
                              n_boot=n_boot, seed=seed)
        against.append({"method": r.method, "n_parts": len(mine), **d})
    return {"best": best.method, "n_parts": best.n_folds, "n_boot": n_boot, "seed": seed,
            "difference": "best minus method, on the same test images", "against": against}


def _summarise(
    name: str, folds: list[dict], evals: list, details: dict, seconds: float,
    predictions: list | None = None,
) -> MethodResult:
    from fertool.evaluate.metrics import summarise

    s = summarise(evals)
    return MethodResult(
        method=name,
        accuracy_mean=s["accuracy_mean"],
        accuracy_std=s["accuracy_std"],
        macro_f1=s["macro_f1_mean"],
        macro_f1_std=s["macro_f1_std"],
        per_class_recall={k: v for k, v in s["per_class_recall_mean"].items() if v is not None},
        n_folds=s["n_runs"],
        seconds=round(seconds, 2),
        details={**details, "confusion_sum": s["confusion_sum"], "labels": s["labels"],
                 "n_test_total": s["n_total"]},
        folds=folds,
        predictions=predictions,
    )


def evaluate_plan(
    plan: MethodPlan,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    parts: list[tuple[Any, np.ndarray, np.ndarray]],
    *,
    cv: int = 3,
    bar=None,
    test_groups: np.ndarray | None = None,
    val_parts: dict[str, np.ndarray] | None = None,
) -> MethodResult:
    """Fit ``plan.head`` on each training part (inner CV inside it) and score its test part.

    Above :data:`fertool.evaluate.classify.LARGE_DATA` training samples the head is replaced by
    one that scales (:func:`fertool.evaluate.classify.scalable_head`; recorded per fold as
    ``head``). ``val_parts`` (split hash -> validation rows, the dataset's own validation part)
    makes the head's selection use that part instead of the inner CV.

    ``parts`` holds ``(split, train_rows, test_rows)`` with rows into ``X``; ``groups`` (rows of
    ``X``) makes the inner CV grouped. The test rows never reach :func:`fit_head`.
    ``test_groups`` (rows of ``X``; default ``groups``, else every row its own group) are the
    units the report's bootstrap resamples.
    """
    from threadpoolctl import threadpool_limits

    from fertool.evaluate.classify import fit_head, scalable_head
    from fertool.evaluate.metrics import evaluate
    from fertool.evaluate.uncertainty import FoldPredictions

    t0 = time.perf_counter()
    folds, evals, predictions = [], [], []
    if test_groups is None:
        test_groups = groups if groups is not None else np.arange(len(y)).astype(str)
    for split, tr, te in parts:
        # libsvm's RBF kernel calls BLAS ddot once per pair of samples; a threaded BLAS turns each
        # call into a thread hand-off, which made the LPQ fits several times slower here.
        if plan.head == ZEROSHOT_HEAD:  # the backbone's own classifier: nothing is fitted
            fitted = _Unfitted()
            pred = zeroshot_predict(X[te], LABELS)
        else:
            head = scalable_head(plan.head, len(tr))
            va = (val_parts or {}).get(split.hash)
            selection = {"validation": (X[va], y[va])} if va is not None and len(va) else {}
            # libsvm: one thread (above); the scalable heads' matrix products want all of them
            with threadpool_limits(limits=1 if head == plan.head else None, user_api="blas"):
                fitted = fit_head(head, X[tr], y[tr], None if groups is None else groups[tr],
                                  cv=cv, seed=split.seed, **selection)
                pred = fitted.predict(X[te])
        res = evaluate(y[te], pred, LABELS)
        evals.append(res)
        predictions.append(FoldPredictions(split.name, y[te], np.asarray(pred), test_groups[te]))
        folds.append({
            "split": split.name, "hash": split.hash, "n_train": len(tr), "n_test": res.n,
            "accuracy": res.accuracy, "macro_f1": res.macro_f1,
            "best_params": {k: v for k, v in fitted.best_params_.items()},
            "inner_cv_accuracy": fitted.cv_score_,
        })
        if plan.head != ZEROSHOT_HEAD and (head != plan.head or selection):
            folds[-1]["head"] = head
            if selection:
                folds[-1]["selected_on"] = f"validation part ({len(va)} images)"
                folds[-1]["validation_accuracy"] = folds[-1].pop("inner_cv_accuracy")
        if bar is not None:
            bar.update(1)
    details = {"source": plan.source, "head": plan.head, "features": int(X.shape[1]),
               "inner_cv": {"folds": cv, "grouped": groups is not None}}
    return _summarise(plan.name, folds, evals, details, time.perf_counter() - t0, predictions)


class _Unfitted:
    """What a zero-shot method reports where a fitted head reports its search."""

    def __init__(self):
        self.best_params_: dict = {}
        self.cv_score_ = None


def _unavailable(name: str, reason: str, status: str = "unavailable", **details) -> MethodResult:
    # one line: the reason goes into a Markdown table cell
    return MethodResult(method=name, status=status, reason=" ".join(str(reason).split()),
                        details=dict(details))


# ------------------------------------------------------------------------------------------
# Fine-tuned runs


@dataclass
class _RunInfo:
    run_dir: Path
    method: str
    split_hash: str
    protocol: str
    report: dict


def _read_run(run_dir: Path) -> _RunInfo:
    from fertool.train.rundir import RunDir

    report = RunDir(run_dir).read_report()
    return _RunInfo(run_dir, str(report["results"][0]["method"]), str(report["split_hash"]),
                    str(report.get("protocol", "?")), report)


def _finetuned_predictions(
    run_dir: Path, crops: np.ndarray, device: str | None
) -> tuple[np.ndarray, dict]:
    """Predicted label ids of ``crops`` by the run's ``best.pt``, and what was loaded."""
    from fertool.core.env import default_device
    from fertool.models.inference import predict_proba
    from fertool.train.rundir import RunDir

    device = default_device(device)
    rd = RunDir(run_dir)
    run = rd.load_best(device)
    pre = run.preprocessing
    if tuple(run.labels) != tuple(LABELS):
        raise FertoolError(f"{run_dir}: the model's labels {list(run.labels)} are not fertool's 7")
    if pre.resize is None and crops.shape[1] != pre.size:  # a resizing model takes any side
        raise FertoolError(
            f"{run_dir}: the model expects {pre.size}px crops, "
            f"this comparison has {crops.shape[1]}px"
        )
    tta = bool(run.config.get("tta_flip", False))
    proba = predict_proba(run.model, pre.to_tensor(crops), tta_flip=tta, device=device)
    info = {"checkpoint": str(rd.best_path), "epoch": run.epoch,
            "tta_flip": tta, "face": pre.face.to_dict() if pre.face else None}
    return proba.argmax(1), info


def _finetuned_fold(run: _RunInfo, split, te, y, crops, face_config, device) -> dict:
    """One test part of a run: re-evaluated from ``best.pt``, else its own report.json numbers.

    Raises FertoolError when a checkpoint exists but cannot be used.
    """
    from fertool.evaluate.metrics import evaluate
    from fertool.train.rundir import RunDir

    reported = run.report["results"][0]
    fold = {"split": split.name, "hash": split.hash, "run_dir": str(run.run_dir),
            "reported_accuracy": reported.get("accuracy_mean")}
    if not RunDir(run.run_dir).has_best():
        # Same split hash, so the same test images; the run scored them on its own crops.
        return {**fold, "evaluated_from": "report.json", "n_test": len(te),
                "accuracy": reported["accuracy_mean"], "macro_f1": reported["macro_f1"],
                "per_class_recall": dict(reported.get("per_class_recall") or {})}
    pred, info = _finetuned_predictions(run.run_dir, crops[te], device)
    res = evaluate(y[te], pred, LABELS)
    info["_pred"] = pred  # taken out by finetuned_results (for the bootstrap), never written
    if info["face"] and info["face"] != face_config:
        info["note"] = "the run was trained on crops made with other face settings"
    return {**fold, "evaluated_from": "best.pt", "n_test": res.n, "accuracy": res.accuracy,
            "macro_f1": res.macro_f1, "per_class_recall": res.per_class_recall,
            "confusion": res.confusion.tolist(), **info}


def _finetuned_row(name: str, folds: list[dict], n_splits: int, seconds: float,
                   predictions: list | None = None) -> MethodResult:
    """Mean +- std over the test parts a method's runs cover (as :func:`_summarise` does)."""
    def mean_std(key):
        v = np.array([f[key] for f in folds], dtype=float)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    acc, acc_std = mean_std("accuracy")
    f1, f1_std = mean_std("macro_f1")
    recall = {}
    for label in LABELS:
        vals = [f["per_class_recall"].get(label) for f in folds]
        vals = [v for v in vals if v is not None and not np.isnan(v)]
        if vals:
            recall[label] = float(np.mean(vals))
    details = {"source": "finetuned", "runs": [f["run_dir"] for f in folds],
               "covers": f"{len(folds)} of {n_splits} test parts",
               "evaluated_from": sorted({f["evaluated_from"] for f in folds})}
    if all("confusion" in f for f in folds):
        details["confusion_sum"] = np.sum([f["confusion"] for f in folds], axis=0).tolist()
        details["labels"] = list(LABELS)
    return MethodResult(method=name, accuracy_mean=acc, accuracy_std=acc_std, macro_f1=f1,
                        macro_f1_std=f1_std, per_class_recall=recall, n_folds=len(folds),
                        seconds=round(seconds, 2), details=details, folds=folds,
                        predictions=predictions if predictions and len(predictions) == len(folds)
                        else None)


def finetuned_results(
    run_dirs: list[str | Path],
    split_parts: dict[str, tuple[Any, np.ndarray, np.ndarray]],
    y: np.ndarray,
    crops: np.ndarray,
    face_config: dict,
    *,
    device: str | None = None,
    bar=None,
    groups: np.ndarray | None = None,
) -> list[MethodResult]:
    """Fine-tuned run folders, scored on the test part of their own split.

    ``split_parts`` maps a split hash to ``(split, train_rows, test_rows)``. A run whose split is
    among them is re-evaluated from its ``best.pt`` on this comparison's crops, or, when the folder
    holds no checkpoint (a recorded copy), takes the test scores of its own report.json (same
    split hash, so the same test images; no confusion matrix then). Runs of one method on several
    folds of the protocol are combined into one row. Any other run is listed as not comparable,
    named ``METHOD@FOLDER``.
    """
    from fertool.evaluate.uncertainty import FoldPredictions

    rows: dict[str, list[dict]] = {}
    preds: dict[str, list] = {}
    seconds: dict[str, float] = {}
    if groups is None:
        groups = np.arange(len(y)).astype(str)
    out: list[MethodResult] = []
    for run_dir in map(Path, run_dirs):
        if bar is not None:
            bar.update(1)
        try:
            run = _read_run(run_dir)
        except FertoolError as exc:
            out.append(_unavailable(f"finetuned:{run_dir.name}", str(exc), status="failed",
                                    run_dir=str(run_dir)))
            continue
        if run.split_hash not in split_parts:
            known = ", ".join(f"{p[0].name}={h}" for h, p in split_parts.items())
            out.append(_unavailable(
                f"{run.method}@{run_dir.name}",
                f"not comparable: {run_dir} was trained and tested on split {run.split_hash} "
                f"({run.protocol} protocol), "
                f"which is not one of this comparison's splits ({known})",
                run_dir=str(run_dir), split_hash=run.split_hash,
            ))
            continue
        split, _, te = split_parts[run.split_hash]
        t0 = time.perf_counter()
        try:
            fold = _finetuned_fold(run, split, te, y, crops, face_config, device)
        except FertoolError as exc:
            out.append(_unavailable(
                f"{run.method}@{run_dir.name}",
                f"cannot re-evaluate on this comparison's crops: {exc}", status="failed",
                run_dir=str(run_dir),
                reported_accuracy=run.report["results"][0].get("accuracy_mean"),
            ))
            continue
        key = run.method
        if any(f["hash"] == split.hash for f in rows.get(key, [])):
            key = f"{run.method}@{run_dir.name}"  # a second run of the method on the same part
        rows.setdefault(key, []).append(fold)
        if "_pred" in fold:
            preds.setdefault(key, []).append(
                FoldPredictions(split.name, y[te], fold.pop("_pred"), groups[te]))
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0
    n_splits = len(split_parts)
    return [_finetuned_row(k, folds, n_splits, seconds[k], preds.get(k))
            for k, folds in rows.items()] + out


# ------------------------------------------------------------------------------------------
# The whole comparison


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_")


def _check_out(out: Path, force: bool) -> None:
    from fertool.core.io import check_writable

    for name in ("report.md", "report.json"):
        check_writable(out / name, force)


def _prepare_faces(manifest, face_cfg, cache_dir, progress):
    from fertool.faces.stage import face_crops

    crops, records = face_crops([str(p) for p in manifest.paths], face_cfg, cache_dir=cache_dir,
                                progress=progress)
    has_crop = np.array([r.crop is not None for r in records], dtype=bool)
    row_of = np.full(len(manifest), -1, dtype=np.int64)
    row_of[has_crop] = np.arange(int(has_crop.sum()))
    stats = {
        "images": len(records),
        "detected": sum(r.status == "ok" for r in records),
        "given_as_crop": sum(r.status == "crop" for r in records),
        "fallback_centre_crop": sum(r.status == "fallback" for r in records),
        "skipped": [(r.path, r.message or r.status) for r in records if r.crop is None],
    }
    return crops, row_of, stats


def _all_features(
    cfg: CompareConfig, plans, crops, progress, timings
) -> tuple[dict, Any, str | None]:
    """Every feature source the plans need, once for all crops; the weights used (or why not)."""
    from fertool.core.errors import WeightsFormatError, WeightsUnavailableError

    asked = {p.source for p in plans}
    sources = expand_sources(asked, SOURCES)
    features, seconds = descriptor_features(crops, sources & set(DESCRIPTOR_SOURCES),
                                            cfg.descriptors, progress)
    timings.update({f"{k} features": v for k, v in seconds.items()})
    if sources & set(BACKBONE_SOURCES):
        try:
            more, used, secs = backbone_features(crops, sources, device=cfg.device,
                                                 batch_size=cfg.batch_size, progress=progress)
            features.update(more)
            timings["backbone features"] = secs
            log.info("backbone weights: %s", used)
        except (WeightsUnavailableError, WeightsFormatError) as exc:
            log.warning("backbone methods not run: %s", exc)
    layers = [FACENET_LAYERS[s] for s in FACENET_LAYERS if s in sources]
    if not layers:
        features.update(fuse(features, asked, SOURCES))
        return features, "not used", None
    try:
        by_layer, info, secs = facenet_features(crops, layers, cfg.weights, device=cfg.device,
                                                batch_size=cfg.batch_size, progress=progress)
    except (WeightsUnavailableError, WeightsFormatError) as exc:
        log.warning("FaceNet methods not run: %s", exc)
        return (
            features,
            {"name": str(cfg.weights), "error": str(exc)},
            f"weights unavailable: {exc}",
        )
    timings["facenet features"] = secs
    features.update(
        {src: by_layer[layer] for src, layer in FACENET_LAYERS.items() if layer in by_layer}
    )
    features.update(fuse(features, asked, SOURCES))
    if info is None:
        return features, {"name": "none", "note": "random initialisation"}, None
    return features, {"name": info.name, "sha256": info.sha256, "source": info.source}, None


def _fit_all(cfg, plans, features, missing_reason, y, inner_groups, parts, crops, face_config,
             progress, groups=None, val_parts=None) -> list[MethodResult]:
    """One result per plan (or the reason it could not run), then the fine-tuned runs."""
    from tqdm import tqdm

    results: list[MethodResult] = []
    n_fits = sum(len(parts) for p in plans if p.source in features) + len(cfg.finetuned)
    with tqdm(total=n_fits, desc="fit + test", unit="fit", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        for plan in plans:
            if plan.source not in features:
                results.append(_unavailable(plan.name, missing_reason or "features not computed",
                                            source=plan.source, head=plan.head))
                continue
            bar.set_postfix_str(plan.name)
            try:
                results.append(evaluate_plan(plan, features[plan.source], y, inner_groups, parts,
                                             cv=cfg.cv, bar=bar, test_groups=groups,
                                             val_parts=val_parts))
            except (FertoolError, ValueError) as exc:
                log.warning("%s failed: %s", plan.name, exc)
                results.append(_unavailable(plan.name, str(exc), status="failed",
                                            source=plan.source, head=plan.head))
        if cfg.finetuned:
            by_hash = {part[0].hash: part for part in parts}
            results += finetuned_results(list(cfg.finetuned), by_hash, y, crops, face_config,
                                         device=cfg.device, bar=bar, groups=groups)
    return results


def _confusion_figures(results: list[MethodResult], out: Path, protocol: str) -> dict[str, str]:
    from fertool.core.io import save_figure
    from fertool.evaluate.metrics import plot_confusion

    figures: dict[str, str] = {}
    for r in results:
        if r.status != "ok" or "confusion_sum" not in r.details:
            continue  # a recorded fine-tuning copy without checkpoint has no confusion matrix here
        fname = f"confusion_{_slug(r.method)}.png"
        title = f"{r.method}: {protocol}, summed over {r.n_folds} test part(s)"
        save_figure(
            plot_confusion(np.array(r.details["confusion_sum"]), LABELS, title), out / fname
        )
        figures[f"{r.method} (summed over {r.n_folds} test parts)"] = fname
    return figures


def run_comparison(cfg: CompareConfig, *, progress: bool = True) -> CompareOutcome:
    """Run a comparison and write its report folder (see the module docstring).

    Raises
    ------
    FertoolError
        Before any work, when the report files exist and ``cfg.force`` is false, or the dataset,
        a method, a head or a descriptor setting is unusable.
    """
    from fertool.core.env import versions
    from fertool.data.dataset import discover, make_splits, splits_hash
    from fertool.evaluate.report import add_uncertainty, command_line, write_report

    t_start = time.perf_counter()
    out = Path(cfg.out)
    _check_out(out, cfg.force)
    plans = plan_methods(cfg.methods, cfg.heads, cfg.weights, cfg.descriptor_head)
    if any(p.source in DESCRIPTOR_SOURCES for p in plans):
        try:
            check_descriptors(cfg.descriptors)
        except ValueError as exc:
            raise FertoolError(str(exc)) from None
    seeds = cfg.resolved_seeds()
    manifest = discover(cfg.data, group=cfg.group)
    try:
        fixed = cfg.fixed_spec()
    except ValueError as exc:
        raise FertoolError(str(exc)) from None
    splits = make_splits(manifest, cfg.protocol, seeds=seeds, n_folds=cfg.n_folds, fixed=fixed)
    split_hash = splits_hash(splits)
    face_cfg = cfg.face

    timings: dict[str, float] = {}
    crops, row_of, face_stats = _prepare_faces(manifest, face_cfg, cfg.cache_dir, progress)
    timings["faces"] = time.perf_counter() - t_start
    y = manifest.y[row_of >= 0]
    inner_groups = _inner_groups(cfg.protocol, manifest.groups[row_of >= 0])
    parts = []  # (split, train rows, test rows), rows into `crops`
    val_parts = {}  # split hash -> validation rows (the dataset's own validation part)
    for split in splits:
        tr, te = row_of[split.train], row_of[split.test]
        parts.append((split, tr[tr >= 0], te[te >= 0]))
        if split.val is not None and len(split.val):
            va = row_of[split.val]
            val_parts[split.hash] = va[va >= 0]

    features, weights_meta, missing = _all_features(cfg, plans, crops, progress, timings)
    groups = manifest.groups[row_of >= 0]
    results = _fit_all(cfg, plans, features, missing, y, inner_groups, parts, crops,
                       face_cfg.to_dict(), progress, groups=groups, val_parts=val_parts)
    t_boot = time.perf_counter()
    add_uncertainty(results, n_boot=cfg.n_boot)
    comparisons = paired_comparisons(results, n_boot=cfg.n_boot)
    timings["bootstrap"] = time.perf_counter() - t_boot
    timings["fit + test"] = sum(r.seconds or 0.0 for r in results)
    figures = _confusion_figures(results, out, cfg.protocol)

    counts = np.bincount(y, minlength=len(LABELS))
    timings["total"] = time.perf_counter() - t_start
    meta = {
        "data": str(cfg.data),
        **({"fixed_split": fixed.describe()} if fixed is not None else {}),
        "seeds": list(seeds),
        "n_splits": len(splits),
        "splits": [{"name": s.name, "hash": s.hash, "n_train": len(tr), "n_test": len(te),
                    **({"n_val": len(val_parts[s.hash])} if s.hash in val_parts else {})}
                   for s, tr, te in parts],
        "weights": weights_meta,
        "faces": {"images": face_stats["images"], "detected": face_stats["detected"],
                  "fallback_centre_crop": face_stats["fallback_centre_crop"],
                  "skipped": len(face_stats["skipped"]),
                  **({"given_as_crop": face_stats["given_as_crop"]}
                     if face_stats["given_as_crop"] else {})},
        "face_fallbacks": face_stats["fallback_centre_crop"],
        "face_config": face_cfg.to_dict(),
        "descriptors": cfg.descriptors.to_dict(),
        "descriptor_head": cfg.descriptor_head,
        "heads": list(cfg.heads),
        "inner_cv": ({"folds": cfg.cv, "grouped": inner_groups is not None,
                      "scoring": "accuracy", "on": "training part of each split only"}
                     if not val_parts else
                     {"folds": 0, "scoring": "accuracy",
                      "on": "the dataset's own validation part (each candidate fitted once on "
                            "the training part)"}),
        "large_data": _large_data_meta(parts),
        "bootstrap": {"replicates": cfg.n_boot, "seed": 0, "level": 0.95,
                      "resamples": f"the {len(set(groups.tolist()))} groups of the test parts "
                                   f"({'movies' if cfg.group == 'sfew' else cfg.group})"},
        "chance_largest_class": round(float(counts.max() / max(1, counts.sum())), 4),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "command": command_line(),
        "versions": versions(),
    }
    if face_stats["skipped"]:
        meta["skipped_images"] = face_stats["skipped"]
    md, js = write_report(
        out, title=f"Baselines on {Path(cfg.data).name}: {cfg.protocol} protocol",
        protocol=cfg.protocol, split_hash=split_hash, results=results, meta=meta,
        notes=_notes(cfg, seeds, splits, results, face_stats, meta["chance_largest_class"],
                     fixed=fixed, val_parts=val_parts, large=meta["large_data"]),
        images=figures, comparisons=comparisons, n_boot=cfg.n_boot,
    )
    n_ok = sum(r.status == "ok" for r in results)
    log.info("comparison done: %d of %d methods ran, %.1f s", n_ok, len(results), timings["total"])
    return CompareOutcome(out, md, js, results, split_hash, len(crops),
                          face_stats["fallback_centre_crop"], timings["total"], figures)


def _large_data_meta(parts) -> dict:
    """Which heads were swapped for scalable ones (training parts above LARGE_DATA)."""
    from fertool.evaluate.classify import LARGE_DATA, SCALABLE

    n = max((len(tr) for _, tr, _ in parts), default=0)
    return {"threshold": LARGE_DATA, "largest_training_part": n,
            "replaced": dict(SCALABLE) if n > LARGE_DATA else {}}


def _notes(cfg, seeds, splits, results, face_stats, chance, fixed=None, val_parts=None,
           large=None) -> list[str]:
    what = {
        "fixed": "the dataset's own parts, "
                 + (fixed.describe() if fixed is not None else "")
                 + (f"; train {len(splits[0].train)}, validation "
                    f"{0 if splits[0].val is None else len(splits[0].val)}, test "
                    f"{len(splits[0].test)} images" if splits else ""),
        "paper": f"stratified 50/50 split, repeated over seeds {', '.join(map(str, seeds))}",
        "movie": f"{len(splits) // max(1, len(seeds))} folds with no movie on both sides, a new "
                 f"random class-balanced partition of the movies for each of the seeds "
                 f"{', '.join(map(str, seeds))} ({len(splits)} test parts)",
        "movie-legacy": f"{len(splits)} folds with no movie on both sides, fertool's former "
                        f"movie splitter (seed {', '.join(map(str, seeds))}; barely changes "
                        "with the seed)",
        "kfold": f"stratified {len(splits) // max(1, len(seeds))}-fold, seeds "
                 f"{', '.join(map(str, seeds))}",
    }[cfg.protocol]
    n_crops = face_stats["images"] - len(face_stats["skipped"])
    grouped = " grouped by movie" if cfg.protocol not in ("paper", "fixed") else ""
    selection = (f"hyperparameters by {cfg.cv}-fold cross-validation inside it{grouped}"
                 if not val_parts else "hyperparameters on the dataset's own validation part "
                 "(each candidate fitted once on the training part, the best kept; no inner "
                 "cross-validation, no refit)")
    notes = [
        (f"Protocol `{cfg.protocol}`: {what}. Accuracy is the mean over the {len(splits)} test "
         "parts; macro-F1 and per-class recall (`rec.`) are means too."),
        (f"Every method sees the same {n_crops} aligned face crops "
         f"({face_stats['fallback_centre_crop']} images without a detected face use a centre "
         "crop) and the same splits. Features are computed once per face; scaler, PCA, classifier "
         f"and hyperparameters are fitted on the training part of each split only, the "
         f"{selection}."),
        f"Chance (largest class): {100 * chance:.1f}%.",
    ]
    if large and large["replaced"]:
        from fertool.evaluate.classify import HEADS

        swaps = "; ".join(f"`{a}` -> `{b}` ({HEADS[b].description})"
                          for a, b in large["replaced"].items())
        notes.append(
            f"Large data: the training part has {large['largest_training_part']:,} samples, above "
            f"{large['threshold']:,}, where the RBF SVM's grid search grows faster than "
            f"quadratically; heads were replaced by ones that scale: {swaps}. Each fold's "
            "`head` in report.json names the head fitted.")
    if cfg.face.faces == "crop":
        notes.append("Face crops: `--faces crop`: every image is taken whole as the face "
                     f"(resized to {cfg.face.size} px, grey expanded to three channels), no "
                     "detector.")
    if face_stats["skipped"]:
        notes.append(f"{len(face_stats['skipped'])} images had no usable crop and are left out of "
                     "every method's training and test parts (listed in report.json).")
    ok = {r.method: r for r in results if r.status == "ok"}
    for r in results:
        if r.details.get("source") == "finetuned" and r.status == "ok" and r.n_folds < len(splits):
            fold_names = {f["split"] for f in r.folds}
            same = []
            for other in ok.values():
                if other.details.get("source") == "finetuned":
                    continue
                accs = [f["accuracy"] for f in other.folds if f["split"] in fold_names]
                if accs:
                    same.append(f"{other.method} {100 * np.mean(accs):.1f}%")
            notes.append(
                f"`{r.method}` covers {r.n_folds} of {len(splits)} test parts "
                f"({', '.join(sorted(fold_names))}); on the same part(s): " + "; ".join(same) + "."
            )
        if "report.json" in r.details.get("evaluated_from", []):
            notes.append(
                f"`{r.method}`: the test scores of the run's own report.json (its folder holds no "
                "checkpoint to re-evaluate; same split hash, so the same test images)."
            )
    return notes


__all__ = [
    "DEFAULT_HEADS", "DEFAULT_METHODS", "DEFAULT_SEEDS", "CompareConfig", "CompareOutcome",
    "DescriptorSettings", "MethodPlan", "UnknownMethodError", "best_result", "descriptor_features",
    "evaluate_plan", "facenet_features", "finetuned_results", "paired_comparisons",
    "plan_methods", "run_comparison", "weights_label",
]
