"""Dataset discovery (folder per class), group keys and evaluation protocols.

A dataset is a folder with one sub-folder per class; class names are mapped onto the canonical
labels (:mod:`fertool.core.labels`). Images are found recursively inside each class folder. Folders
whose name is not a known expression are reported in :attr:`Manifest.unknown_folders`, never
guessed.

The evaluation protocols (``paper``, ``movie``, ``kfold``, ``movie-legacy``), their splits, split
hashes and validation carve live in :mod:`fertool.data.splits`; they are re-exported here.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fertool.core.errors import DatasetError
from fertool.core.labels import LABELS, canonical_label
from fertool.data.splits import (  # re-exported: the protocols live in splits
    PROTOCOLS,
    DataTooSmallError,
    Split,
    carve_validation,
    check_protocol,
    make_splits,
    plan_validation,
    splits_hash,
)
from fertool.data.walk import WalkStats, is_hidden, iter_image_paths

log = logging.getLogger(__name__)


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


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folders(root: Path, unknown: list[str]) -> list[tuple[Path, str]]:
    """``(folder, label)`` of every class folder: ``root/<class>``, or ``root/<part>/<class>``
    when a sub-folder is not an expression but holds expression folders (FER2013's
    ``train/angry``, ``test/angry``). Other folders go to ``unknown``."""
    out = []
    for sub in _subfolders(root):
        label = canonical_label(sub.name)
        if label is not None:
            out.append((sub, label))
            continue
        inner = [(p, canonical_label(p.name)) for p in _subfolders(sub)]
        inner = [(p, lab) for p, lab in inner if lab is not None]
        if inner:
            out += inner
        else:
            unknown.append(sub.name)
    return out


def discover(root: str | os.PathLike, group: str | None = "sfew") -> Manifest:
    """Find the images of a folder-per-class dataset.

    Parameters
    ----------
    root : path
        Folder holding one sub-folder per class, or sub-folders (parts such as ``train``,
        ``test``) that each hold one sub-folder per class.
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
    for sub, label in _class_folders(root, unknown):
        stats = WalkStats(non_image_paths=[])
        for p in iter_image_paths([sub], stats):
            path = Path(p)
            if not is_hidden(path, sub):
                samples.append(Sample(path, label, group_fn(path)))
        skipped += [p for p in stats.non_image_paths if not is_hidden(Path(p), sub)]
    if not samples:
        hint = f" (folders not recognised as expressions: {', '.join(unknown)})" if unknown else ""
        raise DatasetError(
            f"no images found in class folders under {root}{hint}; expected sub-folders named "
            f"after expressions ({', '.join(LABELS)} or synonyms)"
        )
    samples.sort(key=lambda s: (LABELS.index(s.label), s.path.as_posix()))
    return Manifest(root, samples, unknown, skipped)


__all__ = [
    "PROTOCOLS", "DataTooSmallError", "Manifest", "Sample", "Split", "carve_validation",
    "check_protocol", "discover", "make_splits", "plan_validation", "regex_group", "sfew_group",
    "splits_hash",
]
