"""Procedural face images for tests and ``fertool demo``.

Every face is drawn from a small parametric model: a shaded skin oval (a Lambert-lit ellipsoid
with darker eye sockets, a nose shadow and cheek highlights), optional hair, ears, neck and
shoulders, and eyes (sclera, iris, pupil, catch-light, lid line), brows, nose and mouth whose
shapes follow the seven canonical expressions:

========  ==============================================================================
happy     corners up, open smile with upper teeth, raised cheeks, narrowed eyes, crow's feet
sad       corners down, pouting lower lip, inner brows raised, drooping lids
angry     brows lowered and drawn together, furrow, pressed thin lips
surprise  brows raised and arched, wide eyes, dropped jaw, round open mouth
fear      brows raised and drawn together, wide eyes, stretched half-open mouth
disgust   wrinkled nose, raised upper lip on one side, lowered brows, squint
neutral   all of the above at rest
========  ==============================================================================

Nuisance factors, all drawn from a :class:`SyntheticSpec`: expression intensity, identity (face
width, jaw, eye spacing and size, feature heights, skin tone, hair, iris colour), in-plane
rotation, yaw (features shifted and squashed on a cylinder), scale, position, lighting
direction, a global light gradient, colour cast, background (gradient, smooth noise, cluttered
shapes), blur and sensor noise.

Shapes are polygons drawn with :mod:`PIL.ImageDraw` at 4x supersampling and box-filtered down
(anti-aliasing); shading is computed with numpy on the pixel grid. Everything is drawn from an
explicit :class:`numpy.random.Generator`, so the same seed gives identical bytes.

Only :func:`make_dataset` touches the file system.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fertool import LABELS, __version__
from fertool.errors import FertoolError

__all__ = [
    "BACKGROUNDS",
    "FaceAnnotation",
    "Scene",
    "SyntheticSpec",
    "make_dataset",
    "make_face",
    "make_image",
    "make_scene",
]

#: Supersampling factor for anti-aliased shapes.
_SS = 4
#: How far below the face centre the shoulders reach, in face half-heights.
_BODY_END = 8.0

BACKGROUNDS = ("gradient", "noise", "clutter")

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------
# Variation knobs


@dataclass(frozen=True)
class SyntheticSpec:
    """Ranges of the nuisance factors. Pairs are ``(low, high)`` of a uniform draw; single
    floats are the largest absolute value of a symmetric draw.

    Attributes
    ----------
    intensity : (float, float)
        Expression intensity (0 = neutral face, 1 = full expression).
    rotation_deg : float
        In-plane rotation of each face, degrees.
    yaw : float
        Head turn, radians (features move on a cylinder; the outline stays).
    face_fraction : (float, float)
        Height of the labelled face (hairline to chin) as a fraction of the image height in
        :func:`make_image`.
    crop_scale : (float, float)
        Relative face size in :func:`make_face` (1 = the face fills 78% of the crop height).
    shift : float
        Position jitter of the face in :func:`make_face`, as a fraction of the crop size.
    gaze : float
        Gaze direction (1 = the iris moves up to 30% of the eye width).
    light : float
        Lateral component of the light direction on the face (0 = frontal, slightly from above).
    gradient : (float, float)
        Strength of a global linear light gradient across the image.
    color_cast : float
        Standard deviation of a per-channel gain (white balance).
    blur_sigma : (float, float)
        Gaussian blur, pixels.
    noise_sigma : (float, float)
        Additive Gaussian noise, grey levels.
    backgrounds : tuple of str
        Background kinds to choose from (:data:`BACKGROUNDS`).
    hair_rate : float
        Probability that a face has hair.
    identity_jitter : float
        Scale of identity variation (0 = every face has the average geometry, skin tone,
        hair and eye colour).
    resting_jitter : float
        Scale of each identity's resting expression (brow height, mouth corners ...), as a
        fraction of the largest expression movement of that parameter.
    """

    intensity: tuple[float, float] = (0.55, 1.0)
    rotation_deg: float = 12.0
    yaw: float = 0.25
    face_fraction: tuple[float, float] = (0.38, 0.6)
    crop_scale: tuple[float, float] = (0.9, 1.08)
    shift: float = 0.04
    gaze: float = 1.0
    light: float = 0.6
    gradient: tuple[float, float] = (0.0, 0.3)
    color_cast: float = 0.04
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    hair_rate: float = 0.85
    identity_jitter: float = 1.0
    resting_jitter: float = 0.2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "backgrounds":
                if isinstance(value, str):
                    value = (value,)
                value = tuple(value)
                bad = [b for b in value if b not in BACKGROUNDS]
                if bad or not value:
                    raise ValueError(
                        f"backgrounds={value!r}: expected a non-empty subset of {BACKGROUNDS}"
                    )
            elif isinstance(f.default, tuple):
                if np.isscalar(value):
                    value = (float(value), float(value))
                value = tuple(float(v) for v in value)
                if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                    raise ValueError(
                        f"{f.name}={value!r}: expected (low, high) with 0 <= low <= high"
                    )
            else:
                value = float(value)
                if value < 0:
                    raise ValueError(f"{f.name}={value!r}: expected a value >= 0")
            object.__setattr__(self, f.name, value)
        if self.hair_rate > 1:
            raise ValueError(f"hair_rate={self.hair_rate}: expected a probability in [0, 1]")

    def replace(self, **changes) -> SyntheticSpec:
        """A copy with some fields changed; unknown names raise ``TypeError`` listing the known."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"unknown variation {', '.join(unknown)}; expected some of {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def clean(cls) -> SyntheticSpec:
        """Frontal, full-intensity, average faces on a plain gradient, without blur or noise."""
        return cls(
            intensity=(1.0, 1.0),
            rotation_deg=0.0,
            yaw=0.0,
            crop_scale=(1.0, 1.0),
            shift=0.0,
            gaze=0.0,
            light=0.0,
            gradient=(0.0, 0.0),
            color_cast=0.0,
            blur_sigma=(0.0, 0.0),
            noise_sigma=(0.0, 0.0),
            backgrounds=("gradient",),
            identity_jitter=0.0,
            resting_jitter=0.0,
        )


# --------------------------------------------------------------------------------------------
# Expression model: additive movements from the resting face (canonical units: the face oval
# is 2 units tall, so 0.1 is 5% of the face height).

_PARAMS = (
    "brow_in", "brow_out", "brow_arch", "brow_pull", "eye_open", "eye_lower", "mouth_width",
    "lift", "open", "round", "lip_raise", "press", "pout", "cheek", "wrinkle", "forehead",
    "furrow", "jaw", "teeth_up", "teeth_low", "asym",
)  # fmt: skip

# fmt: off
_EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"lift": 0.11, "open": 0.075, "mouth_width": 0.22, "eye_open": -0.25,
              "eye_lower": 0.55, "cheek": 1.0, "teeth_up": 1.0, "brow_out": 0.01},
    "sad": {"brow_in": -0.08, "brow_out": 0.035, "brow_pull": 0.02, "brow_arch": -0.015,
            "eye_open": -0.3, "lift": -0.08, "mouth_width": -0.08, "pout": 1.0, "forehead": 0.35},
    "angry": {"brow_in": 0.085, "brow_out": -0.015, "brow_pull": 0.035, "brow_arch": -0.025,
              "eye_open": -0.12, "eye_lower": 0.3, "press": 1.0, "mouth_width": -0.14,
              "lift": -0.02, "furrow": 1.0, "wrinkle": 0.25},
    "surprise": {"brow_in": -0.11, "brow_out": -0.09, "brow_arch": 0.04, "eye_open": 0.6,
                 "eye_lower": -0.15, "open": 0.26, "round": 1.0, "mouth_width": -0.32,
                 "jaw": 0.12, "forehead": 1.0, "teeth_low": 0.3},
    "fear": {"brow_in": -0.1, "brow_out": -0.03, "brow_pull": 0.035, "brow_arch": -0.02,
             "eye_open": 0.5, "eye_lower": -0.05, "open": 0.08, "mouth_width": 0.24,
             "lift": -0.035, "teeth_low": 1.0, "teeth_up": 0.5, "forehead": 0.7, "furrow": 0.35,
             "jaw": 0.04},
    "disgust": {"brow_in": 0.05, "brow_pull": 0.02, "eye_open": -0.2, "eye_lower": 0.4,
                "lip_raise": 0.07, "lift": -0.035, "asym": 1.0, "wrinkle": 1.0, "open": 0.015,
                "mouth_width": -0.05, "cheek": 0.3, "teeth_up": 1.0},
}
# fmt: on
assert set(_EXPRESSIONS) == set(LABELS)

