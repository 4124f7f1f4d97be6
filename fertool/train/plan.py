"""What a fine-tuning run will do, before it does it: the split plan, and the run's data.

:func:`plan` reads the dataset (file names only), applies ``limit``, makes the protocol's split,
carves the validation part and counts the trainable parameters: the :class:`TrainPlan` that
``fertool finetune --dry-run`` prints (:meth:`TrainPlan.describe`) and that
:func:`prepare_data` turns into face crops for the run itself, for export's parity checks and
for int8 calibration. One plan, so the dry run shows what the run uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.train.config import TrainConfig

__all__ = ["Prepared", "TrainPlan", "plan", "prepare_data", "run_preprocessing"]


@dataclass
class TrainPlan:
    """The dataset, split, validation part, device and trainable layers of a run.

    Attributes
    ----------
    config : TrainConfig
    manifest : fertool.data.dataset.Manifest
        After ``config.limit``.
    split : fertool.data.dataset.Split
        Fold ``config.fold`` of the protocol.
    fit, val : ndarray of int
        Indices into ``manifest``: the part fitted and the validation part (may be empty).
    validation_note : str
        Why there is no validation part, when there is none.
    device : str
    trainable, total : int
        Parameters trained at ``config.unfreeze``, and all parameters.
    """

    config: TrainConfig
    manifest: Any
    split: Any
    fit: np.ndarray
    val: np.ndarray
    validation_note: str
    device: str
    trainable: int
    total: int

    def describe(self) -> str:
        """The plan as ``fertool finetune --dry-run`` prints it (with the unfreeze table)."""
        from fertool.models.fernet import format_unfreeze_table, unfreeze_table

        cfg, m, s = self.config, self.manifest, self.split
        amp = " (mixed precision)" if self.device.startswith("cuda") and cfg.amp else ""
        aug = cfg.augment_config
        flip_only = aug.enabled and aug == type(aug)(flip=aug.flip, rotate=0, scale=0,
                                                      translate=0, brightness=0, contrast=0,
                                                      saturation=0, erase=0,
                                                      erase_area=aug.erase_area)
        cacheable = cfg.cache_frozen and (not aug.enabled or flip_only)
        cached = " (frozen trunk cached)" if cacheable else ""
        if flip_only:
            cached = " (mirror images only; frozen trunk of crops and mirrors cached)"
        lines = [
            f"device: {self.device}{amp}",
            f"weights: {cfg.weights or 'none (random initialisation)'}"
            + (f", then the best.pt of {cfg.init} (staged)" if cfg.init else ""),
            (f"unfreeze: {cfg.unfreeze} -> trainable parameters {self.trainable:,} "
            f"of {self.total:,}"),
            f"dataset: {len(m)} images, {len(m.classes)} classes, {len(set(m.groups))} groups",
            (f"split: {s.name} (hash {s.hash}): fit {len(self.fit)}, validation {len(self.val)}, "
            f"test {len(s.test)}"),
        ]
        if self.validation_note:
            lines.append(f"validation: {self.validation_note}")
        lines += [
            (f"epochs: {cfg.epochs}, batch size {cfg.batch_size}, optimizer {cfg.optimizer}, "
            f"lr {cfg.lr} (head) / {cfg.backbone_lr} (backbone)"),
            f"augmentation: {'on' if cfg.augment else 'off'}{cached}",
            (f"recipe: head on {cfg.head_on}, head init {cfg.init_head}, layer decay "
             f"{cfg.layer_decay:g}, EMA {cfg.ema:g}, mixup {cfg.mixup:g}, "
             f"patience {cfg.patience}"),
            "",
            format_unfreeze_table(unfreeze_table(backbone=cfg.backbone), backbone=cfg.backbone),
        ]
        return "\n".join(lines)


def _per_class(manifest, limit: int | None):
    """The first ``limit`` images of each class, in dataset order (all when None)."""
    if not limit:
        return manifest
    keep, seen = [], {}
    for i, s in enumerate(manifest.samples):
        seen[s.label] = seen.get(s.label, 0) + 1
        if seen[s.label] <= limit:
            keep.append(i)
    return manifest.subset(keep)


def _parameters(cfg: TrainConfig) -> tuple[int, int]:
    """(trainable, total) parameters at ``cfg.unfreeze``, counted on the meta device."""
    import torch

    from fertool.core.labels import LABELS
    from fertool.models.fernet import FerNet, trainable_parameters

    with torch.device("meta"):  # structure only, no weights allocated
        model = FerNet(len(LABELS), backbone=cfg.backbone, head_on=cfg.head_on)
    model.set_unfreeze(cfg.unfreeze)
    return trainable_parameters(model), sum(p.numel() for p in model.parameters())


def _fixed_spec(cfg: TrainConfig):
    """The parts of ``protocol="fixed"`` (None for the other protocols)."""
    from fertool.data.fixed import FixedSpec

    if cfg.protocol != "fixed":
        if cfg.split_regex or cfg.split_csv:
            raise FertoolError("`split_regex` and `split_csv` need protocol='fixed'")
        return None
    try:
        return FixedSpec(cfg.split_regex, cfg.split_csv)
    except ValueError as exc:
        raise FertoolError(str(exc)) from None


def plan(cfg: TrainConfig) -> TrainPlan:
    """The :class:`TrainPlan` of ``cfg`` (reads file names only, no image).

    Raises
    ------
    FertoolError
        A fold out of range; a dataset or protocol the data do not allow
        (:mod:`fertool.data.dataset`).
    """
    from fertool.core.env import default_device
    from fertool.data.dataset import discover, make_splits, plan_validation

    manifest = _per_class(discover(cfg.data, group=cfg.group), cfg.limit)
    splits = make_splits(manifest, cfg.protocol, seeds=[cfg.split_seed], n_folds=cfg.n_folds,
                         fixed=_fixed_spec(cfg))
    if not 0 <= cfg.fold < len(splits):
        raise FertoolError(f"fold={cfg.fold} is out of range: the protocol has {len(splits)} folds")
    split = splits[cfg.fold]
    if split.val is not None and len(split.val):  # the dataset's own validation part
        from fertool.data.splits import ValidationPlan

        val_plan = ValidationPlan(split.train, split.val)
    else:
        val_plan = plan_validation(manifest, split.train, cfg.val_fraction, seed=cfg.seed,
                                   grouped=cfg.protocol not in ("paper", "fixed"))
    trainable, total = _parameters(cfg)
    return TrainPlan(cfg, manifest, split, val_plan.fit, val_plan.val, val_plan.note,
                     default_device(cfg.device), trainable, total)


def run_preprocessing(cfg: TrainConfig):
    """The backbone's input contract with fertool's labels and the run's face settings."""
    from dataclasses import replace

    from fertool.core.labels import LABELS
    from fertool.models.registry import get_backbone

    return replace(get_backbone(cfg.backbone).default_preprocessing(LABELS), face=cfg.face)


