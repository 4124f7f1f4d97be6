"""Issue 14: nothing a folder can hold hangs or crashes a batch.

Regression tests on generated files: a real named pipe (and socket, device link, link loop)
called ``*.jpg``, real file names with a newline and other user data, an AVIF image and a JPEG
without an extension, each through the walker, read_image, the CLI and the writers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from badfiles import (
    BY_CONTENT_KINDS,
    MORE_BAD_KINDS,
    MORE_ODD_KINDS,
    MORE_SHAPE,
    NOT_REGULAR_KINDS,
    make_more_corpus,
)
from onnx_models import REPO, tiny_model

from fertool.core.errors import ImageReadError
from fertool.core.io import printable, read_image, sha256_file, write_png

#: Names a user's folder may hold: newline, carriage return, tab, escape, quotes, commas, a
#: leading dash, non-ASCII, a byte that is not UTF-8, a very long name.
ODD_NAMES = [
    "line\nbreak.png",
    "carriage\rreturn.png",
    "tab\there.png",
    "esc\x1b[31mred.png",
    'quote"and,comma.png',
    "'single'.png",
    "-leading-dash.png",
    "--also.png",
    "visage été 表情.png",
    os.fsdecode(b"latin1-\xe9t\xe9.png"),  # not UTF-8: a lone surrogate in Python
    "x" * 240 + ".png",
]


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() of a pipe."""

    def fire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def more(tmp_path_factory):
    folder = tmp_path_factory.mktemp("more")
    return folder, make_more_corpus(folder)


def _photo(path: Path, label: str = "happy", seed: int = 0) -> np.ndarray:
    from fertool.data.synthetic import make_image

    image, _ = make_image(label, np.random.default_rng(seed), 256, 192)
    write_png(path, image)
    return image


# --------------------------------------------------------------------------------------------
# 1. Pipes, sockets, devices: reported, never opened


def test_read_image_refuses_special_files_without_opening_them(more):
    folder, files = more
    with deadline(20):
        for name, kind in files.items():
            if kind not in MORE_BAD_KINDS:
                continue
            with pytest.raises(ImageReadError) as info:
                read_image(folder / name)
            assert info.value.path.endswith(name), kind
            if kind in ("fifo-named-jpg", "link-to-fifo"):
                assert "named pipe" in info.value.reason
            if kind == "link-to-device":
                assert "device" in info.value.reason
            if kind == "link-loop":
                assert "loop" in info.value.reason
        for kind in ("fifo-named-jpg", "socket-named-png", "link-to-device"):
            (name,) = [n for n, k in files.items() if k == kind]
            with pytest.raises(OSError, match="not a regular file"):
                sha256_file(folder / name)


def test_odd_valid_files_decode(more):
    folder, files = more
    assert {k for k in files.values() if k in MORE_ODD_KINDS} >= MORE_ODD_KINDS - {
        "avif", "jpeg2000", "animated-webp"  # only where this Pillow writes them
    }
    for name, kind in files.items():
        if kind in MORE_ODD_KINDS:
            img = read_image(folder / name)
            assert img.dtype == np.uint8 and img.shape == (*MORE_SHAPE[kind], 3), kind


def test_walker_skips_special_files_by_name_and_reads_by_content(more):
    from fertool.data.walk import WalkStats, iter_image_paths

    folder, files = more
    with deadline(20):
        stats = WalkStats(non_image_paths=[])
        got = {Path(p).name for p in iter_image_paths([folder], stats)}
        skipped = {Path(p).name: why for p, why in stats.skipped}
        assert set(stats.non_image_paths) == {p for p, _ in stats.skipped}
        assert stats.non_images == len(stats.skipped)
        for name, kind in files.items():
            if kind in NOT_REGULAR_KINDS:
                assert name in skipped and name not in got, kind
            else:
                assert name in got and name not in skipped, kind  # link loops get an error row
        assert "named pipe" in skipped["pipe.jpg"] and "not opened" in skipped["pipe.jpg"]
        assert "folder" in skipped["folder-link.jpg"]

        stats = WalkStats()
        by_ext = {Path(p).name for p in iter_image_paths([folder], stats, by_extension=True)}
    content_only = {n for n, k in files.items() if k in BY_CONTENT_KINDS}
    assert content_only <= got and not content_only & by_ext
    assert {Path(p).name for p, why in stats.skipped if "by extension" in why} == content_only


