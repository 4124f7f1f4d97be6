"""`fertool predict`: an exported model over files and folders, one row per image or face."""

from __future__ import annotations

import click

from fertool.cli._engine import engine_options, engine_runner
from fertool.cli._options import force_option, model_face_options

SHOWN_ERRORS = 5
SHOWN_SKIPPED = 20


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--model",
    "model_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="An .onnx file written by fertool export-onnx, or a name from fertool models list "
    "(default: fer-minixception, built into fertool's cache on first use).",
)
@click.option(
    "--out",
    default="predictions.csv",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Output file, .csv or .jsonl (written as OUT.partial until complete).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="Output format (default: from the --out file name).",
)
@click.option("--all-faces", is_flag=True, help="One row per detected face instead of per image.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Face crops per model call (memory depends on this, not on the folder size).",
)
@click.option(
    "--providers",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="onnxruntime providers: CUDA when available (auto), or forced.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="onnxruntime threads (default: the physical cores).",
)
@click.option(
    "--detector-threads",
    type=click.IntRange(1),
    default=None,
    help="Threads of each face worker's detector (default: $FERTOOL_DETECTOR_THREADS, else the "
    "available cores split among the workers; on busy cores pin it to 1).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Face-stage worker threads: decoding, detection and alignment of the next images while "
    "the model runs (default: the available cores).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run: keep the rows OUT(.partial) holds, do the rest.",
)
@click.option(
    "--fps",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Videos: predict at most F frames per second (default: every frame).",
)
@click.option(
    "--every", type=click.IntRange(1), default=None, help="Videos: predict every N-th frame."
)
@click.option(
    "--start", type=click.FloatRange(0), default=None, help="Videos: from this time (seconds)."
)
@click.option(
    "--end",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Videos: up to this time (seconds).",
)
@model_face_options
@click.option("--no-cache", is_flag=True, help="Neither read nor write the face-crop cache.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--by-extension",
    is_flag=True,
    help="In folders, read only files with an image extension (by default a file without a "
    "known extension is read when its content is an image).",
)
@engine_options
@force_option
def command(
    paths,
    model_path,
    out,
    fmt,
    all_faces,
    batch_size,
    providers,
    threads,
    detector_threads,
    workers,
    resume,
    fps,
    every,
    start,
    end,
    face_changes,
    cache_dir,
    no_cache,
    quiet,
    by_extension,
    force,
):
    """Predict the expression of every image in PATHS (files, or folders searched recursively).

    Each image goes through the face stage with the model's own settings (detection, choice of
    face, alignment), then through the model. Rows are written in order, as they are done:
    path, face index, box, label, score, one probability per class, status (ok, fallback,
    no_face, error) and a message. Unreadable files are listed with their reason.

    \b
      fertool predict photos/ --out photos.csv              # the ready fer-minixception model
      fertool predict photos/ --model exports/movie0.int8.onnx --out photos.csv
      fertool predict frames/ --model exports/movie0.onnx --all-faces --out faces.jsonl --resume
      fertool predict film.mkv photos/ --fps 2 --start 60 --end 600 --out film.csv

    Videos (.mp4 .mkv .avi .mov .webm) give one row per sampled frame (per face with
    --all-faces) with its frame number, time and face track, and a summary per video.
    """
    import dataclasses

    from fertool.core.io import printable
    from fertool.predict import predict_paths
    from fertool.serve.runtime import load

    if resume and force:
        raise click.UsageError("--resume and --force contradict each other; choose one")
    from fertool.video_predict import VideoOptions

    video = VideoOptions(fps=fps, every=every, start=start, end=end)
    from fertool.serve.ready import resolve_model

    model_file = resolve_model(model_path)  # a file, or a ready model by name (built once)
    model = load(model_file, providers=providers, threads=threads)
    predict = engine_runner(predict_paths, str(model_file), providers, threads)
    face = model.face_config
    if face_changes:
        try:
            face = dataclasses.replace(face, **face_changes)
        except ValueError as exc:
            raise click.UsageError(f"face settings: {exc}") from None
    try:
        s = predict(
            list(paths),
            model,
            out,
            fmt=fmt,
            all_faces=all_faces,
            batch_size=batch_size,
            resume=resume,
            force=force,
            face=face,
            use_cache=not no_cache,
            cache_dir=cache_dir,
            detector_threads=detector_threads,
            progress=not quiet,
            by_extension=by_extension,
            **({"video": video} if video != VideoOptions() else {}),
            **({"workers": workers} if workers is not None else {}),
        )
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted; the rows done so far are in {out}.partial. "
            "Run the same command with --resume to finish.",
            err=True,
        )
        raise SystemExit(130) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.status.items())) or "nothing new"
    click.echo(
        f"wrote {s.out}: {s.images} images in {s.seconds:.1f} s "
        f"({s.images_per_s:.1f} images/s; {s.rows} rows: {counts}; providers "
        f"{', '.join(p.replace('ExecutionProvider', '') for p in model.providers)})"
    )
    stages = getattr(s, "stage_seconds", None) or {}
    if sum(stages.values()) > 0:
        total = sum(stages.values())
        click.echo(
            f"time per stage ({s.workers} face workers): "
            + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in stages.items())
        )
    if s.resumed:
        click.echo(f"resumed: {s.resumed} images were already done")
    if getattr(s, "report", None):
        click.echo(f"report: {s.report}")
    if s.videos:
        click.echo(
            f"{len(s.videos)} videos, {s.frames} frames predicted in this run "
            f"({s.frames / s.seconds if s.seconds > 0 else float('nan'):.2f} frames/s); per track: "
            f"{s.videos_file}, timelines in {s.videos[0].timeline.parent}"
        )
    if s.non_images:
        files = "file" if s.non_images == 1 else "files"
        click.echo(f"skipped {s.non_images} {files} (listed in {s.skipped_file}):")
        for path, why in s.skipped[:SHOWN_SKIPPED]:
            click.echo(f"  {printable(path)}: {why}")
        if s.non_images > SHOWN_SKIPPED:
            click.echo(f"  ... and {s.non_images - SHOWN_SKIPPED} more")
    for folder, why in s.unreadable_folders:
        click.echo(f"cannot read folder {printable(folder)}: {why}", err=True)
    if s.n_errors:
        click.echo(
            f"{s.n_errors} files could not be read (status 'error' in the output):", err=True
        )
        for path, message in s.errors[:SHOWN_ERRORS]:
            line = message if message.startswith(path) else f"{path}: {message}"
            click.echo(f"  {printable(line)}", err=True)
        if s.n_errors > SHOWN_ERRORS:
            click.echo(f"  ... and {s.n_errors - SHOWN_ERRORS} more", err=True)
