"""The one image-folder walker: files and folders in, image paths out, in a stable order.

Folders are walked one directory at a time (names only, sorted, depth first), so memory does not
grow with the folder. Used by every command that takes folders of images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class WalkStats:
    """What the walk saw besides the images it yielded."""

    non_images: int = 0
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)


def iter_image_paths(
    inputs: Iterable[str | os.PathLike], stats: WalkStats | None = None
) -> Iterator[str]:
    """Image files under ``inputs``, in a stable order, without building a list of them all.

    A folder is walked recursively (entries sorted by name, depth first, symbolic links to
    folders not followed); files in it are yielded when their extension is an image extension
    (:func:`fertool.core.io.is_image_path`), dangling links with such names included (they will get
    an ``error`` row). A path given explicitly is yielded whatever its extension, and whether or
    not it exists, so that it gets a row that says what is wrong with it.

    Parameters
    ----------
    inputs : iterable of paths
    stats : WalkStats, optional
        Filled with the number of non-image files skipped and folders that could not be read.
    """
    from fertool.core.io import is_image_path

    stats = stats if stats is not None else WalkStats()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from _walk(p, stats, is_image_path)
        else:
            yield str(p)


def _walk(folder: Path, stats: WalkStats, is_image) -> Iterator[str]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(
                ((e.name, e.is_dir(follow_symlinks=False)) for e in it), key=lambda t: t[0]
            )
    except OSError as exc:
        stats.unreadable_folders.append((str(folder), exc.strerror or str(exc)))
        log.warning("cannot read folder %s (%s)", folder, exc.strerror or exc)
        return
    for name, is_dir in entries:
        path = folder / name
        if is_dir:
            yield from _walk(path, stats, is_image)
        elif is_image(name):
            yield str(path)
        else:
            stats.non_images += 1


def count_image_paths(inputs: Iterable[str | os.PathLike]) -> int:
    """How many paths :func:`iter_image_paths` yields (a walk that stores nothing)."""
    return sum(1 for _ in iter_image_paths(inputs))
