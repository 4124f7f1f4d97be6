"""Fine-tuning FaceNet for expressions: the training loop, checkpoints and resume.

One run = one split of one protocol. The training part is split again (grouped like the
protocol) into a fitting part and a validation part used for model selection; the test part is
evaluated once, at the end, with the best checkpoint.

Determinism and resume: every random draw of epoch ``e`` (sample order, augmentation, dropout)
comes from generators seeded with ``(seed, e)``, and ``last.pt`` holds the model, optimizer,
scheduler and history after each epoch. A run interrupted after epoch ``e`` and resumed with
``--resume`` therefore ends with the same weights as an uninterrupted one (same device and
library versions; bit-identical on the CPU).

Frozen-trunk cache: when augmentation is off, the output of the frozen part of the network is the
same every epoch, so it is computed once and only the trainable layers run per epoch
(``cache_frozen``); with few unfrozen layers this makes CPU training nearly instant.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fertool.core.errors import FertoolError
from fertool.core.labels import LABELS
from fertool.faces.config import FaceConfig
from fertool.train import ddp
from fertool.train.augment import AugmentConfig, augment_batch
from fertool.train.checkpoint import from_json, load_checkpoint, save_checkpoint, to_json

log = logging.getLogger(__name__)

#: The forward pass of InceptionResnetV1 as a sequence of top-level children (a flatten sits
#: between avgpool_1a/dropout and last_linear).
SEQUENCE = (
    "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
    "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a",
    "dropout", "last_linear", "last_bn", "logits",
)


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run (saved as ``config.json`` in the run folder)."""

    data: str
    out: str
    weights: str | None = "casia-webface"
    unfreeze: int = 9
    protocol: str = "movie"
    fold: int = 0
    split_seed: int = 0
    n_folds: int | None = None
    group: str = "sfew"
    seed: int = 0
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # head (logits, last_bn, last_linear)
    backbone_lr: float = 1e-4  # trainable pretrained blocks
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weights: bool = False
    grad_clip: float = 5.0
    augment: dict | None = field(default_factory=lambda: AugmentConfig().to_dict())
    tta_flip: bool = True
    val_fraction: float = 0.2
    patience: int = 0  # early stopping on validation accuracy; 0 = off
    cache_frozen: bool = True
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    device: str | None = None
    face: FaceConfig = field(default_factory=FaceConfig)  # to_dict/from_dict: a plain dict
    cache_dir: str | None = None
    limit: int | None = None  # use only the first N images per class (quick runs)
    monitor_angles: bool = False
    monitor_layer: str | None = None
    monitor_neurons: int = 512
    monitor_probe: int = 64
    monitor_patience: int = 3
    monitor_stop: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["face"] = self.face.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["face"] = FaceConfig.from_dict(kw.get("face"))
        return cls(**kw)

    @property
    def augment_config(self) -> AugmentConfig:
        return AugmentConfig.from_dict(self.augment) if self.augment else AugmentConfig.none()


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Prepared:
    """Face crops of one split, as standardised tensors, plus bookkeeping for the report."""

    x: torch.Tensor  # (N, 3, S, S) float32, standardised
    y: torch.Tensor  # (N,) int64, index into LABELS
    paths: list[str]
    fit: np.ndarray  # indices into x
    val: np.ndarray
    test: np.ndarray
    split: Any  # fertool.data.dataset.Split
    skipped: list[tuple[str, str]]  # (path, reason) of images without a usable crop
    fallbacks: int
    groups: np.ndarray | None = None  # group of each row of x (for the report's bootstrap)
    validation_note: str = ""  # why there is no validation part, when there is none


