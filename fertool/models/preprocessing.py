"""Input preprocessing contract of a model (torch-free, so ONNX inference can import it cheaply).

:class:`Preprocessing` is stored once with every model: in :class:`fertool.models.fernet.FerNet`, in
training checkpoints and in ONNX metadata (``to_json``/``from_json``). Nothing downstream restates
the input size, normalisation, channel order or label order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.labels import LABELS
from fertool.faces.config import FaceConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: Smallest input side of any model; each backbone has its own (``Backbone.min_size``, checked
#: when a model is built).
MIN_SIZE = 8


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input; stored with the model, checkpoints and ONNX exports.

    Attributes
    ----------
    size : int
        Square input side in pixels.
    mean, std : float
        Pixel standardisation ``(x - mean) / std`` on 0..255 values (FaceNet: 127.5, 128).
    channel_order : {"RGB", "BGR"}
        Channel order the network expects (crops are always RGB in fertool).
    labels : tuple of str
        Class names, in logit order.
    face : FaceConfig or None
        The face settings of the crops the model was trained on, when known (a dict, as
        ``FaceConfig.to_dict()`` writes it, is parsed).
    """

    size: int = 160
    mean: float = 127.5
    std: float = 128.0
    channel_order: str = "RGB"
    labels: tuple[str, ...] = LABELS
    face: FaceConfig | None = field(default=None, compare=True, hash=False)

    def __post_init__(self):
        if self.size < MIN_SIZE:
            raise ValueError(f"size={self.size} is too small; expected at least {MIN_SIZE} pixels")
        if self.std <= 0:
            raise ValueError(f"std={self.std} must be positive")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order={self.channel_order!r}; expected 'RGB' or 'BGR'")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if isinstance(self.face, dict):
            object.__setattr__(self, "face", FaceConfig.from_dict(self.face))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["face"] = self.face.to_dict() if self.face is not None else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer fertool) are ignored."""
        known = {"size", "mean", "std", "channel_order", "labels", "face"}
        extra = set(d) - known
        if extra:
            log.debug("ignoring unknown preprocessing keys %s", sorted(extra))
        kw = {k: d[k] for k in known & set(d)}
        if "labels" in kw:
            kw["labels"] = tuple(kw["labels"])
        for k in ("size",):
            if k in kw:
                kw[k] = int(kw[k])
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = float(kw[k])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        return cls.from_dict(json.loads(text))

    def normalize(self, crops_uint8_nhwc: np.ndarray) -> np.ndarray:
        """``(N, size, size, 3)`` uint8 -> ``(N, 3, size, size)`` float32, standardised (numpy)."""
        x = np.asarray(crops_uint8_nhwc)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (self.size, self.size, 3):
            raise ValueError(
                f"crops have shape {x.shape}; expected (N, {self.size}, {self.size}, 3) uint8 RGB"
            )
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_tensor(self, crops_uint8_nhwc: np.ndarray) -> torch.Tensor:
        """``(N, size, size, 3)`` uint8 RGB crops -> ``(N, 3, size, size)`` float32 tensor."""
        import torch

        return torch.from_numpy(self.normalize(crops_uint8_nhwc))