@pytest.mark.slow
def test_cli_predict_on_a_folder_with_a_pipe_finishes_and_names_what_it_skipped(tmp_path):
    """The issue's case 1 and 5 end to end: a FIFO called something.jpg, an AVIF photo, a JPEG
    without an extension, two non-images; ``fertool predict`` as a user runs it."""
    from PIL import Image, features

    folder = tmp_path / "photos"
    folder.mkdir()
    image = _photo(folder / "ok.png")
    os.mkfifo(folder / "something.jpg")
    Image.fromarray(image).save(folder / "IMG_0001", format="JPEG")
    if features.check("avif"):
        Image.fromarray(image).save(folder / "photo.avif", format="AVIF")
    (folder / "notes.txt").write_text("notes")
    (folder / "data.bin").write_bytes(bytes(range(256)))
    model = tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "pred.csv"
    cmd = [sys.executable, "-m", "fertool", "predict", str(folder), "--model", str(model),
           "--out", str(out), "-q", "--providers", "cpu"]
    res = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    with open(out, newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    expected = {"ok.png", "IMG_0001"} | ({"photo.avif"} if features.check("avif") else set())
    assert set(rows) == expected
    assert all(r["status"] in ("ok", "fallback") for r in rows.values())
    assert "skipped 3 files" in res.stdout
    for name in ("something.jpg", "notes.txt", "data.bin"):
        assert str(folder / name) in res.stdout
    assert "named pipe (FIFO), not a regular file (not opened)" in res.stdout
    with open(tmp_path / "pred.skipped.csv", newline="") as fh:
        listed = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    assert set(listed) == {"something.jpg", "notes.txt", "data.bin"}
    assert listed["notes.txt"] == "not an image (by content)"


# --------------------------------------------------------------------------------------------
# 2. Names are user data


def test_printable_escapes_control_characters_only():
    assert printable("visage été 表情 \"q\", -x.png") == "visage été 表情 \"q\", -x.png"
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("esc\x1b[0m") == "esc\\x1b[0m"
    assert printable(os.fsdecode(b"\xff.png")) == "\\xff.png"
    assert printable("zero\u200bwidth\u2028sep") == "zero\\u200bwidth\\u2028sep"
    for name in ODD_NAMES:
        shown = printable(name)
        assert shown.isprintable() and "\n" not in shown
        shown.encode("utf-8")  # no lone surrogate left


def test_contact_sheet_draws_any_caption():
    from fertool.faces.contact import contact_sheet

    tiles = [np.zeros((20, 20, 3), np.uint8)] * len(ODD_NAMES)
    sheet = contact_sheet(tiles, ["ok"] * len(ODD_NAMES), [Path(n).stem for n in ODD_NAMES],
                          title="data\nwith a newline")
    assert sheet.dtype == np.uint8 and sheet.ndim == 3


def test_predict_outputs_round_trip_odd_names(tmp_path):
    """CSV and JSONL (and resuming from them) keep every name exactly."""
    from fertool.predict import predict_paths
    from fertool.serve.runtime import load

    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ODD_NAMES:
        write_png(folder / name, rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    model = load(tiny_model(tmp_path / "tiny.onnx"), providers="cpu")
    expected = sorted(str(folder / n) for n in ODD_NAMES)
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"pred.{fmt}"
        predict_paths([folder], model, out, progress=False, use_cache=False)
        assert _paths(out) == expected, fmt
        # A resumed run reads the names back from its own output.
        s = predict_paths([folder], model, out, progress=False, use_cache=False, resume=True)
        assert s.resumed == len(ODD_NAMES) - 1 and s.images == 1, fmt
        assert _paths(out) == expected, fmt


def _paths(out: Path) -> list[str]:
    """The path column, read back as a user's script would (UTF-8, names' own bytes kept)."""
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        if out.suffix == ".csv":
            return [r["path"] for r in csv.DictReader(fh)]
        return [json.loads(line)["path"] for line in fh.read().split("\n") if line]


@pytest.mark.slow
def test_cli_faces_with_odd_names_and_a_pipe(tmp_path):
    """The issue's case 2 end to end: faces.csv, the contact sheet and faces.json are written,
    names round-trip in faces.csv, the summary shows control characters escaped."""
    data = tmp_path / "data"
    for i, name in enumerate(ODD_NAMES[:6] + ODD_NAMES[8:10]):
        label = ("Happy", "Sad")[i % 2]
        (data / label).mkdir(parents=True, exist_ok=True)
        _photo(data / label / name, label.lower(), seed=i)
    os.mkfifo(data / "Happy" / "pipe.jpg")
    out = tmp_path / "faces"
    cmd = [sys.executable, "-m", "fertool", "faces", "--data", str(data), "--out", str(out),
           "--no-cache"]
    res = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert (out / "contact_sheet.png").is_file() and (out / "faces.json").is_file()
    with open(out / "faces.csv", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = {Path(r["path"]).name for r in rows}
    assert set(ODD_NAMES[:6] + ODD_NAMES[8:10]) <= names
    for r in rows:
        if r["crop"]:
            assert (out / r["crop"]).is_file()
    stdout = res.stdout.decode("utf-8", errors="surrogateescape")
    assert "pipe.jpg" in stdout  # an error row or a skipped file, named either way
    assert "\x1b" not in stdout
