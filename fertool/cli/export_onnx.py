"""`fertool export-onnx`: a fine-tuning run (or FaceNet + an sklearn head) as an ONNX model."""

from __future__ import annotations

import click

from fertool.cli._options import force_option


@click.command("export-onnx")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Model file (default: exports/<run folder name>.onnx). The JSON sidecar goes "
    "next to it (NAME.json); with --int8 also NAME.int8.onnx and NAME.int8.json.",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also write a static int8 model (QDQ, per-channel 7-bit weights, float outputs) "
    "calibrated on training crops, and report its accuracy against float32 on the test part.",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="Folder of images to take calibration and parity faces from "
    "(default: the run's own dataset and split).",
)
@click.option(
    "--head",
    "head",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="An sklearn head (FILE.joblib saved by fertool, with its .json checksum "
    "sidecar) to join to the FaceNet embedding in one graph.",
)
@click.option(
    "--weights",
    default=None,
    help="With --head and no RUN_DIR: the FaceNet weights the head was trained on "
    "(default: those its sidecar names).",
)
@click.option(
    "--opset",
    type=click.IntRange(13, 21),
    default=17,
    show_default=True,
    help="ONNX opset of the graph.",
)
@click.option(
    "--tolerance",
    type=float,
    default=1e-4,
    show_default=True,
    help="Largest max-abs difference of float32 probabilities against torch.",
)
@click.option(
    "--exporter",
    type=click.Choice(["auto", "torchscript", "dynamo"]),
    default="auto",
    show_default=True,
    help="torch's ONNX exporter (auto: torchscript while torch has it).",
)
@click.option(
    "--tta-flip/--no-tta-flip",
    default=None,
    help="Put flip test-time augmentation in the graph (crop and mirror, probabilities "
    "averaged; twice the CNN work). Default: as the run was evaluated. A --head export takes "
    "it from the features the head was trained on.",
)
@force_option
def command(
    run_dir, out, int8, calibration, head, weights, opset, tolerance, exporter, tta_flip, force
):
    """Export RUN_DIR's best model to ONNX, check it, and write its metadata sidecar.

    The graph takes standardised (N, 3, 160, 160) float32 crops (dynamic batch) and returns
    probabilities, logits and the embedding; class names, preprocessing, alignment settings,
    source run, weights and versions travel in the model's metadata and in NAME.json. The export
    is checked with onnx.checker and against torch on real aligned faces; it is refused when the
    probabilities differ by more than --tolerance.

    \b
      fertool export-onnx runs/movie0 --int8
      fertool export-onnx --head baselines/sfew/facenet-svm-rbf.joblib --calibration faces/
    """
    from fertool.serve.export import export_model

    if head is None and run_dir is None:
        raise click.UsageError("give RUN_DIR (a fertool finetune run folder), or --head FILE")
    if head is not None and tta_flip is not None:
        raise click.UsageError(
            "--tta-flip/--no-tta-flip is for run exports; a --head export uses the flip "
            "setting of the embeddings the head was trained on"
        )
    res = export_model(
        run_dir, out, head=head, weights=weights, tta_flip=tta_flip, int8=int8,
        calibration=calibration, opset=opset, exporter=exporter, tolerance=tolerance, force=force,
    )
    click.echo(res.summary())