@dataclass
class Prepared:
    """Face crops of one split, as standardised tensors, plus bookkeeping for the report."""

    x: Any  # (N, 3, S, S) float32 torch tensor, standardised
    y: Any  # (N,) int64 torch tensor, index into LABELS
    paths: list[str]
    fit: np.ndarray  # indices into x
    val: np.ndarray
    test: np.ndarray
    split: Any  # fertool.data.dataset.Split
    skipped: list[tuple[str, str]]  # (path, reason) of images without a usable crop
    fallbacks: int
    groups: np.ndarray | None = None  # group of each row of x (for the report's bootstrap)
    validation_note: str = ""  # why there is no validation part, when there is none


def prepare_data(
    cfg: TrainConfig, progress: bool = True, train_plan: TrainPlan | None = None
) -> Prepared:
    """The aligned crops of :func:`plan`'s split (through the face cache), as tensors."""
    import torch

    from fertool.faces.stage import face_crops

    p = train_plan or plan(cfg)
    manifest = p.manifest
    crops, records = face_crops(
        [str(x) for x in manifest.paths], cfg.face, cache_dir=cfg.cache_dir, progress=progress
    )
    have = [r.crop is not None for r in records]
    skipped = [(r.path, r.message or r.status) for r in records if r.crop is None]
    # Map manifest index -> row of `crops` (rows exist only for records with a crop).
    row_of = np.full(len(manifest), -1, dtype=np.int64)
    row_of[np.flatnonzero(have)] = np.arange(int(np.sum(have)))

    def rows(idx):
        r = row_of[np.asarray(idx)]
        return r[r >= 0]

    x = run_preprocessing(cfg).to_tensor(crops)
    kept = np.flatnonzero(have)
    y = torch.as_tensor(manifest.y[kept], dtype=torch.long)
    paths = [str(manifest.paths[i]) for i in kept]
    fallbacks = sum(r.status == "fallback" for r in records)
    return Prepared(x, y, paths, rows(p.fit), rows(p.val), rows(p.split.test), p.split, skipped,
                    fallbacks, groups=manifest.groups[kept], validation_note=p.validation_note)
