"""MTCNN's last stage (ONet) as a landmark refiner for another detector's boxes, on onnxruntime.

BlazeFace finds faces four times faster than MTCNN, but its own keypoints (eyes, nose tip, mouth
centre) and FaceMesh's mouth corners sit on SFEW-675 at a median 0.095 eye distances from
MTCNN's landmarks, and the crops aligned on them lost 1.5 points of accuracy. MTCNN's time goes
into its first stage (PNet over an image pyramid); its third stage, ONet, is a 48x48 network run
once per face. Given a box in the place MTCNN's second stage would have put it, ONet gives the
five landmarks MTCNN would give (median 0.058 eye distances from MTCNN's own on SFEW-675).

The network and its weights are facenet-pytorch's (``facenet_pytorch/data/onet.pt``, shipped
inside the package). It is exported once, on first use, to ONNX in the fertool cache
(``<cache>/onet/``, with a ``.sha256`` sidecar); running it needs numpy and onnxruntime only. The
crop follows facenet-pytorch's ``detect_face`` (integer box, area resampling to 48x48,
``(x - 127.5) / 128``), so landmarks on the same box match facenet-pytorch's to float precision;
where a box leaves the image the crop is zero-padded as in the original MTCNN, not clipped
(tests/test_onet.py).

Owns: the ONet export, its crop and its landmark decoding. May import: ``fertool.core``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["OnetLandmarks", "area_resize", "ensure_onet_onnx", "mtcnn_box"]

#: Input side of ONet.
ONET_SIZE = 48
#: Bump when the export changes (part of the cached file's name and of the detector version).
EXPORT_VERSION = 1

#: MTCNN's face box from BlazeFace's, as fractions of BlazeFace's box width and height: centre
#: shift (x, y) and size (w, h). Medians over the 629 SFEW-675 frames where both detectors' largest
#: faces overlap (IoU >= 0.3); no labels used. ONet sees the square of side max(w, h) about that
#: centre, as after MTCNN's second stage.
MTCNN_BOX_FROM_BLAZEFACE = (0.0024, -0.0406, 0.7562, 1.1235)


def _onet_weights() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "ONet landmarks need facenet-pytorch's weights: pip install --no-deps "
            "facenet-pytorch==2.6.0"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "onet.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: reinstall facenet-pytorch")
    return path


def _export(weights: Path, onnx_path: Path) -> None:
    import warnings

    import torch
    from facenet_pytorch.models.mtcnn import ONet

    net = ONet(pretrained=False)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    tmp = onnx_path.with_name(f".{onnx_path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                torch.zeros(1, 3, ONET_SIZE, ONET_SIZE),
                str(tmp),
                input_names=["input"],
                output_names=["box", "landmarks", "prob"],
                dynamic_axes={k: {0: "n"} for k in ("input", "box", "landmarks", "prob")},
                opset_version=17,
                dynamo=False,
            )
        import onnx

        onnx.checker.check_model(onnx.load(str(tmp)))
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_onet_onnx(cache_dir: str | os.PathLike | None = None) -> str:
    """The path of the ONNX export of facenet-pytorch's ONet, exported once (needs torch and onnx
    then only) and reused while it matches its ``.sha256`` sidecar."""
    from fertool.core.conversion import cached_conversion
    from fertool.core.env import cache_dir as fertool_cache
    from fertool.core.io import sha256_file

    weights = _onet_weights()
    digest = sha256_file(weights)
    folder = Path(cache_dir) if cache_dir else fertool_cache() / "onet"
    path = folder / f"onet-{digest[:12]}-e{EXPORT_VERSION}.onnx"
    found = cached_conversion(path, lambda p: _export(weights, p))
    assert found is not None  # an exporter was given
    return str(found[0])


def _pool_axis(
    a: np.ndarray, n: int, axis: int, offset: int = 0, length: int | None = None
) -> np.ndarray:
    """Adaptive average pooling to ``n`` cells along ``axis`` (float64) of a line of ``length``
    (default: ``a``'s) that holds ``a`` at ``[offset, offset + a.shape[axis])`` and zeros
    elsewhere. Sums run over the segments between consecutive bin edges, so memory is of the
    output's order, not the input's, and the zeros are never made."""
    size = a.shape[axis]
    length = size if length is None else length
    i = np.arange(n)
    lo, hi = (i * length) // n, -((-(i + 1) * length) // n)
    lo_in, hi_in = np.clip(lo - offset, 0, size), np.clip(hi - offset, 0, size)
    cuts = np.unique(np.concatenate([lo_in, hi_in, [0, size]]))  # sorted, from 0 to size
    seg = np.add.reduceat(a, cuts[:-1], axis=axis, dtype=np.float64) if size else None
    shape = list(a.shape)
    shape[axis] = 1
    if seg is None:
        prefix = np.zeros(shape)
    else:
        prefix = np.concatenate([np.zeros(shape), np.cumsum(seg, axis=axis)], axis=axis)
    at_lo, at_hi = np.searchsorted(cuts, lo_in), np.searchsorted(cuts, hi_in)
    sums = np.take(prefix, at_hi, axis=axis) - np.take(prefix, at_lo, axis=axis)
    count = (hi - lo).astype(np.float64)
    return sums / count.reshape([-1 if d == axis else 1 for d in range(a.ndim)])


def area_resize(
    region: np.ndarray, size: int = ONET_SIZE, window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """``torch.nn.functional.interpolate(mode="area")`` (adaptive average pooling) in numpy.

    Output cell ``i`` averages input rows ``floor(i * H / size)`` to ``ceil((i + 1) * H / size)``
    (exclusive), and the same over columns; works for down- and up-sampling. Temporary memory
    is of the order of ``size`` times the longer side, not of the region.

    Parameters
    ----------
    region : (H, W, C) array
    size : output side
    window : (top, left, height, width), optional: resample this window of a zero-padded
        ``region`` instead (``region`` lies at rows ``[-top, -top + H)`` of the window), as if
        the zeros were there.

    Returns
    -------
    (size, size, C) float32
    """
    h, w = region.shape[:2]
    top, left, height, width = window if window is not None else (0, 0, h, w)
    rows = _pool_axis(region, size, 0, -top, height)
    return _pool_axis(rows, size, 1, -left, width).astype(np.float32)


def mtcnn_box(boxes: np.ndarray, mapping=MTCNN_BOX_FROM_BLAZEFACE) -> np.ndarray:
    """The square box ONet should see for each of another detector's ``boxes`` ((n, 4) x1, y1,
    x2, y2): MTCNN's box estimated from it by ``mapping``, squared about its centre."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    dx, dy, fw, fh = mapping
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx = (b[:, 0] + b[:, 2]) / 2 + dx * bw
    cy = (b[:, 1] + b[:, 3]) / 2 + dy * bh
    side = np.maximum(fw * bw, fh * bh)
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


