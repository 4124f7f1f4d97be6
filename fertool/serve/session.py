"""onnxruntime sessions: the providers, the one session factory, and batched runs.

:func:`create_session` is the one place an ``onnxruntime.InferenceSession`` is made (the
predictor, parity checks, int8 comparisons, ``bench``). Providers: ``cpu`` uses the CPU provider
only; ``cuda`` requires a CUDA device and onnxruntime's CUDA provider (an error says what is
missing); ``auto`` takes CUDA when a device is present and the provider loads, else the CPU. On a
machine without a GPU, ``auto`` and ``cpu`` never ask for the CUDA provider, so onnxruntime-gpu
prints none of its warnings about missing CUDA libraries. This module never imports torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fertool.core.errors import FertoolError

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports (0 without a driver or a GPU); torch-free."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except AttributeError:
            return 0
    return 0


def resolve_providers(choice: str = "auto") -> list[str]:
    """onnxruntime providers for ``auto``, ``cpu`` or ``cuda``, in order of preference.

    Raises
    ------
    FertoolError
        ``cuda`` on a machine without a CUDA device or without onnxruntime's CUDA provider.
    """
    import onnxruntime as ort

    choice = (choice or "auto").lower()
    if choice not in PROVIDERS:
        raise FertoolError(f"--providers {choice}: expected one of {', '.join(PROVIDERS)}")
    if choice == "cpu":
        return [_CPU]
    has_provider = _CUDA in ort.get_available_providers()
    devices = cuda_device_count() if has_provider or choice == "cuda" else 0
    if choice == "cuda":
        if not has_provider:
            raise FertoolError(
                "--providers cuda: this onnxruntime has no CUDA provider; install onnxruntime-gpu "
                "(pip install onnxruntime-gpu) or use --providers cpu"
            )
        if devices == 0:
            raise FertoolError(
                "--providers cuda: no CUDA device found on this machine; "
                "use --providers cpu (or auto)"
            )
    if has_provider and devices > 0:
        return [_CUDA, _CPU]
    return [_CPU]


def create_session(path: str | os.PathLike, providers: str = "auto", threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path`` on the chosen providers.

    Parameters
    ----------
    path : path
    providers : {"auto", "cpu", "cuda"}
    threads : int, optional
        Intra-op threads (default: onnxruntime's choice, the physical cores).

    Raises
    ------
    FertoolError
        A missing or unreadable model file; ``cuda`` asked for but the provider did not load.
    """
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise FertoolError(f"model {p} not found (make one with: fertool export-onnx RUN_DIR)")
    wanted = resolve_providers(providers)
    if _CUDA in wanted and hasattr(ort, "preload_dlls"):
        try:  # CUDA / cuDNN from the nvidia-* wheels that torch installs, when present
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - best effort; the session reports what is missing
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(p), so, providers=wanted)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise FertoolError(f"{p}: onnxruntime cannot load this model ({exc})") from None
    if _CUDA in wanted and _CUDA not in session.get_providers():
        if (providers or "auto").lower() == "cuda":
            raise FertoolError(
                "--providers cuda: onnxruntime's CUDA provider did not load (CUDA or cuDNN "
                "libraries missing or of the wrong version; see the message above); use "
                "--providers cpu"
            )
        log.info("CUDA provider unavailable; running on the CPU")
    return session


def run_onnx(session, x: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """All outputs of ``session`` on standardised input ``x``, in batches, concatenated."""
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    in_name = session.get_inputs()[0].name
    for i in range(0, len(x), batch_size):
        outs = session.run(
            names, {in_name: np.ascontiguousarray(x[i : i + batch_size], np.float32)}
        )
        for n, o in zip(names, outs):
            parts[n].append(np.asarray(o))
    return {n: np.concatenate(v) for n, v in parts.items() if v}