#: Parameters that an identity's resting face shifts, and their largest expression movement.
_RESTING = {
    k: max(abs(e.get(k, 0.0)) for e in _EXPRESSIONS.values())
    for k in ("brow_in", "brow_out", "brow_arch", "eye_open", "lift", "mouth_width")
}
#: Parameters that cannot go below zero.
_NONNEG = {"open", "round", "lip_raise", "press", "pout", "cheek", "wrinkle", "forehead",
           "furrow", "jaw", "teeth_up", "teeth_low", "asym"}  # fmt: skip

_SKIN = np.array(
    [(255, 226, 200), (241, 196, 164), (226, 174, 136), (200, 138, 100), (164, 108, 74),
     (122, 78, 52), (88, 57, 40)], dtype=np.float64,
)  # fmt: skip
_HAIR = np.array(
    [(22, 18, 16), (48, 34, 25), (84, 58, 38), (132, 96, 60), (196, 160, 104), (150, 144, 140),
     (122, 58, 30)], dtype=np.float64,
)  # fmt: skip
_IRIS = np.array(
    [(92, 60, 36), (48, 32, 22), (78, 108, 150), (84, 110, 72), (120, 94, 52)], dtype=np.float64
)
_HAIR_STYLES = ("none", "short", "long", "fringe")


