"""Facial features of :mod:`fertool.data.synthetic`: nose, eyes, brows and mouth.

Each ``_draw_*`` routine paints one feature onto a :class:`~fertool.data.synthetic.frame._Frame`
following the expression parameters of the face; :func:`_mouth_geometry` computes the lip and
opening outlines that the skin shading, the folds and the landmarks also use.
"""

from __future__ import annotations

import numpy as np

from fertool.data.synthetic.expressions import _Face, _Identity
from fertool.data.synthetic.frame import _ellipse, _Frame


def _draw_nose(fr: _Frame, ident: _Identity, p: dict) -> None:
    ny, nw, skin = ident.nose_y, ident.nose_w, ident.skin
    lift = 0.03 * p["wrinkle"]
    flare = 1 + 0.3 * p["wrinkle"] + 0.2 * p["furrow"]
    wings = []
    nostrils = []
    for k in (-1, 1):
        cx = k * nw * 0.55 * flare
        x, y = _ellipse(cx, ny + 0.045 - lift, 0.032 * flare, 0.016, k * 0.3, n=24)
        nostrils.append(fr.project(x, y, 0.12))
        t = np.linspace(-1.7, 1.9, 12)
        x = k * nw * 0.72 * flare + k * 0.045 * np.cos(t)
        y = ny + 0.02 - lift + 0.04 * np.sin(t) * 1.0
        wings.append(fr.project(x, y, 0.12))
    fr.paint(skin * 0.6, fr.lines(*wings, width=0.012), 0.55)
    fr.paint(skin * 0.28, fr.mask(*nostrils), 0.9)


def _draw_eye(fr: _Frame, face: _Face, k: int) -> None:
    ident, p = face.identity, face.params
    ex, ey, ew = k * ident.eye_dx, ident.eye_y, ident.eye_w
    hu = ident.eye_h * (1 + p["eye_open"])
    hl = ident.eye_h * 0.62 * (1 - p["eye_lower"])
    xn = np.linspace(-1, 1, 25)
    q = k * xn  # +1 at the outer corner
    tilt = 0.012
    x = ex + ew * xn
    yu = ey - hu * (1 - xn**2) ** 0.6 * (1 - 0.12 * q) - tilt * q
    yl = ey + hl * (1 - xn**2) ** 0.85 * (1 + 0.1 * q) - tilt * q
    depth = -0.03
    eye = fr.mask(fr.project(np.concatenate([x, x[::-1]]), np.concatenate([yu, yl[::-1]]), depth))
    if eye.a.size:
        v = fr.V[eye.slices]
        sclera_shade = 0.8 + 0.2 * np.clip((v - (ey - hu)) / (hu + hl + 1e-6), 0, 1)
        fr.paint(np.array([236, 232, 226], np.float32) * sclera_shade[..., None], eye)

    ri = 0.062 * ew / 0.135
    icx = ex + face.gaze[0] * ew * 0.3
    icy = ey + 0.006 + face.gaze[1] * 0.012
    pcx, pcy = fr.project(icx, icy, depth)
    pcx, pcy = float(pcx), float(pcy)
    iris = fr.mask(fr.project(*_ellipse(icx, icy, ri, ri, n=32), depth)) * eye
    if iris.a.size:
        sl = iris.slices
        r2 = ((fr.U[sl] - pcx) ** 2 + (fr.V[sl] - pcy) ** 2) / ri**2
        fr.paint(ident.iris * np.clip(1.15 - 0.55 * r2, 0.35, 1.2)[..., None], iris)
    fr.paint(
        (14, 10, 10),
        fr.mask(fr.project(*_ellipse(icx, icy, ri * 0.42, ri * 0.42, n=24), depth)) * eye,
    )
    hx = icx - 0.35 * ri * (1 if face.light[0] <= 0 else -1)
    glint = fr.mask(fr.project(*_ellipse(hx, icy - 0.35 * ri, ri * 0.17, ri * 0.17, n=16), depth))
    fr.paint((250, 250, 250), glint * eye, 0.9)

    # upper lid line with lashes (flicking past the outer corner), crease, lower lid
    lid_x = (
        np.concatenate([x, [ex + k * ew * 1.15]])
        if k > 0
        else np.concatenate([[ex - ew * 1.15], x])
    )
    flick = ey - tilt - 0.018
    lid_y = np.concatenate([yu, [flick]]) if k > 0 else np.concatenate([[flick], yu])
    fr.paint((28, 20, 20), fr.lines(fr.project(lid_x, lid_y, depth), width=0.02), 0.92)
    fr.paint(ident.skin * 0.55, fr.lines(fr.project(x, yl, depth), width=0.008), 0.55)
    sel = np.abs(xn) < 0.85
    crease_y = yu[sel] - 0.03 - 0.25 * ident.eye_h
    fr.paint(ident.skin * 0.6, fr.lines(fr.project(x[sel], crease_y, depth), width=0.008), 0.45)


