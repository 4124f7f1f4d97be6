"""The face stage: detection, choice of face, alignment, fallback crop and the crop cache.

::

    from fertool.faces.stage import FaceConfig, extract_faces, face_crops

    crops, records = face_crops(paths)   # (N, 160, 160, 3) uint8, and one record per image
    for rec in extract_faces(paths, FaceConfig(detect_scale=0.5)):
        print(rec.path, rec.status, rec.n_faces)

The settings are one :class:`~fertool.faces.config.FaceConfig`; the detector comes from the
registry in :mod:`fertool.faces.detectors`. Every image gets a :class:`FaceRecord`
(:mod:`fertool.faces.types`) with a status:

``ok``        a face was found; ``crop`` is the chosen face, aligned (:mod:`fertool.faces.align`).
``fallback``  no face was found and ``no_face="center"``: ``crop`` is the central square, resized.
``crop``      ``faces="crop"``: the image is the face; ``crop`` is the whole image, resized (no
              detector runs, no cache is used: resizing is faster than a cache read).
``no_face``   no face was found and ``no_face="skip"``: no crop.
``error``     the file could not be read; ``message`` says why and names the file.

Detection results and crops are cached per image (see :mod:`fertool.faces.cache`), keyed by the
file's sha256 and :meth:`FaceConfig.detection_key`, so a second pass over the same files runs no
detector at all (records from the cache have ``cached=True``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from fertool.faces.align import align_matrix, box_transform, center_square_transform, warp_affine
from fertool.faces.cache import FaceCache
from fertool.faces.config import MIN_FACE, POLICIES, FaceConfig
from fertool.faces.types import FaceAnalysis, FaceRecord, error_record, faceless_record

__all__ = [
    "FaceAnalysis",
    "FaceConfig",
    "FaceRecord",
    "FaceStage",
    "choose_face",
    "extract_faces",
    "face_crops",
    "whole_image_crop",
]

log = logging.getLogger(__name__)

#: Kept for callers of earlier versions; the detector's own minimum is ``Detector.min_face``.
MTCNN_MIN_FACE = MIN_FACE

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
    if config.faces == "crop":
        h, w = analysis.shape
        return [FaceRecord(path, "crop", "", 1, 0, (0.0, 0.0, float(w), float(h)), None, None,
                           analysis.crops[0], cached)]
    if n == 0:
        if config.no_face == "center":
            status, message, crop = "fallback", "no face found; centre crop used", analysis.fallback
        else:
            status, message, crop = "no_face", "no face found; skipped", None
        return [faceless_record(path, status, message, crop, cached)]
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


class FaceStage:
    """Detection plus alignment, reusable over many images.

    Holds one detector of :mod:`fertool.faces.detectors` (``config.detector``, MTCNN by default:
    ``facenet_pytorch.MTCNN(keep_all=True)``, whose weights ship inside the package).

    Parameters
    ----------
    config : FaceConfig
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default CUDA when available, else CPU.
    """

    def __init__(self, config: FaceConfig | None = None, device: str | None = None):
        from fertool.faces.detectors import create

        config = config if config is not None else FaceConfig()
        self.config = config
        #: How many images the detector has run on (a warm cache leaves it at 0).
        self.n_detections = 0
        if config.faces == "crop":  # the image is the face: no detector
            self.detector = None
            self.device = "cpu"
            self.detector_min_face = 1
            return
        self.detector = create(
            config.detector,
            min_face=max(MIN_FACE, round(config.min_face_size * config.detect_scale)),
            device=device,
        )
        self.device = getattr(self.detector, "device", device)
        #: Smallest image side (after ``detect_scale``) the detector runs on.
        self.detector_min_face = self.detector.min_face

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the detector on ``image`` ((H, W, 3) uint8 RGB), downscaled by ``detect_scale``.

        Returns
        -------
        boxes : (n, 4) float64, scores : (n,) float64, landmarks : (n, 5, 2) float64
            In full-resolution pixels, largest box first; n may be 0.
        """
        from PIL import Image

        image = _check_image(image)
        h, w = image.shape[:2]
        if self.detector is None:  # faces="crop": the whole image is the one face
            return (np.array([[0.0, 0.0, w, h]]), np.ones(1), np.full((1, 5, 2), np.nan))
        small = image
        sx = sy = 1.0
        if self.config.detect_scale < 1.0:
            dw = max(1, round(w * self.config.detect_scale))
            dh = max(1, round(h * self.config.detect_scale))
            small = np.asarray(Image.fromarray(image).resize((dw, dh), Image.BILINEAR))
            sx, sy = dw / w, dh / h
        if min(small.shape[:2]) < self.detector_min_face:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        self.n_detections += 1
        boxes, scores, landmarks = self.detector.detect(small)
        scale = np.array([sx, sy])
        return boxes / np.tile(scale, 2), scores, landmarks / scale

    def analyse(self, image: np.ndarray) -> FaceAnalysis:
        """Detect every face and crop each one (aligned or not), or the centre when none; with
        ``faces="crop"`` the whole image resized."""
        image = _check_image(image)
        cfg = self.config
        if cfg.faces == "crop":
            h, w = image.shape[:2]
            crop = whole_image_crop(image, cfg.size)[None]
            return FaceAnalysis((h, w), np.array([[0.0, 0.0, w, h]]), np.ones(1),
                                np.full((1, 5, 2), np.nan), crop, None)
        boxes, scores, landmarks = self.detect(image)
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