def prepare_data(cfg: TrainConfig, progress: bool = True) -> Prepared:
    """Discover the dataset, make the split, carve validation, and load the aligned crops."""
    from fertool.data.dataset import discover, make_splits, plan_validation
    from fertool.faces.stage import face_crops
    from fertool.models.preprocessing import Preprocessing

    manifest = discover(cfg.data, group=cfg.group)
    if cfg.limit:
        keep, seen = [], {}
        for i, s in enumerate(manifest.samples):
            seen[s.label] = seen.get(s.label, 0) + 1
            if seen[s.label] <= cfg.limit:
                keep.append(i)
        manifest = manifest.subset(keep)
    splits = make_splits(
        manifest, cfg.protocol, seeds=[cfg.split_seed], n_folds=cfg.n_folds
    )
    if not 0 <= cfg.fold < len(splits):
        raise FertoolError(f"--fold {cfg.fold} out of range: the protocol has {len(splits)} folds")
    split = splits[cfg.fold]
    plan = plan_validation(
        manifest, split.train, cfg.val_fraction, seed=cfg.seed, grouped=cfg.protocol != "paper"
    )
    fit, val = plan.fit, plan.val

    face_cfg = cfg.face
    crops, records = face_crops(
        [str(p) for p in manifest.paths], face_cfg, cache_dir=cfg.cache_dir, progress=progress
    )
    have = [r.crop is not None for r in records]
    skipped = [(r.path, r.message or r.status) for r in records if r.crop is None]
    # Map manifest index -> row of `crops` (rows exist only for records with a crop).
    row_of = np.full(len(manifest), -1, dtype=np.int64)
    row_of[np.flatnonzero(have)] = np.arange(int(np.sum(have)))

    def rows(idx):
        r = row_of[np.asarray(idx)]
        return r[r >= 0]

    pre = Preprocessing(face=face_cfg)
    x = pre.to_tensor(crops)
    y = torch.as_tensor(manifest.y[np.flatnonzero(have)], dtype=torch.long)
    paths = [str(manifest.paths[i]) for i in np.flatnonzero(have)]
    fallbacks = sum(r.status == "fallback" for r in records)
    return Prepared(x, y, paths, rows(fit), rows(val), rows(split.test), split, skipped, fallbacks,
                    groups=manifest.groups[np.flatnonzero(have)], validation_note=plan.note)


# --------------------------------------------------------------------------------------------
# Model pieces


def split_point(model) -> int:
    """Index in :data:`SEQUENCE` where the trainable (or stochastic) part starts.

    Everything before it is frozen and deterministic, so its output can be cached.
    """
    frozen = set(model.frozen_children())
    for i, name in enumerate(SEQUENCE):
        if name not in frozen or name == "dropout":
            return i
    return len(SEQUENCE)


