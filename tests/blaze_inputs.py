"""The 16 generated 192x192 inputs of tests/fixtures/blaze_ref.npz (the LiteRT reference of the
BlazeFace/FaceMesh conversion): seeded noise, gradients, checkerboards and Pillow-drawn cartoon
faces; no dataset pixels. Needs numpy and Pillow only (it also ran in the LiteRT reference venv).
"""

import numpy as np
from PIL import Image, ImageDraw

S = 192


def _block_noise(rng, cells, s=S):
    small = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, s // cells, 0), s // cells, 1)


def _face(draw, cx, cy, r, skin=(224, 172, 140), angle=0.0):
    ca, sa = np.cos(angle), np.sin(angle)

    def p(dx, dy):
        return (cx + ca * dx - sa * dy, cy + sa * dx + ca * dy)

    def ell(dx, dy, rx, ry, fill):
        x, y = p(dx, dy)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)

    ell(0, 0, r * 0.8, r, skin)  # head
    ell(-0.35 * r, -0.25 * r, 0.16 * r, 0.09 * r, (255, 255, 255))
    ell(0.35 * r, -0.25 * r, 0.16 * r, 0.09 * r, (255, 255, 255))
    ell(-0.35 * r, -0.25 * r, 0.07 * r, 0.07 * r, (40, 30, 20))
    ell(0.35 * r, -0.25 * r, 0.07 * r, 0.07 * r, (40, 30, 20))
    draw.line(
        [p(-0.5 * r, -0.45 * r), p(-0.2 * r, -0.5 * r)],
        fill=(60, 40, 30),
        width=max(1, int(r * 0.05)),
    )
    draw.line(
        [p(0.2 * r, -0.5 * r), p(0.5 * r, -0.45 * r)],
        fill=(60, 40, 30),
        width=max(1, int(r * 0.05)),
    )
    draw.polygon(
        [p(0, -0.15 * r), p(-0.1 * r, 0.15 * r), p(0.1 * r, 0.15 * r)], fill=(200, 140, 110)
    )
    draw.line(
        [p(-0.3 * r, 0.45 * r), p(0, 0.52 * r), p(0.3 * r, 0.45 * r)],
        fill=(150, 50, 50),
        width=max(1, int(r * 0.07)),
    )


def make_inputs() -> np.ndarray:
    """Return uint8 [16, 192, 192, 3]."""
    rng = np.random.default_rng(20240601)
    imgs = []
    imgs.append(np.zeros((S, S, 3), np.uint8))  # 0 black (tensor -1)
    imgs.append(np.full((S, S, 3), 255, np.uint8))  # 1 white (+1)
    imgs.append(np.full((S, S, 3), 128, np.uint8))  # 2 mid grey
    imgs.append(_block_noise(rng, 48))  # 3 4-px block noise
    imgs.append(_block_noise(rng, 24))  # 4 8-px block noise
    yy, xx = np.mgrid[0:S, 0:S]
    imgs.append(
        np.stack([(xx // 12) * 17, (yy // 12) * 17, ((xx + yy) // 24) * 16], -1).astype(np.uint8)
    )  # 5 stepped gradients
    imgs.append(
        (((xx // 8 + yy // 8) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    )  # 6 checker
    chk = ((xx // 24 + yy // 24) % 2).astype(bool)
    im = np.zeros((S, S, 3), np.uint8)
    im[chk] = (200, 60, 30)
    im[~chk] = (20, 90, 210)
    imgs.append(im)  # 7 coloured checker
    r = np.hypot(xx - 96, yy - 96)
    imgs.append(
        np.stack([np.round(np.sin(r / 3) * 3.5 + 3.5) * 36] * 3, -1).astype(np.uint8)
    )  # 8 rings
    # 9..15: drawn faces on various backgrounds
    specs = [
        ((90, 110, 70), [(96, 96, 60, 0.0)]),  # 9 big centred face
        ((30, 30, 30), [(60, 70, 25, 0.0)]),  # 10 small face, offset
        ((170, 200, 230), [(55, 100, 30, 0.0), (140, 90, 34, 0.0)]),  # 11 two faces
        ((120, 120, 90), [(96, 100, 50, 0.35)]),  # 12 rotated face
        (None, [(100, 96, 45, -0.2)]),  # 13 face on block noise
        ((240, 240, 240), [(96, 96, 85, 0.0)]),  # 14 very large face
        (None, [(70, 120, 20, 0.0), (150, 50, 18, 0.1)]),  # 15 tiny faces on noise
    ]
    for bg, faces in specs:
        if bg is None:
            base = Image.fromarray(_block_noise(rng, 24) // 2 + 64)
        else:
            base = Image.new("RGB", (S, S), bg)
        d = ImageDraw.Draw(base)
        for cx, cy, rr, ang in faces:
            _face(d, cx, cy, rr, angle=ang)
        imgs.append(np.asarray(base))
    out = np.stack(imgs)
    assert out.shape == (16, S, S, 3) and out.dtype == np.uint8
    return out


DESCRIPTIONS = [
    "black",
    "white",
    "grey128",
    "noise4px",
    "noise8px",
    "gradients",
    "checker8",
    "checker24_colour",
    "rings",
    "face_big",
    "face_small",
    "two_faces",
    "face_rotated",
    "face_on_noise",
    "face_very_large",
    "tiny_faces_on_noise",
]
