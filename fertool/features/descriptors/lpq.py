"""Local phase quantisation (LPQ), following the reference MATLAB ``lpq.m`` (2010 release).

The short-term Fourier transform at four low frequencies is taken over a ``window x window``
neighbourhood by separable *convolution* with 'valid' borders, the eight real and imaginary parts
are decorrelated (optional), and the sign of each becomes one bit of an 8-bit code. See
``docs/baselines-spec.md`` in the shared folder for the exact recipe.

The convolutions are computed as symmetric differences: the cosine part as
``sum cos(2 pi x / w) * (I[c-x] + I[c+x] - 2 I[c])`` (the cosines sum to zero) and the sine part as
``sum sin(2 pi x / w) * (I[c-x] - I[c+x])``. This is the same convolution as ``conv2`` computes,
but a flat region gives exactly zero (code 0) instead of rounding noise of arbitrary sign, and
adding a constant to an integer-valued image leaves every code exactly unchanged.
"""

from __future__ import annotations

import functools
from numbers import Integral, Real

import numpy as np

from fertool.features.descriptors._validate import as_float

MODES = ("nh", "h", "im")

#: Input pixels per chunk when processing a stack: about 1 MB per float64 work array, which keeps
#: the passes in cache (2-3x faster than whole-stack passes on 160x160 faces) and bounds memory.
_CHUNK_PIXELS = 131_072

#: Tie-breaking scaling of the reference implementation (applied on both sides of D before SVD).
_TIE_BREAK = np.array([1.000007, 1.000006, 1.000005, 1.000004, 1.000003, 1.000002, 1.000001, 1.0])


def _check_window(window) -> int:
    valid = isinstance(window, Integral) and not isinstance(window, bool)
    if not valid or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3 (for example 3 or 7), got {window!r}")
    return int(window)


def _check_rho(rho) -> float:
    if isinstance(rho, bool) or not isinstance(rho, Real) or not (0.0 <= float(rho) < 1.0):
        raise ValueError(f"rho must be a number in [0, 1) (the reference uses 0.90), got {rho!r}")
    return float(rho)


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return mode


def _check_grid(grid) -> tuple[int, int]:
    message = f"grid must be a pair of positive integers such as (4, 4), got {grid!r}"
    try:
        gy, gx = grid
    except (TypeError, ValueError):
        raise ValueError(message) from None
    for g in (gy, gx):
        if isinstance(g, bool) or not isinstance(g, Integral) or g < 1:
            raise ValueError(message)
    return int(gy), int(gx)


def _check_size(shape, window: int, name: str, need=None) -> None:
    h, w = shape[-2:]
    need = need or (window, window)
    if h < need[0] or w < need[1]:
        raise ValueError(
            f"{name} is {h}x{w}; LPQ with window {window} needs at least {need[0]}x{need[1]}"
        )


# --------------------------------------------------------------------------------------------
# The four one-dimensional operators along one axis, 'valid' borders (output shorter by w - 1).


