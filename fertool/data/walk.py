"""The one image-folder walker: files and folders in, image paths out, in a stable order.

Folders are walked one directory at a time (names only, sorted, depth first), so memory does not
grow with the folder. Used by every command that takes folders of images.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)


class SkippedFile(NamedTuple):
    """A folder entry the walk did not yield, and why (for the run's summary)."""

    path: str
    reason: str


@dataclass
class WalkStats:
    """What the walk saw besides the images it yielded.

    ``skipped`` names every folder entry that was not yielded, with the reason (not an image by
    content or by extension, a named pipe, a socket or a device, a link to a folder, ...);
    ``non_images`` is their number. ``non_image_paths``: give a list to also collect their paths
    alone (a dataset lists them); None (the default) leaves it.
    """

    non_images: int = 0
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)
    non_image_paths: list[str] | None = None
    skipped: list[SkippedFile] = field(default_factory=list)

    def skip(self, path: str, reason: str) -> None:
        self.non_images += 1
        self.skipped.append(SkippedFile(path, reason))
        if self.non_image_paths is not None:
            self.non_image_paths.append(path)


def iter_image_paths(
    inputs: Iterable[str | os.PathLike],
    stats: WalkStats | None = None,
    *,
    by_extension: bool = False,
    videos: bool = False,
) -> Iterator[str]:
    """Image files under ``inputs``, in a stable order, without building a list of them all.

    A folder is walked recursively (entries sorted by name, depth first, symbolic links to
    folders not followed). A regular file in it is yielded when its extension is an image
    extension (:func:`fertool.core.io.is_image_path`) or, unless ``by_extension``, when its
    extension is missing or unknown and its content is an image (:func:`fertool.core.io.
    image_format`: an AVIF photo named ``.heif``, a JPEG without an extension). Dangling links
    and link loops with image names are yielded too (they will get an ``error`` row). Named
    pipes, sockets and devices are never yielded nor opened, whatever their name: reading one can
    block forever. A path given explicitly is yielded whatever its extension, and whether or
    not it exists, so that it gets a row that says what is wrong with it (``read_image`` refuses
    a pipe without opening it).

    Parameters
    ----------
    inputs : iterable of paths
    stats : WalkStats, optional
        Filled with every file skipped (named, with the reason) and folders that could not be
        read.
    by_extension : bool
        Decide by extension only (no file is opened during the walk): files without an image
        extension are skipped.
    videos : bool
        Also yield files with a video extension (:data:`fertool.data.video.VIDEO_EXTENSIONS`).
    """
    from fertool.core.io import image_format, is_image_path
    from fertool.data.video import is_video_path

    def is_image(path: Path) -> bool | str:
        if is_image_path(path) or (videos and is_video_path(path)):
            return True
        if by_extension:
            return "not an image (by extension)"
        return True if image_format(path) else "not an image (by content)"

    stats = stats if stats is not None else WalkStats()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from _walk(p, stats, is_image)
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
        log.warning("cannot read folder %s (%s)", _shown(folder), exc.strerror or exc)
        return
    for name, is_dir in entries:
        path = folder / name
        if is_dir:
            yield from _walk(path, stats, is_image)
            continue
        verdict = _classify(path, is_image)
        if verdict is True:
            yield str(path)
        else:
            stats.skip(str(path), verdict)


def _classify(path: Path, is_image) -> bool | str:
    """True to yield ``path``, else the reason it is skipped. Only regular files are opened."""
    from fertool.core.io import file_kind, is_image_path

    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            broken = "symbolic link loop"
        elif isinstance(exc, FileNotFoundError):
            broken = "dangling symbolic link"
        else:
            broken = f"cannot examine ({exc.strerror or exc})"
        # An image name gets an error row that says what is wrong; other names are skipped.
        return True if is_image_path(path) else broken
    if stat.S_ISDIR(st.st_mode):
        return "symbolic link to a folder (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return f"{file_kind(st.st_mode)}, not a regular file (not opened)"
    return is_image(path)


def _shown(path) -> str:
    from fertool.core.io import printable

    return printable(str(path))


def is_hidden(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` or a folder between ``root`` and it has a name starting with ``.``
    (datasets leave those out: ``.DS_Store``, ``.git``, editors' files)."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        parts = Path(path).parts[-1:]
    return any(part.startswith(".") for part in parts)


def count_image_paths(
    inputs: Iterable[str | os.PathLike], *, by_extension: bool = False, videos: bool = False
) -> int:
    """How many paths :func:`iter_image_paths` yields (a walk that keeps no paths)."""
    return sum(1 for _ in iter_image_paths(inputs, by_extension=by_extension, videos=videos))
