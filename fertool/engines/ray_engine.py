"""``--engine ray``: predict (and embed) with Ray Data, on this machine or on a Ray cluster.

::

    fertool predict photos/ --model m.onnx --out photos.csv --engine ray --num-workers 2
    fertool predict s3://archive/2024/ --model m.onnx --out archive.parquet --engine ray \\
        --address ray://head:10001 --num-workers 64 --gpus-per-worker 0.25

The pipeline: the walk is written as plan files of paths (:mod:`fertool.engines.plan`; nothing
decoded), sent to Ray as Arrow blocks of paths; the face stage (decoding, detection, alignment,
the face cache) runs in a pool of CPU actors (:class:`FaceStageWorker`, one CPU each, the
detector loaded once per actor); the model runs in a pool of actors (:class:`PredictWorker`) that
each load the ONNX session once (CUDA when the actor is given a GPU); the driver collects whole
inputs into Parquet shards (:mod:`fertool.engines.shards`) and, for a ``.csv``/``.jsonl``
``--out``, merges them at the end in the walk order. Rows are the local engine's rows (same
columns, values and statuses: :func:`fertool.predict.prediction_row`).

Failures: a bad file is a row with status ``error``, as in the local engine; an exception in the
face stage for one file becomes that file's ``error`` row; an actor that dies (killed, out of
memory, a lost node) is restarted by Ray and its batch retried (``max_restarts``,
``max_task_retries``), and the driver keeps exactly one group of rows per input whatever the
retries. After an interruption ``--resume`` skips the inputs the shards hold.

Without ``--address`` a local Ray instance is started for the run, sized to the CPUs this
process may use, with the dashboard off and Ray's logs quiet, and shut down afterwards. On a
cluster, fertool (with the ``ray`` extra) must be installed on every node; the model travels to
the actors through Ray's object store, and the input files must be readable from every node
(a shared file system or URLs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError

if TYPE_CHECKING:  # pragma: no cover
    from fertool.faces.stage import FaceConfig
    from fertool.predict import PredictSummary

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
#: Plan rows (inputs) per face-stage task.
FACE_BATCH = 8
#: The local instance's object store (crops in flight; the streaming executor keeps it small).
LOCAL_OBJECT_STORE = 512 * 1024**2
MISSING_RAY = (
    "--engine ray needs Ray Data, which is not installed: pip install 'fertool[ray]' "
    "(or pip install 'ray[data]')"
)


def import_ray():
    """``ray`` with Ray Data, or a FertoolError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise FertoolError(MISSING_RAY) from None
    return ray


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address``, or start a local instance for the block.

    An instance already running in this process (``ray.init`` called by the caller) is used as
    it is and left running.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        if address:
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise FertoolError(f"--address {address}: cannot connect to Ray ({exc})") from None
        else:
            ray.init(
                num_cpus=num_cpus or available_cpus(),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE,
                **quiet,
            )
        started = True
    for name in ("ray", "ray.data"):  # the full logs stay in Ray's session folder
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------------------------
# The face stage (CPU actors)


def _face_columns(size: int, n: int) -> dict[str, np.ndarray]:
    return {
        "_key": np.empty(n, dtype=object),
        "_pos": np.zeros(n, np.int64),
        "_n": np.zeros(n, np.int64),
        "path": np.empty(n, dtype=object),
        "status": np.empty(n, dtype=object),
        "message": np.empty(n, dtype=object),
        "n_faces": np.zeros(n, np.int64),
        "face_index": np.zeros(n, np.int64),
        "box": np.full((n, 4), np.nan),
        "face_score": np.full(n, np.nan),
        "has_crop": np.zeros(n, bool),
        "crop": np.zeros((n, size, size, 3), np.uint8),
    }


