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
:mod:`fertool.serve.onnxmeta`) and a JSON sidecar next to it (``NAME.json``) with the same metadata plus
the model's sha256 and the results of the checks. A plain onnxruntime client needs nothing else::

    meta = json.loads(session.get_modelmeta().custom_metadata_map["fertool.models.preprocessing"])

:func:`export_run` is the whole ``fertool export-onnx`` step: float32 export, ``onnx.checker``,
parity against torch on real aligned faces of the run (refusing to finish above the tolerance),
optionally static int8 quantisation (:mod:`fertool.serve.quantize`) with its accuracy against float32
on the run's test part. Files appear under their final names only when every check passed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.serve.onnxmeta import (
    INPUT_NAME,
    OUTPUT_NAMES,
    build_metadata,
    decode_metadata,
    set_metadata,
    sidecar_path,
)
from fertool.serve.parity import (
    PARITY_TOLERANCE,
    Parity,
    RunFaces,
    check_parity,
    run_faces,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fertool.models.fernet import FerNet
    from fertool.models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")
#: Lowest opset torch's dynamo exporter writes without a (failing) version conversion.
DYNAMO_MIN_OPSET = 18


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class RunModel:
    """A fine-tuning run's best model, rebuilt from ``RUN_DIR/best.pt``.

    Attributes
    ----------
    run_dir : Path
    model : FerNet
        In eval mode, on the CPU.
    preprocessing : Preprocessing
    labels : tuple of str
    config : dict
        The :class:`fertool.train.loop.TrainConfig` dict of the run.
    weights : dict or None
        ``{name, sha256, source}`` of the pretrained weights, None for random initialisation.
    split_hash : str
    checkpoint_sha256 : str
    epoch : int
    unfreeze : int or None
    """

    run_dir: Path
    model: FerNet
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    config: dict
    weights: dict | None
    split_hash: str
    checkpoint_sha256: str
    epoch: int
    unfreeze: int | None

    def source(self) -> dict[str, Any]:
        """What the metadata records about the run."""
        cfg = self.config
        return {
            "run": self.run_dir.name,
            "run_dir": str(self.run_dir.resolve()),
            "checkpoint": "best.pt",
            "checkpoint_sha256": self.checkpoint_sha256,
            "epoch": self.epoch,
            "unfreeze": self.unfreeze,
            "split_hash": self.split_hash,
            "protocol": cfg.get("protocol"),
            "fold": cfg.get("fold"),
            "split_seed": cfg.get("split_seed"),
            "data": cfg.get("data"),
        }


def load_run(run_dir: str | os.PathLike) -> RunModel:
    """Rebuild the best model of a ``fertool finetune`` run folder.

    Raises
    ------
    FertoolError
        When the folder or its ``best.pt`` is missing or not a fertool checkpoint.
    """
    from fertool.core.io import sha256_file
    from fertool.models.fernet import FerNet
    from fertool.models.preprocessing import Preprocessing
    from fertool.train.checkpoint import from_json, load_checkpoint

    run = Path(run_dir)
    if not run.is_dir():
        raise FertoolError(
            f"run folder {run} not found (expected the --out folder of fertool finetune)"
        )
    best = run / "best.pt"
    if not best.is_file():
        raise FertoolError(
            f"{best} not found: {run} is not a finished fine-tuning run "
            "(fertool finetune writes best.pt after the first epoch)"
        )
    ckpt = load_checkpoint(best)
    try:
        pre = Preprocessing.from_json(ckpt["preprocessing"])
        labels = tuple(ckpt.get("labels") or pre.labels)
        config = from_json(ckpt["config"]) if "config" in ckpt else {}
        weights = from_json(ckpt["weights"]) if ckpt.get("weights") else None
    except (KeyError, ValueError, TypeError) as exc:
        raise FertoolError(f"{best}: incomplete checkpoint metadata ({exc})") from None
    if tuple(pre.labels) != labels:
        pre = Preprocessing.from_dict({**pre.to_dict(), "labels": list(labels)})
    model = FerNet(num_classes=len(labels), preprocessing=pre)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise FertoolError(f"{best}: the weights do not fit FerNet ({exc})") from None
    model.eval()
    unfreeze = ckpt.get("unfreeze")
    return RunModel(
        run,
        model,
        pre,
        labels,
        config,
        weights,
        str(ckpt.get("split_hash", "")),
        sha256_file(best),
        int(ckpt.get("epoch", 0)),
        None if unfreeze is None else int(unfreeze),
    )


# --------------------------------------------------------------------------------------------
# Torch -> ONNX


def export_module(
    model: FerNet, outputs: tuple[str, ...] = OUTPUT_NAMES, flip: bool = False
) -> torch.nn.Module:
    """A module whose forward returns the named ``outputs`` of a FerNet, in that order.

    One pass through the network: the embedding is the normalised ``last_bn`` output that the
    logits layer also reads (exactly :meth:`FerNet.embed` and ``FerNet.forward`` in eval mode).

    Parameters
    ----------
    model : FerNet
    outputs : tuple of str
        Any of ``probabilities``, ``logits``, ``embedding``.
    flip : bool
        Test-time augmentation: run each crop and its mirror image as one batch and combine
        them: ``probabilities`` is the mean of the two softmaxes (what ``fertool finetune``
        reports with ``tta_flip``), ``logits`` the mean of the two, ``embedding`` the mean of
        the two normalised embeddings, normalised again (what ``fertool embed --flip-tta``
        computes). Twice the CNN work per crop.
    """
    import torch
    import torch.nn.functional as F

    from fertool.train.loop import SEQUENCE, run_sequence

    unknown = set(outputs) - set(OUTPUT_NAMES)
    if unknown or not outputs:
        raise ValueError(f"outputs={outputs}; expected names among {OUTPUT_NAMES}")
    stop = SEQUENCE.index("logits")

    class _ExportHeads(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            b = self.net.backbone
            n = x.shape[0]
            z = run_sequence(b, torch.cat([x, x.flip(-1)]) if flip else x, 0, stop)

            def pair_mean(t):  # a crop and its mirror image
                return (t[:n] + t[n:]) / 2 if flip else t

            e = F.normalize(z, p=2.0, dim=1)
            found = {"embedding": F.normalize(pair_mean(e), p=2.0, dim=1) if flip else e}
            if tuple(outputs) != ("embedding",):
                logits = b.logits(z)
                found["probabilities"] = pair_mean(F.softmax(logits, dim=1))
                found["logits"] = pair_mean(logits)
            return tuple(found[name] for name in outputs)

    return _ExportHeads(model).eval()


def _torchscript_available() -> bool:
    import torch

    return hasattr(torch.onnx, "utils") and hasattr(torch.onnx.utils, "export")


def torch_to_onnx(
    model: FerNet,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    outputs: tuple[str, ...] = OUTPUT_NAMES,
    flip: bool = False,
) -> Path:
    """Write the graph of :func:`export_module` to ``path`` (no metadata, no checks).

    Returns the path; the graph's opset is :func:`graph_opset` of it (the dynamo exporter
    writes at least :data:`DYNAMO_MIN_OPSET`).

    Parameters
    ----------
    model : FerNet
    path : path
        Output ``.onnx`` file (written directly; callers write into a temporary folder).
    opset : int
        ONNX opset of the default domain.
    exporter : {"auto", "torchscript", "dynamo"}
        ``torchscript`` is torch's classic tracer (fast; deprecated in torch 2.9+ but still
        shipped); ``dynamo`` the torch.export-based exporter (several times slower here);
        ``auto`` takes torchscript while torch has it, else dynamo.
    """
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r}; expected one of {', '.join(EXPORTERS)}")
    if exporter == "auto":
        exporter = "torchscript" if _torchscript_available() else "dynamo"
    module = export_module(model, outputs, flip)
    size = model.preprocessing.size
    example = torch.zeros(2, 3, size, size)
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        # torch announces the deprecation of the torchscript exporter on every call; that is a
        # note for fertool's maintainers (handled by exporter="auto"), not for the user.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*feature will be removed.*")
        if exporter == "torchscript":
            axes = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)}
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )
        else:
            try:
                import onnxscript  # noqa: F401  (torch's dynamo exporter builds the graph with it)
            except ImportError:
                raise FertoolError(
                    "the dynamo ONNX exporter needs onnxscript: pip install onnxscript"
                ) from None
            if opset < DYNAMO_MIN_OPSET:
                # Its down-conversion fails on this graph (and prints a traceback doing so).
                log.info("the dynamo exporter writes opset %d at least", DYNAMO_MIN_OPSET)
                opset = DYNAMO_MIN_OPSET
            batch = torch.export.Dim("batch", min=1)
            with contextlib.redirect_stdout(_LogStream()):
                program = torch.onnx.export(
                    module,
                    (example,),
                    None,
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=list(outputs),
                    dynamic_shapes=({0: batch},),
                    opset_version=opset,
                    external_data=False,
                    verbose=False,
                )
            program.save(str(path), external_data=False)
    return path


