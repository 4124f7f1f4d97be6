"""Export a fine-tuned FerNet to ONNX: graph, metadata, checks and parity with torch.

The exported graph takes ``input``, standardised ``(N, 3, size, size)`` float32 (dynamic batch
``N``; the preprocessing is recorded in the metadata, see below) and returns

``probabilities`` (N, C)
    softmax over the classes, in the order of the ``labels`` metadata;
``logits`` (N, C)
    the head's logits;
``embedding`` (N, 512)
    the L2-normalised FaceNet embedding (what sklearn heads are trained on).

Every model carries ``metadata_props`` (``fertool.*`` keys, JSON values; see
:mod:`fertool.serve.onnxmeta`) and a JSON sidecar next to it (``NAME.json``) with the same
metadata plus the model's sha256 and the results of the checks. A plain onnxruntime client needs
nothing else::

    meta = json.loads(session.get_modelmeta().custom_metadata_map["fertool.preprocessing"])

:func:`export_run` is the whole ``fertool export-onnx`` step: float32 export, ``onnx.checker``,
parity against torch on real aligned faces of the run (refusing to finish above the tolerance),
optionally static int8 quantisation (:mod:`fertool.serve.quantize`) with its accuracy against
float32 on the run's test part. Files appear under their final names only when every check passed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fertool.core.errors import FertoolError
from fertool.serve.graph import (
    DEFAULT_OPSET,
    DYNAMO_MIN_OPSET,
    EXPORTERS,
    ExportedFile,
    ExportResult,
    check_onnx,
    graph_opset,
    publish,
    staging_dir,
    torch_to_onnx,
)
from fertool.serve.onnxmeta import build_metadata, decode_metadata, set_metadata, sidecar_path
from fertool.serve.parity import (
    PARITY_TOLERANCE,
    RunFaces,
    check_parity,
    run_faces,
)

if TYPE_CHECKING:  # pragma: no cover
    from fertool.train.rundir import RunModel

log = logging.getLogger(__name__)

#: The shared steps live in :mod:`fertool.serve.graph`; importable from here too.
__all__ = [
    "DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "EXPORTERS", "ExportResult", "ExportedFile",
    "check_onnx", "default_output", "export_model", "export_run", "graph_opset", "int8_path",
    "load_run", "publish", "staging_dir", "torch_to_onnx",
]

# --------------------------------------------------------------------------------------------
# The run


def load_run(run_dir: str | os.PathLike) -> RunModel:
    """Rebuild the best model of a ``fertool finetune`` run folder (on the CPU).

    :meth:`fertool.train.rundir.RunDir.load_best`, which owns the run folder's layout.

    Raises
    ------
    FertoolError
        When the folder or its ``best.pt`` is missing or not a fertool checkpoint.
    """
    from fertool.train.rundir import RunDir

    return RunDir(run_dir).load_best()


# --------------------------------------------------------------------------------------------
# The whole step


def export_model(
    run_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    head: str | os.PathLike | None = None,
    weights: str | None = None,
    tta_flip: bool | None = None,
    **kw: Any,
) -> ExportResult:
    """``fertool export-onnx``: a run's best model (:func:`export_run`), or FaceNet joined to an
    sklearn ``head`` (:func:`fertool.serve.onnxhead.export_head`, with the run's or ``weights``'
    backbone). ``kw``: ``int8``, ``calibration``, ``opset``, ``exporter``, ``tolerance``,
    ``force``.

    Raises
    ------
    FertoolError
        Neither ``run_dir`` nor ``head``; ``tta_flip`` with ``head`` (a head export takes the flip
        setting of the embeddings the head was trained on); and those of the two functions.
    """
    if head is not None:
        from fertool.serve.onnxhead import export_head

        if tta_flip is not None:
            raise FertoolError(
                "`tta_flip` is for run exports; a `head` export uses the flip setting of the "
                "embeddings the head was trained on"
            )
        return export_head(head, out, run_dir=run_dir, weights=weights, **kw)
    if run_dir is None:
        raise FertoolError("give `run_dir` (a fertool finetune run folder), or a `head` FILE")
    return export_run(run_dir, out, tta_flip=tta_flip, **kw)


def default_output(run_dir: str | os.PathLike, folder: str | os.PathLike = "exports") -> Path:
    """``exports/<run folder name>.onnx``."""
    return Path(folder) / f"{Path(run_dir).resolve().name}.onnx"


def int8_path(path: str | os.PathLike) -> Path:
    """``NAME.onnx`` -> ``NAME.int8.onnx``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.int8.onnx")


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    tolerance: float = PARITY_TOLERANCE,
    n_parity: int = 64,
    n_calibration: int = 128,
    tta_flip: bool | None = None,
    force: bool = False,
    progress: bool = True,
    faces: RunFaces | None = None,
) -> ExportResult:
    """Export a run's best model to ONNX (and int8), check it, and write the sidecars.

    Parameters
    ----------
    run_dir : path
        A ``fertool finetune`` run folder.
    out : path, optional
        The float32 model; default :func:`default_output`. The int8 model goes next to it as
        ``NAME.int8.onnx``; sidecars as ``NAME.json`` / ``NAME.int8.json``.
    int8 : bool
        Also write a static QDQ int8 model (per-channel 7-bit weights, float outputs),
        calibrated on training crops.
    calibration : path, optional
        A folder of images to take calibration and parity faces from, instead of the run's data.
    opset : int
    exporter : {"auto", "torchscript", "dynamo"}
    tolerance : float
        Largest accepted max-abs difference of float32 probabilities against torch.
    n_parity, n_calibration : int
        Faces used for the parity check and for calibration.
    tta_flip : bool, optional
        Put test-time flip augmentation in the graph (each crop and its mirror, probabilities
        averaged; twice the CNN work). Default: as the run was evaluated (its ``tta_flip``), so
        that the exported model reproduces the run's test scores.
    force : bool
        Overwrite existing files.
    faces : RunFaces, optional
        Crops already prepared (tests, or a caller that has them).

    Returns
    -------
    ExportResult

    Raises
    ------
    FertoolError
        An existing output without ``force``, a run that cannot be read, missing data.
    fertool.serve.parity.ParityError
        The float32 graph does not match torch; nothing is written.
    """
    t0 = time.perf_counter()
    run = load_run(run_dir)
    final = Path(out) if out is not None else default_output(run_dir)
    _check_targets(final, int8, force)  # fail before the slow part
    if faces is None:
        faces = run_faces(run, calibration, limit=max(n_calibration, n_parity), progress=progress)
    parity_x = faces.test[:n_parity] if len(faces.test) else faces.train[:n_parity]

    tta_flip = bool(run.config.get("tta_flip", False) if tta_flip is None else tta_flip)
    tta = {"tta_flip": tta_flip}
    base_sidecar = {"command": _command(), "source": run.source(), "weights": run.weights}
    with staging_dir(final) as tmp:
        staged = tmp / "float32.onnx"
        props = _stage_float32(run, staged, opset, exporter, tta)
        parity = check_parity(staged, run.model, parity_x, tolerance, flip=tta_flip)
        log.info(
            "parity: max |p_onnx - p_torch| = %.2e over %d faces", parity.probabilities, parity.n
        )
        int8_file = staged8 = None
        if int8:
            staged8 = tmp / "int8.onnx"
            props8, checks8 = _stage_int8(run, staged, staged8, faces.train[:n_calibration],
                                          faces, tta, progress)
        float_file = publish(
            staged, final, {**base_sidecar, "metadata": decode_metadata(props)}, "float32",
            {"onnx_checker": "passed", "parity": parity.to_dict(), "faces": faces.source}, force,
        )
        if staged8 is not None:
            sidecar8 = {**base_sidecar, "metadata": decode_metadata(props8),
                        "float32_model": final.name, "float32_sha256": float_file.sha256}
            checks = {"onnx_checker": "passed", "int8_vs_float32": checks8, "faces": faces.source}
            int8_file = publish(staged8, int8_path(final), sidecar8, "int8", checks, force)
    return ExportResult(
        float_file, int8_file, parity, time.perf_counter() - t0, faces.source, tta_flip
    )


