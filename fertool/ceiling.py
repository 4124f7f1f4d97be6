"""The machine's ceilings for ``fertool bench``: its peak from the CPU's flags, and a measured
peak with the fastest kernel at hand (matrix products and convolutions), for float32 and int8.

- **Peak** = available cores x clock x FLOPs per cycle and core. FLOPs per cycle come from the
  widest SIMD FMA in ``/proc/cpuinfo``'s flags (``avx512f``: 16 float32 lanes; ``avx2`` with
  ``fma``: 8; else SSE, 4), times 2 (a fused multiply-add is two operations), times
  :data:`FMA_UNITS` FMA pipes per core (2 on the server cores we know of: Skylake-SP Gold and
  later, Zen 2 and later; the flags cannot tell, so the peak is an upper bound). int8: four 8-bit
  products per 32-bit lane (``vpdpbusd`` with ``avx512_vnni``/``avx_vnni``; without VNNI the
  ``vpmaddubsw`` + ``vpmaddwd`` pair reaches the same products in two instructions, so measured
  int8 rarely passes half of it). The clock is the largest ``cpu MHz`` listed (or the cpufreq
  maximum when the kernel exposes it).
- **Measured** = the best of onnxruntime's own MatMul (two square sizes), its Conv (3x3, 256
  channels, batch 32: the blocked NCHWc kernel a CNN runs, which beats its MatMul by about 50% on
  AVX-512) and torch.mm for float32; for int8 onnxruntime's MatMulInteger (uint8 x int8 -> int32,
  the kernel of its dynamic quantization; two sizes) and QLinearConv (same convolution). A
  matrix product alone is not the fastest kernel: with it as the ceiling, onnxruntime's float32
  FaceNet came out at 136% and int8 at 105% of "the peak" on an AVX-512 machine. numpy's product
  is not used: here OpenBLAS runs an older kernel (``OPENBLAS_CORETYPE``), which put onnxruntime
  at "over 200 % of the ceiling".

Owns: the ceilings. May import: ``fertool.core`` (onnx, onnxruntime and torch inside functions).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import numpy as np

__all__ = ["FMA_UNITS", "cpu_peak", "measured_peak", "share"]

#: FMA pipes per core assumed in the peak (see the module docstring).
FMA_UNITS = 2


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _clock_ghz(text: str) -> float | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="utf-8") as f:
            return int(f.read().strip()) / 1e6
    except (OSError, ValueError):
        pass
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)]
    return max(mhz) / 1000 if mhz else None


def cpu_peak(cpuinfo: str | None = None, cores: int | None = None) -> dict[str, Any]:
    """The machine's float32 and int8 peak (GFLOP/s, GOP/s) from ``/proc/cpuinfo``; the fields
    that entered it are returned too. ``None`` peaks when the clock or flags are unknown."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    line = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    flags = set(line.split(":", 1)[-1].split())
    if "avx512f" in flags:
        lanes, simd = 16, "avx512f"
    elif "avx2" in flags and "fma" in flags:
        lanes, simd = 8, "avx2+fma"
    elif flags:
        lanes, simd = 4, "sse"
    else:
        lanes, simd = None, "unknown"
    vnni = sorted(f for f in ("avx512_vnni", "avx_vnni") if f in flags)
    cores = cores or _cores()
    ghz = _clock_ghz(cpuinfo)
    out: dict[str, Any] = {
        "cores": cores,
        "clock_ghz": ghz,
        "simd": simd,
        "float32_lanes": lanes,
        "fma_units_assumed": FMA_UNITS,
        "vnni": vnni,
        "float32_gflop_per_s": None,
        "int8_gop_per_s": None,
    }
    if lanes and ghz:
        per_cycle = lanes * 2 * FMA_UNITS
        out["float32_gflop_per_s"] = cores * ghz * per_cycle
        out["int8_gop_per_s"] = cores * ghz * per_cycle * 4
    return out


