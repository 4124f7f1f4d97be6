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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fertool.core.errors import FertoolError
from fertool.core.labels import LABELS
from fertool.models.inference import predict_proba
from fertool.train import ddp, recipe
from fertool.train.augment import augment_batch
from fertool.train.checkpoint import from_json, to_json
from fertool.train.config import TrainConfig
from fertool.train.plan import Prepared, plan, prepare_data, run_preprocessing
from fertool.train.rundir import RunDir

#: Where these moved (kept importable from here): the configuration, the plan and its data, and
#: the evaluation (``fertool.models.inference``).
__all__ = ["Prepared", "TrainConfig", "Trainer", "finish", "plan", "predict_proba",
           "prepare_data", "run"]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Model pieces


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = recipe.param_groups(model, cfg.lr, cfg.backbone_lr, cfg.layer_decay)
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
        from fertool.core.env import default_device
        from fertool.models.fernet import create_model

        self.cfg = cfg
        self.data = data
        self.progress = progress
        self.out = Path(cfg.out)
        self.run_dir = RunDir(cfg.out)
        self.device = torch.device(default_device(cfg.device))
        self.dist = ddp.current()  # a torchrun launch (fertool.train.ddp), else None
        self.main = self.dist is None or self.dist.main  # only process 0 writes
        if self.dist is not None:
            self.device = self.dist.device(self.device)
        self.cuda = self.device.type == "cuda"
        recipe.check_recipe(cfg)
        torch.manual_seed(cfg.seed)
        self.model, self.weights_info = create_model(
            cfg.weights, num_classes=len(LABELS), unfreeze=cfg.unfreeze,
            preprocessing=run_preprocessing(cfg), backbone=cfg.backbone, head_on=cfg.head_on,
        )
        self.init_info: dict | None = None  # --init RUN: what fertool.train.staged copied
        if cfg.init:
            from fertool.train.staged import load_init_run

            self.init_info = load_init_run(self.model, cfg.init)
        self.model.to(self.device)
        if self.cuda and cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.tail = ddp.wrap_tail(self.model.backbone, self.model.spec.run_sequence, self.device)
        self.aug = cfg.augment_config
        self.start = self.model.split_point()
        self.stop = len(self.model.spec.layers)
        self.cached: torch.Tensor | None = None
        self.cached_flip: torch.Tensor | None = None  # the frozen trunk of the mirror images
        flip_only = self.aug.enabled and _flip_only(self.aug)
        if cfg.cache_frozen and (not self.aug.enabled or flip_only) and self.start > 0:
            self.cached = self._stored_trunk(data.x, flip=False)
            if flip_only or cfg.tta_flip:
                self.cached_flip = self._stored_trunk(data.x, flip=True)
        self.cached_aug = flip_only and self.cached is not None  # flips drawn from the cache
        self.head_init: dict | None = None  # what --init-head logreg fitted (fit_head)
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
        self.ema = recipe.ModelEMA(self.model, cfg.ema) if cfg.ema > 0 else None

    # -- set-up helpers ------------------------------------------------------------------

    @torch.no_grad()
    def _frozen_outputs(self, x: torch.Tensor, batch_size: int = 64, flip: bool = False,
                        stop: int | None = None) -> torch.Tensor:
        """The frozen prefix (or ``layers[:stop]``) on ``x`` (its mirror images with ``flip``)."""
        from tqdm.auto import tqdm

        self.model.eval()
        stop = self.start if stop is None else stop
        out = []
        it = range(0, len(x), batch_size)
        desc = "frozen trunk (once, mirrored)" if flip else "frozen trunk (once)"
        for i in tqdm(it, desc=desc, disable=not self.progress, unit="batch"):
            xb = x[i : i + batch_size].to(self.device)
            out.append(self.model.run_sequence(xb.flip(-1) if flip else xb, 0, stop).cpu())
        return torch.cat(out)

    def _stored_trunk(self, x: torch.Tensor, flip: bool) -> torch.Tensor:
        """:meth:`_frozen_outputs`, through the on-disk cache (pretrained weights only)."""
        w = self.weights_info
        if w is None or not self.cfg.trunk_cache or self.dist is not None:
            return self._frozen_outputs(x, flip=flip)
        from fertool.core.env import cache_dir
        from fertool.train.trunkcache import cached_trunk, trunk_key

        root = self.cfg.cache_dir or cache_dir()
        source = w.sha256
        if self.init_info is not None:  # another run's weights: key by the frozen numbers
            from fertool.train.staged import prefix_digest

            source = "init:" + prefix_digest(self.model, self.start)
        key = trunk_key(self.model.spec.name, source, self.start, flip, x)
        return cached_trunk(root, key, lambda: self._frozen_outputs(x, flip=flip))

    def classifier_inputs(self, idx: np.ndarray, flip: bool = False) -> torch.Tensor:
        """What reaches the classifier for rows ``idx`` in eval mode (the frozen features)."""
        stop = self.model.spec.layers.index(self.model.spec.classifier)
        idx_t = torch.as_tensor(idx)
        cache = self.cached_flip if flip else self.cached
        if cache is None:
            return self._frozen_outputs(self.data.x[idx_t], flip=flip, stop=stop)
        self.model.eval()
        with torch.no_grad():
            out = [self.model.run_sequence(cache[idx_t[i : i + 64]].to(self.device),
                                           self.start, stop).cpu()
                   for i in range(0, len(idx_t), 64)]
        return torch.cat(out) if out else torch.zeros(0)

    def init_head(self) -> dict:
        """LP-FT: the classifier becomes a logistic regression on the frozen features.

        Fitted on the fitting part only (crops and their mirror images, one group per movie
        for the inner CV over C); the validation part scores it (``val_accuracy`` before any
        fine-tuning step) for the record.
        """
        t0 = time.perf_counter()
        fit = np.asarray(self.data.fit)
        feats = torch.cat([self.classifier_inputs(fit), self.classifier_inputs(fit, flip=True)])
        y = self.data.y[torch.as_tensor(fit)].numpy()
        groups = None if self.data.groups is None else np.asarray(self.data.groups)[fit]
        info = recipe.fit_linear_head(
            self.model, feats.double().numpy(), np.concatenate([y, y]),
            None if groups is None else np.concatenate([groups, groups]), seed=self.cfg.seed)
        if self.dist is not None:  # every process starts from process 0's head
            clf = getattr(self.model.backbone, self.model.spec.classifier)
            clf.load_state_dict(self.dist.from_main(
                {k: v.detach().cpu() for k, v in clf.state_dict().items()}))
        if self.ema is not None:
            self.ema = recipe.ModelEMA(self.model, self.cfg.ema)
        info.update(self._validate())
        info["seconds"] = time.perf_counter() - t0
        self.head_init = info
        log.info("linear-probe head: %s", info)
        return info

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
            **({"init": to_json(self.init_info)} if self.init_info else {}),
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
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }
        self.run_dir.save_last(payload)

    def save_best(self) -> None:
        if not self.main:
            return
        self.run_dir.save_best(
            {**self._meta(), "model": self.model.state_dict(), "epoch": self.epoch,
             "unfreeze": self.cfg.unfreeze},
        )

    def load_last(self) -> None:
        ckpt = self.run_dir.load_last(map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.history = from_json(ckpt["history"])
        self.best = from_json(ckpt["best"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
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
            elif self.cached_aug:  # flip-only augmentation: the mirror's cached trunk
                flip = torch.rand(len(idx), generator=aug_g) < self.aug.flip
                xb = torch.where(flip[(...,) + (None,) * (xb.dim() - 1)],
                                 self.cached_flip[idx], xb)
            mix = None
            if cfg.mixup > 0 and (start > 0 or self.start == 0):  # mixes what the tail gets
                xb, perm, lam = recipe.mixup_batch(xb, cfg.mixup, aug_g)
                mix = (yb[perm.to(self.device)], lam)
            xb = xb.to(self.device, non_blocking=True)
            if self.cuda and cfg.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda and cfg.amp):
                if start == 0 and self.start > 0:
                    with torch.no_grad():  # the frozen prefix needs no graph
                        xb = self.model.run_sequence(xb, 0, self.start)
                    if cfg.mixup > 0:  # mixup of the trunk's output (what the tail gets)
                        xb, perm, lam = recipe.mixup_batch(xb, cfg.mixup, aug_g)
                        mix = (yb[perm.to(self.device)], lam)
                    start_here = self.start
                else:
                    start_here = start
                logits = self.tail(xb, start_here, self.stop)
                loss = self._loss(logits.float(), yb)
                if mix is not None:
                    loss = mix[1] * loss + (1.0 - mix[1]) * self._loss(logits.float(), mix[0])
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
            if self.ema is not None:
                self.ema.update(self.model)
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

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weight,
                               label_smoothing=self.cfg.label_smoothing)

    def evaluated_weights(self):
        """A context in which the model holds the weights that are evaluated (EMA or live)."""
        import contextlib

        return self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext()

    def _validate(self) -> dict:
        idx = self.data.val
        if len(idx) == 0:
            return {"val_accuracy": float("nan"), "val_macro_f1": float("nan")}
        proba = self._proba(idx)
        acc, f1 = _scores(self.data.y[idx].numpy(), proba)
        return {"val_accuracy": acc, "val_macro_f1": f1}

    def _proba(self, idx: np.ndarray) -> np.ndarray:
        idx_t = torch.as_tensor(idx)
        if self.cached is not None and (self.cached_flip is not None or not self.cfg.tta_flip):
            p = predict_proba(self.model, self.cached[idx_t], device=self.device,
                              start=self.start)
            if self.cfg.tta_flip:  # the mean of the two softmaxes, as flip_mean computes it
                p = (p + predict_proba(self.model, self.cached_flip[idx_t], device=self.device,
                                       start=self.start)) / 2
            return p
        return predict_proba(self.model, self.data.x[idx_t], tta_flip=self.cfg.tta_flip,
                             device=self.device)

    def _epoch(self, epoch: int) -> dict:
        """Train one epoch, validate, measure the angles: the epoch's row of metrics.jsonl."""
        row = {"epoch": epoch, **self._train_epoch(epoch)}
        row["lr"] = self.opt.param_groups[0]["lr"]
        with self.evaluated_weights():
            row.update(self._validate())
        if self.monitor is not None:
            stats = self.monitor.measure(epoch, loss=row["train_loss"])
            row["angles"] = {k: v for k, v in stats.to_dict().items()
                             if k not in ("histogram", "quantiles")}
            row["angles_stuck"] = bool(self.monitor.stuck())
            row["monitor_seconds"] = stats.seconds
        if self.dist is not None:
            row = self.dist.from_main(row)  # every process takes process 0's decisions
        return row

    def _keep_if_best(self, epoch: int, row: dict) -> None:
        improved = row["val_accuracy"] > self.best["val_accuracy"] or (
            row["val_accuracy"] == self.best["val_accuracy"]
            and row["val_macro_f1"] > self.best["val_macro_f1"]
        )
        if improved or math.isnan(row["val_accuracy"]):
            self.best = {"epoch": epoch, "val_accuracy": row["val_accuracy"],
                         "val_macro_f1": row["val_macro_f1"]}
            self.save_best()

    def fit(self, callbacks: list[Callable[[int, dict], None]] | None = None) -> None:
        """Train from epoch ``self.epoch + 1`` to ``cfg.epochs``, checkpointing every epoch."""
        cfg = self.cfg
        if self.monitor is not None and self.epoch == 0 and not self.monitor.history:
            self.monitor.measure(0, loss=None)
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            row = self._epoch(epoch)
            self.epoch = epoch
            self.history.append(row)
            with self.evaluated_weights():
                self._keep_if_best(epoch, row)
            self.save_last()
            if self.main:
                self.run_dir.write_metrics(self.history)
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

        ckpt = self.run_dir.load_best_checkpoint(map_location=self.device)
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
    run_dir = RunDir(cfg.out)
    run_dir.check_start(resume=resume, force=force)
    if resume:
        saved = run_dir.train_config()
        if saved.to_dict() != {**cfg.to_dict()}:
            log.info("resuming with the saved configuration of %s", run_dir.path)
        cfg = saved
    if ddp.current() is not None:
        ddp.current().barrier()  # every process has checked the folder before process 0 writes
    run_dir.create()
    data = data or prepare_data(cfg, progress=progress)
    trainer = Trainer(cfg, data, progress=progress)
    if resume:
        trainer.load_last()
        trainer.head_init = run_dir.read_config().get("head_init") if trainer.main else None
        log.info("resumed after epoch %d", trainer.epoch)
    else:
        if cfg.init_head == "logreg":
            trainer.init_head()
        if trainer.main:
            run_dir.write_config(_config_record(cfg, data, trainer))
    trainer.fit(callbacks=callbacks)
    if not trainer.main:
        return {}  # process 0 evaluates and reports
    return finish(trainer)


def _config_record(cfg: TrainConfig, data: Prepared, trainer: Trainer) -> dict:
    """What ``config.json`` holds."""
    from fertool.core.env import versions
    from fertool.evaluate.report import command_line

    w = trainer.weights_info
    return {
        "command": command_line(), "config": cfg.to_dict(), "versions": versions(),
        "split": {"protocol": cfg.protocol, "fold": cfg.fold, "seed": cfg.split_seed,
                  "hash": data.split.hash, "fit": len(data.fit), "val": len(data.val),
                  "test": len(data.test), "validation_note": data.validation_note},
        "weights": None if w is None else {"name": w.name, "sha256": w.sha256,
                                           "source": w.source},
        "preprocessing": trainer.model.preprocessing.to_dict(),
        "labels": list(LABELS),
        **({"init": trainer.init_info} if trainer.init_info else {}),
        "skipped": data.skipped, "face_fallbacks": data.fallbacks,
        **({"head_init": trainer.head_init} if trainer.head_init else {}),
    }


def finish(trainer: Trainer) -> dict:
    """Test evaluation, report, confusion matrix and curves of a trained run."""
    from fertool.core.env import versions
    from fertool.evaluate.metrics import plot_confusion
    from fertool.evaluate.report import MethodResult, command_line
    from fertool.evaluate.uncertainty import FoldPredictions
    from fertool.train.plots import plot_curves

    cfg, rd = trainer.cfg, trainer.run_dir
    test = trainer.evaluate_test()
    res = test["result"]
    method = f"finetune-{cfg.weights or 'none'}-unfreeze{cfg.unfreeze}" + _recipe_suffix(cfg)
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
    images = {
        "Confusion matrix (test part)": rd.save_plot(
            plot_confusion(res.confusion, LABELS, f"{method} (test)"), rd.CONFUSION),
        "Training curves": rd.save_plot(plot_curves(trainer.history), rd.CURVES),
    }
    if trainer.monitor is not None and trainer.monitor.history:
        from fertool.train.angles_plot import plot_angle_heatmap, plot_angle_summary

        history = trainer.monitor.history
        images["Angle distribution per epoch"] = rd.save_plot(
            plot_angle_heatmap(history), rd.ANGLES_HEATMAP)
        images["Angle monitor summary"] = rd.save_plot(
            plot_angle_summary(history), rd.ANGLES_SUMMARY)
    w = trainer.weights_info
    return rd.write_report(
        title=f"Fine-tuning report: {method}", protocol=cfg.protocol,
        split_hash=trainer.data.split.hash, results=[mr],
        meta={"fold": cfg.fold, "split_seed": cfg.split_seed, "seed": cfg.seed,
              "epochs": trainer.epoch, "best_epoch": test["best_epoch"],
              "weights": None if w is None else f"{w.name} sha256:{w.sha256[:16]}",
              "unfreeze": cfg.unfreeze, "command": command_line(), "versions": versions(),
              **({"init": _init_note(trainer.init_info)} if trainer.init_info else {}),
              **({"linear_probe_head": _head_note(trainer.head_init)}
                 if trainer.head_init else {}),
              **({"validation": trainer.data.validation_note}
                 if trainer.data.validation_note else {})},
        images=images,
        notes=[trainer.data.validation_note] if trainer.data.validation_note else None,
    )


def _flip_only(aug) -> bool:
    """True when the augmentation is the mirror image only (cacheable per image)."""
    from dataclasses import asdict

    return aug.flip > 0 and not any(
        v for k, v in asdict(aug).items() if k not in ("flip", "erase_area"))


def _recipe_suffix(cfg: TrainConfig) -> str:
    """``-pool-lpft-ema`` ...: the recipe in the method name (empty for the paper's)."""
    parts = ["staged"] if cfg.init else []
    parts += ["pool"] if cfg.head_on == "pool" else []
    parts += ["lpft"] if cfg.init_head == "logreg" else []
    parts += ["ema"] if cfg.ema > 0 else []
    parts += ["mixup"] if cfg.mixup > 0 else []
    return "".join(f"-{p}" for p in parts)


def _init_note(info: dict) -> str:
    new = f"; new classifier rows: {', '.join(info['labels_new'])}" if info["labels_new"] else ""
    return (f"started from {info['run']} (best.pt sha256:{info['checkpoint_sha256'][:16]}, "
            f"epoch {info['epoch']}, {info['protocol']} split {info['split_hash']} of "
            f"{info['data']}){new}")


def _head_note(info: dict) -> str:
    return (f"logistic regression on frozen features, C={info['C']:g} (grouped inner CV "
            f"accuracy {100 * info['cv_accuracy']:.1f}%), validation accuracy before "
            f"fine-tuning {100 * info['val_accuracy']:.1f}%")