class FaceStageWorker:
    """Ray Data callable: plan rows (``path`` bytes, ``todo``) in, face records out (one row per
    record, the crop as a fixed-size uint8 tensor, ``has_crop`` false for none)."""

    def __init__(
        self,
        face: dict,
        all_faces: bool = False,
        use_cache: bool = True,
        cache_dir: str | None = None,
        threads: int | None = 1,
    ):
        from fertool.faces.stage import FaceConfig

        self.config = FaceConfig.from_dict(face)
        self.all_faces = all_faces
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self.threads = threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from fertool.core.env import torch_threads
        from fertool.engines.shards import path_key

        paths = [os.fsdecode(p) for p, todo in zip(batch["path"], batch["todo"]) if todo]
        groups: list[tuple[str, list]] = []
        with torch_threads(self.threads):
            for path in paths:
                groups.append((path, self._records(path)))
        n = sum(len(g) for _, g in groups)
        out = _face_columns(self.config.size, n)
        i = 0
        for path, records in groups:
            key = path_key(path)
            for pos, rec in enumerate(records):
                out["_key"][i], out["_pos"][i], out["_n"][i] = key, pos, len(records)
                out["path"][i] = path_key(rec.path)
                out["status"][i], out["message"][i] = rec.status, rec.message
                out["n_faces"][i], out["face_index"][i] = rec.n_faces, rec.face_index
                if rec.box is not None:
                    out["box"][i] = rec.box
                if rec.score is not None:
                    out["face_score"][i] = rec.score
                if rec.crop is not None:
                    out["has_crop"][i] = True
                    out["crop"][i] = rec.crop
                i += 1
        return out

    def _records(self, path: str) -> list:
        """The face stage's records for one input; never raises (an error record instead)."""
        from fertool.engines.plan import is_url
        from fertool.faces.stage import extract_faces
        from fertool.faces.types import error_record

        local, tmp = path, None
        try:
            if is_url(path):
                local, tmp = _fetch(path)
            records = list(
                extract_faces(
                    [local],
                    self.config,
                    cache_dir=self.cache_dir,
                    use_cache=self.use_cache,
                    all_faces=self.all_faces,
                    progress=False,
                    device="cpu",
                )
            )
        except Exception as exc:  # noqa: BLE001 - one input's failure is its row, not the job's
            return [error_record(path, f"face stage failed ({type(exc).__name__}: {exc})")]
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        if local != path:
            for rec in records:
                rec.path = path
                rec.message = rec.message.replace(local, path)
        return records or [error_record(path, "the face stage gave no record")]


def _fetch(url: str) -> tuple[str, str]:
    """Copy a URL's bytes into a temporary file (same name); returns (file, its folder)."""
    from fertool.engines.plan import url_filesystem

    fs, path = url_filesystem(url)
    tmp = tempfile.mkdtemp(prefix="fertool-url-")
    local = os.path.join(tmp, os.path.basename(path.rstrip("/")) or "input")
    try:
        fs.get_file(path, local)
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise their own types
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"cannot fetch ({exc})") from None
    return local, tmp


# --------------------------------------------------------------------------------------------
# The model (actors, a GPU each when asked)


def _materialise(model: dict[str, Any]) -> tuple[str, str]:
    """Write a model sent as bytes (and its sidecar) into a temporary folder; (path, folder)."""
    tmp = tempfile.mkdtemp(prefix="fertool-model-")
    path = os.path.join(tmp, model["name"])
    Path(path).write_bytes(model["onnx"])
    if model.get("sidecar") is not None:
        Path(path).with_suffix(".json").write_bytes(model["sidecar"])
    return path, tmp


def model_payload(path: str | os.PathLike) -> dict[str, Any]:
    """The model file (and its JSON sidecar) as bytes, to send to actors on any node."""
    from fertool.serve.onnxmeta import sidecar_path

    p = Path(path)
    if not p.is_file():
        raise FertoolError(f"model {p} not found (make one with: fertool export-onnx RUN_DIR)")
    side = Path(sidecar_path(p))
    return {
        "name": p.name,
        "onnx": p.read_bytes(),
        "sidecar": side.read_bytes() if side.is_file() else None,
    }


