"""Serving exported models with onnxruntime: sessions, providers, and a predictor.

::

    import fertool
    model = fertool.load("exports/movie0.onnx")            # providers="auto" | "cpu" | "cuda"
    faces = model.predict("photo.jpg")                      # face stage + model, one image
    print(faces[0].label, faces[0].score)
    proba = model.predict_crops(crops)                      # (N, 160, 160, 3) uint8 aligned crops

Everything the model needs to know about its input (size, normalisation, channel order, class
names, face-alignment settings) is read from the model's metadata, or from its JSON sidecar when
the metadata is missing (see :mod:`fertool.serve.onnxmeta`); nothing is restated here.

This module never imports torch: :meth:`Predictor.predict_crops` needs only onnxruntime and numpy.
:meth:`Predictor.predict` also runs the face stage (MTCNN from facenet-pytorch, which runs on
torch), imported on first use.

Providers: ``cpu`` uses the CPU provider only; ``cuda`` requires a CUDA device and onnxruntime's
CUDA provider (an error says what is missing); ``auto`` takes CUDA when a device is present and
the provider loads, else the CPU. On a machine without a GPU, ``auto`` and ``cpu`` never ask for
the CUDA provider, so onnxruntime-gpu prints none of its warnings about missing CUDA libraries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.serve.session import PROVIDERS, create_session, cuda_device_count, resolve_providers

if TYPE_CHECKING:  # pragma: no cover
    from fertool.faces.stage import FaceRecord, FaceStage
    from fertool.models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

#: Sessions and providers live in :mod:`fertool.serve.session` (importable from here too).
__all__ = [
    "PROVIDERS", "FacePrediction", "Predictor", "create_session", "cuda_device_count", "load",
    "model_metadata", "resolve_providers", "to_prediction",
]
_CUDA = "CUDAExecutionProvider"


# --------------------------------------------------------------------------------------------
# Predictions


@dataclass
class FacePrediction:
    """The model's answer for one face (or one image without a usable face).

    Attributes
    ----------
    path : str
        The image (``"<array>"`` for arrays).
    status : {"ok", "fallback", "no_face", "error"}
        From the face stage: a detected face, a centre crop (no face found), nothing
        (no face, skipped), or an unreadable file.
    message : str
        Why, for ``fallback``, ``no_face`` and ``error``.
    face_index : int
        Index among the detected faces (largest first); -1 without a detected face.
    n_faces : int
        Faces detected in the image.
    box : (x1, y1, x2, y2) or None
        In the image's pixels.
    face_score : float or None
        Detector confidence.
    label : str or None
        Most probable class; None when no crop reached the model.
    score : float or None
        Its probability.
    probabilities : (C,) ndarray or None
        One probability per class, in the order of :attr:`Predictor.labels`.
    """

    path: str
    status: str
    message: str
    face_index: int
    n_faces: int
    box: tuple[float, float, float, float] | None
    face_score: float | None
    label: str | None
    score: float | None
    probabilities: np.ndarray | None

    def to_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        """Plain JSON-able dict with one ``p_<label>`` entry per class."""
        d = {
            "path": self.path,
            "face_index": self.face_index,
            "n_faces": self.n_faces,
            "box": None if self.box is None else [round(float(v), 2) for v in self.box],
            "face_score": None if self.face_score is None else round(float(self.face_score), 6),
            "label": self.label,
            "score": None if self.score is None else float(self.score),
        }
        for i, name in enumerate(labels):
            d[f"p_{name}"] = None if self.probabilities is None else float(self.probabilities[i])
        d["status"] = self.status
        d["message"] = self.message
        return d


class Predictor:
    """An exported fertool model in an onnxruntime session. Build with :func:`load`.

    Attributes
    ----------
    path : Path
    session : onnxruntime.InferenceSession
    metadata : dict
        The decoded ``fertool.*`` metadata (see :mod:`fertool.serve.onnxmeta`).
    preprocessing : Preprocessing
    labels : tuple of str
    providers : list of str
        The providers the session actually uses.
    """

    def __init__(self, path: str | os.PathLike, session, metadata: dict[str, Any]):
        from fertool.models.preprocessing import Preprocessing

        self.path = Path(path)
        self.session = session
        self.metadata = metadata
        try:
            self.preprocessing: Preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FertoolError(f"{self.path}: unusable preprocessing metadata ({exc})") from None
        self.labels: tuple[str, ...] = tuple(metadata.get("labels") or self.preprocessing.labels)
        self.providers: list[str] = list(session.get_providers())
        self.input_name: str = session.get_inputs()[0].name
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        if "probabilities" not in self.output_names:
            raise FertoolError(
                f"{self.path}: the model has no 'probabilities' output "
                f"(outputs: {', '.join(self.output_names)})"
            )
        self._stage: FaceStage | None = None

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.path)!r}, labels={list(self.labels)}, "
            f"precision={self.metadata.get('precision')!r}, providers={self.providers})"
        )

    @property
    def face_config(self):
        """The :class:`fertool.faces.stage.FaceConfig` the model's training crops were made with."""
        from fertool.faces.stage import FaceConfig

        return self.preprocessing.face or FaceConfig()

    # -- the model on crops ------------------------------------------------------------------

    def run(self, x: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Raw outputs for standardised input ``x`` ((N, 3, S, S) float32), one session call."""
        names = list(outputs or self.output_names)
        res = self.session.run(names, {self.input_name: np.ascontiguousarray(x, np.float32)})
        return dict(zip(names, res))

    def _batched(self, crops: np.ndarray, output: str, batch_size: int) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if output not in self.output_names:
            raise FertoolError(f"{self.path}: the model has no {output!r} output")
        parts = [
            self.run(self.preprocessing.normalize(crops[i : i + batch_size]), [output])[output]
            for i in range(0, len(crops), batch_size)
        ]
        if not parts:
            width = len(self.labels) if output == "probabilities" else 0
            return np.zeros((0, width), np.float32)
        return np.concatenate(parts)

    def predict_crops(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(N, C)`` for aligned face crops.

        Parameters
        ----------
        crops : (N, S, S, 3) or (S, S, 3) uint8 ndarray
            RGB crops as the face stage makes them (``S`` = ``preprocessing.size``).
        batch_size : int
        """
        return self._batched(crops, "probabilities", batch_size)

    def embed_crops(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """L2-normalised FaceNet embeddings ``(N, 512)`` of aligned crops."""
        return self._batched(crops, "embedding", batch_size)

    # -- whole images ------------------------------------------------------------------------

    def face_stage(self) -> FaceStage:
        """The face stage with the model's settings (created on first use; imports torch)."""
        if self._stage is None:
            from fertool.faces.stage import FaceStage

            device = "cuda" if _CUDA in self.providers else "cpu"
            self._stage = FaceStage(self.face_config, device=device)
        return self._stage

    def predict(self, image, all_faces: bool = False) -> list[FacePrediction]:
        """Face stage, then the model, for one image.

        Parameters
        ----------
        image : path or (H, W, 3) uint8 ndarray or (H, W) uint8 ndarray
            A file (read with :func:`fertool.core.io.read_image`) or an RGB (or grey) array.
        all_faces : bool
            One prediction per detected face instead of the chosen one.

        Returns
        -------
        list of FacePrediction
            One element (the chosen face, the fallback centre crop, or the no-face record);
            with ``all_faces``, one per detected face.

        Raises
        ------
        ImageReadError
            A file that cannot be read.
        """
        from fertool.core.io import read_image

        if isinstance(image, (str, os.PathLike)):
            name = str(image)
            image = read_image(image)
        else:
            name = "<array>"
            image = np.asarray(image)
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
        records = self.face_stage().process(image, path=name, all_faces=all_faces)
        return self.predict_records(records)

    def predict_records(
        self, records: Iterable[FaceRecord], batch_size: int = 32
    ) -> list[FacePrediction]:
        """Predictions for face-stage records (the model runs on those that have a crop)."""
        records = list(records)
        with_crop = [r for r in records if r.crop is not None]
        proba = (
            self.predict_crops(np.stack([r.crop for r in with_crop]), batch_size)
            if with_crop
            else np.zeros((0, len(self.labels)), np.float32)
        )
        it = iter(proba)
        return [
            to_prediction(r, next(it) if r.crop is not None else None, self.labels) for r in records
        ]


def to_prediction(
    record: FaceRecord, proba: np.ndarray | None, labels: Sequence[str]
) -> FacePrediction:
    """Combine a face-stage record with the model's probabilities for its crop (or None)."""
    label = score = None
    if proba is not None:
        k = int(np.argmax(proba))
        label, score = labels[k], float(proba[k])
    message = record.message
    if message.startswith(f"{record.path}: "):  # ImageReadError names the file; path is known
        message = message[len(record.path) + 2 :]
    return FacePrediction(
        record.path,
        record.status,
        message,
        record.face_index,
        record.n_faces,
        record.box,
        record.score,
        label,
        score,
        proba,
    )


# --------------------------------------------------------------------------------------------
# Loading


def model_metadata(path: str | os.PathLike, session=None) -> dict[str, Any]:
    """The decoded fertool metadata of a model: from the model itself, else from its sidecar.

    Raises
    ------
    FertoolError
        When neither holds the preprocessing.
    """
    from fertool.serve.onnxmeta import decode_metadata, read_sidecar, sidecar_path

    if session is not None:
        meta = decode_metadata(dict(session.get_modelmeta().custom_metadata_map))
        if "preprocessing" in meta:
            return meta
    side = read_sidecar(path)
    if side and isinstance(side.get("metadata"), dict) and "preprocessing" in side["metadata"]:
        _check_sidecar_hash(path, side)
        return dict(side["metadata"])
    raise FertoolError(
        f"{path}: no fertool metadata in the model and no usable sidecar {sidecar_path(path)}; "
        "export the model with fertool export-onnx, or put its NAME.json next to it"
    )


def _check_sidecar_hash(path: str | os.PathLike, side: dict) -> None:
    from fertool.core.io import sha256_file

    expected = side.get("sha256")
    if expected and sha256_file(path) != expected:
        log.warning(
            "the sidecar of %s was written for another file (sha256 differs); "
            "using its metadata anyway",
            path,
        )


def load(path: str | os.PathLike, providers: str = "auto", threads: int | None = None) -> Predictor:
    """Load an exported model for inference.

    Parameters
    ----------
    path : path
        A ``.onnx`` file written by ``fertool export-onnx``.
    providers : {"auto", "cpu", "cuda"}
    threads : int, optional
        onnxruntime intra-op threads.

    Returns
    -------
    Predictor
    """
    session = create_session(path, providers, threads)
    return Predictor(path, session, model_metadata(path, session))
