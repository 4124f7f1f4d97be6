"""Writing a checked ONNX file: torch -> ONNX, ``onnx.checker``, staging and publishing.

The steps that every export shares (a run's model in :mod:`fertool.serve.export`, FaceNet joined
to an sklearn head in :mod:`fertool.serve.onnxhead`): :func:`torch_to_onnx` traces
:func:`fertool.models.inference.output_module`; :func:`check_onnx`; files are written in a
:func:`staging_dir` next to their final place and moved there by :func:`publish` (with their
JSON sidecar) only when every check passed. :class:`ExportResult` is what an export returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fertool.core.errors import FertoolError
from fertool.serve.onnxmeta import INPUT_NAME, OUTPUT_NAMES, sidecar_path
from fertool.serve.parity import Parity

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.fernet import FerNet

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")
#: Lowest opset torch's dynamo exporter writes without a (failing) version conversion.
DYNAMO_MIN_OPSET = 18



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
    """Write the graph of :func:`fertool.models.inference.output_module` to ``path``.

    No metadata, no checks.

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
    from fertool.models.inference import output_module

    module = output_module(model, outputs, flip)
    pre = model.preprocessing
    example = torch.zeros(2, getattr(pre, "channels", 3), pre.size, pre.size)
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

    def summary(self) -> str:
        """What ``fertool export-onnx`` prints: the files, the checks and how to serve it."""
        f, p = self.float32, self.parity
        lines = [f"wrote {f.path} ({_mib(f.bytes)}, sha256 {f.sha256[:16]}) and {f.sidecar.name}"]
        if self.tta_flip:
            lines.append("flip TTA is in the graph (crop and mirror, probabilities averaged); "
                         "--no-tta-flip exports the single pass")
        lines.append(
            f"onnx.checker passed; parity with torch over {p.n} faces ({self.faces_source}): "
            f"max |dp| = {p.probabilities:.2e} (tolerance {p.tolerance:.0e}), "
            f"same class {100 * p.argmax_agreement:.1f}%"
        )
        if self.int8 is not None:
            c = self.int8.checks["int8_vs_float32"]
            lines.append(
                f"wrote {self.int8.path} ({_mib(self.int8.bytes)}, "
                f"{f.bytes / max(self.int8.bytes, 1):.1f}x smaller) and {self.int8.sidecar.name}"
            )
            line = (
                f"int8 vs float32 on {c['n']} test faces: same class {100 * c['agreement']:.1f}%, "
                f"max |dp| = {c['max_abs_diff']:.3f}"
            )
            if c.get("float32_accuracy") is not None:
                line += (
                    f"; accuracy float32 {100 * c['float32_accuracy']:.1f}% -> int8 "
                    f"{100 * c['int8_accuracy']:.1f}% ({100 * c['accuracy_delta']:+.1f} points)"
                )
            lines.append(line)
        lines.append(f"done in {self.seconds:.0f} s; serve it with: fertool predict FOLDER "
                     f"--model {Path(f.path)}")
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


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