def _check_targets(final: Path, int8: bool, force: bool) -> None:
    """Refuse a name that is not ``.onnx``, or existing outputs without ``force``."""
    from fertool.core.io import check_writable

    if final.suffix.lower() != ".onnx":
        raise FertoolError(f"--out {final}: the model file name must end in .onnx")
    targets = [final, sidecar_path(final)]
    if int8:
        targets += [int8_path(final), sidecar_path(int8_path(final))]
    for t in targets:
        check_writable(t, force)


def _stage_float32(run: RunModel, staged: Path, opset: int, exporter: str, tta: dict) -> dict:
    """The float32 graph of ``run`` at ``staged``, with its metadata, checked; its metadata."""
    flip = tta["tta_flip"]
    log.info("exporting %s to ONNX (opset %d%s)", run.run_dir, opset,
             ", flip TTA in the graph" if flip else "")
    torch_to_onnx(run.model, staged, opset=opset, exporter=exporter, flip=flip)
    props = build_metadata(run.preprocessing, source=run.source(), weights=run.weights,
                           opset=graph_opset(staged), extra=tta)
    set_metadata(staged, props, doc=f"fertool expression model from run {run.run_dir.name}")
    check_onnx(staged)
    return props


def _stage_int8(
    run: RunModel, staged: Path, staged8: Path, calib, faces: RunFaces, tta: dict, progress: bool
) -> tuple[dict, dict[str, Any]]:
    """The int8 copy of ``staged`` at ``staged8``, checked; its metadata and int8 checks."""
    from fertool.serve.quantize import compare_int8, quantize_int8

    quantize_int8(staged, staged8, calib, work_dir=staged.parent, progress=progress)
    calib_info = {"faces": len(calib), "source": faces.source, "method": "minmax",
                  "format": "QDQ", "per_channel": True, "reduce_range": True}
    props8 = build_metadata(
        run.preprocessing, source=run.source(), weights=run.weights, opset=graph_opset(staged),
        precision="int8", extra={"calibration": calib_info, **tta},
    )
    set_metadata(
        staged8, props8, doc=f"fertool expression model from run {run.run_dir.name} (int8)"
    )
    check_onnx(staged8)
    checks8 = compare_int8(staged, staged8, faces.test, faces.test_labels).to_dict()
    checks8["calibration_faces"] = len(calib)
    checks8["float32_bytes"] = staged.stat().st_size
    checks8["int8_bytes"] = staged8.stat().st_size
    return props8, checks8


def _command() -> str:
    from fertool.evaluate.report import command_line

    return command_line()
