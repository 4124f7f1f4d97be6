"""Rendering of one face for :mod:`fertool.data.synthetic`: :func:`_render_face` and the parts
around the features.

The body (shoulders, clothes, neck, ears, long hair behind), the Lambert-lit skin oval with its
shadows, the wrinkles and folds, and the hair in front; the features themselves are in
:mod:`fertool.data.synthetic.features`.
"""

from __future__ import annotations

import math

import numpy as np

from fertool.data.synthetic.expressions import _Face, _Identity
from fertool.data.synthetic.features import (
    _draw_brow,
    _draw_eye,
    _draw_mouth,
    _draw_nose,
    _mouth_geometry,
)
from fertool.data.synthetic.frame import _Alpha, _ellipse, _Frame, _oval
from fertool.data.synthetic.spec import _BODY_END, FaceAnnotation


def _render_face(canvas: np.ndarray, face: _Face, centre, scale: float, rotation: float):
    """Draw ``face`` onto the float canvas (in place) and return its annotation."""
    ident, p = face.identity, face.params
    A = ident.width
    fr = _Frame(canvas, centre, scale, rotation, face.yaw, A, (-2.6, 2.6, -1.5, _BODY_END))
    W = ident.mouth_w * (1 + p["mouth_width"])
    drop = p["jaw"]
    mouth = _mouth_geometry(ident, p, face.side, W)
    ox, oy = _oval(A, ident.jaw, drop)

    if not fr.empty:
        _draw_body(fr, ident, drop)
        _draw_skin(fr, face, ox, oy, mouth)
        _draw_skin_lines(fr, face, mouth)
        _draw_nose(fr, ident, p)
        for k in (-1, 1):
            _draw_eye(fr, face, k)
            _draw_brow(fr, face, k)
        _draw_mouth(fr, ident, p, mouth)
        _draw_hair_front(fr, ident)

    bx, by = fr.to_image(ox, oy)
    box = (float(bx.min()), float(by.min()), float(bx.max()), float(by.max()))
    lm_x, lm_y = fr.project(
        np.array([-ident.eye_dx, ident.eye_dx, 0.0, -W, W]),
        np.array(
            [ident.eye_y, ident.eye_y, ident.nose_y, mouth["corners"][0], mouth["corners"][1]]
        ),
    )
    lm_x[2] += 0.22 * fr.syaw  # the nose tip stands out of the surface
    lx, ly = fr.to_image(lm_x, lm_y)
    return FaceAnnotation(box, np.stack([lx, ly], axis=1), face.expression, face.intensity)


def _shade_colour(base, shade):
    """Skin-like colour under a shading factor: shadows turn warmer."""
    shade = np.clip(shade, 0.05, 2.0)[..., None]
    warm = np.array([0.12, 0.0, -0.12], dtype=np.float32)
    return np.asarray(base, dtype=np.float32) * shade * (1 + warm * (1 - shade))


def _draw_body(fr: _Frame, ident: _Identity, drop: float) -> None:
    A, skin = ident.width, ident.skin
    if ident.hair_style == "long":
        t = np.linspace(np.pi, 2 * np.pi, 30)
        x = np.concatenate([1.2 * A * np.cos(t), [1.26 * A, 1.1 * A, -1.1 * A, -1.26 * A]])
        y = np.concatenate([-0.05 + 1.15 * np.sin(t), [1.35, 1.5, 1.5, 1.35]])
        _paint_hair(fr, ident, fr.mask((x, y)))
    # shoulders and clothes
    sx = np.array([-2.6, -2.3, -1.9, -1.2, -0.5, 0.5, 1.2, 1.9, 2.3, 2.6])
    sy = np.array([_BODY_END, 2.2, 1.75, 1.5, 1.42, 1.42, 1.5, 1.75, 2.2, _BODY_END]) + drop
    shade = 0.75 + 0.3 * np.clip(1.0 - (fr.V - 1.4) / 2.0, 0, 1)
    fr.paint(ident.clothes * shade[..., None], fr.mask((sx, sy)))
    # neck, with a V-shaped neckline
    nx = np.array([-0.36, -0.38, -0.4, 0.0, 0.4, 0.38, 0.36]) * A / 0.78
    ny = np.array([0.5, 1.2, 1.5, 1.85, 1.5, 1.2, 0.5]) + drop
    neck_shade = 0.78 - 0.3 * fr.gauss(0, 1.0 + drop, 0.5, 0.22)
    fr.paint(_shade_colour(skin, neck_shade), fr.mask((nx, ny)))
    # ears (behind the face oval)
    for k in (-1, 1):
        ex, _ey = fr.project(k * A * 0.97, 0.06, depth=-0.15)
        ear = fr.mask(_ellipse(float(ex), 0.06, 0.1, 0.19, k * 0.15))
        fr.paint(_shade_colour(skin, np.float32(0.85)), ear)
        inner = fr.mask(_ellipse(float(ex) + k * 0.01, 0.07, 0.05, 0.12, k * 0.15))
        fr.paint(skin * 0.55, inner, 0.5)


