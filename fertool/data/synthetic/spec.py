"""Settings and records of :mod:`fertool.data.synthetic`: the variation knobs and the results.

:class:`SyntheticSpec` holds the ranges of every nuisance factor; :class:`FaceAnnotation` and
:class:`Scene` describe a rendered image. Also the constants shared by the drawing and layout
modules (:data:`BACKGROUNDS`, the ``Box`` type, how far down the shoulders reach).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

#: How far below the face centre the shoulders reach, in face half-heights.
_BODY_END = 8.0

BACKGROUNDS = ("gradient", "noise", "clutter")

Box = tuple[float, float, float, float]


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
                f"unknown variation {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(names))}"
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
