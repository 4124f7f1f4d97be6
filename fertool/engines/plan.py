"""Planning without reading: the list of inputs as Parquet plan files of paths, nothing decoded.

A plan is a folder of ``plan-NNNNN.parquet`` files with three columns, ``index`` (the walk
order), ``path`` (the file's name as bytes, so that names that are not UTF-8 survive) and
``todo`` (false for an input an earlier run already did: kept for the order of the merge), written
:data:`SHARD_PATHS` paths at a time while the walk goes on: memory holds one plan file's paths,
plus the set of paths an earlier run already did (``done``). Nothing is opened but folders,
except files of unknown extension in folders, whose first bytes are read to tell an image (as
the local engine does; ``by_extension`` avoids even that).

Inputs are local paths (walked with :func:`fertool.data.walk.iter_image_paths`) or fsspec URLs
(``s3://bucket/photos/``, ``gs://...``, ``file:///...``), listed with fsspec where the
filesystem's package is installed (s3fs, gcsfs, ...); in a URL folder only names with an image
extension are taken.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fertool.core.errors import FertoolError
from fertool.data.walk import WalkStats, iter_image_paths

#: Paths per plan file.
SHARD_PATHS = 10_000

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an fsspec URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and bool(_URL.match(path))


def url_filesystem(url: str):
    """``(filesystem, path)`` for an fsspec URL; a clear error when its package is missing."""
    try:
        import fsspec
    except ImportError:
        raise FertoolError(f"{url}: URLs need fsspec (pip install fsspec)") from None
    scheme = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise FertoolError(
            f"{url}: no filesystem for {scheme}:// ({exc}); install its fsspec package "
            "(s3fs for s3://, gcsfs for gs://, adlfs for az://)"
        ) from None


def iter_url_images(url: str, stats: WalkStats) -> Iterator[str]:
    """Image URLs under ``url``: the URL itself when it is a file, else the folder's image files
    (recursive, sorted; by extension only: nothing is opened)."""
    from fertool.core.io import is_image_path

    fs, path = url_filesystem(url)
    if not fs.isdir(path):
        yield url
        return
    for p in sorted(fs.find(path)):
        full = fs.unstrip_protocol(p)
        if is_image_path(p):
            yield full
        else:
            stats.skip(full, "not an image (by extension)")


def iter_inputs(
    inputs: Iterable[str | os.PathLike], stats: WalkStats, *, by_extension: bool = False
) -> Iterator[str]:
    """Every image of ``inputs`` (local paths and URLs, in the order given), as strings."""
    for item in inputs:
        if is_url(item):
            yield from iter_url_images(str(item), stats)
        else:
            yield from iter_image_paths([item], stats, by_extension=by_extension)


@dataclass
class Plan:
    """A written plan.

    Attributes
    ----------
    folder : Path
    files : list of Path
        The plan files, in walk order.
    inputs : int
        Every image path the walk gave (done or not).
    todo : int
        Those not in ``done``.
    resumed : int
        Those in ``done`` (skipped).
    stats : WalkStats
        What the walk skipped.
    """

    folder: Path
    files: list[Path] = field(default_factory=list)
    inputs: int = 0
    todo: int = 0
    resumed: int = 0
    stats: WalkStats = field(default_factory=WalkStats)


def plan_paths(
    paths: Iterable[str],
    folder: str | os.PathLike,
    done: set[str] | frozenset[str] = frozenset(),
    *,
    shard_paths: int = SHARD_PATHS,
    key=None,
) -> Plan:
    """Write ``paths`` (any iterable: a walk, a generator) as plan files in ``folder``.

    Paths in ``done`` (compared through ``key``, default the path itself) are kept with
    ``todo`` false (the merge needs their place in the order). Old plan files in ``folder`` are
    replaced. Memory: ``shard_paths`` paths at a time.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("plan-*.parquet"):
        old.unlink()
    plan = Plan(folder)
    schema = pa.schema([("index", pa.int64()), ("path", pa.binary()), ("todo", pa.bool_())])
    index: list[int] = []
    names: list[bytes] = []
    todo: list[bool] = []

    def flush() -> None:
        if not names:
            return
        target = folder / f"plan-{len(plan.files):05d}.parquet"
        tmp = target.with_name(target.name + ".tmp")
        table = pa.table({"index": index, "path": names, "todo": todo}, schema=schema)
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
        plan.files.append(target)
        index.clear()
        names.clear()
        todo.clear()

    for i, path in enumerate(paths):
        plan.inputs += 1
        new = not (done and (key(path) if key else path) in done)
        plan.todo += new
        plan.resumed += not new
        index.append(i)
        names.append(os.fsencode(path))
        todo.append(new)
        if len(names) >= shard_paths:
            flush()
    flush()
    return plan


def write_plan(
    inputs: Iterable[str | os.PathLike],
    folder: str | os.PathLike,
    done: set[str] | frozenset[str] = frozenset(),
    *,
    by_extension: bool = False,
    shard_paths: int = SHARD_PATHS,
    key=None,
) -> Plan:
    """Walk ``inputs`` (see :func:`iter_inputs`) into plan files; see :func:`plan_paths`."""
    stats = WalkStats()
    plan = plan_paths(
        iter_inputs(inputs, stats, by_extension=by_extension),
        folder,
        done,
        shard_paths=shard_paths,
        key=key,
    )
    plan.stats = stats
    return plan


def read_plan(plan: Plan) -> Iterator[tuple[int, str, bool]]:
    """``(index, path, todo)`` of every input of the plan, one plan file in memory at a time."""
    import pyarrow.parquet as pq

    for f in plan.files:
        t = pq.read_table(f)
        paths = map(os.fsdecode, t.column("path").to_pylist())
        yield from zip(t.column("index").to_pylist(), paths, t.column("todo").to_pylist())
