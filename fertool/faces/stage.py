"""The face stage: MTCNN detection, choice of face, alignment, fallback crop and the crop cache.

::

    from fertool.faces.stage import FaceConfig, extract_faces, face_crops

    crops, records = face_crops(paths)   # (N, 160, 160, 3) uint8, and one record per image
    for rec in extract_faces(paths, FaceConfig(detect_scale=0.5)):
        print(rec.path, rec.status, rec.n_faces)

Every image gets a :class:`FaceRecord` with a status:

``ok``        a face was found; ``crop`` is the chosen face, aligned (see :mod:`fertool.faces.align`).
``fallback``  no face was found and ``no_face="center"``: ``crop`` is the central square, resized.
``no_face``   no face was found and ``no_face="skip"``: no crop.
``error``     the file could not be read; ``message`` says why and names the file.

Detection results and crops are cached per image (see :mod:`fertool.faces.cache`), keyed by the
file's sha256 and :meth:`FaceConfig.detection_key`, so a second pass over the same files runs no
detector at all (records from the cache have ``cached=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from fertool.faces.align import align_matrix, box_transform, center_square_transform, warp_affine

__all__ = [
    "FaceAnalysis",
    "FaceConfig",
    "FaceRecord",
    "FaceStage",
    "choose_face",
    "extract_faces",
    "face_crops",
]

log = logging.getLogger(__name__)

POLICIES = ("largest", "most-confident", "center")
NO_FACE = ("center", "skip")
#: Bump when detection, alignment or the template change, so that cached crops are recomputed.
ALGORITHM_VERSION = "mtcnn-5pt-similarity-v1"
#: MTCNN cannot look for faces smaller than its 12-pixel first-stage window.
MTCNN_MIN_FACE = 12


@dataclass(frozen=True)
class FaceConfig:
    """Settings of the face stage.

    Attributes
    ----------
    size : int
        Side of the output crop (RGB uint8, ``size`` x ``size``).
    margin : float
        Context around the face as a fraction: 0 frames the face like facenet-pytorch's tight
        MTCNN crop (a square of the detector box's area); the face is shrunk by ``1/(1+margin)``.
        At the default 0.1 the eyes are level at 36% of the height and 35% of the width apart
        (see :mod:`fertool.faces.align` for the full template).
    policy : {"largest", "most-confident", "center"}
        Which face is the labelled one when there are several: largest box, highest detector
        probability, or box centre nearest the image centre.
    no_face : {"center", "skip"}
        Without a face: a centre crop (status ``fallback``) or no crop (status ``no_face``).
    detect_scale : float
        Detect on a copy downscaled by this factor (0.1 to 1); boxes and landmarks are mapped
        back to full resolution and the crop is taken from the full-resolution image.
    align : bool
        Rotate and scale so the five landmarks fit the template (eyes level). When false, the
        box is cropped without rotation at the same scale.
    min_face_size : int
        Smallest face to look for, in full-resolution pixels (MTCNN cannot go below 12 pixels of
        the image it is given, so with ``detect_scale < 1`` the effective minimum is
        ``max(min_face_size, 12 / detect_scale)``).
    """

    size: int = 160
    margin: float = 0.1
    policy: str = "largest"
    no_face: str = "center"
    detect_scale: float = 1.0
    align: bool = True
    min_face_size: int = 20

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 16:
            raise ValueError(f"size must be an integer of at least 16 pixels, got {self.size!r}")
        if not -0.5 < float(self.margin) <= 2.0:
            raise ValueError(f"margin must be in (-0.5, 2], got {self.margin!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.no_face not in NO_FACE:
            raise ValueError(f"no_face must be one of {', '.join(NO_FACE)}, got {self.no_face!r}")
        if not 0.1 <= float(self.detect_scale) <= 1.0:
            raise ValueError(f"detect_scale must be in [0.1, 1], got {self.detect_scale!r}")
        if int(self.min_face_size) != self.min_face_size or self.min_face_size < MTCNN_MIN_FACE:
            raise ValueError(
                f"min_face_size must be an integer of at least {MTCNN_MIN_FACE}, "
                f"got {self.min_face_size!r}"
            )

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the settings."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FaceConfig:
        """Inverse of :meth:`to_dict`; unknown keys (a newer fertool) are ignored with a warning."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            log.warning("ignoring unknown face settings: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in d.items() if k in known})

    def key(self) -> str:
        """Stable short hash of all settings and the algorithm version (identifies the crops
        a downstream stage receives, including which face is chosen)."""
        return _hash({"settings": self.to_dict(), "algorithm": _algorithm_version()})

    def detection_settings(self) -> dict:
        """The settings that change detection and crops: all but ``policy`` and ``no_face``,
        which only choose among the results."""
        d = self.to_dict()
        del d["policy"], d["no_face"]
        return d

    def detection_key(self) -> str:
        """Hash of :meth:`detection_settings` and the algorithm version: the face cache's key."""
        return _hash({"settings": self.detection_settings(), "algorithm": _algorithm_version()})