def _slice(a: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    return a[tuple(index)]


def _box(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Convolution with w0 = ones(w): the window sum."""
    n = a.shape[axis]
    out = _slice(a, 0, n - 2 * r, axis).copy()
    for k in range(1, 2 * r + 1):
        out += _slice(a, k, n - 2 * r + k, axis)
    return out


def _cos_sin(a: np.ndarray, r: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Real part C and minus the imaginary part S of the convolution with w1 = exp(-2 pi i x / w).

    ``conv(a, w1) = C - i S`` and ``conv(a, w2) = C + i S``. In-place arithmetic on three
    work buffers keeps the memory traffic low.
    """
    n = a.shape[axis]
    w = 2 * r + 1
    centre = _slice(a, r, n - r, axis)
    cos_out = np.zeros(centre.shape)
    sin_out = np.zeros(centre.shape)
    before = np.empty(centre.shape)
    after = np.empty(centre.shape)
    for x in range(1, r + 1):
        theta = 2.0 * np.pi * x / w
        a_before = _slice(a, r - x, n - r - x, axis)  # I[c - x]
        a_after = _slice(a, r + x, n - r + x, axis)  # I[c + x]
        np.subtract(a_before, a_after, out=before)
        before *= np.sin(theta)
        sin_out += before
        np.subtract(a_before, centre, out=before)
        np.subtract(a_after, centre, out=after)
        before += after
        before *= np.cos(theta)
        cos_out += before
    return cos_out, sin_out


def _responses_into(out: np.ndarray, stack: np.ndarray, window: int) -> None:
    """Write the eight STFT channels of ``stack`` (..., H, W) into ``out`` (8, ..., h, w)."""
    r = (window - 1) // 2
    rows, cols = stack.ndim - 2, stack.ndim - 1
    c1_w0, s1_w0 = _cos_sin(_box(stack, r, rows), r, cols)
    c0, s0 = _cos_sin(stack, r, rows)
    c1_c0, s1_c0 = _cos_sin(c0, r, cols)
    c1_s0, s1_s0 = _cos_sin(s0, r, cols)
    out[0] = c1_w0  # Re F1 = W0 C1
    np.negative(s1_w0, out=out[1])  # Im F1 = -W0 S1
    out[2] = _box(c0, r, cols)  # Re F2 = C0 W1
    np.negative(_box(s0, r, cols), out=out[3])  # Im F2 = -S0 W1
    np.subtract(c1_c0, s1_s0, out=out[4])  # Re F3 = C0 C1 - S0 S1
    np.add(s1_c0, c1_s0, out=out[5])
    np.negative(out[5], out=out[5])  # Im F3 = -(C0 S1 + S0 C1)
    np.add(c1_c0, s1_s0, out=out[6])  # Re F4 = C0 C1 + S0 S1
    np.subtract(s1_c0, c1_s0, out=out[7])  # Im F4 = C0 S1 - S0 C1


def _responses(stack: np.ndarray, window: int) -> np.ndarray:
    """The eight STFT channels of each image: (..., H, W) -> (..., H-w+1, W-w+1, 8).

    Channel order: Re F1, Im F1, Re F2, Im F2, Re F3, Im F3, Re F4, Im F4, where F1 = rows w0,
    columns w1; F2 = rows w1, columns w0; F3 = rows w1, columns w1; F4 = rows w1, columns w2
    (the axis-0 filter is given first), all by convolution with 'valid' borders.
    """
    stack = np.asarray(stack, dtype=np.float64)
    shape = stack.shape[:-2] + (stack.shape[-2] - window + 1, stack.shape[-1] - window + 1)
    out = np.empty((8, *shape))
    _responses_into(out, stack, window)
    return np.moveaxis(out, 0, -1)


@functools.lru_cache(maxsize=32)
def _whitening(window: int, rho: float) -> np.ndarray:
    """V (8 x 8) of the reference decorrelation; whitened channels are ``responses @ V``.

    C_ij = rho ** |p_i - p_j| over the window's pixel positions, M holds the real and imaginary
    parts of the four 2-D filters as rows, D = M C M^T, and ``svd(A D A) = U S V^T`` with the
    reference's tie-breaking A. Each column of V has its largest-magnitude entry made positive.
    """
    r = (window - 1) // 2
    x = np.arange(-r, r + 1)
    w0 = np.ones(window, dtype=complex)
    w1 = np.exp(-2j * np.pi * x / window)
    w2 = np.conj(w1)
    yy, xx = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(float)
    dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    cov = rho**dist
    rows = []
    for q in (np.outer(w0, w1), np.outer(w1, w0), np.outer(w1, w1), np.outer(w1, w2)):
        rows += [q.real.ravel(), q.imag.ravel()]
    m = np.array(rows)
    d = m @ cov @ m.T
    a = np.diag(_TIE_BREAK)
    _, _, vt = np.linalg.svd(a @ d @ a)
    v = vt.T.copy()
    idx = np.argmax(np.abs(v), axis=0)
    v *= np.sign(v[idx, np.arange(8)])
    v.setflags(write=False)
    return v


def _codes_stack(stack: np.ndarray, window: int, rho: float, decorrelate: bool) -> np.ndarray:
    """uint8 LPQ codes of a float64 stack (N, H, W) -> (N, H-w+1, W-w+1), in cache-sized chunks."""
    n, h, w = stack.shape
    oh, ow = h - window + 1, w - window + 1
    out = np.empty((n, oh, ow), dtype=np.uint8)
    vt = _whitening(window, rho).T if decorrelate else None
    step = max(1, _CHUNK_PIXELS // max(1, h * w))
    for start in range(0, n, step):
        chunk = stack[start : start + step]
        resp = np.empty((8, chunk.shape[0], oh, ow))
        _responses_into(resp, chunk, window)
        flat = resp.reshape(8, -1)
        if vt is not None:
            flat = vt @ flat  # each pixel's 8-vector f becomes V^T f
        # bit k is set when channel k is strictly positive (channel 0 -> 1, ..., channel 7 -> 128)
        positive = flat > 0
        codes = positive[0].view(np.uint8).copy()
        for k in range(1, 8):
            codes |= positive[k].view(np.uint8) << k
        out[start : start + step] = codes.reshape(chunk.shape[0], oh, ow)
    return out


def _histograms(codes: np.ndarray, normalise: bool) -> np.ndarray:
    """Per-image 256-bin histograms of a code stack (N, h, w) -> (N, 256)."""
    n = codes.shape[0]
    flat = codes.reshape(n, -1).astype(np.int64) + 256 * np.arange(n)[:, None]
    hist = np.bincount(flat.ravel(), minlength=256 * n).reshape(n, 256)
    if normalise:
        return hist / codes[0].size
    return hist


def lpq_batch(
    images, window: int = 7, rho: float = 0.90, decorrelate: bool = True, mode: str = "nh"
) -> np.ndarray:
    """LPQ of a stack of grey images of one size; see :func:`lpq`.

    Parameters
    ----------
    images : (N, H, W) array_like
        Grey images, any real dtype and scale.
    window, rho, decorrelate, mode
        As in :func:`lpq`.

    Returns
    -------
    out : ndarray
        ``(N, 256)`` float64 histograms summing to 1 ('nh'), ``(N, 256)`` int64 counts ('h'), or
        ``(N, H - window + 1, W - window + 1)`` uint8 code images ('im').
    """
    window, rho, mode = _check_window(window), _check_rho(rho), _check_mode(mode)
    stack = as_float(images, 3, "images", "LPQ")
    _check_size(stack.shape, window, "each image")
    codes = _codes_stack(stack, window, rho, bool(decorrelate))
    if mode == "im":
        return codes
    return _histograms(codes, normalise=mode == "nh")


def lpq(
    image, window: int = 7, rho: float = 0.90, decorrelate: bool = True, mode: str = "nh"
) -> np.ndarray:
    """Local phase quantisation descriptor of a grey image.

    Parameters
    ----------
    image : (H, W) array_like
        Grey image, any real dtype and scale (codes do not change when the image is scaled by a
        positive constant or shifted by a constant).
    window : int, default 7
        Odd size ``w`` of the local window (the reference default is 3; 7 is common for faces).
    rho : float, default 0.90
        Correlation coefficient between adjacent pixels assumed by the decorrelation, in [0, 1).
    decorrelate : bool, default True
        Whiten the eight channels before quantisation, as the reference does by default.
    mode : {"nh", "h", "im"}, default "nh"
        "nh": histogram normalised to sum 1; "h": histogram of counts; "im": the code image.

    Returns
    -------
    out : ndarray
        ``(256,)`` float64 histogram ('nh'), ``(256,)`` int64 counts ('h'), or a
        ``(H - window + 1, W - window + 1)`` uint8 code image ('im').

    Raises
    ------
    ValueError
        If ``image`` is not 2-D, not real and finite, or smaller than ``window x window``, or a
        parameter is out of range.

    References
    ----------
    .. [1] Ojansivu, V. and Heikkila, J. (2008). Blur insensitive texture classification using
           local phase quantization. ICISP 2008, LNCS 5099, pp. 236-243.
    """
    window, rho, mode = _check_window(window), _check_rho(rho), _check_mode(mode)
    img = as_float(image, 2, "image", "LPQ")
    _check_size(img.shape, window, "image")
    return lpq_batch(img[None], window, rho, decorrelate, mode)[0]


def _cell_edges(n: int, parts: int) -> np.ndarray:
    return (np.arange(parts + 1) * n) // parts


def lpq_grid_batch(
    images, grid=(4, 4), window: int = 7, rho: float = 0.90, decorrelate: bool = True
) -> np.ndarray:
    """Grid LPQ of a stack of grey images of one size; see :func:`lpq_grid`.

    Parameters
    ----------
    images : (N, H, W) array_like
        Grey images, any real dtype and scale.
    grid, window, rho, decorrelate
        As in :func:`lpq_grid`.

    Returns
    -------
    features : (N, grid[0] * grid[1] * 256) ndarray
        float64, one normalised histogram per cell, cells in row-major order.
    """
    stack = as_float(images, 3, "images", "LPQ")
    return _grid_stack(stack, grid, window, rho, decorrelate, "each image")


def _grid_stack(stack, grid, window, rho, decorrelate, name) -> np.ndarray:
    gy, gx = _check_grid(grid)
    window, rho = _check_window(window), _check_rho(rho)
    n, h, w = stack.shape
    ey, ex = _cell_edges(h, gy), _cell_edges(w, gx)
    min_h, min_w = int(np.diff(ey).min()), int(np.diff(ex).min())
    if min_h < window or min_w < window:
        raise ValueError(
            f"{name} is {h}x{w}; a {gy}x{gx} grid of LPQ cells with window {window} needs at "
            f"least {gy * window}x{gx * window} (use a larger image, a smaller grid or window)"
        )
    out = np.empty((n, gy * gx, 256))
    for i in range(gy):
        for j in range(gx):
            cell = stack[:, ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            codes = _codes_stack(cell, window, rho, bool(decorrelate))
            out[:, i * gx + j] = _histograms(codes, normalise=True)
    return out.reshape(n, gy * gx * 256)


def lpq_grid(
    image, grid=(4, 4), window: int = 7, rho: float = 0.90, decorrelate: bool = True
) -> np.ndarray:
    """LPQ histograms of the cells of a grid over a (face) image, concatenated.

    The image is cut into ``grid[0] x grid[1]`` cells (integer boundaries ``k * H // grid[0]``; the
    cells differ by at most one pixel when the size is not divisible) and :func:`lpq` in 'nh'
    mode, with 'valid' borders, is computed on each cell.

    Parameters
    ----------
    image : (H, W) array_like
        Grey image, any real dtype and scale.
    grid : (int, int), default (4, 4)
        Cells along rows and along columns.
    window, rho, decorrelate
        As in :func:`lpq`.

    Returns
    -------
    features : (grid[0] * grid[1] * 256,) ndarray
        float64; each consecutive block of 256 sums to 1; cells in row-major order.

    Raises
    ------
    ValueError
        If a cell would be smaller than ``window x window``, or as :func:`lpq`.
    """
    img = as_float(image, 2, "image", "LPQ")
    return _grid_stack(img[None], grid, window, rho, decorrelate, "image")[0]


__all__ = ["MODES", "lpq", "lpq_batch", "lpq_grid", "lpq_grid_batch"]
