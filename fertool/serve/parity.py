"""Checks of an exported model: parity with torch, and the real faces they run on.

:func:`check_parity` runs the ONNX graph (onnxruntime, CPU) and the torch model
(:func:`fertool.models.inference.run_outputs`) on the same standardised faces and refuses a graph
whose probabilities differ by more than the tolerance.
:func:`run_faces` gets those faces: aligned crops of a run's own dataset and split (through the
face cache), or of a folder of images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.serve.session import create_session, run_onnx

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.fernet import FerNet
    from fertool.train.rundir import RunModel

__all__ = [
    "PARITY_TOLERANCE", "Parity", "ParityError", "RunFaces", "check_parity", "compare_outputs",
    "folder_crops", "run_faces", "run_onnx",
]

log = logging.getLogger(__name__)

#: Largest max-abs difference of probabilities (float32 ONNX vs torch) that export accepts.
PARITY_TOLERANCE = 1e-4


class ParityError(FertoolError):
    """The exported graph does not reproduce torch within the tolerance."""


@dataclass
class Parity:
    """Largest absolute differences between two implementations over ``n`` faces."""

    n: int
    probabilities: float
    logits: float
    embedding: float
    argmax_agreement: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.probabilities <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def compare_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tolerance: float) -> Parity:
    """Max abs differences of the outputs two implementations share."""

    def diff(name: str) -> float:
        if name not in a or name not in b:
            return float("nan")
        return float(np.max(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64))))

    pa, pb = a["probabilities"], b["probabilities"]
    agree = float(np.mean(pa.argmax(1) == pb.argmax(1))) if len(pa) else float("nan")
    return Parity(
        len(pa), diff("probabilities"), diff("logits"), diff("embedding"), agree, tolerance
    )


def check_parity(
    path: str | os.PathLike,
    model: FerNet,
    x: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
    batch_size: int = 16,
    flip: bool = False,
) -> Parity:
    """Compare the ONNX model at ``path`` with ``model`` on standardised faces ``x``.

    ``flip``: the graph has flip TTA in it, so the torch side runs it too.

    Raises
    ------
    ParityError
        When the probabilities differ by more than ``tolerance`` anywhere.
    """
    if len(x) == 0:
        raise FertoolError("no faces to check parity on")
    from fertool.models.inference import run_outputs

    got = run_onnx(create_session(path, providers="cpu"), x, batch_size)
    ref = run_outputs(model, x, batch_size, flip=flip)
    parity = compare_outputs(got, ref, tolerance)
    if not parity.ok:
        raise ParityError(
            f"{path}: onnxruntime and torch disagree by {parity.probabilities:.2e} in probability "
            f"(tolerance {tolerance:.0e}) over {parity.n} faces; the export is not trustworthy "
            "(try another --opset, or report this with the run folder)"
        )
    return parity


# --------------------------------------------------------------------------------------------
# Faces for parity, calibration and the int8 accuracy check


@dataclass
class RunFaces:
    """Standardised crops of a run: training crops (calibration) and the test part (accuracy).

    ``source`` says where they came from (the run's dataset, or a --calibration folder).
    """

    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray | None
    source: str


def run_faces(
    run: RunModel,
    calibration: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    progress: bool = True,
) -> RunFaces:
    """Aligned crops for the checks, read through the face cache.

    Without ``calibration`` they come from the run's own dataset and split (training part =
    fit + validation, test part = test); with it, from the images of that folder (no labels,
    so no accuracy figure), run through the face stage with the model's settings.
    """
    if calibration is not None:
        from fertool.data.walk import iter_image_paths
        from fertool.faces.stage import FaceConfig

        face = run.preprocessing.face or FaceConfig()
        crops = folder_crops(iter_image_paths([calibration]), face, limit, progress)
        if len(crops) == 0:
            raise FertoolError(f"no usable images found in --calibration folder {calibration}")
        x = run.preprocessing.normalize(crops)
        return RunFaces(x, x[: min(len(x), 64)], None, f"folder {calibration}")

    from fertool.train.config import TrainConfig
    from fertool.train.plan import prepare_data

    cfg = TrainConfig.from_dict(run.config)
    if not cfg.data or not Path(cfg.data).is_dir():
        raise FertoolError(
            f"the run's dataset {cfg.data!r} is not available here; pass --calibration DIR "
            "(a folder of images like the training data) for the parity and int8 checks"
        )
    data = prepare_data(cfg, progress=progress)
    train_idx = np.sort(np.concatenate([data.fit, data.val]))
    x = data.x.numpy()
    train = x[train_idx]
    if limit is not None and len(train) > limit:
        pick = np.random.default_rng(0).choice(len(train), limit, replace=False)
        train = train[np.sort(pick)]
    return RunFaces(train, x[data.test], data.y.numpy()[data.test], f"dataset {cfg.data}")


def folder_crops(paths, face, limit: int | None, progress: bool) -> np.ndarray:
    """Crops of up to ``limit`` images (face stage with settings ``face``), ``(N, S, S, 3)``."""
    from fertool.faces.stage import extract_faces

    crops = []
    for rec in extract_faces(paths, face, progress=progress):
        if rec.crop is not None:
            crops.append(rec.crop)
            if limit is not None and len(crops) >= limit:
                break
    if not crops:
        return np.zeros((0, face.size, face.size, 3), np.uint8)
    return np.stack(crops)