def _algorithm_version() -> str:
    from importlib import metadata

    try:
        fp = metadata.version("facenet-pytorch")
    except metadata.PackageNotFoundError:
        fp = "unknown"
    return f"{ALGORITHM_VERSION}/facenet-pytorch-{fp}"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


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


def choose_face(boxes: np.ndarray, scores: np.ndarray, shape: tuple[int, int], policy: str) -> int:
    """Index of the face ``policy`` picks among ``boxes`` ((n, 4), n >= 1) in an image of
    ``shape``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if policy == "largest":
        return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    if policy == "most-confident":
        return int(np.argmax(scores))
    if policy == "center":
        h, w = shape
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2
        return int(np.argmin(cx**2 + cy**2))
    raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")


def analysis_records(
    analysis: FaceAnalysis,
    config: FaceConfig,
    path: str,
    all_faces: bool = False,
    cached: bool = False,
) -> list[FaceRecord]:
    """Turn an analysis into records: the chosen face, every face, or the no-face record."""
    n = analysis.n_faces
    if n == 0:
        if config.no_face == "center":
            status, message, crop = "fallback", "no face found; centre crop used", analysis.fallback
        else:
            status, message, crop = "no_face", "no face found; skipped", None
        return [_faceless_record(path, status, message, crop, cached)]
    if all_faces:
        indices = list(range(n))
    else:
        indices = [choose_face(analysis.boxes, analysis.scores, analysis.shape, config.policy)]
    return [
        FaceRecord(
            path=path,
            status="ok",
            message="",
            n_faces=n,
            face_index=i,
            box=tuple(float(v) for v in analysis.boxes[i]),
            score=float(analysis.scores[i]),
            landmarks=analysis.landmarks[i].copy(),
            crop=analysis.crops[i],
            cached=cached,
        )
        for i in indices
    ]


def _faceless_record(
    path: str, status: str, message: str, crop: np.ndarray | None = None, cached: bool = False
) -> FaceRecord:
    return FaceRecord(path, status, message, 0, -1, None, None, None, crop, cached)


def error_record(path: str, message: str) -> FaceRecord:
    """The record of an image that could not be read."""
    return _faceless_record(path, "error", message)


class FaceStage:
    """MTCNN detection plus alignment, reusable over many images.

    Holds one ``facenet_pytorch.MTCNN(keep_all=True)`` (its weights ship inside the package).

    Parameters
    ----------
    config : FaceConfig
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default CUDA when available, else CPU.
    """

    def __init__(self, config: FaceConfig = FaceConfig(), device: str | None = None):
        import torch
        from facenet_pytorch import MTCNN

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config = config
        self.device = device
        self.detector_min_face = max(
            MTCNN_MIN_FACE, round(config.min_face_size * config.detect_scale)
        )
        self._mtcnn = MTCNN(
            keep_all=True,
            select_largest=True,
            post_process=False,
            min_face_size=self.detector_min_face,
            device=device,
        )
        #: How many images the detector has run on (a warm cache leaves it at 0).
        self.n_detections = 0

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run MTCNN on ``image`` ((H, W, 3) uint8 RGB).

        Returns
        -------
        boxes : (n, 4) float64, scores : (n,) float64, landmarks : (n, 5, 2) float64
            In full-resolution pixels, largest box first; n may be 0.
        """
        from PIL import Image

        image = _check_image(image)
        h, w = image.shape[:2]
        small = image
        sx = sy = 1.0
        if self.config.detect_scale < 1.0:
            dw = max(1, round(w * self.config.detect_scale))
            dh = max(1, round(h * self.config.detect_scale))
            small = np.asarray(Image.fromarray(image).resize((dw, dh), Image.BILINEAR))
            sx, sy = dw / w, dh / h
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        if min(small.shape[:2]) < self.detector_min_face:
            return empty  # smaller than the smallest face MTCNN looks for (it would fail)
        self.n_detections += 1
        boxes, probs, points = self._mtcnn.detect(np.ascontiguousarray(small), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return empty
        scale = np.array([sx, sy])
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.tile(scale, 2)
        scores = np.asarray(probs, dtype=np.float64).reshape(-1)
        landmarks = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2) / scale
        return boxes, scores, landmarks

    def analyse(self, image: np.ndarray) -> FaceAnalysis:
        """Detect every face and crop each one (aligned or not), or the centre when none."""
        image = _check_image(image)
        boxes, scores, landmarks = self.detect(image)
        cfg = self.config
        crops = np.zeros((len(boxes), cfg.size, cfg.size, 3), np.uint8)
        for i in range(len(boxes)):
            if cfg.align:
                matrix = align_matrix(landmarks[i], cfg.size, cfg.margin)
            else:
                matrix = box_transform(boxes[i], cfg.size, cfg.margin)
            crops[i] = warp_affine(image, matrix, cfg.size)
        fallback = None
        if len(boxes) == 0:
            h, w = image.shape[:2]
            fallback = warp_affine(image, center_square_transform(h, w, cfg.size), cfg.size)
        return FaceAnalysis(image.shape[:2], boxes, scores, landmarks, crops, fallback)

    def process(
        self, image: np.ndarray, path: str = "<array>", all_faces: bool = False
    ) -> list[FaceRecord]:
        """Records for one decoded image: the chosen face (or every face with ``all_faces``)."""
        return analysis_records(self.analyse(image), self.config, path, all_faces)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if (
        image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
        or min(image.shape[:2]) < 1
    ):
        raise ValueError(
            f"image must be a non-empty (H, W, 3) uint8 RGB array (see fertool.core.io.read_image), "
            f"got shape {image.shape} and dtype {image.dtype}"
        )
    return image


