"""Evaluation protocols: train/test splits, their hashes, the validation carve, and the checks
that say, before any work, whether a dataset is large enough for them.

Protocols (see design.md):

``paper``
    stratified 50/50 split, one split per seed.
``movie``
    for each seed, a new random partition of the groups (SFEW movies) into ``k`` folds (default
    2), balanced for class counts as far as the groups allow (:func:`balanced_group_folds`); no
    group on both sides. Claims are made over several seeds (``compare-baselines`` uses 0-4).
``movie-legacy``
    fertool's first movie protocol (scikit-learn's ``StratifiedGroupKFold(shuffle=True)``). Its
    partition barely changes with the seed (scikit-learn sorts the groups by class spread before
    assigning them, so shuffling only reorders ties); it is kept so that recorded reports stay
    reproducible: its split hashes equal those of the former ``movie`` protocol (seed 0 on
    SFEW-675: ``e6410c841aa23885``).
``kfold``
    stratified k-fold (default 5); grouped like ``movie`` when the manifest has groups (for
    example subjects from ``--group-regex``) and ``grouped=True``.

Every :class:`Split` carries a stable hash of its exact membership (relative paths), recorded in
every output that uses it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from fertool.core.errors import DatasetError
from fertool.core.labels import LABELS

#: A :class:`fertool.data.dataset.Manifest` (not imported: dataset imports this module).
Manifest = Any

log = logging.getLogger(__name__)

PROTOCOLS = ("paper", "movie", "kfold", "movie-legacy", "fixed")
#: Folds when ``n_folds`` is not given.
DEFAULT_FOLDS = {"movie": 2, "movie-legacy": 2, "kfold": 5}
#: The tag each protocol's split hashes start from (``movie-legacy`` hashes as the former
#: ``movie`` protocol did, so recorded split hashes stay valid).
_HASH_TAG = {"movie-legacy": "movie"}
#: Random starts of the balanced group assignment (the best balanced one is kept).
N_STARTS = 16


class DataTooSmallError(DatasetError):
    """A dataset (or a training part) is too small for the protocol, folds or validation asked.

    The message says what is too small, the minimum, and what to do instead.
    """


@dataclass(frozen=True)
class Split:
    """One train/test partition of a manifest (indices into ``manifest.samples``)."""

    protocol: str
    seed: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    hash: str
    #: The dataset's own validation part (``fixed`` protocol only; None elsewhere).
    val: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"{self.protocol}-seed{self.seed}-fold{self.fold}"


def _hash_indices(manifest: Manifest, protocol: str, train, test) -> str:
    h = hashlib.sha256(_HASH_TAG.get(protocol, protocol).encode())
    for tag, idx in (("train", train), ("test", test)):
        h.update(f"\n[{tag}]\n".encode())
        h.update(
            "\n".join(sorted(manifest.relpath(manifest.samples[i].path) for i in idx)).encode()
        )
    return h.hexdigest()[:16]


def splits_hash(splits: list[Split]) -> str:
    """One hash for a list of splits (what a report covering all folds records)."""
    h = hashlib.sha256("|".join(s.hash for s in splits).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# Balanced random assignment of groups to folds


def _imbalance(fold_counts: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    return float((((fold_counts - target) ** 2) * weight).sum())


def _descend(counts: np.ndarray, fold: np.ndarray, k: int, target, weight) -> np.ndarray:
    """Steepest descent on the imbalance by moving one group or swapping two (vectorised)."""
    G = len(counts)
    F = np.zeros((k, counts.shape[1]))
    np.add.at(F, fold, counts)
    diff = counts[None, :, :] - counts[:, None, :]  # diff[g, h] = c_h - c_g
    for _ in range(50 * G):
        size = np.bincount(fold, minlength=k)
        base = ((F - target) ** 2 * weight).sum(1)  # (k,)
        # move g from fold[g] to b
        Fa = F[fold] - counts  # (G, K): g's fold without g
        Fb = F[None, :, :] + counts[:, None, :]  # (G, k, K): fold b with g
        move = (((Fa - target) ** 2 * weight).sum(1)[:, None] - base[fold][:, None]
                + ((Fb - target) ** 2 * weight).sum(2) - base[None, :])
        move[np.arange(G), fold] = np.inf
        move[size[fold] <= 1, :] = np.inf  # never empty a fold
        # swap g (fold a) with h (fold b): fold a gains c_h - c_g, fold b loses it
        Fa2 = F[fold][:, None, :] + diff  # (G, G, K)
        Fb2 = F[fold][None, :, :] - diff
        swap = (((Fa2 - target) ** 2 * weight).sum(2) + ((Fb2 - target) ** 2 * weight).sum(2)
                - base[fold][:, None] - base[fold][None, :])
        swap[fold[:, None] == fold[None, :]] = np.inf
        best_move, best_swap = move.min(), swap.min()
        if min(best_move, best_swap) >= -1e-9:
            break
        if best_move <= best_swap:
            g, b = np.unravel_index(np.argmin(move), move.shape)
            F[fold[g]] -= counts[g]
            F[b] += counts[g]
            fold[g] = b
        else:
            g, h = np.unravel_index(np.argmin(swap), swap.shape)
            a, b = fold[g], fold[h]
            F[a] += counts[h] - counts[g]
            F[b] += counts[g] - counts[h]
            fold[g], fold[h] = b, a
    return fold


def fold_tolerance(target: np.ndarray) -> np.ndarray:
    """How far a fold's count of a class may stray from its share ``target`` (count / k) to be
    called balanced: 2 images, or 6% of the share when that is more."""
    return np.maximum(2.0, 0.06 * np.asarray(target, dtype=float))


def balanced_group_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int, n_starts: int = N_STARTS
) -> np.ndarray:
    """Fold number (0..k-1) of every sample: a random partition of the groups, class-balanced.

    A start deals the groups to the folds in a random order (each to the fold whose class
    counts it brings closest to their share), then moves or swaps groups while that lowers the
    imbalance ``sum over folds and classes of (count - share)**2 / share`` (share: the class
    count / k). The first start whose every fold holds every class within
    :func:`fold_tolerance` of its share is taken; when none of ``n_starts`` is, the most balanced.
    Taking the first balanced start, not the most balanced of many, keeps the partitions of two
    seeds nearly as unrelated as two unconstrained random partitions (on SFEW-675, 2 folds, seeds
    0-19: 38% of the images change side between two seeds on average, against 42% for random
    partitions that ignore the classes and 1% for ``movie-legacy``; keeping the best of 16
    starts instead changes 20%). Every random choice comes from numpy's generator seeded with
    ``seed``: the same seed gives the same partition. A group is never split.
    """
    y = np.asarray(y)
    names, g_of = np.unique(np.asarray(groups), return_inverse=True)
    G = len(names)
    if G < k:
        raise DataTooSmallError(f"{k} grouped folds need at least {k} groups; there are {G}")
    classes, c_of = np.unique(y, return_inverse=True)
    counts = np.zeros((G, len(classes)))
    np.add.at(counts, (g_of, c_of), 1)
    target = counts.sum(0) / k
    weight = 1.0 / target
    tol = fold_tolerance(target)
    rng = np.random.default_rng(seed)
    best, best_cost = None, math.inf
    for _ in range(n_starts):
        fold = np.full(G, -1)
        F = np.zeros((k, len(classes)))
        for g in rng.permutation(G):
            empty = np.flatnonzero(np.bincount(fold[fold >= 0], minlength=k) == 0)
            if (fold < 0).sum() <= len(empty):
                b = int(rng.choice(empty))  # as many groups left as empty folds: fill them
            else:
                cost = (((F + counts[g] - target) ** 2 - (F - target) ** 2) * weight).sum(1)
                cost += rng.uniform(0, 1e-6, k)  # ties broken at random
                b = int(np.argmin(cost))
            fold[g] = b
            F[b] += counts[g]
        fold = _descend(counts, fold, k, target, weight)
        F = np.zeros((k, len(classes)))
        np.add.at(F, fold, counts)
        if np.all(np.abs(F - target) <= tol):
            return fold[g_of]
        cost = _imbalance(F, target, weight)
        if cost < best_cost - 1e-9:
            best, best_cost = fold.copy(), cost
    return best[g_of]


# ------------------------------------------------------------------------------------------
# What the data allow


def _class_counts(manifest: Manifest, idx=None) -> dict[str, int]:
    y = manifest.y if idx is None else manifest.y[np.asarray(idx)]
    counts = np.bincount(y, minlength=len(LABELS))
    return {LABELS[c]: int(counts[c]) for c in np.flatnonzero(counts)}


def check_protocol(manifest: Manifest, protocol: str, n_folds: int | None = None,
                   grouped: bool = True) -> None:
    """Raise :class:`DataTooSmallError` (one message: what, the minimum, what to do) when the
    manifest cannot be split by ``protocol`` with ``n_folds`` folds. Warns (logging) about
    classes too rare for every test part to hold one."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if protocol == "fixed":  # the dataset's own parts: checked by fertool.data.fixed
        return
    counts = _class_counts(manifest)
    n, n_classes = len(manifest), len(counts)
    if n_classes < 2:
        raise DataTooSmallError(
            f"the dataset has {n_classes} class ({', '.join(counts) or 'none'}); every protocol "
            "needs at least 2 classes"
        )
    if protocol == "paper":
        rare = {c: v for c, v in counts.items() if v < 2}
        if rare or n // 2 < n_classes:
            raise DataTooSmallError(
                f"the paper protocol (stratified 50/50) needs at least 2 images of every class "
                f"and {2 * n_classes} images in all for {n_classes} classes; this dataset has "
                f"{n} images"
                + (f", and {', '.join(f'{c} ({v})' for c, v in rare.items())}" if rare else "")
                + ". Add images, or drop the rare class folders"
            )
        return
    k = n_folds or DEFAULT_FOLDS[protocol]
    n_groups = len(set(manifest.groups.tolist()))
    is_grouped = protocol != "kfold" or (grouped and n_groups < n)
    if is_grouped and n_groups < k:
        other = (" or --group-regex none (ungrouped; images of one group then sit on both sides)"
                 if protocol == "kfold" else
                 " or --protocol paper (no grouping; images of one group then sit on both sides)")
        raise DataTooSmallError(
            f"the {protocol} protocol with {k} folds needs at least {k} groups (no group on both "
            f"sides); this dataset has {n_groups} ({', '.join(sorted(set(manifest.groups))[:5])}"
            f"{', ...' if n_groups > 5 else ''}). Use --n-folds {max(2, n_groups)}"
            + (" or fewer" if n_groups > 2 else "")
            + f", a --group-regex that finds more groups{other}"
            if n_groups >= 2 else
            f"the {protocol} protocol needs at least 2 groups (no group on both sides); this "
            f"dataset has {n_groups}. Use a --group-regex that finds more groups{other}"
        )
    if not is_grouped and max(counts.values()) < k:
        raise DataTooSmallError(
            f"stratified {k}-fold needs at least {k} images of some class; the largest class has "
            f"{max(counts.values())}. Use --n-folds {max(2, max(counts.values()))} or fewer"
        )
    rare = [f"{c} ({v})" for c, v in counts.items() if v < k]
    if rare:
        log.warning("%s with %d folds: %s have fewer images than folds; some test parts will "
                    "miss them", protocol, k, ", ".join(rare))