class PredictWorker:
    """Ray Data callable: face records in, the local engine's rows out (one per record)."""

    def __init__(self, model: dict, providers: str, threads: int | None, batch_size: int):
        from fertool.serve.runtime import load

        path, self._tmp = _materialise(model)
        self.model = load(path, providers=providers, threads=threads)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        from fertool.engines.shards import shard_schema
        from fertool.faces.types import FaceRecord
        from fertool.predict import prediction_row

        records = []
        for i in range(len(batch["path"])):
            box = batch["box"][i]
            score = batch["face_score"][i]
            records.append(
                FaceRecord(
                    str(batch["path"][i]),
                    str(batch["status"][i]),
                    str(batch["message"][i]),
                    int(batch["n_faces"][i]),
                    int(batch["face_index"][i]),
                    None if np.isnan(box[0]) else tuple(float(v) for v in box),
                    None if np.isnan(score) else float(score),
                    None,
                    batch["crop"][i] if batch["has_crop"][i] else None,
                )
            )
        preds = self.model.predict_records(records, batch_size=self.batch_size)
        rows = [prediction_row(p, self.model.labels, "csv") for p in preds]
        for row, i in zip(rows, range(len(rows))):
            row["_key"] = str(batch["_key"][i])
            row["_pos"] = int(batch["_pos"][i])
            row["_n"] = int(batch["_n"][i])
        schema = shard_schema(self.model.labels)
        for name, kind in (("_key", pa.string()), ("_pos", pa.int64()), ("_n", pa.int64())):
            schema = schema.append(pa.field(name, kind))
        return pa.Table.from_pylist(rows, schema=schema)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class RayOptions:
    """How the Ray engine runs.

    Attributes
    ----------
    address : str, optional
        A Ray cluster (``ray://host:10001``, ``auto``); None starts a local instance.
    num_workers : int
        Face-stage actors (one CPU each) and model actors (``gpus_per_worker`` GPUs each).
    gpus_per_worker : float
        GPUs per model actor (fractions share a GPU); 0 runs the model on the CPU.
    num_cpus : int, optional
        CPUs of the local instance (default: those this process may use).
    """

    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise FertoolError(f"--num-workers {self.num_workers}: expected at least 1")
        if self.gpus_per_worker < 0:
            raise FertoolError(f"--gpus-per-worker {self.gpus_per_worker}: expected 0 or more")


