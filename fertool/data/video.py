"""Video files in, sampled frames out, one at a time (PyAV: FFmpeg inside its wheel).

::

    from fertool.data.video import iter_frames, probe

    info = probe("film.mkv")                      # size, frame rate, duration, codec
    for frame in iter_frames("film.mkv", fps=2, start=60, end=120):
        frame.index, frame.time, frame.image      # int, seconds, (H, W, 3) uint8 RGB

Decoding streams: a frame is decoded, converted to RGB only when it is sampled, handed to the
caller and dropped, so memory does not grow with the length of the film.

Frame numbers and times are those of the file: ``time`` is the frame's presentation time in
seconds from the first frame, ``index`` is ``round(time * frame_rate)`` (the frame's number when
the rate is constant; frames are counted instead when the file declares no rate). Both are the
same whether decoding starts at the beginning or after a seek (``start``, ``after``), so a run that
resumes samples exactly the frames an uninterrupted run would have.

Sampling: ``fps=F`` keeps the first frame of every ``1/F`` s slot counted from ``start`` (or 0);
``every=N`` keeps the frames whose index is a multiple of ``N``; neither keeps every frame.

A file that cannot be opened, a decoding error, or a stream that ends before the length the
container declares (a truncated download) raises :class:`VideoReadError` naming the file, after
the frames that did decode were yielded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fertool.core.errors import FertoolError, ImageReadError

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoFrame",
    "VideoInfo",
    "VideoReadError",
    "is_video_path",
    "iter_frames",
    "probe",
]

#: File extensions read as videos (lower case).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm"})

#: A stream that ends more than this many frame periods (and 0.25 s) before the declared length is
#: reported as truncated.
TRUNCATION_FRAMES = 2


class VideoReadError(ImageReadError):
    """A video file could not be opened or decoded to its end. The message names the file."""


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path``'s extension is a video extension (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av():
    try:
        import av
    except ImportError:
        raise FertoolError(
            "reading videos needs PyAV: pip install 'fertool[video]' (or pip install av)"
        ) from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: str
    width: int
    height: int
    fps: float | None
    duration: float | None
    frames: int | None
    codec: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class VideoFrame:
    """One decoded, sampled frame: ``index`` (frame number), ``time`` (s), ``image`` RGB uint8."""

    index: int
    time: float
    image: np.ndarray


def _open(path: str | os.PathLike):
    av = _av()
    name = str(path)
    if not os.path.isfile(path):
        raise VideoReadError(name, "no such file" if not os.path.exists(path) else "not a file")
    try:
        container = av.open(name, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoReadError(name, f"cannot open video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(name, "no video stream")
    return container, container.streams.video[0]


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if text else type(exc).__name__


def _declared_length(container, stream) -> float | None:
    """The longest length (s) the container or stream declares, or None."""
    candidates = []
    if container.duration:
        candidates.append(container.duration / 1_000_000)
    if stream.duration and stream.time_base:
        candidates.append(float(stream.duration * stream.time_base))
    if stream.frames and stream.average_rate:
        candidates.append(stream.frames / float(stream.average_rate))
    return max(candidates) if candidates else None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, declared length and codec of ``path``'s first video stream.

    Raises
    ------
    VideoReadError
        The file cannot be opened or has no video stream.
    """
    container, stream = _open(path)
    try:
        rate = float(stream.average_rate) if stream.average_rate else None
        return VideoInfo(
            str(path),
            int(stream.codec_context.width),
            int(stream.codec_context.height),
            rate,
            _declared_length(container, stream),
            int(stream.frames) or None,
            stream.codec_context.name,
        )
    finally:
        container.close()


def _check_sampling(fps, every, start, end) -> None:
    if fps is not None and every is not None:
        raise FertoolError("--fps and --every contradict each other; choose one")
    if fps is not None and not fps > 0:
        raise FertoolError(f"--fps {fps}: expected a positive number of frames per second")
    if every is not None and int(every) < 1:
        raise FertoolError(f"--every {every}: expected at least 1")
    if start is not None and start < 0:
        raise FertoolError(f"--start {start}: expected seconds >= 0")
    if start is not None and end is not None and end <= start:
        raise FertoolError(f"--end {end}: expected a time after --start {start}")


