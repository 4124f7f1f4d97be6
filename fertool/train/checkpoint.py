"""Training checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts; structured metadata (the
training config, the preprocessing, the metric history) is stored as JSON strings. Writes are
atomic: an interrupted save never leaves a truncated ``last.pt``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from fertool.core.errors import FertoolError
from fertool.core.io import write_bytes

FORMAT = "fertool-checkpoint-1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Save ``payload`` (plus a format tag) atomically with :func:`torch.save`."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    return write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (never unpickles arbitrary objects)."""
    p = Path(path)
    if not p.is_file():
        raise FertoolError(f"checkpoint {p} not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a usable checkpoint"
        raise FertoolError(f"{p} is not a readable fertool checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FertoolError(f"{p} is not a fertool checkpoint (format {FORMAT!r} expected)")
    return ckpt


def to_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def from_json(text: str) -> Any:
    return json.loads(text)
