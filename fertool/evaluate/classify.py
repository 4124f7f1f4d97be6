"""Named scikit-learn classifier heads, tuned inside the training data, saved with a checksum.

A head is a Pipeline ``StandardScaler -> [PCA(0.95, whiten)] -> classifier``, built by name:

``svm-rbf``     SVC, RBF kernel; grid over C and gamma (gamma as multiples of 1 / n_features)
``svm-linear``  SVC, linear kernel; grid over C
``logreg``      multinomial LogisticRegression; grid over C
``knn``         KNeighborsClassifier; grid over k

Heads that scale to large training sets (tens of thousands of samples, where the RBF SVM's
grid search takes days):

``linear-svm``    LinearSVC (liblinear, primal); grid over C (scales with the samples, but slow
                  with thousands of features: 66 s a fit on 500 x 4096 LPQ features here)
``nystroem-svm``  Nystroem RBF kernel map (:data:`NYSTROEM_COMPONENTS` components), then a linear
                  SVM by averaged SGD; grid over gamma and alpha
``sgd``           SGDClassifier, hinge loss, averaged (a linear SVM); grid over alpha

:func:`scalable_head` names the one that replaces a head above :data:`LARGE_DATA` training
samples (``fertool compare-baselines`` does so and says it in its report). :func:`fit_head`
with ``validation=(X_val, y_val)`` chooses on a given validation part (a dataset's own, as
FER2013's PublicTest) instead of inner cross-validation.

``pca+NAME`` (or ``pca=True``) inserts PCA keeping 95% of the variance, whitened. The grids are
small on purpose: SFEW training parts have about 340 samples and LPQ has 4096 features, and a full
comparison must take minutes.

:func:`fit_head` chooses the hyperparameters by cross-validation *inside the data it is given*
(the training part of a split; the test part never reaches it), grouped when groups are given.
:func:`save_head` writes the fitted pipeline (joblib) and a JSON sidecar with its sha256;
:func:`load_head` checks that checksum before unpickling anything.
"""

from __future__ import annotations

import io as _io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from fertool.core.errors import DatasetError, FertoolError

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "fertool-head"
SIDECAR_VERSION = 1
PCA_VARIANCE = 0.95
#: Components of the ``nystroem-svm`` head's kernel map.
NYSTROEM_COMPONENTS = 1000


class UnknownHeadError(FertoolError, ValueError):
    """A head name that is not in the registry; the message lists the known ones."""


class HeadFileError(FertoolError):
    """A saved head that fertool refuses to load (missing or mismatching checksum sidecar)."""


@dataclass(frozen=True)
class HeadSpec:
    """A registered head: its classifier step and its hyperparameter grid."""

    name: str
    description: str
    classifier: Callable[[int], Any]  # seed -> unfitted classifier
    grid: Callable[[int], dict[str, list]]  # n_features reaching the classifier -> grid


def _svc_rbf(seed):
    from sklearn.svm import SVC

    return SVC(kernel="rbf", gamma="scale", random_state=seed)


def _svc_linear(seed):
    from sklearn.svm import SVC

    return SVC(kernel="linear", random_state=seed)


def _logreg(seed):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=5000, random_state=seed)


def _linear_svm(seed):
    from sklearn.svm import LinearSVC

    return LinearSVC(dual=False, max_iter=2000, random_state=seed)


def _nystroem_svm(seed):
    from sklearn.kernel_approximation import Nystroem
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("map", Nystroem(kernel="rbf", n_components=NYSTROEM_COMPONENTS, random_state=seed)),
        ("svm", _sgd(seed)),
    ])


def _sgd(seed):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="hinge", average=True, max_iter=50, tol=1e-4, random_state=seed)


def _knn(seed):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier()


HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec(
            "svm-rbf",
            "SVM, RBF kernel (C x gamma grid)",
            _svc_rbf,
            # standardised (or whitened) features have unit variance, so 1/d is gamma='scale';
            # on SFEW LPQ/PHOG a wider grid (0.03/d .. 3/d) only ever chose 0.1/d .. 1/d
            lambda d: {"C": [1.0, 10.0, 100.0], "gamma": [g / max(d, 1) for g in (0.1, 0.3, 1.0)]},
        ),
        HeadSpec(
            "svm-linear", "SVM, linear kernel (C grid)", _svc_linear,
            lambda d: {"C": [1e-3, 1e-2, 1e-1, 1.0]},
        ),
        HeadSpec(
            "logreg", "logistic regression (C grid)", _logreg,
            lambda d: {"C": [1e-3, 1e-2, 1e-1, 1.0]},
        ),
        HeadSpec(
            "knn", "k nearest neighbours (k grid)", _knn,
            lambda d: {"n_neighbors": [1, 3, 5, 9, 15]},
        ),
        HeadSpec(
            "linear-svm", "linear SVM, liblinear primal (C grid; scales to large data)",
            _linear_svm, lambda d: {"C": [1e-3, 1e-2, 1e-1]},
        ),
        HeadSpec(
            "nystroem-svm",
            f"RBF kernel approximated by Nystroem ({NYSTROEM_COMPONENTS} components), then a "
            "linear SVM by averaged SGD (gamma x alpha grid; scales to large data)",
            _nystroem_svm,
            lambda d: {"clf__map__gamma": [g / max(d, 1) for g in (0.3, 1.0)],
                       "clf__svm__alpha": [1e-5, 1e-4]},
        ),
        HeadSpec(
            "sgd", "linear SVM by averaged SGD (alpha grid; scales to large data)", _sgd,
            lambda d: {"alpha": [1e-5, 1e-4, 1e-3]},
        ),
    )
}

#: Training samples above which :func:`scalable_head` swaps a head for one that scales.
LARGE_DATA = 5000
#: Heads replaced above :data:`LARGE_DATA` samples (the RBF SVM's fit grows faster than
#: quadratically with the samples: 142 s for one LPQ fit on 927 faces).
SCALABLE = {"svm-rbf": "nystroem-svm", "svm-linear": "sgd"}


def scalable_head(name: str, n_samples: int) -> str:
    """The head to fit on ``n_samples`` training samples: ``name``, or above
    :data:`LARGE_DATA` its scalable replacement (:data:`SCALABLE`; ``pca+`` kept)."""
    if n_samples <= LARGE_DATA:
        return name
    prefix, base = ("pca+", name[4:]) if name.startswith("pca+") else ("", name)
    return prefix + SCALABLE.get(base, base)


def head_names() -> list[str]:
    """All names :func:`make_head` accepts, including the ``pca+`` variants."""
    return [*HEADS, *(f"pca+{n}" for n in HEADS)]


def _resolve(name: str, pca: bool | None) -> tuple[HeadSpec, bool]:
    base, with_pca = name, False
    if isinstance(name, str) and name.startswith("pca+"):
        base, with_pca = name[4:], True
    if base not in HEADS:
        raise UnknownHeadError(f"unknown head {name!r}; known heads: {', '.join(head_names())}")
    if pca is not None:
        if with_pca and not pca:
            raise ValueError(f"head {name!r} includes PCA but pca=False was given")
        with_pca = bool(pca)
    return HEADS[base], with_pca


