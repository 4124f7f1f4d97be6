"""The synthetic dataset writer of :mod:`fertool.data.synthetic`: :func:`make_dataset`.

The only part of the package that touches the file system.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fertool.core.errors import FertoolError
from fertool.core.labels import LABELS
from fertool.core.version import __version__
from fertool.data.synthetic.backgrounds import _background, _finish
from fertool.data.synthetic.expressions import _jitter_face, _sample_face, _sample_identity
from fertool.data.synthetic.layout import _draw_faces, _place
from fertool.data.synthetic.spec import SyntheticSpec


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
    seven capitalised labels, so :func:`fertool.data.dataset.discover` finds seven classes
    grouped by ``group``. A group (``synth00`` ...) plays the part of a movie: a background
    style, a light direction and two or three recurring identities. A clip holds one to three
    frames of the same face with small changes of pose, gaze and expression.
    ``root/synthetic.json`` records the settings and, per image, the boxes and landmarks of its
    faces.

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
    from fertool.core.io import write_json, write_png

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
            "generator": "fertool.data.synthetic.make_dataset",
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
