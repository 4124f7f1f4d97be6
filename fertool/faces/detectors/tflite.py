"""Rebuild MediaPipe BlazeFace / FaceMesh .tflite graphs in torch and export ONNX.

Used once, on first use of ``--detector blazeface`` (:mod:`fertool.faces.detectors.blazeface`
caches the result with its sha256). Owns: the tflite -> ONNX conversion. May import:
``fertool.core`` (and, inside functions, torch, onnx and the ``tflite`` package).

Conversion-time dependencies: torch, numpy, onnx, and the pure-python
``tflite`` flatbuffer-schema package (which pulls in ``flatbuffers``).
No TensorFlow / LiteRT is needed.

The converter is a small *generic* TFLite graph interpreter written with torch
ops.  It walks the flatbuffer operator list in order and supports exactly the
builtin ops these two models use (plus a few trivial extras):

    DEQUANTIZE (fp16 constants -> fp32, folded at build time), CONV_2D,
    DEPTHWISE_CONV_2D, ADD, MUL, RELU, RELU6, PRELU, LOGISTIC, PAD,
    MAX_POOL_2D, AVERAGE_POOL_2D(VALID), RESIZE_BILINEAR, RESHAPE,
    CONCATENATION

Layout: TFLite is NHWC.  Every 4-D activation is kept NCHW inside the torch
module and converted back to NHWC only where the semantics depend on memory
order (RESHAPE, graph outputs).  The exported ONNX model therefore has the
same input/output signature as the .tflite file (NHWC float32 input,
identical output shapes) except that the batch dimension is dynamic.

Padding SAME follows TensorFlow exactly: total = max((ceil(in/s)-1)*s +
(k-1)*d + 1 - in, 0), before = total // 2, after = total - before (i.e. the
extra pixel goes to the bottom/right, unlike torch's symmetric padding).

Usage:
    python -m fertool.faces.detectors.tflite MODEL.tflite OUT.onnx [--opset 17]
or from Python:
    from fertool.faces.detectors.tflite import convert
    info = convert("face_detection_full_range.tflite", "blazeface.onnx")
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np

CONVERTER_VERSION = "1"

# Output names used for the two MediaPipe models (by tflite output order).
KNOWN_OUTPUT_NAMES = {
    # face_detection_full_range*.tflite: [regressors (1,2304,16), classificators (1,2304,1)]
    "reshaped_regressor_face_4": "regressors",
    "reshaped_classifier_face_4": "classificators",
    # face_landmark.tflite: [conv2d_20 (1,1,1,1404), conv2d_30 (1,1,1,1)]
    "conv2d_20": "landmarks",
    "conv2d_30": "face_flag",
}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------
# flatbuffer parsing
# ----------------------------------------------------------------------------


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_NP_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "BOOL": np.bool_,
}


class TFLiteGraph:
    """Plain-python view of subgraph 0 of a .tflite model."""

    def __init__(self, path: str):
        import tflite  # conversion-time only

        self.tfl = tflite
        with open(path, "rb") as f:
            buf = f.read()
        self.model = tflite.Model.GetRootAsModel(buf, 0)
        if self.model.SubgraphsLength() != 1:
            raise NotImplementedError("only single-subgraph models are supported")
        self.g = self.model.Subgraphs(0)
        op_names = _enum_names(tflite.BuiltinOperator)
        type_names = _enum_names(tflite.TensorType)

        self.tensors = []
        for i in range(self.g.TensorsLength()):
            t = self.g.Tensors(i)
            shape = [int(s) for s in t.ShapeAsNumpy()] if t.ShapeLength() else []
            dtype = type_names[t.Type()]
            data = None
            b = self.model.Buffers(t.Buffer())
            if b is not None and b.DataLength() > 0:
                raw = b.DataAsNumpy().tobytes()
                data = np.frombuffer(raw, dtype=_NP_TYPES[dtype]).reshape(shape).copy()
            q = t.Quantization()
            if q is not None and q.ScaleLength() > 0 and dtype not in ("FLOAT32", "FLOAT16"):
                raise NotImplementedError(f"quantized tensor {t.Name()} not supported")
            self.tensors.append(
                {"name": t.Name().decode(), "shape": shape, "dtype": dtype, "data": data}
            )

        self.inputs = [int(i) for i in self.g.InputsAsNumpy()]
        self.outputs = [int(i) for i in self.g.OutputsAsNumpy()]
        self.ops = []
        for oi in range(self.g.OperatorsLength()):
            op = self.g.Operators(oi)
            oc = self.model.OperatorCodes(op.OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = op_names.get(code, str(code))
            if code == tflite.BuiltinOperator.CUSTOM:
                name = "CUSTOM:" + oc.CustomCode().decode()
            self.ops.append(
                {
                    "type": name,
                    "inputs": [int(i) for i in op.InputsAsNumpy()],
                    "outputs": [int(i) for i in op.OutputsAsNumpy()],
                    "options": self._options(name, op),
                }
            )

    def _options(self, name: str, op) -> dict:
        tfl = self.tfl
        table = op.BuiltinOptions()
        if table is None:
            return {}

        def load(cls):
            o = cls()
            o.Init(table.Bytes, table.Pos)
            return o

        if name == "CONV_2D":
            o = load(tfl.Conv2DOptions)
            return {
                "padding": o.Padding(),
                "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "act": o.FusedActivationFunction(),
            }
        if name == "DEPTHWISE_CONV_2D":
            o = load(tfl.DepthwiseConv2DOptions)
            return {
                "padding": o.Padding(),
                "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "act": o.FusedActivationFunction(),
                "mult": o.DepthMultiplier(),
            }
        if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = load(tfl.Pool2DOptions)
            return {
                "padding": o.Padding(),
                "stride": (o.StrideH(), o.StrideW()),
                "kernel": (o.FilterHeight(), o.FilterWidth()),
                "act": o.FusedActivationFunction(),
            }
        if name == "ADD":
            return {"act": load(tfl.AddOptions).FusedActivationFunction()}
        if name == "MUL":
            return {"act": load(tfl.MulOptions).FusedActivationFunction()}
        if name == "RESIZE_BILINEAR":
            o = load(tfl.ResizeBilinearOptions)
            return {
                "align_corners": bool(o.AlignCorners()),
                "half_pixel_centers": bool(o.HalfPixelCenters()),
            }
        if name == "CONCATENATION":
            o = load(tfl.ConcatenationOptions)
            return {"axis": o.Axis(), "act": o.FusedActivationFunction()}
        if name == "RESHAPE":
            o = load(tfl.ReshapeOptions)
            shape = [int(s) for s in o.NewShapeAsNumpy()] if o.NewShapeLength() else None
            return {"new_shape": shape}
        return {}

    def summary(self) -> dict:
        from collections import Counter

        return dict(Counter(op["type"] for op in self.ops))


# ----------------------------------------------------------------------------
# torch rebuild
# ----------------------------------------------------------------------------


def _build_torch_module(graph: TFLiteGraph):
    import torch
    import torch.nn.functional as F

    PAD_SAME, _PAD_VALID = 0, 1

    # ActivationFunctionType: NONE=0 RELU=1 RELU_N1_TO_1=2 RELU6=3 TANH=4
    def act(x, a):
        if a == 0:
            return x
        if a == 1:
            return torch.relu(x)
        if a == 2:
            return torch.clamp(x, -1.0, 1.0)
        if a == 3:
            return torch.clamp(x, 0.0, 6.0)
        if a == 4:
            return torch.tanh(x)
        raise NotImplementedError(f"fused activation {a}")

    def same_pad(in_size, k, s, d):
        out = math.ceil(in_size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - in_size, 0)
        return total // 2, total - total // 2

    T = graph.tensors
    # constant folding: fp16/fp32 constants, DEQUANTIZE of constants
    consts: dict[int, np.ndarray] = {i: t["data"] for i, t in enumerate(T) if t["data"] is not None}
    steps = []  # (kind, payload) list executed in forward
    for op in graph.ops:
        ty = op["type"]
        if ty == "DEQUANTIZE" and op["inputs"][0] in consts:
            c = consts[op["inputs"][0]]
            consts[op["outputs"][0]] = c.astype(np.float32)
            continue
        steps.append(op)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = []
            self._n = 0
            for op in steps:
                ty, opt = op["type"], op["options"]
                ins, outs = op["inputs"], op["outputs"]
                rec = {"type": ty, "ins": ins, "outs": outs, "opt": opt}
                if ty in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                    w = consts[ins[1]]
                    b = consts[ins[2]] if len(ins) > 2 and ins[2] >= 0 else None
                    in_shape = T[ins[0]]["shape"]  # NHWC
                    if ty == "CONV_2D":
                        wt = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
                        groups = 1
                        if wt.shape[1] != in_shape[3]:
                            groups = in_shape[3] // wt.shape[1]
                    else:
                        cin = in_shape[3]
                        wt = w.transpose(3, 0, 1, 2)  # 1HW(C*M) -> (C*M)1HW
                        groups = cin
                    kh, kw = wt.shape[2], wt.shape[3]
                    sh, sw = opt["stride"]
                    dh, dw = opt["dilation"]
                    if opt["padding"] == PAD_SAME:
                        pt, pb = same_pad(in_shape[1], kh, sh, dh)
                        pl, pr = same_pad(in_shape[2], kw, sw, dw)
                    else:
                        pt = pb = pl = pr = 0
                    rec.update(
                        w=self._buf(wt),
                        b=self._buf(b) if b is not None else None,
                        groups=groups,
                        stride=(sh, sw),
                        dilation=(dh, dw),
                        pad=(pl, pr, pt, pb),
                    )
                elif ty in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                    in_shape = T[ins[0]]["shape"]
                    kh, kw = opt["kernel"]
                    sh, sw = opt["stride"]
                    if opt["padding"] == PAD_SAME:
                        pt, pb = same_pad(in_shape[1], kh, sh, 1)
                        pl, pr = same_pad(in_shape[2], kw, sw, 1)
                        if ty == "AVERAGE_POOL_2D" and (pt or pb or pl or pr):
                            raise NotImplementedError("AVERAGE_POOL_2D with SAME padding")
                    else:
                        pt = pb = pl = pr = 0
                    rec.update(pad=(pl, pr, pt, pb))
                elif ty == "PRELU":
                    alpha = consts[ins[1]].astype(np.float32)
                    if alpha.size != T[ins[0]]["shape"][-1] and alpha.size != 1:
                        raise NotImplementedError("PRELU alpha must be per-channel")
                    rec.update(alpha=self._buf(alpha.reshape(-1)))
                elif ty in ("ADD", "MUL"):
                    for j, i in enumerate(ins):
                        if i in consts:
                            c = consts[i].astype(np.float32)
                            if c.ndim >= 1 and c.size > 1:
                                if len(T[ins[1 - j]]["shape"]) != 4 or c.shape[-1] != c.size:
                                    raise NotImplementedError("broadcast constant in ADD/MUL")
                                c = c.reshape(1, -1, 1, 1)
                            rec[f"c{j}"] = self._buf(c)
                elif ty == "PAD":
                    p = consts[ins[1]].astype(np.int64)  # [rank,2] in NHWC order
                    rec.update(pads=p.tolist())
                elif ty == "RESIZE_BILINEAR":
                    size = [int(v) for v in consts[ins[1]]]
                    in_shape = T[ins[0]]["shape"]
                    rec.update(size=size, in_hw=(in_shape[1], in_shape[2]))
                    if not opt["align_corners"] and not opt["half_pixel_centers"]:
                        # legacy TF "asymmetric" mode: src = dst * in/out
                        for axis, (n_in, n_out) in enumerate(zip(rec["in_hw"], size)):
                            src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
                            i0 = np.floor(src).astype(np.int64)
                            i1 = np.minimum(i0 + 1, n_in - 1)
                            frac = (src - i0).astype(np.float32)
                            rec[f"i0_{axis}"] = self._buf(i0)
                            rec[f"i1_{axis}"] = self._buf(i1)
                            rec[f"f_{axis}"] = self._buf(frac)
                elif ty == "RESHAPE":
                    shape = T[outs[0]]["shape"]
                    rec.update(shape=[-1] + list(shape[1:]))
                elif ty in ("RELU", "RELU6", "LOGISTIC", "CONCATENATION"):
                    pass
                else:
                    raise NotImplementedError(f"TFLite op {ty} not supported by this converter")
                self.steps.append(rec)
            self.in_idx = graph.inputs
            self.out_idx = graph.outputs

        def _buf(self, arr):
            name = f"k{self._n}"
            self._n += 1
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(arr)))
            return name

        def forward(self, *inputs):
            # env: tensor index -> (tensor, is_nchw)
            env = {}
            for idx, x in zip(self.in_idx, inputs):
                if x.dim() == 4:
                    env[idx] = (x.permute(0, 3, 1, 2), True)
                else:
                    env[idx] = (x, False)

            def get(i, want_nchw=None):
                x, nchw = env[i]
                if want_nchw is None or want_nchw == nchw or x.dim() != 4:
                    return x
                return x.permute(0, 3, 1, 2) if want_nchw else x.permute(0, 2, 3, 1)

            for r in self.steps:
                ty, ins, outs, opt = r["type"], r["ins"], r["outs"], r["opt"]
                if ty in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                    x = get(ins[0], True)
                    pl, pr, pt, pb = r["pad"]
                    if pl == pr and pt == pb:
                        pad = (pt, pl)
                    else:
                        x = F.pad(x, (pl, pr, pt, pb))
                        pad = (0, 0)
                    w = getattr(self, r["w"])
                    b = getattr(self, r["b"]) if r["b"] else None
                    y = F.conv2d(
                        x,
                        w,
                        b,
                        stride=r["stride"],
                        padding=pad,
                        dilation=r["dilation"],
                        groups=r["groups"],
                    )
                    env[outs[0]] = (act(y, opt["act"]), True)
                elif ty == "MAX_POOL_2D":
                    x = get(ins[0], True)
                    pl, pr, pt, pb = r["pad"]
                    if pl or pr or pt or pb:
                        x = F.pad(x, (pl, pr, pt, pb), value=float("-inf"))
                    y = F.max_pool2d(x, opt["kernel"], opt["stride"])
                    env[outs[0]] = (act(y, opt["act"]), True)
                elif ty == "AVERAGE_POOL_2D":
                    y = F.avg_pool2d(get(ins[0], True), opt["kernel"], opt["stride"])
                    env[outs[0]] = (act(y, opt["act"]), True)
                elif ty in ("ADD", "MUL"):
                    a = getattr(self, r["c0"]) if "c0" in r else get(ins[0], True)
                    b = getattr(self, r["c1"]) if "c1" in r else get(ins[1], True)
                    y = a + b if ty == "ADD" else a * b
                    env[outs[0]] = (act(y, opt["act"]), True)
                elif ty == "RELU":
                    x, nchw = env[ins[0]]
                    env[outs[0]] = (torch.relu(x), nchw)
                elif ty == "RELU6":
                    x, nchw = env[ins[0]]
                    env[outs[0]] = (torch.clamp(x, 0.0, 6.0), nchw)
                elif ty == "LOGISTIC":
                    x, nchw = env[ins[0]]
                    env[outs[0]] = (torch.sigmoid(x), nchw)
                elif ty == "PRELU":
                    x = get(ins[0], True)
                    a = getattr(self, r["alpha"])
                    y = F.prelu(x, a)
                    env[outs[0]] = (y, True)
                elif ty == "PAD":
                    x, nchw = env[ins[0]]
                    p = r["pads"]
                    if x.dim() == 4 and nchw:
                        order = [0, 3, 1, 2]
                        p = [p[k] for k in order]
                    flat = []
                    for lo, hi in reversed(p):
                        flat += [lo, hi]
                    # drop trailing zero pairs of leading dims (batch)
                    while len(flat) > 2 and flat[-1] == 0 and flat[-2] == 0:
                        flat = flat[:-2]
                    env[outs[0]] = (F.pad(x, flat), nchw)
                elif ty == "RESIZE_BILINEAR":
                    x = get(ins[0], True)
                    if opt["align_corners"]:
                        y = F.interpolate(x, size=r["size"], mode="bilinear", align_corners=True)
                    elif opt["half_pixel_centers"]:
                        y = F.interpolate(x, size=r["size"], mode="bilinear", align_corners=False)
                    else:
                        i0h, i1h, fh = (getattr(self, r[k]) for k in ("i0_0", "i1_0", "f_0"))
                        i0w, i1w, fw = (getattr(self, r[k]) for k in ("i0_1", "i1_1", "f_1"))
                        fh = fh.view(1, 1, -1, 1)
                        fw = fw.view(1, 1, 1, -1)
                        top = x.index_select(2, i0h)
                        bot = x.index_select(2, i1h)
                        x2 = top + (bot - top) * fh
                        lft = x2.index_select(3, i0w)
                        rgt = x2.index_select(3, i1w)
                        y = lft + (rgt - lft) * fw
                    env[outs[0]] = (y, True)
                elif ty == "RESHAPE":
                    x = get(ins[0], False)  # NHWC memory order semantics
                    y = x.reshape(r["shape"])
                    env[outs[0]] = (y, False)
                elif ty == "CONCATENATION":
                    xs = [env[i] for i in ins]
                    axis = opt["axis"]
                    if all(x.dim() == 4 for x, _ in xs):
                        axis = axis % 4
                        axis = [0, 2, 3, 1][axis]
                        y = torch.cat([get(i, True) for i in ins], dim=axis)
                        env[outs[0]] = (act(y, opt["act"]), True)
                    else:
                        y = torch.cat([get(i, False) for i in ins], dim=axis)
                        env[outs[0]] = (act(y, opt["act"]), False)
                else:  # pragma: no cover
                    raise NotImplementedError(ty)
            res = []
            for i in self.out_idx:
                res.append(get(i, False))  # back to TFLite (NHWC) layout
            return tuple(res) if len(res) > 1 else res[0]

    net = Net().eval()
    return net


def build_torch(tflite_path: str):
    """Return (torch.nn.Module, TFLiteGraph). Module input: NHWC float32."""
    graph = TFLiteGraph(tflite_path)
    return _build_torch_module(graph), graph


def convert(tflite_path: str, onnx_path: str, opset: int = 17, check: bool = True) -> dict:
    """Convert a .tflite file to ONNX; returns a dict with names/shapes/sha256."""
    import torch

    net, graph = build_torch(tflite_path)
    in_t = graph.tensors[graph.inputs[0]]
    if len(graph.inputs) != 1:
        raise NotImplementedError("single-input models only")
    out_names = []
    for i in graph.outputs:
        n = graph.tensors[i]["name"]
        out_names.append(KNOWN_OUTPUT_NAMES.get(n, n.replace("/", "_")))
    in_name = "input"
    dummy = torch.zeros([2] + in_t["shape"][1:], dtype=torch.float32)
    dyn = {in_name: {0: "batch"}}
    for n in out_names:
        dyn[n] = {0: "batch"}
    tmp = onnx_path + ".tmp"
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation / constant-folding chatter
        torch.onnx.export(
            net,
            (dummy,),
            tmp,
            input_names=[in_name],
            output_names=out_names,
            opset_version=opset,
            dynamic_axes=dyn,
            dynamo=False,
            do_constant_folding=True,
        )
    import onnx

    m = onnx.load(tmp)
    # clean symbolic shapes: the tracer names output dims oddly (and may reuse
    # "batch" for a static dim); pin them to ["batch", *static tflite dims].
    for vi, ti in [(m.graph.input[0], graph.inputs[0])] + list(zip(m.graph.output, graph.outputs)):
        dims = vi.type.tensor_type.shape.dim
        static = graph.tensors[ti]["shape"]
        for k, d in enumerate(dims):
            if k == 0:
                d.dim_param = "batch"
            else:
                d.dim_value = int(static[k])
    m.producer_name = "fertool-tflite2onnx_blaze"
    m.producer_version = CONVERTER_VERSION
    m.doc_string = (
        f"converted from {os.path.basename(tflite_path)} "
        f"sha256={sha256_file(tflite_path)} by tflite2onnx_blaze v{CONVERTER_VERSION}"
    )
    if check:
        onnx.checker.check_model(m)
    onnx.save(m, tmp)
    os.replace(tmp, onnx_path)
    info = {
        "tflite": os.path.abspath(tflite_path),
        "tflite_sha256": sha256_file(tflite_path),
        "onnx": os.path.abspath(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "input": {"name": in_name, "shape": ["batch"] + in_t["shape"][1:], "layout": "NHWC"},
        "outputs": [
            {"name": n, "shape": ["batch"] + graph.tensors[i]["shape"][1:]}
            for n, i in zip(out_names, graph.outputs)
        ],
        "ops": graph.summary(),
        "opset": opset,
        "converter_version": CONVERTER_VERSION,
        "torch": torch.__version__,
    }
    return info


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tflite")
    ap.add_argument("onnx")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    info = convert(args.tflite, args.onnx, opset=args.opset)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