def make_head(name: str, *, pca: bool | None = None, seed: int = 0, **params):
    """Build an unfitted head by name.

    Parameters
    ----------
    name : str
        One of :func:`head_names` (``"svm-rbf"``, ``"pca+logreg"``, ...).
    pca : bool, optional
        Insert PCA (95% of the variance, whitened) after the scaler; the ``pca+`` prefix does the
        same.
    seed : int, default 0
        ``random_state`` of the steps that have one.
    **params
        Parameters of the classifier step, for example ``C=10`` or ``n_neighbors=5``.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``scale`` (StandardScaler), optionally ``pca``, and ``clf``.

    Raises
    ------
    UnknownHeadError
        For an unknown name; the message lists the known ones.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    spec, with_pca = _resolve(name, pca)
    steps = [("scale", StandardScaler())]
    if with_pca:
        pca_step = PCA(n_components=PCA_VARIANCE, whiten=True, svd_solver="full", random_state=seed)
        steps.append(("pca", pca_step))
    clf = spec.classifier(seed)
    if params:
        clf.set_params(**params)
    steps.append(("clf", clf))
    return Pipeline(steps)


@dataclass
class FittedHead:
    """A head refitted on all the data given to :func:`fit_head` with the best hyperparameters.

    Attributes
    ----------
    name : str
        Registry name (``pca+`` included when PCA is used).
    estimator : sklearn.pipeline.Pipeline
        The fitted pipeline.
    best_params_ : dict
        Chosen hyperparameters, as pipeline parameter names (``clf__C``).
    cv_score_ : float
        Mean cross-validated score of the best candidate (inside the training data).
    cv : dict
        How the search was run: ``n_splits``, ``grouped``, ``scoring``, ``seed``, ``grid``.
    """

    name: str
    estimator: Any
    best_params_: dict
    cv_score_: float
    cv: dict

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def predict(self, X) -> np.ndarray:
        return self.estimator.predict(X)


def cv_splitter(y, groups=None, cv: int = 3, seed: int = 0):
    """The inner cross-validation: StratifiedGroupKFold with groups, else StratifiedKFold.

    Both shuffle with ``seed``, as the outer protocols do
    (:func:`fertool.data.dataset.make_splits`).

    Raises
    ------
    DatasetError
        When there are fewer distinct groups than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if isinstance(cv, bool) or not isinstance(cv, Integral) or cv < 2:
        raise ValueError(f"cv must be an integer number of folds >= 2 (for example 3), got {cv!r}")
    values, counts = np.unique(np.asarray(y), return_counts=True)
    small = [f"{v!s} ({c})" for v, c in zip(values, counts) if c < cv]
    if small:
        log.warning(
            "inner %d-fold cross-validation: class(es) %s have fewer training samples than "
            "folds, so some inner folds do not contain them; hyperparameters are chosen with "
            "little evidence about these classes", int(cv), ", ".join(small),
        )
    if groups is None:
        return StratifiedKFold(int(cv), shuffle=True, random_state=seed)
    n_groups = len(np.unique(np.asarray(groups)))
    if n_groups < cv:
        raise DatasetError(
            f"grouped {cv}-fold cross-validation needs at least {cv} groups; the training data "
            f"has {n_groups} (use fewer folds, cv=2, or no groups)"
        )
    return StratifiedGroupKFold(int(cv), shuffle=True, random_state=seed)


def _features_at_classifier(with_pca: bool, X) -> int:
    """Number of features reaching the classifier step (after PCA when used)."""
    if not with_pca:
        return X.shape[1]
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit(StandardScaler().fit_transform(X))
    return int(pca.n_components_)


def fit_head(
    name: str,
    X,
    y,
    groups=None,
    *,
    cv: int = 3,
    seed: int = 0,
    n_jobs: int = 1,
    pca: bool | None = None,
    scoring="accuracy",
    grid: dict[str, list] | None = None,
    validation: tuple | None = None,
) -> FittedHead:
    """Choose a head's hyperparameters by grid search inside ``X`` and refit on all of it.

    Parameters
    ----------
    name : str
        Head name (see :func:`head_names`).
    X : (n_samples, n_features) array_like
        Training features only; the test part must not be passed here.
    y : (n_samples,) array_like
        Training labels.
    groups : (n_samples,) array_like, optional
        Group keys (SFEW movies): the inner folds then never put one group on both sides.
    cv : int, default 3
        Number of inner folds.
    seed : int, default 0
        Seed of the fold shuffling and of the estimators.
    n_jobs : int, default 1
        Parallel fits of the grid search.
    pca : bool, optional
        As in :func:`make_head`.
    scoring : str or callable, default "accuracy"
        Passed to ``GridSearchCV``.
    grid : dict, optional
        Replaces the registry grid; keys are classifier parameters (``C``) or pipeline parameters
        (``clf__C``).
    validation : (X_val, y_val), optional
        A validation part (the dataset's own, never the test part): every candidate is fitted
        once on ``X`` and scored on it, and the best fit is kept (no refit, no inner
        cross-validation; ``groups`` and ``cv`` are then unused). ``cv_score_`` is its
        validation score.

    Returns
    -------
    FittedHead
    """
    from sklearn.model_selection import GridSearchCV
    from sklearn.utils.validation import check_X_y

    spec, with_pca = _resolve(name, pca)
    X, y = check_X_y(X, y)
    if validation is not None:
        return _fit_on_validation(spec, with_pca, X, y, validation, seed, scoring, grid)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (len(y),):
            raise ValueError(f"groups must have one key per sample ({len(y)}), got {groups.shape}")
    splitter = cv_splitter(y, groups, cv, seed)
    with warnings.catch_warnings():
        # cv_splitter has said it, naming the classes; sklearn's generic warning adds nothing.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(X, y, groups))
    raw = grid if grid is not None else spec.grid(_features_at_classifier(with_pca, X))
    param_grid = {k if "__" in k else f"clf__{k}": list(v) for k, v in raw.items()}
    if "clf__n_neighbors" in param_grid:
        smallest = min(len(tr) for tr, _ in splits)
        ks = [k for k in param_grid["clf__n_neighbors"] if k <= smallest]
        param_grid["clf__n_neighbors"] = ks or [1]
    full_name = f"pca+{spec.name}" if with_pca else spec.name
    search = GridSearchCV(
        make_head(full_name, seed=seed),
        param_grid,
        scoring=scoring,
        cv=splits,
        n_jobs=n_jobs,
        refit=True,
        error_score="raise",
    )
    search.fit(X, y)
    scoring_name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "custom")
    log.info(
        "%s: best %s, cv %s %.4f", full_name, search.best_params_, scoring_name, search.best_score_
    )
    return FittedHead(
        name=full_name,
        estimator=search.best_estimator_,
        best_params_=dict(search.best_params_),
        cv_score_=float(search.best_score_),
        cv={
            "n_splits": len(splits),
            "grouped": groups is not None,
            "scoring": scoring_name,
            "seed": seed,
            "grid": param_grid,
        },
    )