def run_sequence(backbone, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Run children ``SEQUENCE[start:stop]`` of an InceptionResnetV1 on ``x``."""
    for name in SEQUENCE[start:stop]:
        if name == "last_linear":
            x = x.flatten(1)
        x = getattr(backbone, name)(x)
    return x


def _param_groups(model, cfg: TrainConfig) -> list[dict]:
    head_names = ("logits", "last_bn", "last_linear")
    head, body = [], []
    for name, child in model.backbone.named_children():
        params = [p for p in child.parameters() if p.requires_grad]
        (head if name in head_names else body).extend(params)
    groups = []
    if head:
        groups.append({"params": head, "lr": cfg.lr, "name": "head"})
    if body:
        groups.append({"params": body, "lr": cfg.backbone_lr, "name": "backbone"})
    if not groups:
        raise FertoolError("nothing to train: --unfreeze 0 leaves every parameter frozen")
    return groups


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
    raise FertoolError(f"unknown optimizer {cfg.optimizer!r}; expected adamw or sgd")


def make_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to zero, stepped per batch."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict_proba(model, x: torch.Tensor, batch_size: int = 64, tta_flip: bool = False,
                  device: torch.device | str = "cpu", start: int = 0) -> np.ndarray:
    """Class probabilities for standardised inputs (or cached activations when ``start > 0``)."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        logits = run_sequence(model.backbone, xb, start, len(SEQUENCE))
        p = F.softmax(logits.float(), dim=1)
        if tta_flip and start == 0:
            p = 0.5 * (p + F.softmax(model(xb.flip(-1)).float(), dim=1))
        out.append(p.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


def _scores(y_true: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    pred = proba.argmax(1)
    acc = float((pred == y_true).mean()) if len(y_true) else float("nan")
    f1 = float(f1_score(y_true, pred, average="macro", zero_division=0)) if len(y_true) else 0.0
    return acc, f1


# --------------------------------------------------------------------------------------------
# The run


class Trainer:
    """A fine-tuning run in ``cfg.out``. Build with :meth:`create` or :meth:`resume`."""

    def __init__(self, cfg: TrainConfig, data: Prepared, progress: bool = True):
        from fertool.models.fernet import create_model
        from fertool.models.preprocessing import Preprocessing

        self.cfg = cfg
        self.data = data
        self.progress = progress
        self.out = Path(cfg.out)
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dist = ddp.current()  # a torchrun launch (fertool.train.ddp), else None
        self.main = self.dist is None or self.dist.main  # only process 0 writes
        if self.dist is not None:
            self.device = self.dist.device(self.device)
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        pre = Preprocessing(face=cfg.face)
        self.model, self.weights_info = create_model(
            cfg.weights, num_classes=len(LABELS), unfreeze=cfg.unfreeze, preprocessing=pre
        )
        self.model.to(self.device)
        if self.cuda and cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.tail = ddp.wrap_tail(self.model.backbone, run_sequence, self.device)
        self.aug = cfg.augment_config
        self.start = split_point(self.model)
        self.cached: torch.Tensor | None = None
        if cfg.cache_frozen and not self.aug.enabled and self.start > 0:
            self.cached = self._frozen_outputs(data.x)
        steps = math.ceil(len(data.fit) / cfg.batch_size)
        self.opt = make_optimizer(self.model, cfg)
        self.sched = make_scheduler(self.opt, cfg, steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and cfg.amp)
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.best = {"epoch": 0, "val_accuracy": -1.0, "val_macro_f1": -1.0}
        self.monitor = self._make_monitor() if cfg.monitor_angles else None
        weights = None
        if cfg.class_weights:
            counts = torch.bincount(data.y[data.fit], minlength=len(LABELS)).float()
            weights = torch.where(counts > 0, counts.sum() / (len(LABELS) * counts.clamp(min=1)), 0)
        self.class_weight = None if weights is None else weights.to(self.device)

    # -- set-up helpers ------------------------------------------------------------------

    @torch.no_grad()
    def _frozen_outputs(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        from tqdm.auto import tqdm

        self.model.eval()
        out = []
        it = range(0, len(x), batch_size)
        for i in tqdm(it, desc="frozen trunk (once)", disable=not self.progress, unit="batch"):
            xb = x[i : i + batch_size].to(self.device)
            out.append(run_sequence(self.model.backbone, xb, 0, self.start).cpu())
        return torch.cat(out)

    def _make_monitor(self):
        from fertool.train.angles import AngleMonitor, default_layer

        probe_idx = self.data.fit[: self.cfg.monitor_probe]
        probe = self.data.x[probe_idx].to(self.device)
        layer = self.cfg.monitor_layer or default_layer(self.model)
        return AngleMonitor(
            self.model, layer, probe, n_neurons=self.cfg.monitor_neurons, seed=self.cfg.seed,
            patience=self.cfg.monitor_patience,
        )

    # -- checkpoints ---------------------------------------------------------------------

    def _meta(self) -> dict:
        from fertool.core.env import versions

        w = self.weights_info
        return {
            "config": to_json(self.cfg.to_dict()),
            "preprocessing": self.model.preprocessing.to_json(),
            "labels": list(LABELS),
            "weights": to_json(None if w is None else {"name": w.name, "sha256": w.sha256,
                                                       "source": w.source}),
            "split_hash": self.data.split.hash,
            "versions": to_json(versions()),
        }

    def save_last(self) -> None:
        if not self.main:
            return
        payload = {
            **self._meta(),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "history": to_json(self.history),
            "best": to_json(self.best),
            "monitor": to_json(self.monitor.state_dict() if self.monitor else None),
        }
        save_checkpoint(self.out / "last.pt", payload)

    def save_best(self) -> None:
        if not self.main:
            return
        save_checkpoint(
            self.out / "best.pt",
            {**self._meta(), "model": self.model.state_dict(), "epoch": self.epoch,
             "unfreeze": self.cfg.unfreeze},
        )

    def load_last(self) -> None:
        ckpt = load_checkpoint(self.out / "last.pt", map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.history = from_json(ckpt["history"])
        self.best = from_json(ckpt["best"])
        mon = from_json(ckpt["monitor"])
        if self.monitor is not None and mon is not None:
            self.monitor.load_state_dict(mon)

    # -- training ------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        drop_seed = cfg.seed * 100_019 + epoch
        drop_seed = drop_seed if self.dist is None else self.dist.seed(drop_seed)  # (seed, e, rank)
        torch.manual_seed(drop_seed)  # dropout
        if self.cuda:
            torch.cuda.manual_seed_all(drop_seed)
        aug_g = g if self.dist is None else self.dist.generator(g, cfg.seed * 100_003 + epoch)
        order = self.data.fit[torch.randperm(len(self.data.fit), generator=g).numpy()]
        source = self.cached if self.cached is not None else self.data.x
        start = self.start if self.cached is not None else 0
        self.model.train()
        total, correct, loss_sum = 0, 0, 0.0
        t0 = time.perf_counter()
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not self.progress,
                   unit="batch", leave=False)
        for i in bar:
            batch = order[i : i + cfg.batch_size]  # a global batch; a process takes its part
            idx = torch.as_tensor(batch if self.dist is None else self.dist.part(batch))
            xb = source[idx]
            yb = self.data.y[idx].to(self.device)
            if start == 0 and self.aug.enabled:
                xb = augment_batch(xb, self.aug, aug_g)
            xb = xb.to(self.device, non_blocking=True)
            if self.cuda and cfg.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda and cfg.amp):
                if start == 0 and self.start > 0:
                    with torch.no_grad():  # the frozen prefix needs no graph
                        xb = run_sequence(self.model.backbone, xb, 0, self.start)
                    start_here = self.start
                else:
                    start_here = start
                logits = self.tail(xb, start_here, len(SEQUENCE))
                loss = F.cross_entropy(logits.float(), yb, weight=self.class_weight,
                                       label_smoothing=cfg.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip
                )
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            n = len(idx)
            total += n
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(1) == yb).sum())
            bar.set_postfix(loss=f"{loss_sum / total:.3f}")
        if self.dist is not None:
            total, correct, loss_sum = self.dist.sum(total, correct, loss_sum)
        seconds = time.perf_counter() - t0
        return {
            "train_loss": loss_sum / max(1, total),
            "train_accuracy": correct / max(1, total),
            "seconds": seconds,
            "images_per_s": total / seconds if seconds > 0 else float("nan"),
        }

    def _validate(self) -> dict:
        idx = self.data.val
        if len(idx) == 0:
            return {"val_accuracy": float("nan"), "val_macro_f1": float("nan")}
        proba = self._proba(idx)
        acc, f1 = _scores(self.data.y[idx].numpy(), proba)
        return {"val_accuracy": acc, "val_macro_f1": f1}

    def _proba(self, idx: np.ndarray) -> np.ndarray:
        idx_t = torch.as_tensor(idx)
        if self.cached is not None and not self.cfg.tta_flip:
            return predict_proba(self.model, self.cached[idx_t], device=self.device,
                                 start=self.start)
        return predict_proba(self.model, self.data.x[idx_t], tta_flip=self.cfg.tta_flip,
                             device=self.device)

    def fit(self, callbacks: list[Callable[[int, dict], None]] | None = None) -> None:
        """Train from epoch ``self.epoch + 1`` to ``cfg.epochs``, checkpointing every epoch."""
        from fertool.core.io import write_text

        cfg = self.cfg
        if self.monitor is not None and self.epoch == 0 and not self.monitor.history:
            self.monitor.measure(0, loss=None)
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            row = {"epoch": epoch, **self._train_epoch(epoch)}
            row["lr"] = self.opt.param_groups[0]["lr"]
            row.update(self._validate())
            if self.monitor is not None:
                stats = self.monitor.measure(epoch, loss=row["train_loss"])
                row["angles"] = {k: v for k, v in stats.to_dict().items()
                                 if k not in ("histogram", "quantiles")}
                row["angles_stuck"] = bool(self.monitor.stuck())
                row["monitor_seconds"] = stats.seconds
            if self.dist is not None:
                row = self.dist.from_main(row)  # every process takes process 0's decisions
            self.epoch = epoch
            self.history.append(row)
            improved = row["val_accuracy"] > self.best["val_accuracy"] or (
                row["val_accuracy"] == self.best["val_accuracy"]
                and row["val_macro_f1"] > self.best["val_macro_f1"]
            )
            if improved or math.isnan(row["val_accuracy"]):
                self.best = {"epoch": epoch, "val_accuracy": row["val_accuracy"],
                             "val_macro_f1": row["val_macro_f1"]}
                self.save_best()
            self.save_last()
            lines = "".join(to_json(r) + "\n" for r in self.history)
            if self.main:
                write_text(self.out / "metrics.jsonl", lines)
            log.info("epoch %d: %s", epoch, row)
            for cb in callbacks or []:
                cb(epoch, row)
            if cfg.patience and epoch - self.best["epoch"] >= cfg.patience:
                log.info("early stop: no validation gain for %d epochs", cfg.patience)
                break
            if self.monitor is not None and cfg.monitor_stop and row.get("angles_stuck"):
                log.warning("angle monitor: layer stuck; stopping (--monitor-stop)")
                break

    def evaluate_test(self) -> dict:
        """Reload ``best.pt`` and evaluate the test part once. Returns per-fold numbers."""
        from fertool.evaluate.metrics import evaluate

        ckpt = load_checkpoint(self.out / "best.pt", map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        idx = self.data.test
        proba = self._proba(idx)
        res = evaluate(self.data.y[torch.as_tensor(idx)].numpy(), proba.argmax(1), LABELS)
        return {"result": res, "proba": proba, "best_epoch": int(ckpt["epoch"])}


def run(cfg: TrainConfig, *, resume: bool = False, force: bool = False, progress: bool = True,
        callbacks: list[Callable[[int, dict], None]] | None = None,
        data: Prepared | None = None) -> dict:
    """Fine-tune, checkpoint, evaluate on the test part and write the run folder.

    Returns the test report as a dict (the content of ``report.json``).
    """
    from fertool.core.io import write_json
    from fertool.evaluate.report import command_line

    out = Path(cfg.out)
    if resume:
        if not (out / "last.pt").is_file():
            raise FertoolError(f"nothing to resume: {out / 'last.pt'} does not exist")
        saved = TrainConfig.from_dict(from_json((out / "config.json").read_text())["config"])
        if saved.to_dict() != {**cfg.to_dict()}:
            log.info("resuming with the saved configuration of %s", out)
        cfg = saved
    elif out.exists() and any(out.iterdir()) and not force:
        raise FertoolError(f"run folder {out} is not empty; use --resume to continue or --force")
    if ddp.current() is not None:
        ddp.current().barrier()  # every process has checked the folder before process 0 writes
    out.mkdir(parents=True, exist_ok=True)
    data = data or prepare_data(cfg, progress=progress)
    trainer = Trainer(cfg, data, progress=progress)
    if resume:
        trainer.load_last()
        log.info("resumed after epoch %d", trainer.epoch)
    elif trainer.main:
        from fertool.core.env import versions

        write_json(out / "config.json", {
            "command": command_line(), "config": cfg.to_dict(), "versions": versions(),
            "split": {"protocol": cfg.protocol, "fold": cfg.fold, "seed": cfg.split_seed,
                      "hash": data.split.hash, "fit": len(data.fit), "val": len(data.val),
                      "test": len(data.test), "validation_note": data.validation_note},
            "weights": None if trainer.weights_info is None else {
                "name": trainer.weights_info.name, "sha256": trainer.weights_info.sha256,
                "source": trainer.weights_info.source},
            "preprocessing": trainer.model.preprocessing.to_dict(),
            "labels": list(LABELS),
            "skipped": data.skipped, "face_fallbacks": data.fallbacks,
        })
    trainer.fit(callbacks=callbacks)
    if not trainer.main:
        return {}  # process 0 evaluates and reports
    return finish(trainer)


def finish(trainer: Trainer) -> dict:
    """Test evaluation, report, confusion matrix and curves of a trained run."""
    from fertool.core.env import versions
    from fertool.core.io import save_figure
    from fertool.evaluate.metrics import plot_confusion
    from fertool.evaluate.report import MethodResult, command_line, write_report
    from fertool.evaluate.uncertainty import FoldPredictions
    from fertool.train.plots import plot_curves

    cfg, out = trainer.cfg, trainer.out
    test = trainer.evaluate_test()
    res = test["result"]
    method = f"finetune-{cfg.weights or 'none'}-unfreeze{cfg.unfreeze}"
    mr = MethodResult(
        method=method, accuracy_mean=res.accuracy, accuracy_std=0.0, macro_f1=res.macro_f1,
        macro_f1_std=0.0, per_class_recall=res.per_class_recall, n_folds=1,
        seconds=sum(r["seconds"] for r in trainer.history),
        details={"best_epoch": test["best_epoch"], "epochs_run": trainer.epoch},
        folds=[{"split": trainer.data.split.name, "hash": trainer.data.split.hash,
                "accuracy": res.accuracy, "macro_f1": res.macro_f1, "n": res.n}],
    )
    if trainer.data.groups is not None:  # group-bootstrap interval of the test figure
        te = np.asarray(trainer.data.test)
        mr.predictions = [FoldPredictions(trainer.data.split.name,
                                          trainer.data.y[torch.as_tensor(te)].numpy(),
                                          test["proba"].argmax(1), trainer.data.groups[te])]
    save_figure(plot_confusion(res.confusion, LABELS, f"{method} (test)"), out / "confusion.png")
    save_figure(plot_curves(trainer.history), out / "curves.png")
    images = {"Confusion matrix (test part)": "confusion.png", "Training curves": "curves.png"}
    if trainer.monitor is not None and trainer.monitor.history:
        from fertool.train.angles_plot import plot_angle_heatmap, plot_angle_summary

        save_figure(plot_angle_heatmap(trainer.monitor.history), out / "angles_heatmap.png")
        save_figure(plot_angle_summary(trainer.monitor.history), out / "angles_summary.png")
        images["Angle distribution per epoch"] = "angles_heatmap.png"
        images["Angle monitor summary"] = "angles_summary.png"
    w = trainer.weights_info
    write_report(
        out, title=f"Fine-tuning report: {method}", protocol=cfg.protocol,
        split_hash=trainer.data.split.hash, results=[mr],
        meta={"fold": cfg.fold, "split_seed": cfg.split_seed, "seed": cfg.seed,
              "epochs": trainer.epoch, "best_epoch": test["best_epoch"],
              "weights": None if w is None else f"{w.name} sha256:{w.sha256[:16]}",
              "unfreeze": cfg.unfreeze, "command": command_line(), "versions": versions(),
              **({"validation": trainer.data.validation_note}
                 if trainer.data.validation_note else {})},
        images=images,
        notes=[trainer.data.validation_note] if trainer.data.validation_note else None,
    )
    return from_json((out / "report.json").read_text())