def _paint_hair(fr: _Frame, ident: _Identity, alpha: _Alpha) -> None:
    """Hair colour shaded as a large ellipsoid, with streaks, where ``alpha`` is."""
    if alpha.a.size == 0:
        return
    U, V = fr.U[alpha.slices], fr.V[alpha.slices]
    nx = np.clip(U / (1.25 * ident.width), -1, 1)
    ny = np.clip((V + 0.1) / 1.2, -1, 1)
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    shade = 0.6 + 0.5 * nz
    streaks = 1 + 0.1 * np.sin(U * 47.0 + 3 * np.sin(V * 5.0)) * np.sin(U * 13.0)
    fr.paint(ident.hair * (shade * streaks)[..., None], alpha)


def _draw_skin(fr: _Frame, face: _Face, ox, oy, mouth) -> None:
    """The face oval, lit as an ellipsoid, with eye sockets, nose and lip shadows, cheeks."""
    ident, p = face.identity, face.params
    A, drop = ident.width, p["jaw"]
    oval = fr.mask((ox, oy))
    if oval.a.size == 0:
        return
    sl = oval.slices
    U, V = fr.U[sl], fr.V[sl]
    vv = np.where(V > 0, V / (1 + drop), V)
    ax = A * (1 - ident.jaw * np.clip(vv, 0, 1) ** 2)
    nx, ny = np.clip(U / ax, -1, 1) * 0.92, np.clip(vv, -1, 1) * 0.92
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    lx, ly, lz = face.light
    norm = math.sqrt(lx * lx + ly * ly + lz * lz)
    lam = np.clip((nx * lx + ny * ly + nz * lz) / norm, 0, 1)
    shade = 0.5 + 0.55 * lam

    def at(x, y, depth=0.0):
        px, py = fr.project(x, y, depth)
        return float(px), float(py)

    ey, dx = ident.eye_y, ident.eye_dx
    socket = 0.26 + 0.12 * max(p["brow_in"], 0) / 0.085
    for k in (-1, 1):
        x, y = at(k * dx, ey - 0.03)
        shade = shade * (1 - socket * fr.gauss(x, y, 0.17, 0.1, sl))
        x, y = at(k * 0.33, ey + 0.3 - 0.05 * p["cheek"])
        shade = shade * (1 + (0.05 + 0.1 * p["cheek"]) * fr.gauss(x, y, 0.12, 0.08, sl))
    side = -1.0 if lx >= 0 else 1.0  # the nose shadow falls away from the light
    x, y = at(side * 0.075, ident.nose_y - 0.12, 0.1)
    shade = shade * (1 - 0.14 * fr.gauss(x, y, 0.03, 0.14, sl))
    x, y = at(0.0, ident.nose_y + 0.075, 0.15)
    shade = shade * (1 - 0.24 * fr.gauss(x, y, 0.09, 0.028, sl))
    x, y = at(0.0, ident.nose_y - 0.01, 0.22)
    shade = shade * (1 + 0.12 * fr.gauss(x, y, 0.04, 0.035, sl))
    x, y = at(0.0, ident.nose_y - 0.2, 0.12)
    shade = shade * (1 + 0.06 * fr.gauss(x, y, 0.025, 0.12, sl))
    x, y = at(0.0, mouth["lower_edge"] + 0.05, 0.03)
    shade = shade * (1 - (0.16 + 0.1 * p["pout"]) * fr.gauss(x, y, 0.13, 0.03, sl))
    colour = _shade_colour(ident.skin, shade)
    if ident.blush > 0:
        rosy = np.zeros_like(shade)
        for k in (-1, 1):
            x, y = at(k * 0.36, ey + 0.3)
            rosy += fr.gauss(x, y, 0.1, 0.07, sl)
        colour = colour + (rosy * ident.blush)[..., None] * np.array([20, -25, -20], np.float32)
    fr.paint(colour, oval)