def _plan_blocks(ray, files: Sequence[Path], todo: int, workers: int) -> Iterator[Any]:
    """The plan as object-store blocks small enough that every actor gets work (about 16 blocks
    per worker, :data:`FACE_BATCH` to 1024 inputs each); one plan file read at a time."""
    import pyarrow.parquet as pq

    rows = min(1024, max(FACE_BATCH, -(-todo // (16 * workers))))
    for f in files:
        table = pq.read_table(f)
        for start in range(0, len(table), rows):
            yield ray.put(table.slice(start, rows))


def face_stage(ray, ds, worker, kwargs: dict, options: RayOptions):
    """``ds`` through the CPU stage: a pool of ``options.num_workers`` ``worker`` actors (one
    CPU each), :data:`FACE_BATCH` inputs per call. Ray Data restarts a dead actor and retries its
    batch by default (max_restarts=-1, max_task_retries=-1 for actor pools)."""
    return ds.map_batches(
        worker,
        fn_constructor_kwargs=kwargs,
        batch_size=FACE_BATCH,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.num_workers),
        num_cpus=1,
    )


def model_stage(ray, ds, worker, kwargs: dict, options: RayOptions, batch_size: int):
    """``ds`` through the model stage: ``options.num_workers`` ``worker`` actors with
    ``options.gpus_per_worker`` GPUs each (none: on the CPU, reserving none, so that the face
    stage keeps the cores), ``batch_size`` records per call."""
    gpu = options.gpus_per_worker > 0
    return ds.map_batches(
        worker,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.num_workers),
        num_cpus=0,
        num_gpus=options.gpus_per_worker if gpu else None,
    )


def shard_dir(out: str | os.PathLike) -> Path:
    """Where the shards of ``out`` go: ``out`` itself for a ``.parquet`` output, else
    ``OUT.parquet`` beside it (``photos.csv`` -> ``photos.csv.parquet/``)."""
    p = Path(out)
    return p if p.suffix.lower() == ".parquet" else p.with_name(p.name + ".parquet")


def plan_dir(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.name + ".plan")


def _check_outputs(out: Path, shards: Path, resume: bool, force: bool) -> None:
    from fertool.engines.shards import shard_files

    if force:
        for f in shard_files(shards):
            f.unlink()
        if out != shards and out.is_file():
            out.unlink()
        return
    if resume:
        return
    if out != shards and out.exists():
        raise FertoolError(
            f"{out} already exists; use --force to overwrite it or --resume to add what it lacks"
        )
    if shard_files(shards):
        raise FertoolError(
            f"{shards} holds the shards of an earlier run; use --resume to continue it or "
            "--force to start again"
        )


def predict_paths_ray(
    inputs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: RayOptions | None = None,
    fmt: str | None = None,
    all_faces: bool = False,
    batch_size: int = 32,
    resume: bool = False,
    force: bool = False,
    face: FaceConfig | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    providers: str = "auto",
    threads: int | None = None,
    detector_threads: int | None = 1,
    progress: bool = True,
    by_extension: bool = False,
) -> PredictSummary:
    """:func:`fertool.predict.predict_paths` on Ray: same rows, Parquet shards, CSV/JSONL.

    Parameters are those of :func:`fertool.predict.predict_paths`, except ``model_path`` (the
    ``.onnx`` file: each model actor loads it once) and ``options`` (:class:`RayOptions`).
    ``out`` may also be a ``.parquet`` folder: then the shards are the output and no CSV/JSONL
    is written. ``threads`` is onnxruntime's per model actor (default 1 on the CPU).

    Returns
    -------
    PredictSummary
        As the local engine's; ``images`` counts the inputs done in this run.
    """
    from tqdm import tqdm

    from fertool.engines.plan import read_plan, write_plan
    from fertool.engines.shards import Collector, ShardWriter, done_keys, merge, path_key
    from fertool.predict import MAX_LISTED_ERRORS, PredictSummary, output_format, write_skipped
    from fertool.serve.runtime import load

    options = options or RayOptions()
    if batch_size < 1:
        raise FertoolError(f"--batch-size {batch_size}: expected at least 1")
    if resume and force:
        raise FertoolError("--resume and --force contradict each other; choose one")
    out = Path(out)
    shards = shard_dir(out)
    fmt = None if out == shards else output_format(out, fmt)
    payload = model_payload(model_path)
    probe = load(model_path, providers="cpu", threads=1)  # labels and face settings, and a check
    labels, face = probe.labels, face or probe.face_config
    del probe
    _check_outputs(out, shards, resume, force)

    done = done_keys(shards) if resume else set()
    plan = write_plan(inputs, plan_dir(out), done, by_extension=by_extension, key=path_key)
    summary = PredictSummary(out, resumed=plan.resumed)
    summary.non_images = plan.stats.non_images
    summary.skipped = [tuple(e) for e in plan.stats.skipped]
    summary.unreadable_folders = list(plan.stats.unreadable_folders)
    writer = ShardWriter(shards, labels)
    collector = Collector(writer, done)
    status: Counter[str] = Counter()
    gpu = options.gpus_per_worker > 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=plan.inputs,
        initial=plan.resumed,
        desc="predict (ray)",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with ray_session(options.address, options.num_cpus) as ray:
            if plan.todo:
                blocks = list(_plan_blocks(ray, plan.files, plan.todo, options.num_workers))
                ds = face_stage(
                    ray,
                    ray.data.from_arrow_refs(blocks),
                    FaceStageWorker,
                    {
                        "face": face.to_dict(),
                        "all_faces": all_faces,
                        "use_cache": use_cache,
                        "cache_dir": None if cache_dir is None else str(cache_dir),
                        "threads": detector_threads,
                    },
                    options,
                )
                ds = model_stage(
                    ray,
                    ds,
                    PredictWorker,
                    {
                        "model": payload,
                        "providers": ("cuda" if providers == "auto" else providers)
                        if gpu
                        else "cpu",
                        "threads": threads or (None if gpu else 1),
                        "batch_size": batch_size,
                    },
                    options,
                    batch_size,
                )
                for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for row in table.to_pylist():
                        rows = collector.add(row)
                        if rows is None:
                            continue
                        summary.images += 1
                        summary.rows += len(rows)
                        for r in rows:
                            status[r["status"]] += 1
                        if rows[0]["status"] == "error":
                            summary.n_errors += 1
                            if len(summary.errors) < MAX_LISTED_ERRORS:
                                summary.errors.append((rows[0]["path"], rows[0]["message"]))
                        bar.update(1)
    finally:
        writer.flush()
        bar.close()
        summary.seconds = time.perf_counter() - t0
        summary.status = dict(status)
    if collector.pending:  # cannot happen unless Ray lost rows; say so rather than hide it
        raise FertoolError(
            f"{len(collector.pending)} inputs came back incomplete from Ray (first: "
            f"{next(iter(collector.pending))}); run again with --resume to redo them"
        )
    if fmt is not None:
        order = ((i, path_key(p)) for i, p, _ in read_plan(plan))
        merge(shards, order, out, fmt, labels)
    shutil.rmtree(plan.folder, ignore_errors=True)
    folders = [(f, f"cannot read folder ({why})") for f, why in summary.unreadable_folders]
    summary.skipped_file = write_skipped(out, summary.skipped + folders)
    return summary