def make_splits(
    manifest: Manifest,
    protocol: str = "movie",
    *,
    seeds: tuple[int, ...] | list[int] = (0,),
    n_folds: int | None = None,
    grouped: bool = True,
    fixed: Any = None,
) -> list[Split]:
    """Train/test splits for a protocol (see the module docstring).

    ``paper``: one stratified 50/50 split per seed. ``movie``: for each seed, a random
    class-balanced partition of the groups into ``n_folds`` (default 2) folds. ``kfold``: for
    each seed, a stratified k-fold (default 5), grouped the same way when ``grouped`` is true
    and the manifest has groups. ``movie-legacy``: the former movie protocol. ``fixed``: the
    dataset's own train / validation / test parts, read as ``fixed`` (a
    :class:`fertool.data.fixed.FixedSpec`) says; one split, seeds ignored.

    Raises
    ------
    DataTooSmallError
        Before splitting, when the data are too small for the protocol (see
        :func:`check_protocol`).
    """
    from sklearn.model_selection import (
        StratifiedGroupKFold,
        StratifiedKFold,
        StratifiedShuffleSplit,
    )

    if protocol == "fixed":
        from fertool.data.fixed import fixed_parts

        if fixed is None:
            raise ValueError("the fixed protocol needs `split_regex` or `split_csv`")
        idx, digest = fixed_parts(manifest, fixed)
        return [Split("fixed", 0, 0, idx["train"], idx["test"], digest, val=idx["val"])]
    check_protocol(manifest, protocol, n_folds, grouped)
    y = manifest.y
    groups = manifest.groups
    X = np.zeros((len(y), 1))
    out: list[Split] = []
    for seed in seeds:
        k = n_folds or DEFAULT_FOLDS.get(protocol, 2)
        with warnings.catch_warnings():  # rare classes: said by check_protocol, naming them
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            if protocol == "paper":
                sss = StratifiedShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
                parts = list(sss.split(X, y))
            elif protocol == "movie-legacy":
                parts = list(
                    StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(X, y, groups)
                )
            elif protocol == "movie" or (grouped and len(set(groups)) < len(groups)):
                fold_of = balanced_group_folds(y, groups, k, seed)
                parts = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f))
                         for f in range(k)]
            else:
                parts = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y))
        for fold, (tr, te) in enumerate(parts):
            tr, te = np.sort(tr), np.sort(te)
            out.append(
                Split(protocol, seed, fold, tr, te, _hash_indices(manifest, protocol, tr, te))
            )
    return out