def _draw_skin_lines(fr: _Frame, face: _Face, mouth) -> None:
    """Wrinkles and folds: forehead lines, furrow, crow's feet, nasolabial folds, nose wrinkles."""
    ident, p = face.identity, face.params
    dark = ident.skin * 0.58
    ey, dx = ident.eye_y, ident.eye_dx
    brow_y = ey - ident.brow_gap + 0.5 * min(p["brow_in"], 0)
    face_alpha = fr.mask(_oval(ident.width, ident.jaw, p["jaw"]))
    t = np.linspace(-1, 1, 15)
    if p["forehead"] > 0.02:
        lines = []
        for i in range(3):
            x = 0.3 * t
            y = brow_y - 0.09 - 0.065 * i - 0.03 * (1 - t**2)
            lines.append(fr.project(x, y))
        fr.paint(dark, fr.lines(*lines, width=0.009) * face_alpha, min(1.0, 0.6 * p["forehead"]))
    if p["furrow"] > 0.02:
        yb = ey - ident.brow_gap + p["brow_in"]
        lines = [
            fr.project(k * (0.03 + 0.006 * (1 - t**2)), yb - 0.02 + 0.055 * t) for k in (-1, 1)
        ]
        fr.paint(dark, fr.lines(*lines, width=0.01), min(1.0, 0.7 * p["furrow"]))
    if p["cheek"] > 0.05:
        lines = []
        for k in (-1, 1):
            for ang in (-0.45, 0.0, 0.45):
                r = np.linspace(0.02, 0.08, 5)
                lines.append(fr.project(k * (dx + ident.eye_w + 0.02 + r * math.cos(ang)),
                                        ey + r * math.sin(ang)))  # fmt: skip
        fr.paint(dark, fr.lines(*lines, width=0.007) * face_alpha, 0.45 * min(p["cheek"], 1))
    # nasolabial folds: always faint, deep with raised cheeks and in disgust
    depth = 0.18 + 0.45 * p["cheek"] + 0.35 * p["wrinkle"] + 0.15 * p["pout"]
    s = np.linspace(0, 1, 12)[:, None]
    folds = []
    for k in (-1, 1):
        p0 = np.array([k * (ident.nose_w + 0.03), ident.nose_y - 0.02])
        p1 = np.array([k * (ident.nose_w + 0.15), ident.nose_y + 0.12])
        p2 = np.array([k * (mouth["half_width"] + 0.05), mouth["corners"][(k + 1) // 2] + 0.07])
        b = (1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s**2 * p2
        folds.append(fr.project(b[:, 0], b[:, 1], 0.05))
    fr.paint(dark, fr.lines(*folds, width=0.013), min(1.0, depth))
    if p["wrinkle"] > 0.02:
        lines = [fr.project(0.065 * t, ident.nose_y - 0.18 - 0.045 * i + 0.012 * t**2, 0.1)
                 for i in range(3)]  # fmt: skip
        fr.paint(dark, fr.lines(*lines, width=0.009), min(1.0, 0.7 * p["wrinkle"]))


def _draw_hair_front(fr: _Frame, ident: _Identity) -> None:
    if ident.hair_style == "none":
        return
    A = ident.width
    top = {"short": 1.04, "long": 1.1, "fringe": 1.08}[ident.hair_style]
    cap = fr.mask(_ellipse(0.0, -0.06, 1.1 * A, top, n=64))
    x = np.linspace(-1.5 * A, 1.5 * A, 61)
    h0 = ident.hairline + (0.18 if ident.hair_style == "fringe" else 0.0)
    reach = 0.75 if ident.hair_style == "long" else 0.55
    y = np.minimum(h0 + reach * np.abs(x / A) ** 3.5, 0.35)
    if ident.hair_style == "fringe":
        y = y + 0.025 * np.sin(x * 28)
    hx, hy = fr.project(np.clip(x, -A, A), y)
    hx = np.where(np.abs(x) > A, x, hx)
    above = fr.mask((np.concatenate([hx, [1.5 * A, -1.5 * A]]), np.concatenate([hy, [-3.0, -3.0]])))
    _paint_hair(fr, ident, cap * above)
