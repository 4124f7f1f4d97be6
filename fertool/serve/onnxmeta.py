"""What an exported fertool ONNX model says about itself: metadata_props and the JSON sidecar.

Torch-free (onnx is imported only to write metadata), so :mod:`fertool.serve.runtime` can use it.

Every model fertool writes carries ``fertool.*`` metadata_props whose values are JSON texts:

``format``         ``fertool-onnx-1``
``version``        fertool's version
``labels``         class names in output order
``preprocessing``  :class:`fertool.models.preprocessing.Preprocessing` as a dict: size, mean, std,
                   channel order, labels, and ``face``, the face stage's settings (alignment)
``input``          name, shape, dtype, layout and the formula to apply to a crop
``outputs``        output names (``probabilities``, ``logits``, ``embedding``)
``source``         the run it came from (folder, checkpoint sha256, epoch, split hash, ...)
``weights``        the pretrained weights (name, sha256, source), or null
``opset``          the default-domain opset
``precision``      ``float32`` or ``int8``
``head``           only when an sklearn head is part of the graph: its file, sha256 and kind

The sidecar ``NAME.json`` next to ``NAME.onnx`` holds the same values under ``"metadata"``, plus
the model file's ``sha256`` and ``bytes`` and the results of the export's checks. It is what a
person (or git) reads; the metadata inside the model is what a client reads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

#: Value of the ``fertool.format`` metadata key.
FORMAT = "fertool-onnx-1"
PREFIX = "fertool."
INPUT_NAME = "input"
OUTPUT_NAMES = ("probabilities", "logits", "embedding")


def build_metadata(
    preprocessing: Preprocessing,
    *,
    source: dict | None,
    weights: dict | None,
    opset: int,
    precision: str = "float32",
    outputs: tuple[str, ...] = OUTPUT_NAMES,
    head: dict | None = None,
    extra: dict | None = None,
) -> dict[str, str]:
    """The ``fertool.*`` metadata_props of an exported model (values are JSON texts).

    Parameters
    ----------
    preprocessing : Preprocessing
        The model's input contract (labels included).
    source : dict or None
        The run (see :meth:`fertool.serve.export.RunModel.source`).
    weights : dict or None
        Pretrained weights ``{name, sha256, source}``.
    opset : int
    precision : {"float32", "int8"}
    outputs : tuple of str
        Output names of the graph.
    head : dict, optional
        The sklearn head joined to the graph.
    extra : dict, optional
        More keys (for example ``calibration``).

    Returns
    -------
    dict of str to str
    """
    from fertool.core.version import __version__

    pre = preprocessing.to_dict()
    size = pre["size"]
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": __version__,
        "labels": list(preprocessing.labels),
        "preprocessing": pre,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", preprocessing.channels, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "formula": f"(pixel - {pre['mean']}) / {pre['std']} on {pre['channel_order']} 0..255 "
            f"values of an aligned {size}x{size} face crop"
            if preprocessing.channels == 3
            else f"(grey - {pre['mean']}) / {pre['std']}, grey = 0.299 R + 0.587 G + 0.114 B "
            f"(uint8) of the aligned face crop, resized to {size}x{size} "
            f"({preprocessing.resize or 'no'} resampling)",
        },
        "outputs": list(outputs),
        "source": source,
        "weights": weights,
        "opset": int(opset),
        "precision": precision,
    }
    if head is not None:
        meta["head"] = head
    if extra:
        meta.update(extra)
    return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in meta.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """``{"fertool.x": json text}`` -> ``{"x": value}``; other keys are left out."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key.startswith(PREFIX):
            try:
                out[key[len(PREFIX) :]] = json.loads(value)
            except ValueError:
                out[key[len(PREFIX) :]] = value
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded ``fertool.*`` metadata stored in the ONNX file at ``path`` ({} when none)."""
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return decode_metadata({p.key: p.value for p in props})


def set_metadata(path: str | os.PathLike, props: dict[str, str], doc: str = "") -> None:
    """Replace the ``fertool.*`` metadata_props of the ONNX file at ``path``, in place.

    Other metadata (onnxruntime's quantisation notes, say) is kept. Only for files in a staging
    folder: the write is not atomic.
    """
    import onnx

    from fertool.core.version import __version__

    model = onnx.load(str(path))
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in [*keep, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "fertool"
    model.producer_version = __version__
    if doc:
        model.doc_string = doc
    onnx.save(model, str(path))


def sidecar_path(path: str | os.PathLike) -> Path:
    """``NAME.onnx`` -> ``NAME.json``."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of a model (``NAME.json``), or None when there is none or it is unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable sidecar %s (%s)", side, exc)
        return None
    return data if isinstance(data, dict) else None
