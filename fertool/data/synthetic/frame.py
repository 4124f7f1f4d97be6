"""Drawing primitives of :mod:`fertool.data.synthetic`: the face coordinate frame and alpha masks.

:class:`_Frame` maps canonical face coordinates onto a patch of the canvas and rasterises
polygons and polylines there (with :mod:`PIL.ImageDraw` at 4x supersampling, box-filtered down);
:class:`_Alpha` is the opacity mask it returns; ``_ellipse`` and ``_oval`` make outlines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Supersampling factor for anti-aliased shapes.
_SS = 4


def _ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 40):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return cx + c * x - s * y, cy + s * x + c * y


class _Frame:
    """Maps canonical face coordinates onto a patch of the canvas and draws there.

    Canonical coordinates: origin at the centre of the face oval, x to the image right, y down,
    the oval spans y in [-1, 1]. ``project`` applies yaw (points move on a cylinder of the face
    width); ``mask`` and ``lines`` take projected points and return an anti-aliased alpha over
    the patch; ``U``, ``V`` are the projected canonical coordinates of the patch's pixel centres.
    """

    def __init__(self, canvas, centre, scale, rotation_deg, yaw, width, extent):
        self.cx, self.cy = float(centre[0]), float(centre[1])
        self.s = float(scale)
        th = math.radians(rotation_deg)
        self.c, self.sn = math.cos(th), math.sin(th)
        self.cyaw, self.syaw = math.cos(yaw), math.sin(yaw)
        self.A = width
        xmin, xmax, ymin, ymax = extent
        cx_, cy_ = self.to_image(
            np.array([xmin, xmax, xmin, xmax]), np.array([ymin, ymin, ymax, ymax])
        )
        h, w = canvas.shape[:2]
        self.x0 = int(np.clip(math.floor(cx_.min()), 0, w))
        self.x1 = int(np.clip(math.ceil(cx_.max()), 0, w))
        self.y0 = int(np.clip(math.floor(cy_.min()), 0, h))
        self.y1 = int(np.clip(math.ceil(cy_.max()), 0, h))
        self.patch = canvas[self.y0 : self.y1, self.x0 : self.x1]
        self.ph, self.pw = self.patch.shape[:2]
        yy, xx = np.mgrid[self.y0 : self.y1, self.x0 : self.x1].astype(np.float32) + 0.5
        dx, dy = (xx - self.cx) / self.s, (yy - self.cy) / self.s
        self.U = self.c * dx + self.sn * dy
        self.V = -self.sn * dx + self.c * dy

    @property
    def empty(self) -> bool:
        return self.ph == 0 or self.pw == 0

    def project(self, x, y, depth: float = 0.0):
        x = np.asarray(x, dtype=np.float64)
        z = 0.85 * self.A * np.sqrt(np.clip(1 - (x / self.A) ** 2, 0, 1)) + depth
        return x * self.cyaw + z * self.syaw, np.asarray(y, dtype=np.float64) + 0 * x

    def to_image(self, x, y):
        return (
            self.cx + self.s * (self.c * x - self.sn * y),
            self.cy + self.s * (self.sn * x + self.c * y),
        )

    def _draw(self, shapes, width: float = 0.0):
        from PIL import Image, ImageDraw

        pts = []
        for x, y in shapes:
            ix, iy = self.to_image(np.asarray(x), np.asarray(y))
            pts.append(((ix - self.x0) * _SS, (iy - self.y0) * _SS))
        if not pts:
            return _Alpha.empty()
        wpx = max(1, round(width * self.s * _SS)) if width else 0
        allx = np.concatenate([p[0] for p in pts])
        ally = np.concatenate([p[1] for p in pts])
        pad = wpx + 2 * _SS
        bx0 = max(0, math.floor((allx.min() - pad) / _SS))
        bx1 = min(self.pw, math.ceil((allx.max() + pad) / _SS))
        by0 = max(0, math.floor((ally.min() - pad) / _SS))
        by1 = min(self.ph, math.ceil((ally.max() + pad) / _SS))
        if bx1 <= bx0 or by1 <= by0:
            return _Alpha.empty()
        img = Image.new("L", ((bx1 - bx0) * _SS, (by1 - by0) * _SS), 0)
        draw = ImageDraw.Draw(img)
        for px, py in pts:
            xy = list(zip((px - bx0 * _SS).tolist(), (py - by0 * _SS).tolist()))
            if wpx:
                draw.line(xy, fill=255, width=wpx, joint="curve")
            elif len(xy) >= 3:
                draw.polygon(xy, fill=255)
        return _Alpha(np.asarray(img.reduce(_SS), dtype=np.float32) / 255.0, by0, bx0)

    def mask(self, *polygons):
        """Alpha of filled polygons (projected canonical points)."""
        return self._draw(polygons)

    def lines(self, *polylines, width: float):
        """Alpha of polylines ``width`` canonical units wide."""
        return self._draw(polylines, width=width)

    def gauss(self, x: float, y: float, sx: float, sy: float, sl=(slice(None), slice(None))):
        """A Gaussian bump centred on projected point (x, y), over the patch or ``sl`` of it."""
        return np.exp(-0.5 * (((self.U[sl] - x) / sx) ** 2 + ((self.V[sl] - y) / sy) ** 2))

    def paint(self, colour, alpha: _Alpha, strength: float = 1.0) -> None:
        """Blend ``colour`` (RGB, or an (H, W, 3) field over the patch or over ``alpha``'s box)
        onto the patch with opacity ``alpha * strength``."""
        if alpha.a.size == 0:
            return
        sl = alpha.slices
        colour = np.asarray(colour, dtype=np.float32)
        if colour.ndim == 3 and colour.shape[:2] != alpha.a.shape:
            colour = colour[sl]
        target = self.patch[sl]
        target += (colour - target) * (alpha.a * np.float32(strength))[..., None]


@dataclass(frozen=True)
class _Alpha:
    """An opacity mask ``a`` covering rows ``y0:y0+h`` and columns ``x0:x0+w`` of a patch."""

    a: np.ndarray
    y0: int
    x0: int

    @classmethod
    def empty(cls) -> _Alpha:
        return cls(np.zeros((0, 0), np.float32), 0, 0)

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.a.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def __mul__(self, other) -> _Alpha:
        if isinstance(other, _Alpha):
            y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
            y1 = min(self.y0 + self.a.shape[0], other.y0 + other.a.shape[0])
            x1 = min(self.x0 + self.a.shape[1], other.x0 + other.a.shape[1])
            if y1 <= y0 or x1 <= x0:
                return _Alpha.empty()
            a = self.a[y0 - self.y0 : y1 - self.y0, x0 - self.x0 : x1 - self.x0]
            b = other.a[y0 - other.y0 : y1 - other.y0, x0 - other.x0 : x1 - other.x0]
            return _Alpha(a * b, y0, x0)
        if isinstance(other, np.ndarray) and other.ndim == 2:
            return _Alpha(self.a * other[self.slices], self.y0, self.x0)
        return _Alpha(self.a * np.float32(other), self.y0, self.x0)

    __rmul__ = __mul__


def _oval(width: float, jaw: float, drop: float, n: int = 96):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    s = np.sin(t)
    x = width * np.cos(t) * (1 - jaw * np.clip(s, 0, None) ** 2)
    y = s * np.where(s > 0, 1 + drop, 1.0)
    return x, y
