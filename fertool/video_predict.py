"""Videos in ``fertool predict``: sampled frames through the face stage and a face tracker, and
per-video summaries (share of each expression per track, a timeline PNG).

:func:`fertool.predict.predict_paths` calls :func:`mixed_records` when its inputs hold a video:
images go through :func:`fertool.faces.stage.extract_faces` as before (crop cache and all), each
video is decoded one frame at a time (:func:`fertool.data.video.iter_frames`), every sampled
frame goes through the face stage, every detected face through an
:class:`~fertool.faces.track.IouTracker`, and the chosen face (or every face) comes out as a
face-stage record with its ``frame``, ``time`` and ``track``. Nothing of a video is held beyond
the current batch of crops. A video that cannot be opened, breaks while decoding or ends before
its declared length gives one ``error`` record after the frames that did decode.

Resume: :class:`ResumeState` follows the rows an interrupted run left; the video it was in the
middle of continues after its last complete frame, its tracker restored from that frame's boxes.

After the run :func:`video_summaries` reads the output back (so resumed rows count too) and
:func:`write_video_outputs` writes ``OUT-stem.videos.csv`` (one row per video and track) and
``OUT-stem.timelines/*.png`` (probabilities over time, one panel per track) beside the output.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.data.video import _check_sampling, is_video_path

if TYPE_CHECKING:  # pragma: no cover
    from fertool.faces.stage import FaceConfig, FaceRecord, FaceStage

#: The columns a video adds to predict's output, after ``path`` (images leave them empty).
VIDEO_COLUMNS = ("frame", "time", "track")
#: Timeline panels drawn per video (the tracks with the most rows); the others are listed only.
MAX_PANELS = 8
TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}


@dataclass(frozen=True)
class VideoOptions:
    """Which frames of a video are predicted, and how faces are linked.

    ``fps``/``every``/``start``/``end`` as in :func:`fertool.data.video.iter_frames`;
    ``min_iou``/``max_gap`` as in :class:`fertool.faces.track.IouTracker`.
    """

    fps: float | None = None
    every: int | None = None
    start: float | None = None
    end: float | None = None
    min_iou: float = 0.3
    max_gap: int = 5

    def __post_init__(self) -> None:
        _check_sampling(self.fps, self.every, self.start, self.end)


@dataclass
class VideoResume:
    """Where an interrupted run stopped in a video: after frame ``after``; the tracks of that
    frame (``boxes``, ``tracks``) and the next free track id."""

    path: str
    after: int
    boxes: list[tuple[float, float, float, float]]
    tracks: list[int]
    next_id: int


def has_videos(inputs: Iterable[str | os.PathLike]) -> bool:
    """Whether any file named in ``inputs`` or under its folders is a video (by extension; a
    walk of names only)."""
    from fertool.data.walk import iter_image_paths

    return any(is_video_path(p) for p in iter_image_paths(inputs, by_extension=True, videos=True))


def _extra(frame=None, time=None, track=None) -> dict[str, Any]:
    return {"frame": frame, "time": time, "track": track}


def mixed_records(
    paths: Iterable[str],
    config: FaceConfig,
    options: VideoOptions | None = None,
    *,
    all_faces: bool = False,
    resume: VideoResume | None = None,
    device: str | None = None,
    **image_kw,
) -> Iterator[tuple[FaceRecord, dict[str, Any]]]:
    """``(record, extra)`` for every image and every sampled frame of every video in ``paths``.

    ``extra`` holds ``frame``, ``time`` and ``track`` (None for images). Runs of consecutive
    images go to :func:`fertool.faces.stage.extract_faces` (``image_kw``: ``cache_dir``,
    ``use_cache``); ``resume`` continues one video part-way.
    """
    from fertool.faces.stage import extract_faces

    options = options or VideoOptions()
    stage: list[FaceStage] = []
    for is_video, group in itertools.groupby(paths, key=is_video_path):
        if not is_video:
            for rec in extract_faces(
                group, config, all_faces=all_faces, progress=False, device=device, **image_kw
            ):
                yield rec, _extra()
            continue
        for path in group:
            point = resume if resume is not None and resume.path == path else None
            yield from video_records(path, config, options, stage, all_faces, point, device)


def video_records(
    path: str,
    config: FaceConfig,
    options: VideoOptions,
    stage: list,
    all_faces: bool = False,
    resume: VideoResume | None = None,
    device: str | None = None,
) -> Iterator[tuple[FaceRecord, dict[str, Any]]]:
    """The records of one video's sampled frames, then one ``error`` record if it broke.

    ``stage`` is a one-element cache for the :class:`~fertool.faces.stage.FaceStage` (made on
    the first frame, shared by the videos of a run).
    """
    from fertool.data.video import iter_frames
    from fertool.faces.stage import FaceStage, analysis_records
    from fertool.faces.track import IouTracker
    from fertool.faces.types import error_record

    tracker = IouTracker(min_iou=options.min_iou, max_gap=options.max_gap)
    if resume is not None:
        tracker.restore(resume.boxes, resume.tracks, resume.next_id)
    frames = iter_frames(
        path,
        fps=options.fps,
        every=options.every,
        start=options.start,
        end=options.end,
        after=None if resume is None else resume.after,
    )
    try:
        for frame in frames:
            if not stage:
                stage.append(FaceStage(config, device=device))
            analysis = stage[0].analyse(frame.image)
            del frame.image
            ids = tracker.update(analysis.boxes)
            time = float(f"{frame.time:.6f}")
            for rec in analysis_records(analysis, config, path, all_faces):
                track = ids[rec.face_index] if rec.face_index >= 0 else None
                yield rec, _extra(frame.index, time, track)
    except FertoolError as exc:  # VideoReadError names the file; a missing PyAV too
        message = str(exc) if str(exc).startswith(path) else f"{path}: {exc}"
        yield error_record(path, message), _extra()


# --------------------------------------------------------------------------------------------
# Resume


def _value(row: dict, key: str):
    v = row.get(key)
    return None if v in (None, "") else v


def _box(row: dict):
    if "box" in row:
        return row["box"]
    vals = [_value(row, k) for k in ("x1", "y1", "x2", "y2")]
    return None if None in vals else [float(v) for v in vals]


class ResumeState:
    """Follows the rows an interrupted run kept (:meth:`keep`, in order) and says where the
    video it was in the middle of continues (:meth:`point`)."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.frame: int | None = None
        self.boxes: list = []
        self.tracks: list[int] = []
        self.max_track = -1
        #: Set by :func:`fertool.predict.prepare_resume`.
        self.resume: VideoResume | None = None

    @staticmethod
    def key(row: dict) -> tuple[str, Any]:
        """The unit a resume redoes: a video's frame, or an image (``frame`` empty)."""
        return row["path"], _value(row, "frame")

    def keep(self, row: dict) -> None:
        frame = _value(row, "frame")
        if frame is None:
            self.path = None if row["path"] != self.path else self.path
            return
        if row["path"] != self.path:
            self.path, self.max_track = row["path"], -1
            self.frame = None
        if int(frame) != self.frame:
            self.frame, self.boxes, self.tracks = int(frame), [], []
        track, box = _value(row, "track"), _box(row)
        if track is not None:
            self.max_track = max(self.max_track, int(track))
            if box is not None:
                self.boxes.append(tuple(box))
                self.tracks.append(int(track))

    def point(self, dropped: str | None) -> VideoResume | None:
        """The resume point when the first row not kept (path ``dropped``) continues the video
        of the last kept frame."""
        if dropped is None or dropped != self.path or self.frame is None:
            return None
        return VideoResume(self.path, self.frame, self.boxes, self.tracks, self.max_track + 1)


