"""LPQ: the fast implementation against slow, obviously-correct loops; the spec's invariances."""

from __future__ import annotations

import cmath
import importlib
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.signal import convolve2d
from skimage import data

from fertool.features.descriptors import lpq, lpq_batch, lpq_grid, lpq_grid_batch
from fertool.features.descriptors.lpq import _responses, _whitening

# the package re-exports the function lpq, which shadows the submodule's attribute name
lpq_mod = importlib.import_module("fertool.features.descriptors.lpq")

# ---------------------------------------------------------------------------------------------
# Slow reference: a literal transcription of lpq.m with explicit loops (MATLAB's column-major
# order for the window positions, which the decorrelation must not depend on).


def _filter_1d(kind: str, x: int, w: int) -> complex:
    if kind == "w0":
        return 1.0 + 0j
    w1 = cmath.exp(-2j * math.pi * x / w)
    return w1 if kind == "w1" else w1.conjugate()


PAIRS = (("w0", "w1"), ("w1", "w0"), ("w1", "w1"), ("w1", "w2"))  # (rows, columns)


def slow_whitening(w: int, rho: float) -> np.ndarray:
    r = (w - 1) // 2
    xs = list(range(-r, r + 1))
    # positions in column-major order, as MATLAB's pp = [xp(:) yp(:)]
    pos = [(row, col) for col in range(w) for row in range(w)]
    n = len(pos)
    cov = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            cov[i, j] = rho ** math.dist(pos[i], pos[j])
    m = np.empty((8, n))
    for f, (a, b) in enumerate(PAIRS):
        for k, (row, col) in enumerate(pos):
            q = _filter_1d(a, xs[row], w) * _filter_1d(b, xs[col], w)
            m[2 * f, k] = q.real
            m[2 * f + 1, k] = q.imag
    d = m @ cov @ m.T
    a = np.diag([1.000007, 1.000006, 1.000005, 1.000004, 1.000003, 1.000002, 1.000001, 1.0])
    _, _, vt = np.linalg.svd(a @ d @ a)
    v = vt.T
    for col in range(8):
        big = max(range(8), key=lambda i: abs(v[i, col]))
        if v[big, col] < 0:
            v[:, col] = -v[:, col]
    return v


def slow_channels(img: np.ndarray, w: int, correlate: bool = False) -> np.ndarray:
    r = (w - 1) // 2
    h, wd = img.shape
    out = np.empty((h - 2 * r, wd - 2 * r, 8))
    sign = 1 if correlate else -1  # convolution reads img[c - x], correlation img[c + x]
    for i in range(h - 2 * r):
        for j in range(wd - 2 * r):
            ci, cj = i + r, j + r
            for f, (a, b) in enumerate(PAIRS):
                s = 0j
                for y in range(-r, r + 1):
                    for x in range(-r, r + 1):
                        s += (
                            _filter_1d(a, y, w)
                            * _filter_1d(b, x, w)
                            * img[ci + sign * y, cj + sign * x]
                        )
                out[i, j, 2 * f] = s.real
                out[i, j, 2 * f + 1] = s.imag
    return out


def slow_codes(img, w=7, rho=0.9, decorrelate=True, correlate=False) -> np.ndarray:
    ch = slow_channels(np.asarray(img, dtype=float), w, correlate)
    v = slow_whitening(w, rho) if decorrelate else np.eye(8)
    codes = np.zeros(ch.shape[:2], dtype=int)
    for i in range(ch.shape[0]):
        for j in range(ch.shape[1]):
            vec = v.T @ ch[i, j]
            codes[i, j] = sum(2**k for k in range(8) if vec[k] > 0)
    return codes


def chi_square(a, b) -> float:
    m = (a + b) > 0
    return float(((a - b)[m] ** 2 / (a + b)[m]).sum())


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def camera():
    return data.camera()[100:228, 200:328]  # uint8, has flat sky and texture


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [3, 5, 7])
def test_whitening_matches_slow_reference(w):
    assert np.allclose(_whitening(w, 0.9), slow_whitening(w, 0.9), atol=1e-12)