def iter_frames(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    every: int | None = None,
    start: float | None = None,
    end: float | None = None,
    after: int | None = None,
) -> Iterator[VideoFrame]:
    """The sampled frames of ``path``'s first video stream, in order, decoded one at a time.

    Parameters
    ----------
    path : path
    fps : float, optional
        Keep at most ``fps`` frames per second (the first frame of each slot).
    every : int, optional
        Keep frames whose index is a multiple of ``every``.
    start, end : float, optional
        The segment, in seconds from the first frame (``end`` excluded).
    after : int, optional
        Only frames with an index above ``after`` (resuming; decoding seeks close to it).

    Yields
    ------
    VideoFrame

    Raises
    ------
    VideoReadError
        After the frames that decoded: the file cannot be opened, a decoding error, or a stream
        that ends early (truncated).
    FertoolError
        Contradicting or out-of-range sampling parameters (before anything is read).
    """
    _check_sampling(fps, every, start, end)
    av = _av()
    name = str(path)
    container, stream = _open(path)
    stream.thread_type = "AUTO"
    try:
        rate = float(stream.average_rate) if stream.average_rate else None
        tb = stream.time_base
        t0 = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        s0 = float(start or 0.0)
        target = s0
        if after is not None and rate:
            target = max(target, (after + 1) / rate)
        if target > 0 and rate and tb:
            # Seek to the keyframe at or before the target; frames before it are decoded, skipped.
            container.seek(int((t0 + target) / tb) - 1, stream=stream, backward=True)
        last_slot = -1
        if fps is not None and after is not None and rate:
            last_slot = math.floor((after / rate - s0) * fps + 1e-6)
        counted = -1
        last_time = None
        try:
            for frame in container.decode(stream):
                counted += 1
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb) - t0
                index = round(t * rate) if rate else counted
                last_time = t
                if t < s0 - 1e-6 or (after is not None and index <= after):
                    continue
                if end is not None and t >= end - 1e-9:
                    return
                if every is not None and index % int(every):
                    continue
                if fps is not None:
                    slot = math.floor((t - s0) * fps + 1e-6)
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                yield VideoFrame(index, t, frame.to_ndarray(format="rgb24"))
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            where = "before the first frame" if last_time is None else f"at {last_time:.2f} s"
            raise VideoReadError(name, f"decoding stopped {where} ({_reason(exc)})") from None
        length = _declared_length(container, stream)
        if length is not None and (end is None or end > (last_time or 0.0)):
            period = 1.0 / rate if rate else 0.04
            seen = -period if last_time is None else last_time
            if seen + period < length - max(0.25, TRUNCATION_FRAMES * period):
                raise VideoReadError(
                    name,
                    f"truncated: the frames end at {max(seen + period, 0.0):.2f} s of the "
                    f"{length:.2f} s the file declares",
                )
    finally:
        container.close()


def write_video(
    path: str | os.PathLike, frames, fps: float = 25.0, codec: str | None = None
) -> Path:
    """Write RGB frames ((H, W, 3) uint8, even sizes) to a video file (for tests and demos).

    ``codec`` defaults to ``mpeg4`` (every container here takes it; ``libvpx-vp9`` for .webm).
    """
    av = _av()
    path = Path(path)
    codec = codec or ("libvpx-vp9" if path.suffix.lower() == ".webm" else "mpeg4")
    container = av.open(str(path), "w")
    try:
        stream = None
        for image in frames:
            image = np.ascontiguousarray(image, np.uint8)
            if stream is None:
                stream = container.add_stream(codec, rate=round(fps))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
                if codec == "mpeg4":
                    stream.bit_rate = 4_000_000
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
    return path