@dataclass(frozen=True)
class _Identity:
    width: float  # half-width of the face oval (half-height is 1)
    jaw: float  # narrowing of the lower face
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_thick: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lips: float
    skin: np.ndarray
    hair: np.ndarray
    hair_style: str
    hairline: float
    iris: np.ndarray
    blush: float
    clothes: np.ndarray
    resting: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Face:
    identity: _Identity
    expression: str
    intensity: float
    params: dict
    side: int
    yaw: float
    light: tuple[float, float, float]
    gaze: tuple[float, float]


@dataclass(frozen=True)
class FaceAnnotation:
    """Where a drawn face is.

    Attributes
    ----------
    box : (x1, y1, x2, y2)
        Tight box of the face oval (hairline to chin, cheek to cheek), pixels.
    landmarks : (5, 2) ndarray
        Left eye, right eye, nose tip, left and right mouth corner (image left/right, the
        order MTCNN uses), pixels.
    expression : str
        Canonical label.
    intensity : float
        Expression intensity in [0, 1].
    """

    box: Box
    landmarks: np.ndarray
    expression: str
    intensity: float


@dataclass(frozen=True)
class Scene:
    """A rendered image and its faces, the labelled (largest) face first."""

    image: np.ndarray
    faces: list[FaceAnnotation]


def _check_expression(expression: str) -> str:
    from fertool.labels import canonical_label

    label = canonical_label(str(expression))
    if label is None:
        raise ValueError(f"unknown expression {expression!r}; expected one of {', '.join(LABELS)}")
    return label