# --------------------------------------------------------------------------------------------
# Summaries and timelines


@dataclass
class TrackSeries:
    """One track's rows: ``times`` (n,), ``probabilities`` (n, C), ``labels`` (n,) argmax."""

    track: int
    times: np.ndarray
    probabilities: np.ndarray

    @property
    def n(self) -> int:
        return len(self.times)

    def shares(self) -> np.ndarray:
        """Share of rows whose most probable class is each class (C,), summing to 1."""
        c = self.probabilities.shape[1]
        counts = np.bincount(self.probabilities.argmax(axis=1), minlength=c)
        return counts / max(self.n, 1)


@dataclass
class VideoSummary:
    """A video's rows in the output: frames sampled, statuses, errors, one series per track."""

    path: str
    frames: int = 0
    status: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    tracks: list[TrackSeries] = field(default_factory=list)
    timeline: Path | None = None


def _read_output(out: Path, fmt: str) -> Iterator[dict]:
    with open(out, "r", **TEXT) as fh:
        if fmt == "csv":
            yield from csv.DictReader(fh)
        else:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def video_summaries(out: str | os.PathLike, fmt: str, labels: Sequence[str]) -> list[VideoSummary]:
    """The videos in a finished output, in output order, with one series per track."""
    videos: dict[str, VideoSummary] = {}
    series: dict[str, dict[int, tuple[list, list]]] = {}
    frames_seen: dict[str, set] = {}
    pcols = [f"p_{name}" for name in labels]
    for row in _read_output(Path(out), fmt):
        path = row["path"]
        frame = _value(row, "frame")
        if frame is None and not (path in videos or is_video_path(path)):
            continue
        v = videos.setdefault(path, VideoSummary(path))
        v.status[row["status"]] = v.status.get(row["status"], 0) + 1
        if row["status"] == "error":
            v.errors.append(row.get("message") or "")
        if frame is None:
            continue
        frames_seen.setdefault(path, set()).add(int(frame))
        track = _value(row, "track")
        if track is None or _value(row, pcols[0]) is None:
            continue
        times, probs = series.setdefault(path, {}).setdefault(int(track), ([], []))
        times.append(float(row["time"]))
        probs.append([float(row[c]) for c in pcols])
    for path, v in videos.items():
        v.frames = len(frames_seen.get(path, ()))
        v.tracks = [
            TrackSeries(t, np.asarray(ts, float), np.asarray(ps, float).reshape(-1, len(labels)))
            for t, (ts, ps) in sorted(series.get(path, {}).items())
        ]
    return list(videos.values())


