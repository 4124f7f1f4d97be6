"""Folder inference: files and folders in, one CSV or JSONL row per image (or per face) out.

Streaming with bounded memory: folders are walked one directory at a time (names only, sorted,
never a list of decoded images); images are decoded one at a time by the face stage; crops go
through the model in batches; rows are appended to the output as soon as a batch is done. Memory
therefore depends on the batch size, not on the number of files.

The output is ordered (the walk order: arguments in the order given, each folder's entries sorted
by name, depth first) and complete: every image file gets a row, with a status column:

``ok``        a face was found and classified
``fallback``  no face was found; the centre of the image was classified (see ``--no-face``)
``no_face``   no face was found and ``--no-face skip``: no prediction
``error``     the file could not be read; ``message`` says why

Atomicity and resume: rows go to ``OUT.partial`` while the run lasts, and ``OUT.partial`` is
renamed to ``OUT`` when every file is done, so ``OUT`` only ever holds a complete result. After an
interruption (Ctrl-C, a kill, a crash), ``resume=True`` keeps the complete rows of the partial
file (the last image's rows are redone, in case they were cut), skips the images it holds and
appends the rest; the result has every image exactly once.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fertool.core.env import torch_threads
from fertool.core.errors import FertoolError
from fertool.data.walk import WalkStats, count_image_paths, iter_image_paths

if TYPE_CHECKING:  # pragma: no cover
    from fertool.faces.stage import FaceConfig, FaceRecord
    from fertool.serve.runtime import FacePrediction, Predictor
    from fertool.video_predict import VideoOptions

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
#: Errors listed one by one in the summary (all of them are in the output's status column).
MAX_LISTED_ERRORS = 200


# --------------------------------------------------------------------------------------------
# Rows and output formats


def columns(labels: Sequence[str], fmt: str, video: bool = False) -> list[str]:
    """Output columns: path, face, box, label, score, one probability per class, status.

    With ``video`` (the inputs hold a video), ``frame``, ``time`` and ``track`` follow ``path``
    (see :mod:`fertool.video_predict`; images leave them empty).
    """
    box = ["x1", "y1", "x2", "y2"] if fmt == "csv" else ["box"]
    return [
        "path",
        *(("frame", "time", "track") if video else ()),
        "face_index",
        "n_faces",
        *box,
        "face_score",
        "label",
        "score",
        *(f"p_{name}" for name in labels),
        "status",
        "message",
    ]


def _num(v: float | None, digits: int = 7) -> float | None:
    return None if v is None else float(f"{float(v):.{digits}g}")


def prediction_row(
    pred: FacePrediction, labels: Sequence[str], fmt: str, video: dict | None = None
) -> dict[str, Any]:
    """One output row (a dict in :func:`columns` order) for one prediction; ``video``: its
    ``frame``, ``time`` and ``track`` (the video columns)."""
    d = pred.to_dict(labels)
    for k in list(d):
        if k.startswith("p_") or k == "score":
            d[k] = _num(d[k])
    if fmt == "csv":
        box = d.pop("box") or [None] * 4
        d.update(zip(("x1", "y1", "x2", "y2"), box))
    if video is not None:
        d.update(video)
    return {c: d[c] for c in columns(labels, fmt, video is not None)}


def format_rows(rows: Sequence[dict[str, Any]], fmt: str, header: bool = False) -> str:
    """Rows as CSV or JSONL text (complete lines).

    Paths are kept exactly (newlines, quotes, commas and all): CSV quotes them, JSON escapes
    them. A JSONL row holding a name that is not valid UTF-8 is written with ASCII escapes, so the
    line stays valid JSON and ``json.loads`` gives the name back.
    """
    if fmt == "jsonl":
        return "".join(_json_line(r) for r in rows)
    from fertool.core.io import csv_text

    cols = list(rows[0]) if rows else []
    return csv_text((r.values() for r in rows), header=cols if header else None)


def _json_line(row: dict[str, Any]) -> str:
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a file name's undecodable byte
        line = json.dumps(row)
    return line + "\n"


#: How the output is opened: UTF-8; a file name's bytes that are not UTF-8 are written as they
#: are (CSV) so that the path column holds the real name; lines end in "\n" only, so that a
#: carriage return inside a quoted name does not end a line when reading back.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}


def output_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """``csv`` or ``jsonl``: given, or from the file name (``.csv``, ``.jsonl``/``.ndjson``)."""
    if fmt:
        if fmt not in FORMATS:
            raise FertoolError(f"--format {fmt}: expected csv or jsonl")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise FertoolError(
        f"--out {out}: cannot tell the format from the name; use a .csv or "
        ".jsonl file name, or --format csv|jsonl"
    )


def skipped_path(out: str | os.PathLike) -> Path:
    """Where the files a run skipped are listed (``path,reason``): ``photos.skipped.csv`` beside
    ``photos.csv``."""
    p = Path(out)
    return p.with_name(p.stem + ".skipped.csv")


def write_skipped(out: str | os.PathLike, skipped: Sequence[tuple[str, str]]) -> Path | None:
    """List ``skipped`` (path, reason) in :func:`skipped_path` (atomically); with nothing skipped,
    remove a list an earlier run left. Returns the file written, or None."""
    from fertool.core.io import csv_text, write_text

    target = skipped_path(out)
    if not skipped:
        target.unlink(missing_ok=True)
        return None
    return write_text(target, csv_text(skipped, header=["path", "reason"]))


def partial_path(out: str | os.PathLike) -> Path:
    """Where rows go while the run lasts."""
    p = Path(out)
    return p.with_name(p.name + ".partial")


# --------------------------------------------------------------------------------------------
# Resume


def _read_rows(path: Path, fmt: str, cols: list[str]) -> Iterator[tuple[str, str, dict]]:
    """``(path, text of the row, the row)`` for every complete row of an earlier output.

    The header (CSV) must equal ``cols``; a last row without its line end is left out.
    """
    with open(path, "r", **TEXT) as fh:
        if fmt == "csv":
            head = fh.readline()
            if head.rstrip("\r\n") != ",".join(cols):
                raise FertoolError(
                    f"{path} has other columns than this model writes (another model or an older "
                    "fertool?); use another --out, or --force to start again"
                )
            reader = csv.reader(_complete_lines(fh))
            for values in reader:
                if len(values) != len(cols):
                    break
                row = dict(zip(cols, values))
                yield values[0], format_rows([row], "csv"), row
        else:
            for line in _complete_lines(fh):
                try:
                    row = json.loads(line)
                except ValueError:
                    break
                if not isinstance(row, dict) or list(row) != cols:
                    raise FertoolError(
                        f"{path} has other fields than this model writes; use another --out, "
                        "or --force to start again"
                    )
                yield row["path"], line if line.endswith("\n") else line + "\n", row


def _complete_lines(fh) -> Iterator[str]:
    """Lines of a text file, without a last line that lacks its line end (a cut write)."""
    for line in fh:
        if not line.endswith("\n"):
            return
        yield line


def prepare_resume(out: Path, fmt: str, cols: list[str], video=None) -> set[str]:
    """Turn what an interrupted (or finished) run left into a clean ``OUT.partial``.

    Keeps every complete row except those of the last image (it may have been cut between two of
    its faces), rewrites the partial file atomically, and returns the paths it holds. With
    ``video`` (a :class:`fertool.video_predict.ResumeState`), a video's unit is a frame: the
    rows of its last frame are redone, and ``video.resume`` says where the video continues.
    """
    from fertool.core.io import atomic_write

    partial = partial_path(out)
    source = partial if partial.is_file() else out if out.is_file() else None
    if source is None:
        return set()
    done: set[str] = set()
    with atomic_write(partial, "w") as dst:
        if fmt == "csv":
            dst.write(",".join(cols) + "\n")
        group: list[str] = []
        rows: list[dict] = []
        current = group_path = None
        for path, text, row in _read_rows(source, fmt, cols):
            key = path if video is None else video.key(row)
            if key != current:
                if current is not None:
                    dst.writelines(group)
                    done.add(group_path)
                    for r in rows if video is not None else ():
                        video.keep(r)
                group, rows, current, group_path = [], [], key, path
            group.append(text)
            rows.append(row)
    if video is not None:
        video.resume = video.point(group_path if current is not None else None)
        if video.resume is not None:
            done.discard(video.resume.path)
    return done


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class PredictSummary:
    """What :func:`predict_paths` did.

    Attributes
    ----------
    out : Path
    images : int
        Image files processed in this run.
    resumed : int
        Image files already in the output from an earlier, interrupted run.
    rows : int
        Rows written in this run.
    status : dict of str to int
        Rows per status in this run.
    skipped_file : Path or None
        The list of skipped files beside the output (see :func:`skipped_path`), when any.
    errors : list of (path, message)
        Files that could not be read (the first :data:`MAX_LISTED_ERRORS`).
    n_errors : int
    non_images : int
        Files skipped in the folders (not images, pipes, links to folders, ...).
    skipped : list of (path, reason)
        Every one of them, named.
    seconds : float
    stage_seconds : dict of str to float
        Seconds per stage (decode, detect, align in the face workers, summed over them; model in
        the main thread); see :class:`fertool.pipeline.StageTimes`.
    workers : int
        Face-stage worker threads.
    """

    out: Path
    images: int = 0
    resumed: int = 0
    rows: int = 0
    status: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    n_errors: int = 0
    non_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_file: Path | None = None
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: Video frames processed in this run; the videos' summaries (fertool.video_predict).
    frames: int = 0
    videos: list = field(default_factory=list)
    videos_file: Path | None = None
    #: OUT-stem.report.html (and .md): the run's report (fertool.predict_report).
    report: Path | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    workers: int = 1

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "images": self.images,
            "resumed": self.resumed,
            "rows": self.rows,
            "status": dict(self.status),
            "n_errors": self.n_errors,
            "errors": [list(e) for e in self.errors],
            "non_images": self.non_images,
            "skipped": [list(e) for e in self.skipped],
            "skipped_file": None if self.skipped_file is None else str(self.skipped_file),
            "unreadable_folders": [list(e) for e in self.unreadable_folders],
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
            "stage_seconds": dict(self.stage_seconds),
            "workers": self.workers,
        }


def predict_paths(
    inputs: Sequence[str | os.PathLike],
    model: Predictor,
    out: str | os.PathLike,
    *,
    fmt: str | None = None,
    all_faces: bool = False,
    batch_size: int = 32,
    resume: bool = False,
    force: bool = False,
    face: FaceConfig | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    detector_threads: int | None = None,
    progress: bool = True,
    by_extension: bool = False,
    video: VideoOptions | None = None,
    workers: int | None = None,
) -> PredictSummary:
    """Predict every image under ``inputs`` and write one row per image (or face) to ``out``.

    Parameters
    ----------
    inputs : sequence of paths
        Files and folders (walked recursively, see :func:`iter_image_paths`).
    model : Predictor
        From :func:`fertool.serve.runtime.load`.
    out : path
        ``.csv`` or ``.jsonl`` (or give ``fmt``).
    fmt : {"csv", "jsonl"}, optional
    all_faces : bool
        One row per detected face (images without a face still get one row).
    batch_size : int
        Crops per model call; memory grows with it, not with the number of files.
    resume : bool
        Continue an interrupted run (or top up a finished one) instead of starting again.
    force : bool
        Overwrite an existing output (or discard an interrupted one).
    face : FaceConfig, optional
        Face-stage settings; default the model's (:attr:`Predictor.face_config`).
    use_cache, cache_dir
        The face-crop cache (see :func:`fertool.faces.stage.extract_faces`).
    detector_threads : int, optional
        Threads of each face worker's detector (torch for MTCNN, onnxruntime for BlazeFace),
        restored afterwards. Default: ``$FERTOOL_DETECTOR_THREADS``, else the available cores
        split among the workers (:func:`fertool.pipeline.thread_plan`). On a busy machine one
        thread can be several times faster than two (MTCNN, measured: 0.35 s instead of 2.4 s
        per 720x576 frame); pin it there.
    workers : int, optional
        Face-stage worker threads (decoding, detection, alignment of the next images while the
        model runs; at most ``4 * workers`` images in flight, rows in input order). Default: the
        available cores (``os.sched_getaffinity``). Videos are decoded in the main thread.
    progress : bool
        Progress bar on stderr.
    by_extension : bool
        In folders, read only files with an image extension; by default a file whose extension
        is missing or unknown is read when its content is an image (see :func:`iter_image_paths`).
    video : VideoOptions, optional
        Frames sampled from videos (``.mp4``, ``.mkv``, ...), the tracker's settings; default
        every frame. With a video among the inputs the output gets the columns ``frame``, ``time``
        and ``track``, and per-video summaries are written beside it (:mod:`fertool.video_predict`).

    Returns
    -------
    PredictSummary

    Raises
    ------
    FertoolError
        An existing output without ``force``/``resume``, an output written by another model.
    """
    from tqdm import tqdm

    from fertool.faces.stage import extract_faces
    from fertool.pipeline import StageTimes, pipelined_faces, thread_plan

    if batch_size < 1:
        raise FertoolError(f"--batch-size {batch_size}: expected at least 1")
    out = Path(out)
    fmt = output_format(out, fmt)
    labels = model.labels
    from fertool.video_predict import ResumeState, VideoOptions, has_videos, mixed_records

    video = video or VideoOptions()
    has_video = has_videos(inputs)
    cols = columns(labels, fmt, has_video)
    partial = partial_path(out)
    if not resume and not force:
        if out.exists():
            raise FertoolError(
                f"{out} already exists; use --force to overwrite it or --resume "
                "to add what it lacks"
            )
        if partial.exists():
            raise FertoolError(
                f"{partial} holds an interrupted run; use --resume to continue "
                "it or --force to start again"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    state = ResumeState() if has_video else None
    done = prepare_resume(out, fmt, cols, state) if resume else set()
    if not done and (state is None or state.resume is None):  # nothing kept
        with open(partial, "w", **TEXT) as fh:
            if fmt == "csv":
                fh.write(",".join(cols) + "\n")

    face = face or model.face_config
    summary = PredictSummary(out, resumed=len(done))
    stats = WalkStats()
    total = (
        count_image_paths(inputs, by_extension=by_extension, videos=has_video) if progress else None
    )
    bar = tqdm(
        total=total,
        initial=min(len(done), total or 0),
        desc="predict",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    walk = iter_image_paths(inputs, stats, by_extension=by_extension, videos=has_video)
    todo = (p for p in walk if p not in done)
    device = "cuda" if "CUDAExecutionProvider" in model.providers else "cpu"
    kw = {"cache_dir": cache_dir, "use_cache": use_cache, "all_faces": all_faces, "device": device}
    times = StageTimes()
    n_workers, det_threads = thread_plan(workers, detector_threads)
    summary.workers = n_workers
    if has_video:
        records = mixed_records(todo, face, video, resume=state.resume if resume else None, **kw)
    elif face.faces == "crop":
        records = ((r, None) for r in extract_faces(todo, face, progress=False, **kw))
    else:
        faces = pipelined_faces(
            todo, face, workers=n_workers, detector_threads=det_threads, times=times, **kw
        )
        records = ((r, None) for r in faces)
    status: Counter[str] = Counter()
    t0 = time.perf_counter()
    try:
        with (
            torch_threads(det_threads),
            open(partial, "a", **TEXT) as fh,
        ):
            pending: list[tuple[FaceRecord, dict | None]] = []
            n_crops = 0
            for rec, extra in records:
                # Flush only between images (video frames), so that their rows go together.
                if n_crops >= batch_size and (rec.path, extra and extra["frame"]) != (
                    pending[-1][0].path,
                    pending[-1][1] and pending[-1][1]["frame"],
                ):
                    _flush(pending, model, fh, fmt, batch_size, summary, status, bar, times)
                    pending, n_crops = [], 0
                pending.append((rec, extra))
                n_crops += rec.crop is not None
            _flush(pending, model, fh, fmt, batch_size, summary, status, bar, times)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
        summary.stage_seconds = dict(times.seconds)
        summary.status = dict(status)
        summary.non_images = stats.non_images
        summary.skipped = [tuple(e) for e in stats.skipped]
        summary.unreadable_folders = list(stats.unreadable_folders)
    os.replace(partial, out)
    folders = [(f, f"cannot read folder ({why})") for f, why in summary.unreadable_folders]
    summary.skipped_file = write_skipped(out, summary.skipped + folders)
    if has_video:
        from fertool.video_predict import videos_csv_path, write_video_outputs

        summary.videos = write_video_outputs(out, fmt, labels)
        summary.videos_file = videos_csv_path(out)
    from fertool.predict_report import write_predict_report

    summary.report = write_predict_report(summary, labels, str(model.path))
    return summary


def _flush(
    pending: list[tuple[FaceRecord, dict | None]],
    model: Predictor,
    fh,
    fmt: str,
    batch_size: int,
    summary: PredictSummary,
    status: Counter,
    bar,
    times=None,
) -> None:
    from fertool.data.video import is_video_path

    if not pending:
        return
    t = time.perf_counter()
    preds = model.predict_records([r for r, _ in pending], batch_size=max(batch_size, 1))
    if times is not None:
        times.add("model", time.perf_counter() - t)
    rows = [prediction_row(p, model.labels, fmt, e) for p, (_, e) in zip(preds, pending)]
    fh.write(format_rows(rows, fmt))
    fh.flush()
    images = 0
    last = None
    for p, (_, extra) in zip(preds, pending):
        status[p.status] += 1
        if extra is not None and extra["frame"] is not None:
            summary.frames += (p.path, extra["frame"]) != last
            last = (p.path, extra["frame"])
            continue
        if p.path != last:
            images += extra is None or not is_video_path(p.path)  # a video's error row
            last = p.path
            if p.status == "error":
                summary.n_errors += 1
                if len(summary.errors) < MAX_LISTED_ERRORS:
                    summary.errors.append((p.path, p.message))
    summary.rows += len(rows)
    summary.images += images
    bar.update(images)