# ------------------------------------------------------------------------------------------
# Validation part


@dataclass(frozen=True)
class ValidationPlan:
    """What :func:`plan_validation` decided: the parts, and why there is no validation part."""

    fit: np.ndarray
    val: np.ndarray
    note: str = ""


def _validation_too_small(manifest: Manifest, train: np.ndarray, fraction: float,
                          grouped: bool) -> str:
    """Why a validation part cannot be carved from ``train`` ('' when it can)."""
    counts = _class_counts(manifest, train)
    n, n_classes = len(train), len(counts)
    groups = manifest.groups[train]
    n_groups = len(set(groups.tolist()))
    if grouped and n_groups < n:
        if n_groups < 2:
            return (f"the training part ({n} images) holds {n_groups} group; a grouped "
                    "validation part needs at least 2")
        return ""
    n_val = math.ceil(fraction * n)
    rare = [f"{c} ({v})" for c, v in counts.items() if v < 2]
    if rare or n_val < n_classes or n - n_val < n_classes:
        need = max(2 * n_classes, math.ceil(n_classes / fraction),
                   math.ceil(n_classes / (1 - fraction)))
        return (f"the training part ({n} images, {n_classes} classes) is too small for a "
                f"stratified validation part of {fraction:.0%}: it needs at least one image of "
                f"every class on each side ({need} training images at this fraction"
                + (f"; {', '.join(rare)} have fewer than 2" if rare else "") + ")")
    return ""