def _sample_identity(rng: np.random.Generator, spec: SyntheticSpec) -> _Identity:
    j = spec.identity_jitter

    def u(half: float) -> float:
        return j * float(rng.uniform(-half, half))

    tone = rng.uniform(0, len(_SKIN) - 1) if j > 0 else 1.5
    lo = int(min(tone, len(_SKIN) - 2))
    skin = _SKIN[lo] + (_SKIN[lo + 1] - _SKIN[lo]) * (tone - lo)
    skin = np.clip(skin * (1 + j * rng.normal(0, 0.03, 3)), 0, 255)
    has_hair = rng.random() < spec.hair_rate
    style = _HAIR_STYLES[int(rng.integers(1, len(_HAIR_STYLES)))] if has_hair else "none"
    hair = _HAIR[int(rng.integers(len(_HAIR)))] * rng.uniform(0.85, 1.15)
    iris = _IRIS[int(rng.integers(len(_IRIS)))]
    if j == 0:  # the average person: dark brown short hair (or none), brown eyes
        style, hair, iris = ("short" if has_hair else "none"), _HAIR[1], _IRIS[0]
    resting = {k: float(rng.normal(0, spec.resting_jitter * m)) for k, m in _RESTING.items()}
    return _Identity(
        width=0.78 + u(0.07),
        jaw=0.2 + u(0.08),
        eye_dx=0.33 + u(0.03),
        eye_y=-0.08 + u(0.04),
        eye_w=0.135 + u(0.015),
        eye_h=0.07 + u(0.012),
        brow_gap=0.17 + u(0.03),
        brow_thick=0.05 + u(0.015),
        nose_y=0.3 + u(0.03),
        nose_w=0.1 + u(0.015),
        mouth_y=0.56 + u(0.04),
        mouth_w=0.24 + u(0.03),
        lips=1.0 + u(0.3),
        skin=skin,
        hair=np.clip(hair, 0, 255),
        hair_style=style,
        hairline=-0.62 + u(0.08),
        iris=iris,
        blush=float(rng.uniform(0, 0.25)) * (j > 0),
        clothes=_colours(rng, 1)[0],
        resting=resting,
    )


def _sample_face(
    expression: str,
    rng: np.random.Generator,
    spec: SyntheticSpec,
    identity: _Identity | None = None,
) -> _Face:
    ident = identity if identity is not None else _sample_identity(rng, spec)
    # drawn for every expression, so that one seed gives the same person with any expression
    intensity = float(rng.uniform(*spec.intensity))
    if expression == "neutral":
        intensity = 0.0
    target = _EXPRESSIONS[expression]
    params = {}
    for k in _PARAMS:
        v = intensity * target.get(k, 0.0) + ident.resting.get(k, 0.0)
        params[k] = max(v, 0.0) if k in _NONNEG else v
    return _Face(
        identity=ident,
        expression=expression,
        intensity=intensity,
        params=params,
        side=int(rng.choice((-1, 1))),
        yaw=float(rng.uniform(-1, 1) * spec.yaw),
        light=(
            float(rng.uniform(-1, 1) * spec.light),
            float(-0.3 + rng.uniform(-0.5, 0.5) * spec.light),
            1.0,
        ),
        gaze=(float(rng.uniform(-1, 1) * spec.gaze), float(rng.uniform(-1, 1) * spec.gaze)),
    )


def _jitter_face(face: _Face, rng: np.random.Generator, amount: float) -> _Face:
    """The same person a few frames later: small changes of pose, gaze, light and expression."""
    params = {
        k: (max(v + rng.normal(0, 0.05 * amount * (abs(v) + 0.01)), 0.0) if k in _NONNEG
            else v + rng.normal(0, 0.05 * amount * (abs(v) + 0.01)))
        for k, v in face.params.items()
    }  # fmt: skip
    lx, ly, lz = face.light
    return dataclasses.replace(
        face,
        params=params,
        yaw=face.yaw + float(rng.normal(0, 0.03 * amount)),
        light=(lx + float(rng.normal(0, 0.05 * amount)), ly, lz),
        gaze=tuple(np.clip(np.array(face.gaze) + rng.normal(0, 0.3 * amount, 2), -1, 1).tolist()),
    )


# --------------------------------------------------------------------------------------------
# Drawing


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