@pytest.mark.parametrize("w", [3, 5, 7, 9, 11])
def test_sign_fixing_is_well_defined(w):
    # The tie-breaking A separates the two largest magnitudes of every singular vector by far
    # more than rounding error, so "largest entry positive" picks the same entry everywhere.
    v = _whitening(w, 0.9)
    mag = np.sort(np.abs(v), axis=0)
    assert np.all(mag[-1] - mag[-2] > 1e-7)
    assert np.all(v[np.argmax(np.abs(v), axis=0), np.arange(8)] > 0)
    np.testing.assert_allclose(v.T @ v, np.eye(8), atol=1e-12)


@pytest.mark.parametrize(
    ("w", "decorrelate", "shape"), [(3, True, (9, 11)), (5, False, (12, 10)), (7, True, (14, 13))]
)
def test_codes_equal_slow_reference(rng, w, decorrelate, shape):
    img = rng.integers(0, 256, shape).astype(np.uint8)
    fast = lpq(img, window=w, decorrelate=decorrelate, mode="im")
    assert fast.dtype == np.uint8 and fast.shape == (shape[0] - w + 1, shape[1] - w + 1)
    np.testing.assert_array_equal(fast, slow_codes(img, w, 0.9, decorrelate))


def test_channels_match_scipy_convolve2d(rng):
    img = rng.normal(100, 40, (23, 31))
    w, r = 7, 3
    x = np.arange(-r, r + 1)
    w0, w1 = np.ones(w), np.exp(-2j * np.pi * x / w)
    expected = []
    for a, b in ((w0, w1), (w1, w0), (w1, w1), (w1, np.conj(w1))):
        f = convolve2d(convolve2d(img, a[:, None], "valid"), b[None, :], "valid")
        expected += [f.real, f.imag]
    np.testing.assert_allclose(_responses(img, w), np.stack(expected, -1), rtol=0, atol=1e-9)


def test_first_channel_is_brute_force_window_sum(rng):
    img = rng.normal(0, 1, (15, 17))
    w, r, (i, j) = 7, 3, (4, 6)  # output pixel (i, j) is centred on image pixel (i + r, j + r)
    total = 0j
    for y in range(-r, r + 1):
        for x in range(-r, r + 1):
            total += 1.0 * np.exp(-2j * np.pi * x / w) * img[i + r - y, j + r - x]
    ch = _responses(img, w)
    assert ch[i, j, 0] == pytest.approx(total.real, abs=1e-12)
    assert ch[i, j, 1] == pytest.approx(total.imag, abs=1e-12)


def test_correlation_variant_gives_different_codes(rng):
    img = rng.integers(0, 256, (14, 14)).astype(float)
    conv = lpq(img, mode="im").astype(int)
    corr = slow_codes(img, 7, 0.9, True, correlate=True)
    np.testing.assert_array_equal(conv, slow_codes(img, 7, 0.9, True))
    assert np.mean(conv != corr) > 0.9
    # without decorrelation, correlation flips exactly the four imaginary-part bits
    plain = lpq(img, decorrelate=False, mode="im").astype(int)
    flipped = slow_codes(img, 7, 0.9, False, correlate=True)
    np.testing.assert_array_equal(plain ^ 0b10101010, flipped)


def test_histogram_modes(camera):
    h = lpq(camera)
    assert h.shape == (256,) and h.dtype == np.float64
    assert h.sum() == pytest.approx(1.0, abs=1e-12) and np.all(h >= 0)
    counts = lpq(camera, mode="h")
    assert counts.dtype.kind == "i" and counts.sum() == 122 * 122
    codes = lpq(camera, mode="im")
    np.testing.assert_array_equal(np.bincount(codes.ravel(), minlength=256), counts)
    np.testing.assert_allclose(h, counts / counts.sum(), rtol=1e-15)