def _timed_rate(fn, min_seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


def _session(graph, threads: int | None):
    """An onnxruntime CPU session of a one-node graph (``threads``: intra-op, default ort's)."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )


def _ort_matmul(n: int, int8: bool, threads: int | None, min_seconds: float) -> float:
    """Operations per second of onnxruntime's MatMul (float32) or MatMulInteger (int8)."""
    import onnx
    from onnx import TensorProto, helper

    if int8:
        a_t, out_t = TensorProto.UINT8, TensorProto.INT32
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    else:
        a_t = out_t = TensorProto.FLOAT
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    graph = helper.make_graph(
        [node],
        "ceiling",
        [helper.make_tensor_value_info("A", a_t, [n, n])],
        [helper.make_tensor_value_info("Y", out_t, [n, n])],
        initializer=[],
    )
    rng = np.random.default_rng(0)
    if int8:
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    else:
        b = rng.standard_normal((n, n)).astype(np.float32)
        a = rng.standard_normal((n, n)).astype(np.float32)
    graph.initializer.append(onnx.numpy_helper.from_array(b, "B"))
    sess = _session(graph, threads)
    rate = _timed_rate(lambda: sess.run(None, {"A": a}), min_seconds)
    return 2.0 * n**3 * rate


#: The convolution probe: batch, channels in = out, side, kernel (Inception-ResNet's 17x17 stage).
CONV_PROBE = (32, 256, 17, 3)


def _ort_conv(int8: bool, threads: int | None, min_seconds: float) -> float:
    """Operations per second of onnxruntime's Conv (float32) or QLinearConv (uint8 x int8) on
    :data:`CONV_PROBE`."""
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, k = CONV_PROBE
    rng = np.random.default_rng(0)
    pads = [k // 2] * 4
    if int8:
        x = rng.integers(0, 256, (n, c, h, h), dtype=np.uint8)
        w = rng.integers(-128, 128, (c, c, k, k), dtype=np.int8)
        consts = {"xs": np.float32(0.01), "xz": np.uint8(128), "ws": np.float32(0.01),
                  "wz": np.int8(0), "ys": np.float32(0.5), "yz": np.uint8(128)}
        inputs = ["X", "xs", "xz", "W", "ws", "wz", "ys", "yz"]
        node = helper.make_node("QLinearConv", inputs, ["Y"], pads=pads)
        kind = TensorProto.UINT8
    else:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((c, c, k, k)).astype(np.float32)
        consts = {}
        node = helper.make_node("Conv", ["X", "W"], ["Y"], pads=pads)
        kind = TensorProto.FLOAT
    inits = [numpy_helper.from_array(w, "W")]
    inits += [numpy_helper.from_array(np.asarray(v), name) for name, v in consts.items()]
    graph = helper.make_graph(
        [node],
        "ceiling_conv",
        [helper.make_tensor_value_info("X", kind, list(x.shape))],
        [helper.make_tensor_value_info("Y", kind, None)],
        initializer=inits,
    )
    sess = _session(graph, threads)
    rate = _timed_rate(lambda: sess.run(None, {"X": x}), min_seconds)
    return 2.0 * n * c * c * k * k * h * h * rate


def _torch_mm(n: int, min_seconds: float) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2.0 * n**3 * _timed_rate(lambda: torch.mm(a, b), min_seconds)


def measured_peak(
    n: int = 2048, min_seconds: float = 2.0, threads: int | None = None
) -> dict[str, Any]:
    """The fastest float32 and int8 kernels measured here (GFLOP/s, GOP/s) and which kernel gave
    each: matrix products of side ``n // 2`` and ``n``, and the :data:`CONV_PROBE` convolution."""
    sizes = sorted({max(2, n // 2), n})
    f32 = {f"onnxruntime MatMul {m}": _ort_matmul(m, False, threads, min_seconds) / 1e9
           for m in sizes}
    f32["onnxruntime Conv 3x3"] = _ort_conv(False, threads, min_seconds) / 1e9
    mm = _torch_mm(n, min_seconds)
    if mm is not None:
        f32["torch.mm"] = mm / 1e9
    i8 = {f"onnxruntime MatMulInteger {m}": _ort_matmul(m, True, threads, min_seconds) / 1e9
          for m in sizes}
    i8["onnxruntime QLinearConv 3x3"] = _ort_conv(True, threads, min_seconds) / 1e9
    best32 = max(f32, key=f32.get)
    best8 = max(i8, key=i8.get)
    return {
        "matrix_side": n,
        "float32_gflop_per_s": f32[best32],
        "float32_kernel": best32,
        "int8_gop_per_s": i8[best8],
        "int8_kernel": best8,
        "all": {
            **{f"float32 {k}": v for k, v in f32.items()},
            **{f"int8 {k}": v for k, v in i8.items()},
        },
    }


def share(images_per_s: float | None, gflop_per_image: float, peak: float | None) -> float | None:
    """The fraction of ``peak`` (GFLOP/s or GOP/s) that ``images_per_s`` images of
    ``gflop_per_image`` each use."""
    if not images_per_s or not peak:
        return None
    return images_per_s * gflop_per_image / peak