def _draw_brow(fr: _Frame, face: _Face, k: int) -> None:
    ident, p = face.identity, face.params
    asym = 1 + 0.4 * p["asym"] * (1 if k == face.side else -1)
    inner = ident.eye_dx - ident.eye_w * 0.95 - p["brow_pull"]
    outer = ident.eye_dx + ident.eye_w * 1.25
    t = np.linspace(0, 1, 24)
    x = k * (inner + t * (outer - inner))
    y = (ident.eye_y - ident.brow_gap + p["brow_in"] * asym * (1 - t) + p["brow_out"] * t
         - (0.035 + p["brow_arch"]) * np.sin(np.pi * t**0.75) + 0.02 * t**2)  # fmt: skip
    th = ident.brow_thick * (1.15 - 0.6 * t)
    poly = fr.project(
        np.concatenate([x, x[::-1]]), np.concatenate([y - th / 2, (y + th / 2)[::-1]])
    )
    colour = np.minimum(ident.hair * 0.7, 90.0)
    fr.paint(colour, fr.mask(poly), 0.92)


def _mouth_geometry(ident: _Identity, p: dict, side: int, W: float) -> dict:
    xn = np.linspace(-1, 1, 41)
    my = ident.mouth_y
    # centre line: corners up (lift > 0) or down; a one-sided sneer for disgust
    m = my - p["lift"] * xn**2 - 0.03 * p["asym"] * np.clip(side * xn, 0, None) ** 2
    m = m - 0.012 * p["pout"] * (1 - xn**2)
    f = (1 - xn**2) ** (0.7 - 0.2 * min(p["round"], 1))
    raise_w = np.clip(1 + 0.6 * p["asym"] * side * xn, 0, None) * (1 - xn**2) ** 0.5
    iu = m - p["open"] * 0.32 * f - p["lip_raise"] * raise_w
    il = m + p["open"] * 0.68 * f
    press = 1 - 0.75 * min(p["press"], 1)
    bow = 1 - 0.25 * np.exp(-((xn / 0.15) ** 2))
    uo = iu - 0.045 * ident.lips * press * (1 - xn**2) ** 0.5 * bow
    lo = il + (0.06 * ident.lips * press + 0.02 * p["pout"]) * (1 - xn**2) ** 0.6
    return {
        "x": W * xn,
        "f": f,
        "m": m,
        "iu": iu,
        "il": il,
        "uo": uo,
        "lo": lo,
        "half_width": W,
        "corners": (float(m[0]), float(m[-1])),
        "lower_edge": float(lo[len(xn) // 2]),
    }


def _draw_mouth(fr: _Frame, ident: _Identity, p: dict, g: dict) -> None:
    x, depth = g["x"], 0.03
    lip = ident.skin * np.array([0.8, 0.5, 0.52]) + np.array([25, 0, 5])
    lips = fr.mask(
        fr.project(np.concatenate([x, x[::-1]]), np.concatenate([g["uo"], g["lo"][::-1]]), depth)
    )
    fr.paint(lip, lips)
    upper = fr.mask(
        fr.project(np.concatenate([x, x[::-1]]), np.concatenate([g["uo"], g["m"][::-1]]), depth)
    )
    fr.paint(lip * 0.85, upper)
    gap = g["il"] - g["iu"]
    if gap.max() > 0.004:
        opening = fr.mask(
            fr.project(
                np.concatenate([x, x[::-1]]), np.concatenate([g["iu"], g["il"][::-1]]), depth
            )
        )
        fr.paint((62, 22, 26), opening)
        teeth = []
        if p["teeth_up"] > 0.05:
            band = np.minimum(0.05 * g["f"] ** 0.3, gap * 0.75)
            teeth.append((p["teeth_up"], g["iu"], g["iu"] + band))
        if p["teeth_low"] > 0.05:
            band = np.minimum(0.035 * g["f"] ** 0.3, gap * 0.5)
            teeth.append((p["teeth_low"], g["il"] - band, g["il"]))
        for amount, top, bottom in teeth:
            poly = fr.project(
                np.concatenate([x, x[::-1]]), np.concatenate([top, bottom[::-1]]), depth
            )
            fr.paint((236, 230, 214), fr.mask(poly) * opening, min(1.0, amount))
    line = fr.lines(fr.project(x, g["iu"], depth), width=0.012 + 0.01 * min(p["press"], 1))
    fr.paint(lip * 0.4, line, 0.85)