def extract_faces(
    paths: Iterable[str | os.PathLike],
    config: FaceConfig = FaceConfig(),
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    all_faces: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> Iterator[FaceRecord]:
    """Run the face stage over image files, streaming records in input order.

    One file is decoded at a time. A file that cannot be read gives one ``error`` record (the
    message names the file); this function does not raise for bad files. The detector is only
    loaded when some image is not in the cache.

    Parameters
    ----------
    paths : iterable of paths
    config : FaceConfig
    cache_dir : path, optional
        Cache root (default :func:`fertool.core.env.cache_dir`); entries go under ``faces/``.
    use_cache : bool
        Read and write the cache.
    all_faces : bool
        One record per detected face instead of the chosen one.
    progress : bool
        Show a progress bar on stderr.
    device : str, optional
        Detector device (see :class:`FaceStage`).

    Yields
    ------
    FaceRecord
    """
    from tqdm import tqdm

    from fertool.core.errors import ImageReadError
    from fertool.core.io import read_image, sha256_file
    from fertool.faces.cache import FaceCache

    cache = None
    if use_cache:
        from fertool.core.env import cache_dir as default_cache_dir

        cache = FaceCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), config)
    stage: FaceStage | None = None
    total = len(paths) if hasattr(paths, "__len__") else None
    bar = tqdm(
        paths,
        total=total,
        desc="faces",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for path in bar:
            name = str(path)
            digest = None
            if cache is not None:
                try:
                    digest = sha256_file(path)
                except OSError:
                    digest = None  # unreadable: read_image below says why
                if digest is not None:
                    analysis = cache.load(digest)
                    if analysis is not None:
                        yield from analysis_records(analysis, config, name, all_faces, cached=True)
                        continue
            try:
                image = read_image(path)
            except ImageReadError as exc:
                yield error_record(name, str(exc))
                continue
            if stage is None:
                stage = FaceStage(config, device=device)
            analysis = stage.analyse(image)
            del image
            if cache is not None and digest is not None:
                cache.save(digest, analysis)
            yield from analysis_records(analysis, config, name, all_faces)
    finally:
        bar.close()


def face_crops(
    paths: Iterable[str | os.PathLike], config: FaceConfig = FaceConfig(), **kw
) -> tuple[np.ndarray, list[FaceRecord]]:
    """All crops as one array, plus every record.

    Returns
    -------
    crops : (N, size, size, 3) uint8 ndarray
        One row per record that has a crop (``ok`` or ``fallback``), in record order.
    records : list of FaceRecord
        All records, including ``no_face`` and ``error`` ones (their ``crop`` is None).
    """
    records = list(extract_faces(paths, config, **kw))
    crops = [r.crop for r in records if r.crop is not None]
    if crops:
        return np.stack(crops), records
    return np.zeros((0, config.size, config.size, 3), np.uint8), records