def _fit_on_validation(spec, with_pca, X, y, validation, seed, scoring, grid) -> FittedHead:
    """Each grid candidate fitted on (X, y) and scored on ``validation``; the best fit kept."""
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import ParameterGrid
    from sklearn.utils.validation import check_X_y

    Xv, yv = check_X_y(*validation)
    raw = grid if grid is not None else spec.grid(_features_at_classifier(with_pca, X))
    param_grid = {k if "__" in k else f"clf__{k}": list(v) for k, v in raw.items()}
    if "clf__n_neighbors" in param_grid:
        param_grid["clf__n_neighbors"] = [k for k in param_grid["clf__n_neighbors"]
                                          if k <= len(y)] or [1]
    full_name = f"pca+{spec.name}" if with_pca else spec.name
    scorer = get_scorer(scoring) if isinstance(scoring, str) else scoring
    best, best_score, best_params, scores = None, -np.inf, {}, []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        try:
            from sklearn.exceptions import ConvergenceWarning

            warnings.filterwarnings("ignore", category=ConvergenceWarning)
        except ImportError:  # pragma: no cover
            pass
        for params, est in _grid_fits(full_name, seed, ParameterGrid(param_grid), X, y):
            score = float(scorer(est, Xv, yv))
            scores.append({"params": dict(params), "score": score})
            if score > best_score:
                best, best_score, best_params = est, score, dict(params)
    scoring_name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "custom")
    log.info("%s: best %s, validation %s %.4f", full_name, best_params, scoring_name, best_score)
    return FittedHead(
        name=full_name, estimator=best, best_params_=best_params, cv_score_=best_score,
        cv={"n_splits": 0, "validation": len(yv), "grouped": False, "scoring": scoring_name,
            "seed": seed, "grid": param_grid, "scores": scores},
    )


def _chain(est) -> tuple[list, str]:
    """``(transformers, path)`` of a pipeline whose last step may itself be a pipeline
    (``nystroem-svm``): the steps before its last estimator, in order, and that estimator's
    parameter path (``clf`` or ``clf__svm``)."""
    from sklearn.pipeline import Pipeline

    steps, path, node = [], [], est
    while isinstance(node, Pipeline):
        steps.extend(step for _, step in node.steps[:-1])
        name, node = node.steps[-1]
        path.append(name)
    return steps, "__".join(path)