def plan_validation(
    manifest: Manifest,
    train: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    grouped: bool = True,
) -> ValidationPlan:
    """:func:`carve_validation`, or, when the training part is too small for one, no validation
    part (fit on the whole training part) with a note saying why and what to do.

    ``fraction=0`` asks for no validation part.
    """
    train = np.asarray(train)
    if fraction <= 0:
        return ValidationPlan(np.sort(train), train[:0], "no validation part (--val-fraction 0)")
    why = _validation_too_small(manifest, train, fraction, grouped)
    if why:
        note = (f"no validation part: {why}. Training on all {len(train)} training images and "
                "keeping the last epoch. To select an epoch on a validation part: more images, "
                "a larger --val-fraction, or a protocol with larger training parts (fewer folds)")
        log.warning("%s", note)
        return ValidationPlan(np.sort(train), train[:0], note)
    fit, val = carve_validation(manifest, train, fraction, seed=seed, grouped=grouped)
    return ValidationPlan(fit, val)


def carve_validation(
    manifest: Manifest,
    train: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    grouped: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (fit, validation), stratified and grouped like the protocol.

    Only ``train`` is touched, never the test part.

    Raises
    ------
    DataTooSmallError
        When ``train`` is too small for a validation part (:func:`plan_validation` falls back to
        none instead).
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    train = np.asarray(train)
    why = _validation_too_small(manifest, train, fraction, grouped)
    if why:
        raise DataTooSmallError(f"{why}; use a larger --val-fraction, more images, or none (0)")
    y = manifest.y[train]
    groups = manifest.groups[train]
    X = np.zeros((len(train), 1))
    if grouped and len(set(groups)) < len(groups):
        # As many folds as the fraction asks, but no more than groups or the largest class allow.
        k = max(2, min(round(1 / fraction), len(set(groups)), int(np.bincount(y).max())))
        counts = np.bincount(y, minlength=len(LABELS))
        rare = [f"{LABELS[c]} ({counts[c]})" for c in np.flatnonzero((counts > 0) & (counts < k))]
        if rare:
            log.warning(
                "validation carve (%d grouped folds): %s have fewer training images than folds; "
                "the validation part may miss them", k, ", ".join(rare),
            )
        with warnings.catch_warnings():  # said above, naming the classes
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            fit, val = next(
                StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(X, y, groups)
            )
    else:
        fit, val = next(
            StratifiedShuffleSplit(1, test_size=fraction, random_state=seed).split(X, y)
        )
    return np.sort(train[fit]), np.sort(train[val])


__all__ = [
    "DEFAULT_FOLDS", "PROTOCOLS", "DataTooSmallError", "Split", "ValidationPlan",
    "balanced_group_folds", "carve_validation", "check_protocol", "fold_tolerance", "make_splits",
    "plan_validation", "splits_hash",
]
