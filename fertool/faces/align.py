"""Face alignment: a similarity transform from five landmarks onto a fixed template, and the warp.

Pure array code (numpy, plus Pillow's box filter for anti-aliasing); no detector, no files.

Coordinates are continuous pixel coordinates ``(x, y)``: pixel ``(row i, column j)`` covers
``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``; this is how MTCNN reports boxes
and landmarks.

The template
------------
:data:`TIGHT_TEMPLATE` gives the five landmarks (left eye, right eye, nose tip, left and right
mouth corner, as seen in the image) in a unit square. It is the median position of MTCNN's
landmarks, made left-right symmetric, inside a square of the same area as MTCNN's face box and
centred on it, measured on 108 SFEW frames: so at ``margin=0`` an aligned crop frames the face
like facenet-pytorch's usual tight crop, but without stretching a tall box into a square.

The ``margin`` (a fraction) shrinks the face about the crop centre by ``1 / (1 + margin)``. At
the default ``margin=0.1`` and any output size: eyes level at 35.9% of the height, eye distance
34.7% of the width, nose tip at 59.0% and mouth corners at 80.3% of the height.
"""

from __future__ import annotations

import numpy as np

#: Five landmarks in a unit square at margin 0: (x, y) of left eye, right eye, nose, mouth corners.
TIGHT_TEMPLATE = np.array(
    [
        [0.309, 0.345],
        [0.691, 0.345],
        [0.500, 0.599],
        [0.353, 0.834],
        [0.647, 0.834],
    ]
)


def template(size: int, margin: float = 0.1) -> np.ndarray:
    """The five template landmarks, ``(5, 2)`` in pixel coordinates of a ``size`` x ``size`` crop.

    Parameters
    ----------
    size : int
        Side of the output crop in pixels.
    margin : float
        Extra context around the face, as a fraction: the face is scaled by ``1 / (1 + margin)``
        about the crop centre. 0 is a tight crop; must be above -0.5.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if margin <= -0.5:
        raise ValueError(f"margin must be above -0.5, got {margin}")
    return ((TIGHT_TEMPLATE - 0.5) / (1.0 + margin) + 0.5) * size


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking ``src`` to ``dst``.

    Closed form (Umeyama, 1991) without reflection.

    Parameters
    ----------
    src, dst : (N, 2) ndarray
        Corresponding points, N >= 2, not all ``src`` points equal.

    Returns
    -------
    (2, 3) ndarray
        ``A`` such that ``dst ~ A[:, :2] @ p + A[:, 2]`` for each point ``p`` of ``src``.

    References
    ----------
    S. Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4), 1991.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(
            f"src and dst must both be (N, 2) with N >= 2, got {src.shape} and {dst.shape}"
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("src points are all equal; cannot estimate a similarity transform")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    out = np.empty((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def box_transform(box, size: int, margin: float = 0.1) -> np.ndarray:
    """Axis-aligned scale and shift taking a face box to a crop framed like :func:`template`.

    The square of the box's area (side ``sqrt(w * h)``), centred on the box and grown by
    ``1 + margin``, fills the crop. Used when alignment is off.

    Returns
    -------
    (2, 3) ndarray
        Affine matrix from image to crop coordinates.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = np.sqrt(max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)) * (1.0 + margin)
    return square_transform(((x1 + x2) / 2, (y1 + y2) / 2), side, size)


def square_transform(center, side: float, size: int) -> np.ndarray:
    """Affine matrix taking the square of ``side`` pixels centred at ``center`` to a crop."""
    s = size / float(side)
    cx, cy = (float(v) for v in center)
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])


def center_square_transform(height: int, width: int, size: int) -> np.ndarray:
    """Affine matrix of the fallback crop: the central ``min(H, W)`` square onto a ``size`` crop."""
    return square_transform((width / 2, height / 2), min(height, width), size)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` points through a ``(2, 3)`` affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``image`` at continuous coordinates, replicating the edge outside it."""
    h, w = image.shape[:2]
    x = np.clip(x - 0.5, 0.0, w - 1.0)
    y = np.clip(y - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.intp), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` into a ``size`` x ``size`` crop through an image-to-crop affine ``matrix``.

    Bilinear interpolation; outside the image the nearest edge pixel is repeated. When the
    transform shrinks the image by 2x or more, the part of the image the crop covers is first
    reduced with a box filter, so that downscaled crops are not aliased.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
    matrix : (2, 3) ndarray
        From image coordinates to crop coordinates (see :func:`similarity_from_points`).
    size : int

    Returns
    -------
    (size, size, 3) uint8 ndarray
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    lin = matrix[:, :2]
    det = np.linalg.det(lin)
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise ValueError("the transform is singular")
    inv_lin = np.linalg.inv(lin)
    inv_t = -inv_lin @ matrix[:, 2]

    # Source footprint of the crop, so that only that part of the image is filtered and sampled.
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    src = corners @ inv_lin.T + inv_t
    x0 = int(np.clip(np.floor(src[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + 2, x0 + 1, w))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + 2, y0 + 1, h))
    region = image[y0:y1, x0:x1]
    offset = np.array([x0, y0], dtype=np.float64)

    factor = int(np.floor(1.0 / np.sqrt(abs(det))))  # image pixels per crop pixel, rounded down
    if factor >= 2 and min(region.shape[:2]) >= factor:
        region = np.asarray(Image.fromarray(np.ascontiguousarray(region)).reduce(factor))
    else:
        factor = 1

    jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    sx = inv_lin[0, 0] * jj + inv_lin[0, 1] * ii + inv_t[0]
    sy = inv_lin[1, 0] * jj + inv_lin[1, 1] * ii + inv_t[1]
    out = _bilinear(region, (sx - offset[0]) / factor, (sy - offset[1]) / factor)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def align_matrix(landmarks: np.ndarray, size: int, margin: float = 0.1) -> np.ndarray:
    """Image-to-crop similarity transform that puts five ``landmarks`` on :func:`template`."""
    return similarity_from_points(np.asarray(landmarks, dtype=np.float64), template(size, margin))
