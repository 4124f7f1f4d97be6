"""PHOG: the fast implementation against a slow transcription of anna_phog.m; invariances."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from fertool.features.descriptors import phog, phog_batch, phog_length

# the package re-exports the function phog, which shadows the submodule's attribute name
phog_mod = importlib.import_module("fertool.features.descriptors.phog")


def slow_phog(img, bins=8, levels=3, angle=360, roi=None):
    """anna_phog.m with loops (sizes divisible by 2**levels), on fertool's Canny edge mask."""
    g = np.asarray(img, dtype=float)
    h, w = g.shape
    if g.max() == g.min():
        return np.zeros(bins * (4 ** (levels + 1) - 1) // 3)
    edges = phog_mod._edges((g - g.min()) / (g.max() - g.min()), math.sqrt(2))
    # MATLAB gradient: central differences inside, one-sided at the borders
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    for i in range(h):
        for j in range(w):
            if 0 < j < w - 1:
                gx[i, j] = (g[i, j + 1] - g[i, j - 1]) / 2
            else:
                gx[i, j] = g[i, 1] - g[i, 0] if j == 0 else g[i, j] - g[i, j - 1]
            if 0 < i < h - 1:
                gy[i, j] = (g[i + 1, j] - g[i - 1, j]) / 2
            else:
                gy[i, j] = g[1, j] - g[0, j] if i == 0 else g[i, j] - g[i - 1, j]
    bh = np.zeros((h, w), dtype=int)  # 1-based bin, 0 = no vote
    bv = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            mag = math.hypot(gx[i, j], gy[i, j])
            if not edges[i, j] or mag <= 0:
                continue
            if angle == 360:
                a = (math.atan2(gy[i, j], gx[i, j]) + math.pi) * 180 / math.pi
            else:
                x = gx[i, j] if gx[i, j] != 0 else 1e-5
                a = (math.atan(gy[i, j] / x) + math.pi / 2) * 180 / math.pi
            bh[i, j] = max(1, math.ceil(a / (angle / bins)))
            bv[i, j] = mag
    top, bottom, left, right = roi or (0, h, 0, w)
    bh, bv = bh[top:bottom, left:right], bv[top:bottom, left:right]
    p = [bv[bh == b].sum() for b in range(1, bins + 1)]
    for level in range(1, levels + 1):
        cw, ch = bh.shape[1] // 2**level, bh.shape[0] // 2**level
        xx = 0
        while xx + cw <= bh.shape[1]:
            yy = 0
            while yy + ch <= bh.shape[0]:
                cell_h, cell_v = bh[yy : yy + ch, xx : xx + cw], bv[yy : yy + ch, xx : xx + cw]
                p += [cell_v[cell_h == b].sum() for b in range(1, bins + 1)]
                yy += ch
            xx += cw
    p = np.array(p)
    return p / p.sum() if p.sum() else p


@pytest.fixture(scope="module")
def face_like():
    """A smooth natural image, 64x64 float in [0, 255]."""
    return resize(data.camera()[60:316, 150:406], (64, 64), anti_aliasing=True) * 255


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


def test_length_and_sum(face_like):
    p = phog(face_like)
    assert p.shape == (680,) and p.dtype == np.float64
    assert p.sum() == pytest.approx(1.0, abs=1e-12) and np.all(p >= 0)
    assert phog_length() == 680
    for bins, levels in ((8, 0), (9, 2), (4, 4)):
        assert phog(face_like, bins=bins, levels=levels).shape == (phog_length(bins, levels),)
        assert phog_length(bins, levels) == bins * (4 ** (levels + 1) - 1) // 3


def test_flat_image_gives_zeros():
    for value in (0, 128, 255):
        p = phog(np.full((32, 32), value, dtype=np.uint8))
        assert p.shape == (680,) and not p.any()


@pytest.mark.parametrize("shape", [(64, 64), (61, 50)])
def test_levels_are_sums_of_their_cells(face_like, shape):
    img = face_like[: shape[0], : shape[1]]
    p = phog(img)
    l0, l1, l2 = p[:8], p[8:40].reshape(4, 8), p[40:168].reshape(4, 4, 8)
    np.testing.assert_allclose(l0, l1.sum(axis=0), rtol=0, atol=1e-14)
    # column-major cells: level-2 index (cx, cy) -> level-1 cell (cx // 2, cy // 2)
    l1_from_l2 = l2.reshape(2, 2, 2, 2, 8).sum(axis=(1, 3)).reshape(4, 8)
    np.testing.assert_allclose(l1, l1_from_l2, rtol=0, atol=1e-14)


def test_brightening_leaves_it_unchanged(face_like):
    p = phog(face_like)
    np.testing.assert_array_equal(phog(2.0 * face_like), p)
    np.testing.assert_allclose(phog(1.3 * face_like + 17.0), p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(phog(face_like / 255.0), p, rtol=0, atol=1e-12)
    as_uint8 = np.round(face_like * 0.8).astype(np.uint8)
    np.testing.assert_allclose(
        phog(as_uint8.astype(np.uint16) + 40), phog(as_uint8), rtol=0, atol=1e-12
    )


def test_180_degree_rotation_shifts_level0_bins(face_like):
    p = phog(face_like)
    r = phog(np.rot90(face_like, 2))
    np.testing.assert_allclose(r[:8], np.roll(p[:8], 4), rtol=0, atol=1e-12)
    p6 = phog(face_like, bins=6, levels=1)
    r6 = phog(np.rot90(face_like, 2), bins=6, levels=1)
    np.testing.assert_allclose(r6[:6], np.roll(p6[:6], 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "kw"),
    [
        ((32, 32), {}),
        ((24, 40), {"bins": 9, "levels": 2, "angle": 180}),
        ((32, 32), {"angle": 180}),
        ((40, 48), {"levels": 2, "roi": (4, 36, 8, 40)}),
    ],
)
def test_matches_slow_reference(face_like, rng, shape, kw):
    # integer-valued images, so that gx == 0 happens and the 180-degree rule for it is exercised
    img = np.round(resize(face_like, shape) + rng.normal(0, 3, shape)).clip(0, 255)
    np.testing.assert_allclose(phog(img, **kw), slow_phog(img, **kw), rtol=1e-12, atol=1e-15)


def test_roi_uses_edges_of_the_whole_image(face_like):
    roi = (16, 48, 0, 32)
    p = phog(face_like, levels=2, roi=roi)
    assert p.shape == (168,) and p.sum() == pytest.approx(1.0)
    # not the same as cropping first: edges and gradients see the context outside the roi
    cropped = phog(face_like[16:48, 0:32], levels=2)
    assert not np.allclose(p, cropped)


def test_batch_equals_single(face_like, rng):
    stack = np.stack([face_like, face_like[::-1], rng.integers(0, 256, (64, 64)).astype(float)])
    np.testing.assert_array_equal(phog_batch(stack), np.stack([phog(im) for im in stack]))
    np.testing.assert_array_equal(
        phog_batch(stack, bins=4, levels=1, angle=180),
        np.stack([phog(im, bins=4, levels=1, angle=180) for im in stack]),
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: phog(np.zeros((5, 5))), r"image is 5x5; PHOG with levels=3 needs at least 8x8"),
        (lambda: phog(np.zeros((8, 8, 3))), r"2-D grey image.*convert colour"),
        (lambda: phog(np.zeros((16, 16)), bins=0), r"bins must be a positive integer"),
        (lambda: phog(np.zeros((16, 16)), levels=-1), r"levels must be an integer >= 0"),
        (lambda: phog(np.zeros((16, 16)), angle=90), r"angle must be 180 or 360"),
        (lambda: phog(np.zeros((16, 16)), roi=(0, 20, 0, 16)), r"not inside the 16x16 image"),
        (lambda: phog(np.zeros((16, 16)), roi=(0, 4, 0, 16)), r"roi is 4x16; .* at least 8x8"),
        (lambda: phog(np.zeros((16, 16)), roi="all"), r"roi must be \(top, bottom, left, right\)"),
        (lambda: phog(np.full((16, 16), np.inf)), r"NaN or infinite"),
        (lambda: phog(np.zeros((16, 16)), sigma=0), r"sigma must be a positive number"),
        (lambda: phog_batch(np.zeros((16, 16))), r"stack of grey images \(N, H, W\)"),
    ],
)
def test_input_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_phog_transformer(rng):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_set_params,
    )

    from fertool.features.descriptors import PHOGTransformer, prepare_faces

    t = PHOGTransformer(size=32, bins=9, levels=2, angle=180)
    for check in (check_no_attributes_set_in_init, check_get_params_invariance, check_set_params):
        check("PHOGTransformer", t)
    assert clone(t).get_params() == t.get_params()
    rgb = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    out = t.fit(rgb).transform(rgb)
    assert out.shape == (10, phog_length(9, 2))
    np.testing.assert_array_equal(out, phog_batch(prepare_faces(rgb, 32), 9, 2, 180))
    assert PHOGTransformer().fit_transform(rgb).shape == (10, 680)
    assert t.get_feature_names_out()[-1] == f"phog{phog_length(9, 2) - 1}"
    # the descriptor's parameters can be searched like any other step's
    y = np.arange(10) % 2
    search = GridSearchCV(
        make_pipeline(PHOGTransformer(size=32), SVC()), {"phogtransformer__levels": [1, 2]}, cv=2
    )
    assert search.fit(rgb, y).best_params_["phogtransformer__levels"] in (1, 2)
    with pytest.raises(ValueError, match="angle must be 180 or 360"):
        PHOGTransformer(angle=90).fit(rgb)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) RGB or \(N, H, W\) grey"):
        PHOGTransformer().fit(rgb[..., :2])
