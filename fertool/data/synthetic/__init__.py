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

import numpy as np

from fertool.core.labels import LABELS
from fertool.data.synthetic.backgrounds import _background, _finish
from fertool.data.synthetic.dataset import make_dataset
from fertool.data.synthetic.drawing import _render_face
from fertool.data.synthetic.expressions import _check_expression, _sample_face
from fertool.data.synthetic.layout import Placement as Placement
from fertool.data.synthetic.layout import _draw_faces, _place
from fertool.data.synthetic.spec import BACKGROUNDS, Box, FaceAnnotation, Scene, SyntheticSpec

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