# --------------------------------------------------------------------------------------------
# Backgrounds and camera effects


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random RGB colours of moderate saturation, float32 (n, 3)."""
    c = rng.uniform(15, 240, size=(n, 3))
    grey = c.mean(axis=1, keepdims=True)
    return (grey + rng.uniform(0.25, 0.9, (n, 1)) * (c - grey)).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image over H and W (edges repeated)."""
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        padded = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return img.astype(np.float32)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c1, c2 = _colours(rng, 2)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = (g.astype(np.float32) / max(h, w) for g in np.ogrid[0:h, 0:w])
    t = xx * math.cos(ang) + yy * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return c1 + (c2 - c1) * t[..., None]


def _background(rng: np.random.Generator, h: int, w: int, kinds: tuple[str, ...]) -> np.ndarray:
    """A (h, w, 3) float32 background of one of ``kinds``."""
    from PIL import Image, ImageDraw

    kind = kinds[int(rng.integers(len(kinds)))]
    bg = _gradient(rng, h, w)
    if kind == "noise":
        # two octaves of smooth noise, mostly in brightness
        for cell, amp in ((int(rng.integers(24, 64)), 1.0), (int(rng.integers(6, 16)), 0.35)):
            grid = rng.normal(0, 1, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
            grid = 0.7 * grid.mean(axis=2, keepdims=True) + 0.3 * grid
            up = np.stack([np.asarray(Image.fromarray(grid[..., c], mode="F").resize((w, h), Image.BICUBIC))
                           for c in range(3)], axis=-1)  # fmt: skip
            bg = bg + amp * float(rng.uniform(25, 50)) * up
    elif kind == "clutter":
        ss = 2
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).resize((w * ss, h * ss))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 15))):
            colour = tuple(int(v) for v in _colours(rng, 1)[0])
            cx, cy = rng.uniform(0, w * ss), rng.uniform(0, h * ss)
            rx, ry = rng.uniform(0.03, 0.3) * w * ss, rng.uniform(0.03, 0.3) * h * ss
            shape = int(rng.integers(4))
            if shape == 0:
                draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
            elif shape == 1:
                draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
            elif shape == 2:
                draw.line(
                    [cx - rx, cy - ry, cx + rx, cy + ry],
                    fill=colour,
                    width=int(rng.integers(2, 12)),
                )
            else:
                pts = rng.uniform(-1, 1, (3, 2)) * (rx, ry) + (cx, cy)
                draw.polygon([tuple(v) for v in pts.tolist()], fill=colour)
        bg = np.asarray(img.reduce(ss), dtype=np.float32)
        bg = _blur(bg, float(rng.uniform(0.5, 2.0)))
    return bg


