"""Staged transfer: a run that starts from another run's best weights (``finetune --init RUN``).

The chain a user builds is identity -> a large expression dataset -> their own data: the first run
fine-tunes the pretrained backbone on, say, FER2013 (``--protocol fixed --faces crop``); the second
starts from that run's ``best.pt`` on SFEW. Every tensor of the model is copied, except the
classifier's rows, which are matched **by label name**: a label the earlier run did not have starts
from the new run's own initialisation (and is reported), a label only the earlier run had is
dropped. Backbone and head placement (``--head-on``) must be the same; the input size may differ
(the convolutions do not depend on it).

The pretrained weights named by ``--weights`` are loaded first, so what a run records as its weights
stays the base (``casia-webface``); the earlier run is recorded beside it (its folder, best.pt's
sha256, its split hash and data), in ``config.json``, the checkpoints and the report.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fertool.core.errors import FertoolError

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.fernet import FerNet

log = logging.getLogger(__name__)

__all__ = ["load_init_run", "prefix_digest"]


def load_init_run(model: FerNet, run: str | Path) -> dict[str, Any]:
    """Copy the best weights of the run folder ``run`` into ``model`` (labels mapped by name).

    Returns what was done, for the record: ``run``, ``checkpoint_sha256``, ``split_hash``,
    ``data``, ``method`` (the earlier run's backbone, weights and recipe), ``labels_copied`` and
    ``labels_new`` (target labels with no row in the earlier run).

    Raises
    ------
    FertoolError
        When the folder is not a finished run, or its backbone or head placement differs.
    """
    from fertool.models.fernet import DEFAULT_BACKBONE
    from fertool.train.rundir import RunDir

    src = RunDir(run).load_best()  # weights_only checkpoint, clear errors for a bad folder
    cfg = src.config
    backbone = cfg.get("backbone") or DEFAULT_BACKBONE
    if backbone != model.spec.name:
        raise FertoolError(
            f"--init {run}: that run fine-tuned backbone {backbone!r}, this one is "
            f"{model.spec.name!r} (use the same --backbone)")
    head_on = cfg.get("head_on") or "embedding"
    if head_on != model.head_on:
        raise FertoolError(
            f"--init {run}: that run's head reads {head_on!r}, this one {model.head_on!r} "
            f"(use --head-on {head_on})")
    own_labels = tuple(model.preprocessing.labels)
    if src.preprocessing.size != model.preprocessing.size:
        log.warning("--init %s: its input was %d px, this run's is %d px", run,
                    src.preprocessing.size, model.preprocessing.size)
    clf = model.spec.classifier
    prefix = f"backbone.{clf}."
    state = model.state_dict()
    theirs = src.model.state_dict()
    rows = {name: i for i, name in enumerate(src.labels)}
    copied = [name for name in own_labels if name in rows]
    for key, value in theirs.items():
        if key not in state:
            raise FertoolError(f"--init {run}: its tensor {key} has no place in this model")
        if key.startswith(prefix) and value.ndim >= 1 and value.shape[0] == len(src.labels):
            for i, name in enumerate(own_labels):  # the classifier: one row per label
                if name in rows:
                    state[key][i] = value[rows[name]]
        elif state[key].shape != value.shape:
            raise FertoolError(
                f"--init {run}: {key} is {tuple(value.shape)} there, "
                f"{tuple(state[key].shape)} here")
        else:
            state[key] = value
    model.load_state_dict(state)
    new = [name for name in own_labels if name not in rows]
    if new:
        log.warning("--init %s: no classifier row for %s (left as initialised)", run,
                    ", ".join(new))
    weights = src.weights or {}
    return {
        "run": str(Path(run).resolve()),
        "checkpoint_sha256": src.checkpoint_sha256,
        "epoch": src.epoch,
        "split_hash": src.split_hash,
        "protocol": cfg.get("protocol"),
        "data": cfg.get("data"),
        "weights": weights.get("name"),
        "unfreeze": src.unfreeze,
        "labels_copied": copied,
        "labels_new": new,
    }


def prefix_digest(model: FerNet, stop: int) -> str:
    """sha256 of the parameters and buffers of ``model.spec.layers[:stop]`` (the frozen trunk).

    The on-disk trunk cache keys a run started from another run by this digest instead of the
    pretrained file's sha256: two runs share trunk outputs exactly when their frozen layers hold
    the same numbers.
    """
    h = hashlib.sha256()
    for name in model.spec.layers[:stop]:
        layer = getattr(model.backbone, name)
        for key, t in sorted(layer.state_dict().items()):
            h.update(f"{name}.{key}|{tuple(t.shape)}|{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes()
                     if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()
