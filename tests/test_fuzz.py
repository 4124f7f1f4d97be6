"""Fuzzing with Hypothesis: random bytes behind image-like headers, random images of random
modes and sizes, random file names (control characters, bytes that are not UTF-8, names of up
to 255 bytes), through ``read_image``, the face stage and ``predict`` on a folder.

Invariants: nothing escapes but :class:`fertool.core.errors.FertoolError` (``ImageReadError``
for a file); every file is accounted for (a record, an output row or a named skipped file);
the outputs parse back with the same names.

Examples per target: ``FERTOOL_FUZZ_EXAMPLES`` (default 1000). Derandomized (the same examples
on every run) so that the suite is reproducible; set ``FERTOOL_FUZZ_RANDOM=1`` to explore.
Fast paths keep the run short: images are at most 40 pixels a side, the face stage runs as one
stream over all examples (one detector load), and ``predict``'s valid images come from a small
pool whose face-cache entries are made once, so ``predict`` never loads the detector.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from onnx_models import tiny_model

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fertool.core.errors import FertoolError, ImageReadError
from fertool.core.io import read_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = int(os.environ.get("FERTOOL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("FERTOOL_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
)

#: Starts of real formats (and a few near misses), followed by random bytes.
HEADERS = [
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\xff\xd8\xff\xe1",
    b"\xff\xd8",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"\x00\x00\x00\x1cftypavif",
    b"P6\n",
    b"P5\n32 32\n255\n",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"",
]
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"]


def _encode(mode: str, w: int, h: int, fmt: str, seed: int) -> bytes | None:
    """A real image of ``mode`` and size in ``fmt``, or None where the format cannot hold it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(
        "RGB" if mode in ("I;16", "I", "F") else mode
    )
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(rng.integers(0, 60000, (h, w)).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buf.getvalue()


@st.composite
def contents(draw, kinds=("header", "image", "image", "damaged")) -> bytes:
    """File contents: a header and random bytes, or a real tiny image, maybe damaged."""
    kind = draw(st.sampled_from(kinds))
    if kind == "header":
        return draw(st.sampled_from(HEADERS)) + draw(st.binary(max_size=300))
    data = None
    while data is None:
        data = _encode(
            draw(st.sampled_from(MODES)),
            draw(st.integers(1, 40)),
            draw(st.integers(1, 40)),
            draw(st.sampled_from(FORMATS)),
            draw(st.integers(0, 2**16)),
        )
    if kind == "damaged":
        action = draw(st.sampled_from(["cut", "flip", "size"]))
        if action == "cut":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif action == "flip":
            arr = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                arr[draw(st.integers(0, len(arr) - 1))] ^= 1 << draw(st.integers(0, 7))
            data = bytes(arr)
        elif data.startswith(b"\x89PNG"):  # a header that claims a huge size
            w, h = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
            ihdr = struct.pack(">II", w, h) + data[24:29]
            data = data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]
    return data


#: File names: any bytes but "/" and NUL, up to the 255-byte limit of most file systems.
NAME_BYTES = st.binary(min_size=1, max_size=250).map(
    lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_")
).filter(lambda b: b not in (b".", b".."))
EXTENSIONS = st.sampled_from([b".png", b".jpg", b".JPEG", b".gif", b".tif", b".webp", b".avif",
                              b"", b".txt", b".dat", b".jpg.partial"])


