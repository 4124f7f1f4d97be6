"""`fertool bench`: detection, descriptors, backbone (torch / ONNX / int8) and predict, timed."""

from __future__ import annotations

import click

from fertool.cli._options import force_option


def _batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}")
    return sizes


@click.command("bench")
@click.option(
    "--out",
    default="bench-output",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for bench.md and bench.json.",
)
@click.option(
    "--frames",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="Folder of frames for detection and predict (default: synthetic 720x576 frames).",
)
@click.option("--n-frames", type=click.IntRange(1), default=16, show_default=True,
              help="Frames in the folder of the end-to-end predict measurement.")
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    default=None,
    help="ONNX model to time (and its NAME.int8.onnx when present); default: a "
    "random-weight FerNet exported for the bench (speed does not depend on weights).",
)
@click.option(
    "--int8/--no-int8",
    default=True,
    show_default=True,
    help="Quantise a model to int8 when none is given.",
)
@click.option("--batch-sizes", default="1,32", show_default=True, callback=_batch_sizes,
              help="Comma-separated batch sizes of the backbone measurements.")
@click.option(
    "--min-seconds",
    type=click.FloatRange(0),
    default=3.0,
    show_default=True,
    help="Measure each figure over at least this long.",
)
@force_option
def command(out, frames, n_frames, model, int8, batch_sizes, min_seconds, force):
    """Time every stage on this machine and write OUT/bench.md and OUT/bench.json.

    MTCNN and BlazeFace, LPQ and PHOG, the backbone in torch eager vs onnxruntime float32 vs int8
    (batch 1 and 32), fertool predict end to end with each detector, and the ceilings: the
    machine's float32 and int8 peak from its CPU flags, the fastest kernels measured (matrix
    products and convolutions), and each backbone row's share of both.
    """
    from pathlib import Path

    from fertool.bench import BenchConfig, run_bench, to_markdown, write_bench
    from fertool.core.io import check_writable

    for name in ("bench.md", "bench.json"):
        check_writable(Path(out) / name, force)
    cfg = BenchConfig(
        frames=frames,
        n_frames=n_frames,
        model=model,
        quantize=int8,
        batch_sizes=batch_sizes,
        min_seconds=min_seconds,
    )
    res = run_bench(cfg, progress=lambda msg: click.echo(f"bench: {msg}", err=True))
    md, js = write_bench(res, out, force=force)
    click.echo(to_markdown(res))
    click.echo(f"wrote {md} and {js}")
