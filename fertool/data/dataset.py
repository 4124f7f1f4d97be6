"""Dataset discovery (folder per class), group keys and evaluation protocols.

A dataset is a folder with one sub-folder per class; class names are mapped onto the canonical
labels (:mod:`fertool.core.labels`). Images are found recursively inside each class folder. Folders
whose name is not a known expression are reported in :attr:`Manifest.unknown_folders`, never
guessed.

Protocols (see design.md):

``paper``
    stratified 50/50 split, one split per seed.
``movie``
    grouped, stratified 2-fold split: no group (SFEW movie) on both sides.
``kfold``
    stratified k-fold, grouped when the manifest has meaningful groups and ``grouped=True``.

Every :class:`Split` carries a stable hash of its exact membership (relative paths), recorded in
every output that uses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fertool.core.errors import DatasetError
from fertool.core.io import is_image_path
from fertool.core.labels import LABELS, canonical_label

log = logging.getLogger(__name__)

PROTOCOLS = ("paper", "movie", "kfold")


def sfew_group(path: str | os.PathLike) -> str:
    """SFEW movie key: the file stem minus its last two ``_`` fields.

    ``HarryPotter_Deathly_Hallows_1_000046280_00000017.jpg`` -> ``HarryPotter_Deathly_Hallows_1``.
    Names with fewer than three fields are their own group.
    """
    parts = Path(path).stem.split("_")
    return "_".join(parts[:-2]) if len(parts) >= 3 else Path(path).stem


def regex_group(pattern: str):
    """Group function from a regular expression: its first group (or whole match) on the name."""
    rx = re.compile(pattern)

    def group(path) -> str:
        name = Path(path).name
        m = rx.search(name)
        if m is None:
            return name
        return m.group(1) if m.groups() else m.group(0)

    return group


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    group: str


@dataclass
class Manifest:
    """The images of a dataset: one :class:`Sample` per file, in a stable (sorted) order."""

    root: Path
    samples: list[Sample]
    unknown_folders: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])

    @property
    def y(self) -> np.ndarray:
        """Integer labels (index into :data:`fertool.LABELS`)."""
        return np.array([LABELS.index(s.label) for s in self.samples], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return np.array([s.group for s in self.samples])

    @property
    def classes(self) -> list[str]:
        """Canonical labels present, in canonical order."""
        present = {s.label for s in self.samples}
        return [c for c in LABELS if c in present]

    def relpath(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for s in self.samples:
            out[s.label] += 1
        return out

    def subset(self, idx) -> Manifest:
        return Manifest(self.root, [self.samples[i] for i in idx], list(self.unknown_folders))


def discover(root: str | os.PathLike, group: str | None = "sfew") -> Manifest:
    """Find the images of a folder-per-class dataset.

    Parameters
    ----------
    root : path
        Folder holding one sub-folder per class.
    group : {"sfew", "none"} or str
        How to derive group keys: ``"sfew"`` (movie name, see :func:`sfew_group`), ``"none"``
        (every image its own group), or a regular expression whose first group is the key.

    Raises
    ------
    DatasetError
        When ``root`` is missing, not a folder, or has no class folder with images.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(
            f"{root} is not a folder; expected a folder with one sub-folder per class"
        )
    if group in (None, "none"):
        group_fn = lambda p: Path(p).as_posix()
    elif group == "sfew":
        group_fn = sfew_group
    else:
        group_fn = regex_group(group)

    samples: list[Sample] = []
    unknown: list[str] = []
    skipped: list[str] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = canonical_label(sub.name)
        if label is None:
            unknown.append(sub.name)
            continue
        for dirpath, dirnames, filenames in os.walk(sub):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if is_image_path(path):
                    samples.append(Sample(path, label, group_fn(path)))
                else:
                    skipped.append(str(path))
    if not samples:
        hint = f" (folders not recognised as expressions: {', '.join(unknown)})" if unknown else ""
        raise DatasetError(
            f"no images found in class folders under {root}{hint}; expected sub-folders named "
            f"after expressions ({', '.join(LABELS)} or synonyms)"
        )
    samples.sort(key=lambda s: (LABELS.index(s.label), s.path.as_posix()))
    return Manifest(root, samples, unknown, skipped)


@dataclass(frozen=True)
class Split:
    """One train/test partition of a manifest (indices into ``manifest.samples``)."""

    protocol: str
    seed: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    hash: str

    @property
    def name(self) -> str:
        return f"{self.protocol}-seed{self.seed}-fold{self.fold}"


def _hash_indices(manifest: Manifest, protocol: str, train, test) -> str:
    h = hashlib.sha256(protocol.encode())
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


def make_splits(
    manifest: Manifest,
    protocol: str = "movie",
    *,
    seeds: tuple[int, ...] | list[int] = (0,),
    n_folds: int | None = None,
    grouped: bool = True,
) -> list[Split]:
    """Train/test splits for a protocol.

    ``paper``: one stratified 50/50 split per seed. ``movie``: for each seed, a stratified grouped
    k-fold (``n_folds`` default 2) with no group on both sides. ``kfold``: for each seed, a
    stratified k-fold (default 5), grouped when ``grouped`` is true.
    """
    from sklearn.model_selection import (
        StratifiedGroupKFold,
        StratifiedKFold,
        StratifiedShuffleSplit,
    )

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    y = manifest.y
    groups = manifest.groups
    X = np.zeros((len(y), 1))
    out: list[Split] = []
    for seed in seeds:
        if protocol == "paper":
            sss = StratifiedShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
            parts = list(sss.split(X, y))
        elif protocol == "movie":
            k = n_folds or 2
            n_groups = len(set(groups))
            if n_groups < k:
                raise DatasetError(
                    f"the movie protocol needs at least {k} groups; this dataset has {n_groups}"
                )
            parts = list(
                StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(X, y, groups)
            )
        else:
            k = n_folds or 5
            if grouped and len(set(groups)) < len(groups):
                parts = list(
                    StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(X, y, groups)
                )
            else:
                parts = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y))
        for fold, (tr, te) in enumerate(parts):
            tr, te = np.sort(tr), np.sort(te)
            out.append(
                Split(protocol, seed, fold, tr, te, _hash_indices(manifest, protocol, tr, te))
            )
    return out


def carve_validation(
    manifest: Manifest,
    train: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    grouped: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (fit, validation), stratified and grouped like the protocol.

    Only ``train`` is touched, never the test part.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    train = np.asarray(train)
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
