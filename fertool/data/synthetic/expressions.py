"""The face model of :mod:`fertool.data.synthetic`: expressions, identities and how they are drawn
at random.

An expression is a set of additive movements from the resting face (canonical units: the face
oval is 2 units tall, so 0.1 is 5% of the face height); an identity fixes the geometry, skin
tone, hair and eye colour and a resting expression of one person. :func:`_sample_face` combines
the two; :func:`_jitter_face` moves a face a little, as a few frames later in a clip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from fertool.core.labels import LABELS
from fertool.data.synthetic.backgrounds import _colours
from fertool.data.synthetic.spec import SyntheticSpec

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


def _check_expression(expression: str) -> str:
    from fertool.core.labels import canonical_label

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
