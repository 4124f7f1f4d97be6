"""Files converted once and cached beside a ``.sha256`` sidecar (the CASIA FaceNet weights, the
BlazeFace ONNX models): reused when the file still matches its recorded sha256, else rebuilt.

Owns: the convert-once cache rule. May import: ``fertool.core``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["cached_conversion", "sha256_sidecar"]


def sha256_sidecar(path: Path) -> Path:
    """The sidecar of ``path``: ``<name>.sha256`` beside it."""
    return path.with_name(path.name + ".sha256")


def cached_conversion(
    path: Path, convert: Callable[[Path], object] | None, force: bool = False
) -> tuple[Path, str] | None:
    """A converted file and its sha256: reused when it matches its ``.sha256`` sidecar, else made
    with ``convert(path)`` (which writes ``path`` atomically) and recorded.

    Returns None when there is no intact file and nothing to convert from (``convert=None``).
    """
    from fertool.core.io import sha256_file, write_text

    path = Path(path)
    sidecar = sha256_sidecar(path)
    if path.is_file() and sidecar.is_file() and not force:
        digest = sha256_file(path)
        recorded = sidecar.read_text(encoding="utf-8").split()[:1]
        if recorded == [digest]:
            return path, digest
        log.warning("%s does not match its recorded sha256; converting it again", path)
    if convert is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    convert(path)
    digest = sha256_file(path)
    write_text(sidecar, f"{digest}  {path.name}\n")
    log.info("converted %s (sha256 %s)", path, digest)
    return path, digest