class OnetLandmarks:
    """Five MTCNN landmarks for given square boxes.

    Parameters
    ----------
    model_path : ONNX of ONet (default: :func:`ensure_onet_onnx`).
    cache_dir : where that export is cached (default: the fertool cache).
    session_factory : callable(path) -> onnxruntime session (default: CPU, onnxruntime's
        threads).
    """

    def __init__(self, model_path: str | None = None, *, cache_dir=None, session_factory=None):
        if model_path is None:
            model_path = ensure_onet_onnx(cache_dir)
        if session_factory is None:
            import onnxruntime as ort

            def session_factory(path):
                return ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        self.session = session_factory(model_path)

    def crops(self, image: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """ONet's inputs ((n, 3, 48, 48) float32) for ``squares`` in ``image`` (H, W, 3) uint8:
        the box rounded down to integers, pixels ``[y1 - 1, y2) x [x1 - 1, x2)`` as facenet-pytorch
        cuts them, area-resized, then ``(x - 127.5) / 128``. Where the box leaves the image the
        crop is zero-padded, as in the original MTCNN (facenet-pytorch clips the box instead,
        which stretches the face; inside the image the two are the same)."""
        h, w = image.shape[:2]
        t = np.floor(squares).astype(np.int64)  # facenet-pytorch truncates: the same for x >= 0
        out = np.zeros((len(squares), ONET_SIZE, ONET_SIZE, 3), np.float32)
        for k, (x1, y1, x2, y2) in enumerate(t):
            top, left = y1 - 1, x1 - 1  # the window's first row and column, in the image
            height, width = max(1, y2 - top), max(1, x2 - left)
            r0, r1 = min(max(top, 0), h), min(max(top + height, 0), h)
            c0, c1 = min(max(left, 0), w), min(max(left + width, 0), w)
            out[k] = area_resize(
                image[r0:r1, c0:c1], window=(top - r0, left - c0, height, width)
            )
        return ((out - 127.5) * 0.0078125).transpose(0, 3, 1, 2).copy()

    def __call__(self, image: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks ((n, 5, 2) float64, image pixels, MTCNN order) and ONet's face probability
        ((n,)) for the square boxes ``squares`` ((n, 4)) in ``image``."""
        squares = np.asarray(squares, np.float64).reshape(-1, 4)
        if len(squares) == 0:
            return np.zeros((0, 5, 2)), np.zeros(0)
        _, points, prob = self.session.run(None, {"input": self.crops(image, squares)})
        points = points.astype(np.float64)
        wi = squares[:, 2] - squares[:, 0] + 1
        hi = squares[:, 3] - squares[:, 1] + 1
        px = wi[:, None] * points[:, :5] + squares[:, :1] - 1
        py = hi[:, None] * points[:, 5:] + squares[:, 1:2] - 1
        return np.stack([px, py], 2), prob[:, 1].astype(np.float64)