def _finish(
    img: np.ndarray,
    rng: np.random.Generator,
    spec: SyntheticSpec,
    noise_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Global light gradient, colour cast, blur and noise; returns uint8.

    The settings come from ``rng``, the noise pixels from ``noise_rng`` (default ``rng``), so
    that the frames of a clip share a camera but not a noise pattern.
    """
    h, w = img.shape[:2]
    strength = rng.uniform(*spec.gradient)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = (g.astype(np.float32) for g in np.ogrid[0:h, 0:w])
    ramp = ((xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)) / (0.5 * math.hypot(w, h))
    gain = 1 + rng.normal(0, 1, 3) * spec.color_cast
    img = img * ((1 + np.float32(strength) * ramp)[..., None] * gain.astype(np.float32))
    sigma = rng.uniform(*spec.blur_sigma)
    if sigma > 0.05:
        img = _blur(img, float(sigma))
    noise = rng.uniform(*spec.noise_sigma)
    if noise > 0:
        noise_rng = rng if noise_rng is None else noise_rng
        img = img + np.float32(noise) * noise_rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Public API


def _resolve_spec(spec: SyntheticSpec | None, variation: dict) -> SyntheticSpec:
    spec = spec if spec is not None else SyntheticSpec()
    return spec.replace(**variation) if variation else spec


def make_face(
    expression: str,
    rng: np.random.Generator,
    size: int = 160,
    *,
    spec: SyntheticSpec | None = None,
    **variation,
) -> np.ndarray:
    """A tight synthetic face crop, like the aligned crops of the face stage.

    Parameters
    ----------
    expression : str
        One of :data:`fertool.LABELS` (synonyms such as ``"happiness"`` are accepted).
    rng : numpy.random.Generator
        Source of all randomness; the same generator state gives the same image.
    size : int
        Side of the square crop, pixels (at least 32).
    spec : SyntheticSpec, optional
        Variation ranges; default :class:`SyntheticSpec()`.
    **variation
        Overrides of ``spec`` fields, for example ``rotation_deg=0, noise_sigma=0``.

    Returns
    -------
    (size, size, 3) ndarray of uint8
        RGB image; the face oval spans about 78% of its height.

    Raises
    ------
    ValueError
        For an unknown expression or a size below 32.
    TypeError
        For an unknown variation name.
    """
    expression = _check_expression(expression)
    if int(size) < 32:
        raise ValueError(f"size={size} is too small; use at least 32 pixels")
    size = int(size)
    spec = _resolve_spec(spec, variation)
    face = _sample_face(expression, rng, spec)
    canvas = _background(rng, size, size, spec.backgrounds)
    scale = 0.39 * size * rng.uniform(*spec.crop_scale)
    cx, cy = size / 2 + rng.uniform(-1, 1, 2) * spec.shift * size
    rotation = rng.uniform(-1, 1) * spec.rotation_deg
    _render_face(canvas, face, (cx, cy), scale, rotation)
    return _finish(canvas, rng, spec)


def _overlaps(a: Box, b: Box, margin: float) -> bool:
    return not (
        a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1]
    )


Placement = tuple[float, float, float, float]  # centre x, centre y, scale, rotation


def _place(
    h: int, w: int, main: _Face, extras: list[_Face], rng: np.random.Generator, spec: SyntheticSpec
) -> tuple[list[_Face], list[Placement]]:
    """Positions for the labelled face and for as many extra faces as fit beside it.

    Returns the faces that were placed (labelled first) and their ``(cx, cy, scale, rotation)``.
    Extra faces are 35-65% of the labelled face's size; their heads keep clear of the labelled
    person (head and shoulders) and of each other; those that find no room in 30 tries are left
    out. Their shoulders may pass behind the labelled person.
    """
    A = main.identity.width
    scale = 0.5 * h * rng.uniform(*spec.face_fraction)
    mx, my = min(1.25 * A * scale, w / 2), min(1.15 * scale, h / 2)
    cx = rng.uniform(mx, w - mx)
    cy = rng.uniform(my, max(my, h - 1.05 * scale))

    def person(x: float, y: float, s: float) -> list[Box]:
        return [(x - 1.3 * s, y - 1.3 * s, x + 1.3 * s, y + 1.4 * s),
                (x - 2.7 * s, y + 1.2 * s, x + 2.7 * s, y + _BODY_END * s)]  # fmt: skip

    faces, placements = [main], [(cx, cy, scale, rng.uniform(-1, 1) * spec.rotation_deg)]
    taken = person(cx, cy, scale)
    for face in extras:
        s = scale * rng.uniform(0.35, 0.65)
        for _ in range(30):
            ex = rng.uniform(0.9 * s, w - 0.9 * s)
            ey = rng.uniform(1.1 * s, max(1.1 * s, h - 1.1 * s))
            head = person(ex, ey, s)[0]
            if not any(_overlaps(head, b, 2.0) for b in taken):
                taken.append(head)
                faces.append(face)
                placements.append((ex, ey, s, rng.uniform(-1, 1) * spec.rotation_deg))
                break
    return faces, placements


def _draw_faces(canvas: np.ndarray, faces: list[_Face], placements: list[Placement]):
    """Draw the extra faces from the top down (a lower head hides the shoulders of a higher
    one), then the labelled face in front; return annotations, labelled first."""
    out = [None] * len(faces)
    for i in [*sorted(range(1, len(faces)), key=lambda i: placements[i][1]), 0]:
        x, y, s, r = placements[i]
        out[i] = _render_face(canvas, faces[i], (x, y), s, r)
    return out


def make_scene(
    expression: str,
    rng: np.random.Generator,
    width: int = 320,
    height: int = 256,
    n_faces: int = 1,
    *,
    spec: SyntheticSpec | None = None,
    **variation,
) -> Scene:
    """A scene with one labelled face and ``n_faces - 1`` smaller faces, with annotations.

    The labelled face has ``expression``; the others have random expressions and are smaller
    (35-65% of its size), so that the labelled face is the largest. Extra faces that cannot be
    placed without overlapping the labelled person are left out.

    Parameters
    ----------
    expression : str
        Label of the main face.
    rng : numpy.random.Generator
        Source of all randomness.
    width, height : int
        Image size, pixels (at least 64 each).
    n_faces : int
        Number of faces to draw (at least 1).
    spec : SyntheticSpec, optional
        Variation ranges.
    **variation
        Overrides of ``spec`` fields.

    Returns
    -------
    Scene
        ``image`` (height, width, 3) uint8 and ``faces`` (labelled face first).
    """
    expression = _check_expression(expression)
    if int(width) < 64 or int(height) < 64:
        raise ValueError(f"image size {width}x{height} is too small; use at least 64x64")
    if int(n_faces) < 1:
        raise ValueError(f"n_faces={n_faces}: expected at least 1")
    spec = _resolve_spec(spec, variation)
    main = _sample_face(expression, rng, spec)
    extras = [
        _sample_face(LABELS[int(rng.integers(len(LABELS)))], rng, spec)
        for _ in range(int(n_faces) - 1)
    ]
    canvas = _background(rng, int(height), int(width), spec.backgrounds)
    faces, placements = _place(int(height), int(width), main, extras, rng, spec)
    annotations = _draw_faces(canvas, faces, placements)
    return Scene(_finish(canvas, rng, spec), annotations)


def make_image(
    expression: str,
    rng: np.random.Generator,
    width: int = 320,
    height: int = 256,
    n_faces: int = 1,
    *,
    spec: SyntheticSpec | None = None,
    **variation,
) -> tuple[np.ndarray, list[Box]]:
    """A scene image and the boxes of its faces (see :func:`make_scene`).

    Returns
    -------
    image : (height, width, 3) ndarray of uint8
    boxes : list of (x1, y1, x2, y2)
        Face-oval boxes in pixels, the labelled (largest) face first.
    """
    scene = make_scene(expression, rng, width, height, n_faces, spec=spec, **variation)
    return scene.image, [f.box for f in scene.faces]


def make_dataset(
    root: str | os.PathLike,
    n_per_class: int = 20,
    seed: int = 0,
    width: int = 320,
    height: int = 256,
    n_groups: int = 6,
    multi_face_rate: float = 0.1,
    force: bool = False,
    *,
    spec: SyntheticSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic folder-per-class dataset with SFEW-style names.

    Layout: ``root/<Label>/<group>_<clip:09d>_<frame:08d>.png`` with ``Label`` one of the
    seven capitalised labels, so :func:`fertool.data.discover` finds seven classes grouped by
    ``group``. A group (``synth00`` ...) plays the part of a movie: a background style, a light
    direction and two or three recurring identities. A clip holds one to three frames of the same
    face with small changes of pose, gaze and expression. ``root/synthetic.json`` records the
    settings and, per image, the boxes and landmarks of its faces.

    Parameters
    ----------
    root : path
        Output folder; created when missing; must be empty unless ``force``.
    n_per_class : int
        Images per class.
    seed : int
        Seed of everything: the same seed writes identical bytes.
    width, height : int
        Image size.
    n_groups : int
        Number of groups (movies); images of each class are spread over them in turn.
    multi_face_rate : float
        Probability that a clip shows one or two extra, smaller faces.
    force : bool
        Write into a non-empty folder, overwriting files of the same names.
    spec : SyntheticSpec, optional
        Variation ranges.
    progress : callable, optional
        Called as ``progress(done, total)`` after each image.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    FertoolError
        When ``root`` is a file, or a non-empty folder and ``force`` is false.
    ValueError
        For non-positive counts or a rate outside [0, 1].
    """
    from fertool.io import write_json, write_png

    root = Path(root)
    if n_per_class < 1 or n_groups < 1:
        raise ValueError(f"n_per_class={n_per_class}, n_groups={n_groups}: both must be at least 1")
    if not 0 <= multi_face_rate <= 1:
        raise ValueError(f"multi_face_rate={multi_face_rate}: expected a probability in [0, 1]")
    if root.exists() and not root.is_dir():
        raise FertoolError(f"{root} is a file; expected a folder for the synthetic dataset")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise FertoolError(
            f"{root} is not empty; use --force to write the synthetic dataset into it"
        )
    spec = spec if spec is not None else SyntheticSpec()

    groups = []
    for g in range(n_groups):
        grng = np.random.default_rng([seed, 0, g])
        groups.append(
            {
                "name": f"synth{g:02d}",
                "bg_seed": int(grng.integers(2**31)),
                "kinds": (spec.backgrounds[int(grng.integers(len(spec.backgrounds)))],),
                "identities": [
                    _sample_identity(grng, spec) for _ in range(int(grng.integers(2, 4)))
                ],
                "light": float(grng.uniform(-1, 1) * spec.light),
            }
        )
    total = n_per_class * len(LABELS)
    done = 0
    clip_id = 0
    records = []
    for li, label in enumerate(LABELS):
        folder = root / label.capitalize()
        written = 0
        clip_index = 0
        while written < n_per_class:
            grp = groups[(clip_index + li) % n_groups]
            crng = np.random.default_rng([seed, 1, li, clip_index])
            n_frames = min(int(crng.integers(1, 4)), n_per_class - written)
            ident = grp["identities"][int(crng.integers(len(grp["identities"])))]
            face = _sample_face(label, crng, spec, identity=ident)
            face = dataclasses.replace(face, light=(grp["light"], face.light[1], 1.0))
            n_extra = int(crng.integers(1, 3)) if crng.random() < multi_face_rate else 0
            extras = [
                _sample_face(LABELS[int(crng.integers(len(LABELS)))], crng, spec)
                for _ in range(n_extra)
            ]
            background = _background(
                np.random.default_rng(grp["bg_seed"]), height, width, grp["kinds"]
            )
            faces, placements = _place(height, width, face, extras, crng, spec)
            start = int(crng.integers(1, 5000))
            for f in range(n_frames):
                frng = np.random.default_rng([seed, 2, li, clip_index, f])
                if f:  # the next frames of the clip: everyone moves a little
                    faces = [_jitter_face(x, frng, 1.0) for x in faces]
                    placements = [(cx + frng.normal(0, 0.02 * s), cy + frng.normal(0, 0.02 * s),
                                   s * (1 + frng.normal(0, 0.02)), r + frng.normal(0, 1.5))
                                  for cx, cy, s, r in placements]  # fmt: skip
                canvas = background.copy()
                annotations = _draw_faces(canvas, faces, placements)
                camera = np.random.default_rng([seed, 3, li, clip_index])
                image = _finish(canvas, camera, spec, noise_rng=frng)
                name = f"{grp['name']}_{clip_id:09d}_{start + 3 * f:08d}.png"
                write_png(folder / name, image, force=True)
                records.append(
                    {
                        "path": f"{folder.name}/{name}",
                        "label": label,
                        "group": grp["name"],
                        "intensity": round(face.intensity, 4),
                        "boxes": [[round(v, 2) for v in a.box] for a in annotations],
                        "landmarks": [np.round(a.landmarks, 2).tolist() for a in annotations],
                    }
                )
                written += 1
                done += 1
                if progress is not None:
                    progress(done, total)
            clip_id += 1
            clip_index += 1
    write_json(
        root / "synthetic.json",
        {
            "generator": "fertool.synthetic.make_dataset",
            "fertool_version": __version__,
            "seed": seed,
            "n_per_class": n_per_class,
            "width": width,
            "height": height,
            "n_groups": n_groups,
            "multi_face_rate": multi_face_rate,
            "spec": dataclasses.asdict(spec),
            "images": records,
        },
        force=True,
    )
    return root