def graph_opset(path: str | os.PathLike) -> int:
    """Opset of the default ONNX domain of the model at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


class _LogStream:
    """A text stream that sends what the dynamo exporter prints to the debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("torch.onnx: %s", text.strip())
        return len(text)

    def flush(self) -> None:
        pass


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker.check_model`` with a message naming the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise FertoolError(f"{path}: the exported graph is not valid ONNX ({exc})") from None


def run_torch(
    model: FerNet,
    x: np.ndarray,
    batch_size: int = 32,
    outputs: tuple[str, ...] = OUTPUT_NAMES,
    flip: bool = False,
) -> dict[str, np.ndarray]:
    """The ``outputs`` of the torch model on standardised ``x`` (see :func:`export_module`)."""
    import torch

    module = export_module(model, outputs, flip)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs = module(torch.as_tensor(np.asarray(x[i : i + batch_size], np.float32)))
            for n, o in zip(outputs, outs):
                parts[n].append(o.numpy())
    return {n: np.concatenate(v) for n, v in parts.items()}


# --------------------------------------------------------------------------------------------
# The whole step


@dataclass
class ExportedFile:
    """One exported model: where it is, its size and hash, and what was checked."""

    path: Path
    sidecar: Path
    precision: str
    bytes: int
    sha256: str
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and measured."""

    float32: ExportedFile
    int8: ExportedFile | None
    parity: Parity
    seconds: float
    faces_source: str
    tta_flip: bool = False


def default_output(run_dir: str | os.PathLike, folder: str | os.PathLike = "exports") -> Path:
    """``exports/<run folder name>.onnx``."""
    return Path(folder) / f"{Path(run_dir).resolve().name}.onnx"


def int8_path(path: str | os.PathLike) -> Path:
    """``NAME.onnx`` -> ``NAME.int8.onnx``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.int8.onnx")


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A temporary folder next to ``final`` (same file system, so the last step is a rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(
    staged: Path,
    final: Path,
    sidecar: dict[str, Any],
    precision: str,
    checks: dict[str, Any],
    force: bool,
) -> ExportedFile:
    """Move a checked model into place and write its sidecar (both atomically)."""
    from fertool.core.io import check_writable, sha256_file, write_json

    side = sidecar_path(final)
    check_writable(final, force)
    check_writable(side, force)
    digest = sha256_file(staged)
    size = staged.stat().st_size
    os.replace(staged, final)
    write_json(
        side,
        {
            "model": final.name,
            "sha256": digest,
            "bytes": size,
            "precision": precision,
            **sidecar,
            "checks": checks,
        },
    )
    return ExportedFile(final, side, precision, size, digest, checks)


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
    from fertool.core.io import check_writable

    t0 = time.perf_counter()
    run = load_run(run_dir)
    final = Path(out) if out is not None else default_output(run_dir)
    if final.suffix.lower() != ".onnx":
        raise FertoolError(f"--out {final}: the model file name must end in .onnx")
    targets = [final, sidecar_path(final)]
    if int8:
        targets += [int8_path(final), sidecar_path(int8_path(final))]
    for t in targets:  # fail before the slow part
        check_writable(t, force)

    if faces is None:
        faces = run_faces(run, calibration, limit=max(n_calibration, n_parity), progress=progress)
    parity_x = faces.test[:n_parity] if len(faces.test) else faces.train[:n_parity]

    tta_flip = bool(run.config.get("tta_flip", False) if tta_flip is None else tta_flip)
    tta = {"tta_flip": tta_flip}
    source = run.source()
    base_sidecar = {"command": _command(), "source": source, "weights": run.weights}
    with staging_dir(final) as tmp:
        staged = tmp / "float32.onnx"
        log.info("exporting %s to ONNX (opset %d%s)", run.run_dir, opset,
                 ", flip TTA in the graph" if tta_flip else "")
        torch_to_onnx(run.model, staged, opset=opset, exporter=exporter, flip=tta_flip)
        opset = graph_opset(staged)
        props = build_metadata(run.preprocessing, source=source, weights=run.weights, opset=opset,
                               extra=tta)
        set_metadata(staged, props, doc=f"fertool expression model from run {run.run_dir.name}")
        check_onnx(staged)
        parity = check_parity(staged, run.model, parity_x, tolerance, flip=tta_flip)
        log.info(
            "parity: max |p_onnx - p_torch| = %.2e over %d faces", parity.probabilities, parity.n
        )

        int8_file = None
        staged8 = None
        checks8: dict[str, Any] = {}
        if int8:
            from fertool.serve.quantize import compare_int8, quantize_int8

            staged8 = tmp / "int8.onnx"
            calib = faces.train[:n_calibration]
            quantize_int8(staged, staged8, calib, work_dir=tmp, progress=progress)
            calib_info = {
                "faces": len(calib),
                "source": faces.source,
                "method": "minmax",
                "format": "QDQ",
                "per_channel": True,
                "reduce_range": True,
            }
            props8 = build_metadata(
                run.preprocessing,
                source=source,
                weights=run.weights,
                opset=opset,
                precision="int8",
                extra={"calibration": calib_info, **tta},
            )
            set_metadata(
                staged8, props8, doc=f"fertool expression model from run {run.run_dir.name} (int8)"
            )
            check_onnx(staged8)
            checks8 = compare_int8(staged, staged8, faces.test, faces.test_labels).to_dict()
            checks8["calibration_faces"] = len(calib)
            checks8["float32_bytes"] = staged.stat().st_size
            checks8["int8_bytes"] = staged8.stat().st_size
        meta = decode_metadata(props)
        float_file = publish(
            staged,
            final,
            {**base_sidecar, "metadata": meta},
            "float32",
            {"onnx_checker": "passed", "parity": parity.to_dict(), "faces": faces.source},
            force,
        )
        if staged8 is not None:
            meta8 = decode_metadata(props8)
            int8_file = publish(
                staged8,
                int8_path(final),
                {
                    **base_sidecar,
                    "metadata": meta8,
                    "float32_model": final.name,
                    "float32_sha256": float_file.sha256,
                },
                "int8",
                {"onnx_checker": "passed", "int8_vs_float32": checks8, "faces": faces.source},
                force,
            )
    return ExportResult(
        float_file, int8_file, parity, time.perf_counter() - t0, faces.source, tta_flip
    )


def _command() -> str:
    from fertool.evaluate.report import command_line

    return command_line()