def plot_timeline(video: VideoSummary, labels: Sequence[str]):
    """A matplotlib Figure: one panel per track (the :data:`MAX_PANELS` longest), each class's
    probability over time."""
    from matplotlib.figure import Figure

    tracks = sorted(video.tracks, key=lambda t: -t.n)[:MAX_PANELS]
    tracks.sort(key=lambda t: t.track)
    n = max(len(tracks), 1)
    fig = Figure(figsize=(9, 1.7 * n + 1.0), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, t in zip(axes, tracks):
        for k, name in enumerate(labels):
            ax.plot(t.times, t.probabilities[:, k], color=f"C{k}", lw=1.4, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability")
        ax.set_title(f"track {t.track} ({t.n} rows)", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    if tracks:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
                   ncol=len(labels), fontsize=8, frameon=False)
    else:
        axes[0].text(0.5, 0.5, "no face tracked", ha="center", va="center")
    more = len(video.tracks) - len(tracks)
    axes[-1].set_xlabel("time (s)" + (f"; {more} shorter tracks not drawn" if more > 0 else ""))
    fig.suptitle(_short(video.path), fontsize=9)
    return fig


def _short(text: str, n: int = 90) -> str:
    from fertool.core.io import printable

    text = printable(text)
    return text if len(text) <= n else "..." + text[-(n - 3) :]


def timeline_name(path: str) -> str:
    """A file name for a video's timeline: its stem (safe characters) and a hash of its path."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "video"
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}.png"


def videos_csv_path(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.stem + ".videos.csv")


def timelines_dir(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.stem + ".timelines")


def write_video_outputs(
    out: str | os.PathLike, fmt: str, labels: Sequence[str]
) -> list[VideoSummary]:
    """Per-video summary CSV and timeline PNGs beside ``out`` (see the module docstring)."""
    from fertool.core.io import csv_text, save_figure, write_text

    videos = video_summaries(out, fmt, labels)
    folder = timelines_dir(out)
    rows = []
    for v in videos:
        v.timeline = save_figure(plot_timeline(v, labels), folder / timeline_name(v.path))
        for t in v.tracks:
            rows.append(
                [v.path, t.track, t.n, f"{t.times.min():.3f}", f"{t.times.max():.3f}"]
                + [f"{s:.4f}" for s in t.shares()]
                + [str(v.timeline)]
            )
        if not v.tracks:
            rows.append([v.path, "", 0, "", ""] + [""] * len(labels) + [str(v.timeline)])
    header = ["video", "track", "rows", "start_s", "end_s", *(f"share_{n}" for n in labels)]
    write_text(videos_csv_path(out), csv_text(rows, header=[*header, "timeline"]))
    return videos