def _grid_fits(name: str, seed: int, grid, X, y):
    """``(params, fitted head)`` for each grid point, the transformers (scaler, PCA, the
    Nystroem map) fitted once per distinct setting of their own parameters and only the last
    estimator refitted for the rest: the same fits as one full fit per point (the transformers
    are deterministic for a seed), without refitting a kernel map for every alpha."""
    import copy

    from sklearn.base import clone

    _, final = _chain(make_head(name, seed=seed))
    groups: dict[tuple, list[dict]] = {}
    for p in map(dict, grid):
        upstream = tuple(sorted((k, repr(v)) for k, v in p.items()
                                if not k.startswith(final + "__")))
        groups.setdefault(upstream, []).append(p)
    for group in groups.values():
        base = make_head(name, seed=seed).set_params(**group[0])
        Xt = X
        for step in _chain(base)[0]:
            Xt = step.fit_transform(Xt, y)
        last = base.get_params()[final]
        for p in group:
            own = {k[len(final) + 2:]: v for k, v in p.items() if k.startswith(final + "__")}
            est = copy.deepcopy(base) if len(group) > 1 else base
            est.set_params(**{final: clone(last).set_params(**own).fit(Xt, y)})
            yield p, est


def sidecar_path(path) -> Path:
    """Where the JSON sidecar of a saved head lives: ``path`` + ``.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def _jsonable(obj):
    """Numpy scalars and arrays, paths -> plain JSON types (for the sidecar)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_head(fitted: FittedHead, path, meta: dict | None = None, force: bool = False) -> Path:
    """Write a fitted head (joblib) and its sidecar ``path + '.json'``, both atomically.

    The sidecar holds the classes, ``meta`` (the feature source: descriptor and its parameters,
    split, labels...), the package versions, the sha256 of the joblib file, the best parameters
    and the cross-validated score.

    Raises
    ------
    FertoolError
        If either file exists and ``force`` is false (nothing is written then).
    ValueError
        If ``meta`` cannot be written as JSON.
    """
    import joblib

    from fertool.core.env import versions
    from fertool.core.io import check_writable, sha256_bytes, write_bytes, write_text

    path = Path(path)
    side = sidecar_path(path)
    if not force:
        check_writable(path, force=False)
        check_writable(side, force=False)
    buf = _io.BytesIO()
    joblib.dump(fitted.estimator, buf)
    data = buf.getvalue()
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "file": path.name,
        "sha256": sha256_bytes(data),
        "bytes": len(data),
        "head": fitted.name,
        "classes": _jsonable(list(fitted.classes_)),
        "best_params": _jsonable(fitted.best_params_),
        "cv_score": float(fitted.cv_score_),
        "cv": _jsonable(fitted.cv),
        "features": _jsonable(dict(meta or {})),
        "versions": versions(),
    }
    try:
        text = json.dumps(sidecar, indent=2) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable (plain types): {exc}") from None
    write_bytes(path, data, force=True)
    write_text(side, text, force=True)
    return path


def load_head(path) -> tuple[Any, dict]:
    """Load a head saved by :func:`save_head`, after checking its sha256 against the sidecar.

    Unpickling runs code, so the joblib file is only opened by ``joblib.load`` once its checksum
    matches the sidecar. (The check catches corrupt or swapped files; it is not a signature: load
    only heads from sources you trust.)

    Returns
    -------
    estimator : sklearn.pipeline.Pipeline
    meta : dict
        The sidecar's content.

    Raises
    ------
    HeadFileError
        If the file or its sidecar is missing or unreadable, or the checksum does not match.
    """
    import joblib

    from fertool.core.io import sha256_file

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise HeadFileError(f"{path}: no such file")
    if not side.is_file():
        raise HeadFileError(
            f"refusing to load {path}: its checksum sidecar {side} is missing (save heads with "
            "fertool, which writes both files)"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        expected = meta["sha256"]
        if not isinstance(expected, str):
            raise TypeError("sha256 is not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeadFileError(
            f"refusing to load {path}: sidecar {side} is unreadable ({exc})"
        ) from None
    actual = sha256_file(path)
    if actual != expected:
        raise HeadFileError(
            f"refusing to load {path}: its sha256 {actual[:16]}... does not match "
            f"{expected[:16]}... recorded in {side.name}; the file was changed or corrupted "
            "(re-save or re-train it)"
        )
    return joblib.load(path), meta


__all__ = [
    "HEADS",
    "LARGE_DATA",
    "SCALABLE",
    "FittedHead",
    "HeadFileError",
    "HeadSpec",
    "UnknownHeadError",
    "cv_splitter",
    "fit_head",
    "head_names",
    "load_head",
    "make_head",
    "save_head",
    "scalable_head",
    "sidecar_path",
]
