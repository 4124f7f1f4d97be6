"""The face stage of ``fertool predict`` in worker threads: decoding, detection and alignment of
the next images while the model runs on the current batch.

:func:`pipelined_faces` gives the same records, in the same order, as
:func:`fertool.faces.stage.extract_faces` (the same cache, the same error records for bad files),
with ``workers`` threads each holding its own :class:`~fertool.faces.stage.FaceStage`. At most
``workers * depth`` images are in flight (submitted and not yet consumed), so memory does not
grow with the folder. Threads are enough: Pillow's decoding and resizing, onnxruntime
(BlazeFace) and torch (MTCNN) release the GIL for their work.

Threads per worker: :func:`thread_plan` splits the available cores (``os.sched_getaffinity``)
among the workers unless pinned (``FERTOOL_DETECTOR_THREADS`` or ``detector_threads``).

:class:`StageTimes` adds up the seconds each stage took in the workers (decode, detect, align)
and in the model, so a report can give each stage's share.

Owns: the threaded face stage and its timings. May import: ``fertool.core``, ``fertool.faces``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fertool.faces.config import FaceConfig
from fertool.faces.types import FaceRecord

__all__ = ["StageTimes", "available_cores", "pipelined_faces", "thread_plan"]

DEPTH = 4  # images in flight per worker


def available_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_plan(workers: int | None, detector_threads: int | None = None) -> tuple[int, int]:
    """``(workers, detector threads per worker)``: workers default to the available cores, and
    the cores are split among them unless ``detector_threads`` (or
    ``$FERTOOL_DETECTOR_THREADS``) pins the threads."""
    cores = available_cores()
    workers = cores if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if detector_threads is None and os.environ.get("FERTOOL_DETECTOR_THREADS"):
        detector_threads = int(os.environ["FERTOOL_DETECTOR_THREADS"])
    threads = detector_threads if detector_threads else max(1, cores // workers)
    return workers, int(threads)


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over workers (thread-safe adds)."""

    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "detect": 0.0, "align": 0.0, "model": 0.0}
    )
    images: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def shares(self) -> dict[str, float]:
        """Each stage's fraction of the summed stage time."""
        total = sum(self.seconds.values())
        return {k: (v / total if total > 0 else 0.0) for k, v in self.seconds.items()}


class _TimedDetector:
    """Wraps a detector so its ``detect`` time goes to ``times['detect']``."""

    def __init__(self, detector, times: StageTimes) -> None:
        self._detector, self._times = detector, times
        self.min_face = detector.min_face
        self.device = getattr(detector, "device", None)
        #: Seconds of the last call (a worker's detector is its own, so no lock is needed).
        self.last = 0.0

    def detect(self, image):
        t = time.perf_counter()
        try:
            return self._detector.detect(image)
        finally:
            self.last = time.perf_counter() - t
            self._times.add("detect", self.last)


@contextlib.contextmanager
def _detector_env(threads: int) -> Iterator[None]:
    """Detectors built in this block get ``threads`` intra-op threads (onnxruntime reads
    ``FERTOOL_DETECTOR_THREADS`` when a detector is made; torch's count is global)."""
    from fertool.core.env import torch_threads

    before = os.environ.get("FERTOOL_DETECTOR_THREADS")
    os.environ["FERTOOL_DETECTOR_THREADS"] = str(threads)
    try:
        with torch_threads(threads):
            yield
    finally:
        if before is None:
            os.environ.pop("FERTOOL_DETECTOR_THREADS", None)
        else:
            os.environ["FERTOOL_DETECTOR_THREADS"] = before


def pipelined_faces(
    paths: Iterable[str | os.PathLike],
    config: FaceConfig,
    *,
    workers: int | None = None,
    detector_threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    all_faces: bool = False,
    device: str | None = None,
    times: StageTimes | None = None,
    depth: int = DEPTH,
) -> Iterator[FaceRecord]:
    """Face records of ``paths`` in input order, made by ``workers`` threads (see the module
    docstring). Bad files give ``error`` records, as in ``extract_faces``."""
    from fertool.core.errors import ImageReadError
    from fertool.core.io import read_image
    from fertool.faces.cache import FaceCache
    from fertool.faces.stage import FaceStage, analysis_records, cache_lookup
    from fertool.faces.types import error_record

    workers, threads = thread_plan(workers, detector_threads)
    times = times if times is not None else StageTimes()
    cache = None
    if use_cache and config.faces != "crop":
        from fertool.core.env import cache_dir as default_cache_dir

        cache = FaceCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), config)
    local = threading.local()
    stages: list = []
    lock = threading.Lock()

    def stage():
        if getattr(local, "stage", None) is None:
            with lock, _detector_env(threads):  # one build at a time: the env var is global
                s = FaceStage(config, device=device)
                if s.detector is not None:
                    s.detector = _TimedDetector(s.detector, times)
                stages.append(s)
            local.stage = s
        return local.stage

    def one(path) -> list[FaceRecord]:
        name = str(path)
        digest, hit = cache_lookup(cache, path, config, all_faces)
        if hit is not None:
            return hit
        t = time.perf_counter()
        try:
            image = read_image(path)
        except ImageReadError as exc:
            return [error_record(name, str(exc))]
        finally:
            times.add("decode", time.perf_counter() - t)
        s = stage()
        if s.detector is not None:
            s.detector.last = 0.0
        t = time.perf_counter()
        analysis = s.analyse(image)
        spent = s.detector.last if s.detector is not None else 0.0
        times.add("align", max(0.0, time.perf_counter() - t - spent))  # crops, choice, fallback
        del image
        if cache is not None and digest is not None:
            cache.save(digest, analysis)
        with lock:
            times.images += 1
        return list(analysis_records(analysis, config, name, all_faces))

    it = iter(paths)
    with _torch_threads_for(threads):
        pool = ThreadPoolExecutor(workers, "fertool-faces")
        inflight: deque = deque()
        try:
            for p in it:
                inflight.append(pool.submit(one, p))
                if len(inflight) >= workers * depth:
                    yield from inflight.popleft().result()
            while inflight:
                yield from inflight.popleft().result()
        except BaseException:
            # Ctrl-C, an error downstream or the consumer closing the stream: drop the images
            # read ahead instead of finishing them (each worker ends only its current image).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


@contextlib.contextmanager
def _torch_threads_for(threads: int) -> Iterator[None]:
    from fertool.core.env import torch_threads

    with torch_threads(threads):
        yield
