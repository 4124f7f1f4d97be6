"""Scene layout of :mod:`fertool.data.synthetic`: where the faces of a scene go, and drawing them in
order.

:func:`_place` finds positions for the labelled face and for the extra faces that fit beside it;
:func:`_draw_faces` renders them back to front.
"""

from __future__ import annotations

import numpy as np

from fertool.data.synthetic.drawing import _render_face
from fertool.data.synthetic.expressions import _Face
from fertool.data.synthetic.spec import _BODY_END, Box, SyntheticSpec


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
