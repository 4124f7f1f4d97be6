"""Static int8 quantisation of an exported model (QDQ format, per-channel weights).

onnxruntime's static quantisation inserts QuantizeLinear/DequantizeLinear pairs around the
quantisable operators (convolutions, matrix products, additions, ...) with scales fixed once from
calibration data: the ranges of every activation over real, aligned training crops of the run.
Weights get one scale per output channel (``per_channel``), which is what keeps the
Inception-ResNet blocks accurate. Activations are unsigned 8-bit, weights signed 8-bit: the
combination onnxruntime's x86 kernels (AVX2 / AVX-512 VNNI) run fastest. Inputs and outputs stay
float32, so the int8 model is a drop-in replacement for the float32 one.

:func:`compare_int8` measures what the quantisation costs: accuracy of both models on the run's
test part and how often they agree.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fertool.core.errors import FertoolError

log = logging.getLogger(__name__)


def calibration_reader(
    x: np.ndarray, batch_size: int = 8, input_name: str = "input", progress: bool = False
):
    """An onnxruntime ``CalibrationDataReader`` over standardised crops ``x`` (N, 3, S, S).

    Parameters
    ----------
    x : (N, 3, S, S) float32 ndarray
    batch_size : int
    input_name : str
    progress : bool
        Show a progress bar (on stderr) as batches are read.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class _CropsReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, len(x), batch_size))
            self._bar = None
            if progress:
                import sys

                from tqdm import tqdm

                self._bar = tqdm(total=len(x), desc="calibration", unit="face", file=sys.stderr)

        def get_next(self):
            start = next(self._starts, None)
            if start is None:
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None
                return None
            batch = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
            if self._bar is not None:
                self._bar.update(len(batch))
            return {input_name: batch}

        def rewind(self) -> None:
            self._starts = iter(range(0, len(x), batch_size))

    return _CropsReader()


def quantize_int8(
    float_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    *,
    work_dir: str | os.PathLike,
    batch_size: int = 8,
    per_channel: bool = True,
    reduce_range: bool = True,
    progress: bool = False,
) -> Path:
    """Write a static QDQ int8 copy of the float32 model at ``float_path`` to ``out_path``.

    Parameters
    ----------
    float_path : path
        The float32 model (input ``input``).
    out_path : path
        Written directly (callers use a staging folder).
    calibration : (N, 3, S, S) float32 ndarray
        Standardised training crops; 100-200 are plenty, 32 is a usable minimum. onnxruntime's
        MinMax calibration holds every activation of every calibration crop until the end
        (about 10 MB per crop for InceptionResnetV1: 1.9 GB peak for 128 crops), so memory
        grows with N. (Its ``CalibMaxIntermediateOutputs`` option does not bound this: in
        onnxruntime 1.31 it drops the batches collected so far instead of reducing them.)
    work_dir : path
        Folder for the intermediate (pre-processed) model.
    batch_size : int
        Calibration batch size.
    per_channel : bool
        One weight scale per output channel.
    reduce_range : bool
        7-bit weights. x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply
        uint8 activations by int8 weights in pairs summed into int16, which saturates when both
        use their full range: on this project's AVX2 machine, 8-bit per-channel weights in
        FaceNet's first convolution changed the class of 12% of test faces (fine-tuned demo
        model), 7-bit weights none. A model is handed to machines we do not know, so the
        default is the range that is exact on all of them; the cost is one bit of weight
        precision.
    progress : bool

    Returns
    -------
    Path
        ``out_path``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise FertoolError("no calibration faces: int8 quantisation needs training crops")
    if len(calibration) < 32:
        log.warning("only %d calibration faces; int8 ranges may be poor", len(calibration))
    pre = Path(work_dir) / "int8-preprocessed.onnx"
    with _quiet_root_logging():
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        keep_float = float_head_nodes(pre)
        quantize_static(
            str(pre),
            str(out_path),
            calibration_reader(calibration, batch_size, progress=progress),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
            reduce_range=reduce_range,
        )
    pre.unlink(missing_ok=True)
    return Path(out_path)


def float_head_nodes(model_path: str | Path) -> list[str]:
    """Names of the head nodes that stay float32: everything after the shared trunk.

    The trunk ends at the last node (in the graph's topological order) that every output
    depends on: FaceNet's 512-d bottleneck. What follows (normalisation, the 512x7 logits layer,
    softmax, and the mirror-image averaging of a flip-TTA graph) is a negligible share of the
    work, and quantising it would round probabilities to multiples of 1/255 (exact zeros, sums
    off 1) and logits and embeddings to 256 levels. The nodes that write the outputs are always
    included.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}

    def ancestors(name: str) -> set[int]:
        seen: set[int] = set()
        stack = [producer[name]] if name in producer else []
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(producer[t] for t in graph.node[i].input if t in producer)
        return seen

    per_output = [ancestors(o.name) for o in graph.output]
    if not per_output:
        return []
    trunk_end = max(set.intersection(*per_output), default=-1)
    keep = {i for anc in per_output for i in anc if i > trunk_end}
    keep |= {producer[o.name] for o in graph.output if o.name in producer}
    return [graph.node[i].name for i in sorted(keep) if graph.node[i].name]


class _DropQuantizerNotes(logging.Filter):
    """onnxruntime's quantiser logs one line per tensor on the root logger; keep them out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    note_filter = _DropQuantizerNotes()
    root.addFilter(note_filter)
    try:
        yield
    finally:
        root.removeFilter(note_filter)


@dataclass
class Int8Check:
    """int8 against float32 on the same faces.

    ``float32_accuracy`` / ``int8_accuracy`` are None when the faces have no labels.
    ``agreement`` is the share of faces where both models pick the same class; ``max_abs_diff``
    and ``mean_abs_diff`` are over all probabilities.
    """

    n: int
    float32_accuracy: float | None
    int8_accuracy: float | None
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float

    @property
    def accuracy_delta(self) -> float | None:
        if self.float32_accuracy is None or self.int8_accuracy is None:
            return None
        return self.int8_accuracy - self.float32_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_delta": self.accuracy_delta}


def compare_int8(
    float_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray | None = None,
    batch_size: int = 32,
) -> Int8Check:
    """Run both models on standardised faces ``x`` and compare them (and with labels ``y``)."""
    from fertool.serve.session import create_session, run_onnx

    if len(x) == 0:
        raise FertoolError("no faces to compare the int8 model with the float32 one")
    p32 = run_onnx(create_session(float_path, "cpu"), x, batch_size)["probabilities"]
    p8 = run_onnx(create_session(int8_path, "cpu"), x, batch_size)["probabilities"]
    a32, a8 = p32.argmax(1), p8.argmax(1)
    acc32 = acc8 = None
    if y is not None:
        y = np.asarray(y)
        acc32, acc8 = float(np.mean(a32 == y)), float(np.mean(a8 == y))
    diff = np.abs(p32.astype(np.float64) - p8)
    return Int8Check(
        len(x), acc32, acc8, float(np.mean(a32 == a8)), float(diff.max()), float(diff.mean())
    )