def test_codes_invariant_to_scaling_and_offset(camera, rng):
    base = lpq(camera, mode="im")
    f = camera.astype(float)
    # exact for an integer-valued image, flat sky included
    for variant in (f + 1000.0, f - 57.0, 2.0 * f, 0.25 * f):
        np.testing.assert_array_equal(lpq(variant, mode="im"), base)
    noise = rng.normal(0, 1, (40, 40))
    ref = lpq(noise, mode="im")
    for variant in (noise * 3.7, noise * 1e-3, noise + 0.5):
        np.testing.assert_array_equal(lpq(variant, mode="im"), ref)


def test_flat_image_has_code_zero():
    codes = lpq(np.full((12, 12), 77, dtype=np.uint8), mode="im")
    assert not codes.any()


def test_blur_moves_histogram_less_than_another_image(camera):
    h = lpq(camera)
    blurred = chi_square(h, lpq(ndi.gaussian_filter(camera.astype(float), 0.75)))
    others = []
    for name in ("moon", "coins", "brick", "grass"):
        other = getattr(data, name)()[100:228, 100:228]
        others.append(chi_square(h, lpq(other)))
    assert blurred < 0.25 * min(others)


def test_batch_equals_single_and_chunks(rng, monkeypatch):
    stack = rng.integers(0, 256, (7, 20, 18)).astype(np.uint8)
    single = np.stack([lpq(im) for im in stack])
    np.testing.assert_array_equal(lpq_batch(stack), single)
    monkeypatch.setattr(lpq_mod, "_CHUNK_PIXELS", 2 * 20 * 18)  # force chunks of 2 images
    np.testing.assert_array_equal(lpq_batch(stack), single)
    np.testing.assert_array_equal(
        lpq_batch(stack, mode="im"), np.stack([lpq(im, mode="im") for im in stack])
    )


def test_grid_concatenates_cell_histograms(rng):
    img = rng.integers(0, 256, (30, 33)).astype(np.uint8)
    feats = lpq_grid(img, grid=(2, 3), window=5)
    assert feats.shape == (6 * 256,)
    blocks = feats.reshape(6, 256)
    np.testing.assert_allclose(blocks.sum(axis=1), 1.0, atol=1e-12)
    rows, cols = [0, 15, 30], [0, 11, 22, 33]
    for i in range(2):
        for j in range(3):
            cell = img[rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            np.testing.assert_array_equal(blocks[i * 3 + j], lpq(cell, window=5))
    stack = np.stack([img, img[::-1], 255 - img])
    np.testing.assert_array_equal(
        lpq_grid_batch(stack, grid=(2, 3), window=5),
        np.stack([lpq_grid(im, grid=(2, 3), window=5) for im in stack]),
    )
    assert lpq_grid(rng.random((64, 64))).shape == (4096,)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: lpq(np.zeros((5, 5))), r"image is 5x5; LPQ with window 7 needs at least 7x7"),
        (lambda: lpq(np.zeros((8, 8, 3))), r"2-D grey image.*convert colour"),
        (lambda: lpq(np.zeros((9, 9)), window=4), r"window must be an odd integer >= 3"),
        (lambda: lpq(np.zeros((9, 9)), window=1), r"window must be an odd integer"),
        (lambda: lpq(np.zeros((9, 9)), window=7.0), r"window must be an odd integer"),
        (lambda: lpq(np.zeros((9, 9)), rho=1.0), r"rho must be a number in \[0, 1\)"),
        (lambda: lpq(np.zeros((9, 9)), mode="hist"), r"mode must be one of 'nh', 'h', 'im'"),
        (lambda: lpq(np.full((9, 9), np.nan)), r"NaN or infinite"),
        (lambda: lpq(np.zeros((9, 9), dtype=complex)), r"real numbers"),
        (lambda: lpq_batch(np.zeros((9, 9))), r"stack of grey images \(N, H, W\)"),
        (lambda: lpq_grid(np.zeros((20, 20))), r"image is 20x20; a 4x4 grid .* at least 28x28"),
        (lambda: lpq_grid(np.zeros((64, 64)), grid=(0, 4)), r"grid must be a pair of positive"),
        (lambda: lpq_grid(np.zeros((64, 64)), grid=4), r"grid must be a pair"),
    ],
)
def test_input_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# LPQTransformer and the shared face preparation (grey conversion, resizing)