def whole_image_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The whole ``image`` ((H, W, 3) uint8) resized to ``size`` x ``size`` (Pillow bilinear,
    which filters over the source pixels when shrinking); the crop of ``faces="crop"``. A
    non-square image is stretched, not cut: the image is the face."""
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return np.array(image)  # a copy: the crop never aliases the caller's image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if (
        image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
        or min(image.shape[:2]) < 1
    ):
        raise ValueError(
            "image must be a non-empty (H, W, 3) uint8 RGB array (see fertool.core.io.read_image), "
            f"got shape {image.shape} and dtype {image.dtype}"
        )
    return image


def extract_faces(
    paths: Iterable[str | os.PathLike],
    config: FaceConfig | None = None,
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
    from fertool.core.io import read_image

    config = config if config is not None else FaceConfig()

    cache = None
    # faces="crop": decoding and resizing a crop is faster than hashing it and reading a cache
    # entry (FER2013's 48-px JPEGs: see the measurement in docs/architecture.md), so no cache.
    if use_cache and config.faces != "crop":
        from fertool.core.env import cache_dir as default_cache_dir

        cache = FaceCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), config)
    stage: FaceStage | None = None
    total = len(paths) if hasattr(paths, "__len__") else None
    if config.faces == "crop":
        yield from _given_crops(paths, config, total, progress)
        return
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
            digest, hit = cache_lookup(cache, path, config, all_faces)
            if hit is not None:
                yield from hit
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


#: Images decoded and resized per batch of ``faces="crop"`` (bounds memory; keeps order).
_CROP_BATCH = 256


def _given_crop(path, size: int) -> FaceRecord:
    from fertool.core.errors import ImageReadError
    from fertool.core.io import read_image

    try:
        image = read_image(path)
    except ImageReadError as exc:
        return error_record(str(path), str(exc))
    h, w = image.shape[:2]
    return FaceRecord(str(path), "crop", "", 1, 0, (0.0, 0.0, float(w), float(h)), None, None,
                      whole_image_crop(image, size))


def _given_crops(paths, config: FaceConfig, total: int | None, progress: bool):
    """``faces="crop"`` records in input order: decoding and resizing (Pillow releases the GIL
    for both) in one thread per available core, ``_CROP_BATCH`` images at a time."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    from tqdm import tqdm

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(8, cores or 1))
    it = iter(paths)
    with tqdm(total=total, desc="faces (crop)", unit="img", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar, \
            ThreadPoolExecutor(workers) as pool:
        while batch := list(islice(it, _CROP_BATCH)):
            yield from pool.map(_given_crop, batch, [config.size] * len(batch))
            bar.update(len(batch))


def face_crops(
    paths: Iterable[str | os.PathLike], config: FaceConfig | None = None, **kw
) -> tuple[np.ndarray, list[FaceRecord]]:
    """All crops as one array, plus every record.

    Returns
    -------
    crops : (N, size, size, 3) uint8 ndarray
        One row per record that has a crop (``ok`` or ``fallback``), in record order.
    records : list of FaceRecord
        All records, including ``no_face`` and ``error`` ones (their ``crop`` is None).
    """
    config = config if config is not None else FaceConfig()
    records = list(extract_faces(paths, config, **kw))
    crops = [r.crop for r in records if r.crop is not None]
    if crops:
        return np.stack(crops), records
    return np.zeros((0, config.size, config.size, 3), np.uint8), records


def cache_lookup(cache, path, config, all_faces: bool):
    """``(digest, records)`` of ``path`` from the face cache: records is None on a miss.

    ``digest`` is the file's sha256 (None without a cache, or when the file cannot be read:
    reading it again then says why), for storing the analysis after a miss.
    """
    if cache is None:
        return None, None
    from fertool.core.io import sha256_file

    try:
        digest = sha256_file(path)
    except OSError:
        return None, None  # unreadable: read_image says why
    analysis = cache.load(digest)
    if analysis is None:
        return digest, None
    return digest, list(analysis_records(analysis, config, str(path), all_faces, cached=True))
