"""On-disk cache of the face stage: one compressed ``.npz`` per image and detection setting.

Layout::

    <cache root>/faces/<FaceConfig.detection_key()>/config.json      the settings, for people
    <cache root>/faces/<FaceConfig.detection_key()>/<aa>/<sha256>.npz  one entry per image

An entry holds the image size, every detected box, score and landmark set, a crop for every face
and, when there is no face, the centre crop (see :class:`fertool.faces.types.FaceAnalysis`). It is
keyed by the sha256 of the file's bytes, so renamed or copied files hit the cache and edited ones
miss it. Entries are written atomically; an entry that cannot be read back (truncated, corrupt, or
from another layout) is ignored and recomputed. No pickles are ever loaded.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from fertool.core.io import write_json, write_npz
from fertool.faces.config import FaceConfig
from fertool.faces.types import FaceAnalysis

log = logging.getLogger(__name__)

_FIELDS = ("shape", "boxes", "scores", "landmarks", "crops", "fallback")


class FaceCache:
    """Read and write face-stage entries for one configuration under ``root/faces/``.

    Parameters
    ----------
    root : path
        The cache root (for example :func:`fertool.core.env.cache_dir`).
    config : FaceConfig
    """

    def __init__(self, root: str | Path, config: FaceConfig) -> None:
        self.config = config
        self.folder = Path(root) / "faces" / config.detection_key()
        self._writable = True
        self._described = False

    def path(self, digest: str) -> Path:
        """Where the entry of a file with this sha256 lives."""
        return self.folder / digest[:2] / f"{digest}.npz"

    def load(self, digest: str) -> FaceAnalysis | None:
        """The cached :class:`~fertool.faces.types.FaceAnalysis`, or None when absent or
        unreadable."""
        p = self.path(digest)
        if not p.is_file():
            return None
        size = self.config.size
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in _FIELDS}
            shape = tuple(int(v) for v in arrays["shape"])
            n = len(arrays["boxes"])
            ok = (
                len(shape) == 2
                and arrays["boxes"].shape == (n, 4)
                and arrays["scores"].shape == (n,)
                and arrays["landmarks"].shape == (n, 5, 2)
                and arrays["crops"].shape == (n, size, size, 3)
                and arrays["crops"].dtype == np.uint8
                and (n > 0 or arrays["fallback"].shape == (size, size, 3))
            )
            if not ok:
                raise ValueError("arrays of unexpected shape")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.info("ignoring unreadable face-cache entry %s (%s); recomputing", p, exc)
            return None
        fallback = arrays["fallback"] if n == 0 else None
        return FaceAnalysis(
            shape,
            arrays["boxes"].astype(np.float64),
            arrays["scores"].astype(np.float64),
            arrays["landmarks"].astype(np.float64),
            arrays["crops"],
            fallback,
        )

    def save(self, digest: str, analysis: FaceAnalysis) -> None:
        """Store an analysis atomically. A cache folder that cannot be written is reported once
        (as a warning) and caching is then skipped; it never stops the run."""
        if not self._writable:
            return
        size = self.config.size
        fallback = (
            analysis.fallback
            if analysis.fallback is not None
            else np.zeros((0, size, size, 3), np.uint8)
        )
        try:
            if not self._described:
                write_json(
                    self.folder / "config.json",
                    {"detection_settings": self.config.detection_settings()},
                )
                self._described = True
            write_npz(
                self.path(digest),
                shape=np.asarray(analysis.shape, dtype=np.int64),
                boxes=analysis.boxes,
                scores=analysis.scores,
                landmarks=analysis.landmarks,
                crops=analysis.crops,
                fallback=fallback,
            )
        except OSError as exc:
            self._writable = False
            log.warning(
                "cannot write the face cache under %s (%s); continuing without caching "
                "(choose another cache folder, or set FERTOOL_CACHE)",
                self.folder,
                exc.strerror or exc,
            )
