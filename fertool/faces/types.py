"""The face stage's result types: :class:`FaceAnalysis` (what the cache stores) and
:class:`FaceRecord` (what a caller receives). numpy only; shared by ``stage`` and ``cache``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FaceAnalysis", "FaceRecord", "error_record", "faceless_record"]


@dataclass
class FaceRecord:
    """The face stage's result for one image (or one face of it with ``all_faces=True``).

    ``face_index`` is the face's index in the detector's order (largest box first), -1 when the
    record has no detected face. ``box`` is ``(x1, y1, x2, y2)`` and ``landmarks`` is ``(5, 2)``
    (eyes, nose, mouth corners), both in full-resolution pixels. ``crop`` is ``(size, size, 3)``
    uint8 RGB, None for ``no_face`` and ``error``. ``cached`` is true when the result came from
    the cache without running the detector.
    """

    path: str
    status: str
    message: str
    n_faces: int
    face_index: int
    box: tuple[float, float, float, float] | None
    score: float | None
    landmarks: np.ndarray | None
    crop: np.ndarray | None
    cached: bool = False


@dataclass
class FaceAnalysis:
    """Everything detected in one image, with a crop for every face (what the cache stores).

    ``boxes`` (n, 4), ``scores`` (n,), ``landmarks`` (n, 5, 2), ``crops`` (n, S, S, 3) in the
    detector's order (largest first); ``fallback`` is the centre crop, present when n == 0.
    """

    shape: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    crops: np.ndarray
    fallback: np.ndarray | None

    @property
    def n_faces(self) -> int:
        return len(self.boxes)


def faceless_record(
    path: str, status: str, message: str, crop: np.ndarray | None = None, cached: bool = False
) -> FaceRecord:
    """A record without a detected face (``fallback``, ``no_face`` or ``error``)."""
    return FaceRecord(path, status, message, 0, -1, None, None, None, crop, cached)


def error_record(path: str, message: str) -> FaceRecord:
    """The record of an image that could not be read."""
    return faceless_record(path, "error", message)