@st.composite
def file_names(draw) -> str:
    name = draw(NAME_BYTES)[: 255 - 12] + draw(EXTENSIONS)
    return os.fsdecode(name)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh empty folder per example (numbered: tmp_path_factory's own numbering rescans its
    folder each time, which grows quadratic over a thousand examples)."""
    base = tmp_path_factory.mktemp("fuzz")
    count = iter(range(10**9))

    def fresh() -> Path:
        folder = base / str(next(count))
        folder.mkdir()
        return folder

    return fresh


def _check_image_or_error(path: Path) -> str:
    try:
        img = read_image(path)
    except ImageReadError as exc:
        assert exc.path == str(path) and exc.reason
        return "error"
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0
    assert img.flags["C_CONTIGUOUS"]
    return "ok"


# --------------------------------------------------------------------------------------------
# read_image


@FUZZ
@given(data=contents(), name=file_names())
def test_read_image_raises_only_image_read_error(scratch, data, name):
    folder = scratch()
    path = folder / name
    path.write_bytes(data)
    try:
        _check_image_or_error(path)
    finally:
        shutil.rmtree(folder)


# --------------------------------------------------------------------------------------------
# The face stage, one stream over all examples (one detector)


class _Feed:
    """An endless iterator of paths pushed one at a time (the face stage pulls lazily)."""

    def __init__(self) -> None:
        self.next: str | None = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        path, self.next = self.next, None
        if path is None:
            raise StopIteration
        return path


@pytest.fixture(scope="module")
def face_stream(tmp_path_factory):
    from fertool.faces.stage import FaceConfig, extract_faces

    feed = _Feed()
    cache = tmp_path_factory.mktemp("face-cache")
    records = extract_faces(feed, FaceConfig(), cache_dir=cache, progress=False, device="cpu")
    yield feed, records
    records.close()


@FUZZ
@given(data=contents(kinds=("header", "header", "image", "damaged")), name=file_names())
def test_face_stage_gives_one_record_per_file(scratch, face_stream, data, name):
    feed, records = face_stream
    folder = scratch()
    path = folder / name
    path.write_bytes(data)
    try:
        feed.next = str(path)
        rec = next(records)
        assert rec.path == str(path)
        assert rec.status in ("ok", "fallback", "no_face", "error")
        readable = _check_image_or_error(path)
        if rec.status == "error":
            assert readable == "error" and str(path) in rec.message
        else:
            assert readable == "ok" and rec.crop is not None
            assert rec.crop.shape == (160, 160, 3) and rec.crop.dtype == np.uint8
        assert feed.next is None  # the stage took this file and no other
    finally:
        shutil.rmtree(folder)


# --------------------------------------------------------------------------------------------
# predict on a folder


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """The tiny model, a pool of valid images, and a face cache that already holds them."""
    from fertool.core.io import write_png
    from fertool.predict import predict_paths
    from fertool.serve.runtime import load

    root = tmp_path_factory.mktemp("predict-fuzz")
    model = load(tiny_model(root / "tiny.onnx"), providers="cpu")
    rng = np.random.default_rng(0)
    pool = []
    for i in range(6):
        p = write_png(root / "pool" / f"{i}.png", rng.integers(0, 256, (24, 32, 3), np.uint8))
        pool.append(p.read_bytes())
    cache = root / "cache"
    predict_paths([root / "pool"], model, root / "warm.csv", progress=False, cache_dir=cache)
    return model, pool, cache


@st.composite
def folders(draw, pool):
    """{relative name: bytes}: 1 to 5 files, maybe in a sub-folder, contents from the pool of
    cached images or image-like garbage."""
    n = draw(st.integers(1, 5))
    files = {}
    for _ in range(n):
        name = draw(file_names())
        if draw(st.booleans()):
            name = "sub/" + name
        valid = draw(st.booleans())
        files[name] = draw(st.sampled_from(pool)) if valid else (
            draw(st.sampled_from(HEADERS)) + draw(st.binary(max_size=200)))
    return files


def _read_back(out: Path, fmt: str) -> list[dict]:
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        if fmt == "csv":
            return list(csv.DictReader(fh))
        return [json.loads(line) for line in fh.read().split("\n") if line]


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["csv", "jsonl"]))
def test_predict_accounts_for_every_file(scratch, predictor, data, fmt):
    from fertool.predict import predict_paths

    model, pool, cache = predictor
    files = data.draw(folders(pool))
    root = scratch()
    try:
        folder = root / "in"
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        out = root / f"out.{fmt}"
        try:
            s = predict_paths([folder], model, out, progress=False, cache_dir=cache)
        except FertoolError as exc:  # only fertool's own errors may escape
            pytest.fail(f"predict raised on a valid output path: {exc}")
        rows = _read_back(out, fmt)
        written = {str(folder / n) for n in files}
        got = [r["path"] for r in rows]
        skipped = {p for p, _ in s.skipped}
        assert len(got) == len(set(got)) == s.images
        assert set(got) | skipped == written and not set(got) & skipped
        assert all(r["status"] in ("ok", "fallback", "error") for r in rows)
        assert sum(r["status"] == "error" for r in rows) == s.n_errors
        if skipped:
            listed = _read_back(s.skipped_file, "csv")
            assert {r["path"] for r in listed} == skipped
    finally:
        shutil.rmtree(root)