def test_prepare_faces_grey_and_resize(rng):
    from skimage.transform import resize

    from fertool.features.descriptors import prepare_faces, to_grey

    rgb = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    grey = to_grey(rgb)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(grey, expected, rtol=1e-12)
    faces = prepare_faces(rgb, 16)
    one_by_one = np.stack(
        [resize(g, (16, 16), anti_aliasing=True, preserve_range=True) for g in grey]
    )
    np.testing.assert_allclose(faces, one_by_one, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(prepare_faces(grey, None), grey)
    mixed = prepare_faces([rgb[0], rgb[1, :30, :20]], 16)
    assert mixed.shape == (2, 16, 16)
    np.testing.assert_allclose(mixed[0], one_by_one[0], atol=1e-12)
    with pytest.raises(ValueError, match="different sizes; give size="):
        prepare_faces([rgb[0], rgb[1, :30]], None)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) RGB or \(N, H, W\) grey"):
        prepare_faces(rgb[0, :, :, 0], 16)


def test_lpq_transformer_output(rng):
    from fertool.features.descriptors import LPQTransformer, prepare_faces

    rgb = rng.integers(0, 256, (5, 80, 80, 3), dtype=np.uint8)
    t = LPQTransformer(size=32, grid=(2, 2), window=5)
    assert t.fit(rgb) is t
    out = t.transform(rgb)
    assert out.shape == (5, 4 * 256)
    np.testing.assert_array_equal(out, lpq_grid_batch(prepare_faces(rgb, 32), (2, 2), 5))
    green = rgb[..., 1].copy()  # a grey (N, H, W) batch goes through unchanged by to_grey
    np.testing.assert_array_equal(
        t.transform(green), lpq_grid_batch(prepare_faces(green, 32), (2, 2), 5)
    )
    assert LPQTransformer().fit_transform(rgb).shape == (5, 4096)
    names = t.get_feature_names_out()
    assert len(names) == 1024 and names[0] == "lpq0"
    assert LPQTransformer(size=32).transform(rgb[:0]).shape == (0, 4096)


def test_lpq_transformer_sklearn_conventions(rng):
    import pickle

    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_set_params,
    )
    from sklearn.utils.validation import check_is_fitted

    from fertool.features.descriptors import LPQTransformer

    t = LPQTransformer(size=48, grid=(3, 3), window=5, rho=0.8, decorrelate=False)
    for check in (
        check_no_attributes_set_in_init,
        check_get_params_invariance,
        check_set_params,
        check_parameters_default_constructible,
    ):
        check("LPQTransformer", t)
    c = clone(t)
    assert c.get_params() == t.get_params() and c is not t
    assert pickle.loads(pickle.dumps(t)).get_params() == t.get_params()
    check_is_fitted(t)  # stateless: usable without fit
    rgb = rng.integers(0, 256, (12, 48, 48, 3), dtype=np.uint8)
    y = np.arange(12) % 2
    pipe = make_pipeline(LPQTransformer(size=32, grid=(2, 2)), StandardScaler(), LinearSVC())
    assert pipe.fit(rgb, y).predict(rgb).shape == (12,)
    pipe.set_params(lpqtransformer__window=3)
    assert pipe.fit(rgb, y).named_steps["standardscaler"].n_features_in_ == 1024
    with pytest.raises(ValueError, match="window must be an odd integer"):
        LPQTransformer(window=6).fit(rgb)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        LPQTransformer(size=0).transform(rgb)
