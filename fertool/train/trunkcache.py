"""Frozen-trunk outputs kept on disk, shared by runs with the same weights, crops and depth.

A run whose augmentation is off or the mirror image only computes the frozen part of the network
once per crop (and its mirror) and trains the rest (:class:`fertool.train.loop.Trainer`). On a
busy 2-core machine that pass over SFEW-675 took 10-15 minutes at 9 layers unfrozen, the same for
every fold and every recipe variant: so it is stored under ``CACHE/trunk/KEY.npy`` (``CACHE``:
``cache_dir`` of the run, else :func:`fertool.core.env.cache_dir`). The key hashes what determines
the outputs: the backbone, the pretrained weights' sha256, the layers run, the mirror flag, the
input tensor's bytes, and the torch version. Runs from random weights are not cached. Files are
plain ``.npy`` (read with ``allow_pickle=False``) and written atomically.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fertool.core.io import atomic_write

log = logging.getLogger(__name__)

__all__ = ["cached_trunk", "trunk_key"]


def trunk_key(backbone: str, weights_sha256: str, stop: int, flip: bool, x: torch.Tensor) -> str:
    h = hashlib.sha256()
    meta = f"{backbone}|{weights_sha256}|{stop}|{int(flip)}|{tuple(x.shape)}|{torch.__version__}"
    h.update(meta.encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def cached_trunk(root: str | Path, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor stored under ``key``, else ``compute()`` (then stored)."""
    path = Path(root) / "trunk" / f"{key}.npy"
    if path.is_file():
        try:
            out = torch.from_numpy(np.load(path, allow_pickle=False))
            log.info("frozen trunk read from %s", path)
            return out
        except (OSError, ValueError) as exc:  # a damaged file: compute again, replace it
            log.warning("frozen-trunk cache %s unreadable (%s); recomputing", path, exc)
    out = compute()
    buf = io.BytesIO()
    np.save(buf, out.numpy(), allow_pickle=False)
    try:
        with atomic_write(path, "wb") as fh:
            fh.write(buf.getvalue())
    except OSError as exc:  # a full or read-only cache never fails the run
        log.warning("frozen-trunk cache %s not written (%s)", path, exc)
    return out
