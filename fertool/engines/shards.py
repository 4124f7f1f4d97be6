"""Results as Parquet shards: one writer, exactly one row group per input, resume, the merge.

The driver is the only writer. Rows reach it in any order (several actors, retries after a lost
worker); :class:`Collector` holds an input's rows until it has all of them (the face stage tells
how many each input has), drops any row of an input it has already written, and hands whole
inputs to :class:`ShardWriter`, which writes ``part-NNNNN.parquet`` files atomically (a temporary
name that Parquet readers ignore, then a rename). So a shard never holds half an input, an input
is never in two shards of one run, and after a kill the shards hold whole inputs only:
``--resume`` skips the inputs they name (:func:`done_keys`). :func:`merge` still keeps one shard's
rows per input (the first), in case shards of two runs overlap.

Shard columns are exactly the CSV columns of :func:`fertool.predict.columns` (the same names,
values and statuses as the local engine's rows). A file name that is not valid UTF-8 is written
with backslash escapes (:func:`path_key`); the local engine writes its bytes as they are.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fertool.predict import columns, format_rows

#: Rows per shard (a shard is also written every :data:`FLUSH_SECONDS`, so a kill loses little).
SHARD_ROWS = 5_000
FLUSH_SECONDS = 10.0


def path_key(path: str) -> str:
    """The text of ``path`` in shards: itself, or with backslash escapes for bytes that are not
    UTF-8 (a name read with ``surrogateescape``)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shard_schema(labels: Sequence[str]):
    """The Arrow schema of a shard: :func:`fertool.predict.columns` (CSV layout), typed."""
    import pyarrow as pa

    ints = {"face_index", "n_faces"}
    strings = {"path", "label", "status", "message"}
    return pa.schema(
        [
            (c, pa.int64() if c in ints else pa.string() if c in strings else pa.float64())
            for c in columns(labels, "csv")
        ]
    )


def shard_files(folder: str | os.PathLike) -> list[Path]:
    return sorted(Path(folder).glob("part-*.parquet"))


def done_keys(folder: str | os.PathLike) -> set[str]:
    """The inputs (their :func:`path_key`) the shards in ``folder`` hold."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for f in shard_files(folder):
        done.update(pq.read_table(f, columns=["path"]).column("path").to_pylist())
    return done


class ShardWriter:
    """Writes whole inputs' rows to numbered shards in ``folder`` (numbers go on after those an
    earlier run left)."""

    def __init__(self, folder: str | os.PathLike, labels: Sequence[str]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob(".part-*.tmp"):
            tmp.unlink()
        self.schema = shard_schema(labels)
        existing = shard_files(self.folder)
        self.seq = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        self.rows: list[dict[str, Any]] = []
        self.written: list[Path] = []
        self.last = time.monotonic()

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= SHARD_ROWS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.last = time.monotonic()
        if not self.rows:
            return
        target = self.folder / f"part-{self.seq:05d}.parquet"
        tmp = self.folder / f".{target.name}.tmp"
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        self.written.append(target)
        self.seq += 1
        self.rows = []


class Collector:
    """Groups rows by input until complete; exactly one group per input reaches the writer.

    Rows carry ``_key`` (the input), ``_pos`` (the record's place among the input's records) and
    ``_n`` (how many records the input has), besides the shard columns. Without a writer the
    complete groups are only returned by :meth:`add`.
    """

    def __init__(self, writer: ShardWriter | None, done: set[str] | None = None):
        self.writer = writer
        self.done = set() if done is None else done
        self.pending: dict[str, dict[int, dict[str, Any]]] = {}
        self.duplicates = 0

    def add(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Take one row; returns the input's rows (in record order) when it is complete."""
        key, pos, n = row.pop("_key"), row.pop("_pos"), row.pop("_n")
        if key in self.done:
            self.duplicates += 1
            return None
        group = self.pending.setdefault(key, {})
        if pos in group:
            self.duplicates += 1
            return None
        group[pos] = row
        if len(group) < n:
            return None
        del self.pending[key]
        self.done.add(key)
        rows = [group[i] for i in sorted(group)]
        if self.writer is not None:
            self.writer.add(rows)
        return rows


def merge(
    folder: str | os.PathLike,
    order: Iterable[tuple[int, str]],
    out: str | os.PathLike,
    fmt: str,
    labels: Sequence[str],
) -> int:
    """Write the shards' rows to ``out`` (CSV or JSONL, atomically) in the walk order.

    ``order`` gives ``(index, path key)`` for the inputs of the walk; an input the shards hold
    twice keeps the rows of its first shard; inputs not in ``order`` (gone since an earlier run)
    come last, in shard order. Returns the number of rows written.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fertool.core.io import atomic_write

    cols = columns(labels, fmt)
    parts = []
    for k, f in enumerate(shard_files(folder)):
        t = pq.read_table(f)
        t = t.append_column("_shard", pa.array([k] * len(t), pa.int64()))
        parts.append(t.append_column("_row", pa.array(range(len(t)), pa.int64())))
    with atomic_write(out, "w") as fh:
        if fmt == "csv":
            fh.write(",".join(cols) + "\n")
        if not parts:
            return 0
        table = pa.concat_tables(parts)
        first = table.group_by("path").aggregate([("_shard", "min")])
        table = table.join(first, "path")
        table = table.filter(pc.equal(table["_shard"], table["_shard_min"]))
        idx, keys = [], []
        for i, key in order:
            idx.append(i)
            keys.append(key)
        plan = pa.table({"_index": pa.array(idx, pa.int64()), "path": pa.array(keys, pa.string())})
        table = table.join(plan, "path", join_type="left outer")
        last = pa.scalar(2**62, pa.int64())
        table = table.set_column(
            table.schema.get_field_index("_index"), "_index", pc.fill_null(table["_index"], last)
        )
        table = table.sort_by(
            [("_index", "ascending"), ("_shard", "ascending"), ("_row", "ascending")]
        )
        csv_cols = columns(labels, "csv")
        n = 0
        for batch in table.select(csv_cols).to_batches(max_chunksize=10_000):
            rows = batch.to_pylist()
            if fmt == "jsonl":
                rows = [_jsonl_row(r, cols) for r in rows]
            fh.write(format_rows(rows, fmt))
            n += len(rows)
    return n


def _jsonl_row(row: dict[str, Any], cols: list[str]) -> dict[str, Any]:
    """A shard row (CSV layout) in the JSONL layout: the four box values as one ``box`` list."""
    box = [row.pop(k) for k in ("x1", "y1", "x2", "y2")]
    row["box"] = None if box[0] is None else box
    return {c: row[c] for c in cols}
