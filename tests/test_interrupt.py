"""Interrupt safety beyond training: SIGKILL in the middle of ``fertool faces`` (face-cache and
crop writes) and of ``fertool compare-baselines`` (face cache, report), then a rerun.

Checked after each kill: every file under a final name is complete (cache entries load, crops
decode, no report or CSV at all, or a complete one); after the rerun: the results are identical
to those of an uninterrupted run on a fresh cache. Generated data (fertool.data.synthetic),
small: 14 frames.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx_models import REPO

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fertool.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("interrupt")
    return make_dataset(root / "data", n_per_class=2, seed=5, width=192, height=144,
                        n_groups=4, multi_face_rate=0.0)


def _fertool(*args: str) -> list[str]:
    return [sys.executable, "-m", "fertool", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _cache_entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("faces/*/*/*.npz")) if cache.is_dir() else []


def _kill_after(cmd: list[str], ready, timeout: float = 300) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; return how many polls it took
    (the test fails if the command finished first: then nothing was interrupted)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env())
    t0, polls = time.monotonic(), 0
    try:
        while not ready():
            polls += 1
            assert proc.poll() is None, "the command finished before it could be interrupted"
            assert time.monotonic() - t0 < timeout, "the command made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return polls


def _check_complete_files(*folders: Path) -> list[Path]:
    """Every file under a final name in ``folders`` is complete; returns the temporary files an
    atomic write left behind (a SIGKILL cannot remove them; they never carry a final name)."""
    from fertool.core.io import read_image

    leftovers = []
    for folder in folders:
        for p in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if not p.is_file():
                continue
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                leftovers.append(p)
            elif p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    for key in z.files:
                        z[key].sum()  # decompresses every array: fails on a cut file
            elif p.suffix == ".png":
                read_image(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix in (".csv", ".md"):
                assert p.read_text().endswith("\n"), p
    return leftovers


def _tree(folder: Path, skip=()) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def test_faces_killed_then_rerun_equals_an_uninterrupted_run(data, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    cmd = _fertool("faces", "--data", str(data), "--out", str(out), "--cache-dir", str(cache))
    _kill_after(cmd, lambda: len(_cache_entries(cache)) >= 4)
    n_cached = len(_cache_entries(cache))
    assert 4 <= n_cached < 14
    leftovers = _check_complete_files(cache, out)
    assert not (out / "faces.csv").exists() and not (out / "faces.json").exists()

    _run([*cmd, "--force"])  # the rerun takes the cached entries and does the rest
    assert len(_cache_entries(cache)) == 14
    clean_cache, clean = tmp_path / "clean-cache", tmp_path / "clean"
    _run(_fertool("faces", "--data", str(data), "--out", str(clean), "--cache-dir",
                  str(clean_cache)))
    got, want = _tree(out, skip={"faces.json"}), _tree(clean, skip={"faces.json"})
    # A temporary file the kill cut short stays where it was, under its hidden temporary name;
    # everything else must be byte-identical to the uninterrupted run.
    stale = {p.relative_to(out).as_posix() for p in leftovers if out in p.parents}
    assert stale <= got.keys()
    got = {k: v for k, v in got.items() if k not in stale}
    assert got.keys() == want.keys() and got == want  # faces.csv, crops, contact sheet
    a, b = (json.loads((d / "faces.json").read_text()) for d in (out, clean))
    assert a["counts"] == b["counts"] and a["face_config"] == b["face_config"]
    entries = {p.relative_to(cache) for p in _cache_entries(cache)}
    assert entries == {p.relative_to(clean_cache) for p in _cache_entries(clean_cache)}
    # Leftover temporary files (if the kill hit a write) are not under final names.
    assert all(not p.name.endswith(".npz") for p in leftovers)
    print(f"faces: killed with {n_cached}/14 cache entries, {len(leftovers)} temporary files left; "
          f"rerun == uninterrupted: {len(got)} files identical")


def _results(report: Path) -> list[dict]:
    """The results of a report without what legitimately differs between runs (timings)."""
    rows = json.loads(report.read_text())["results"]
    for r in rows:
        r.pop("seconds", None)
        for fold in r.get("folds", []):
            fold.pop("seconds", None)
    return rows


def test_compare_killed_then_rerun_equals_an_uninterrupted_run(data, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    cmd = _fertool("compare-baselines", "--data", str(data), "--out", str(out), "--protocol",
                   "paper", "--seeds", "0", "--methods", "lpq", "--cv", "2", "--cache-dir",
                   str(cache))
    _kill_after(cmd, lambda: len(_cache_entries(cache)) >= 4)
    first = len(_cache_entries(cache))
    leftovers = _check_complete_files(cache, out)
    assert not (out / "report.json").exists() and not (out / "report.md").exists()

    # Second kill: after the faces, while fitting or writing the report.
    _kill_after([*cmd, "--force"], lambda: len(_cache_entries(cache)) == 14)
    leftovers += _check_complete_files(cache, out)
    report = out / "report.json"
    second = report.exists()
    assert not second or json.loads(report.read_text())["results"]

    _run([*cmd, "--force"])
    clean = tmp_path / "clean"
    _run(_fertool("compare-baselines", "--data", str(data), "--out", str(clean), "--protocol",
                  "paper", "--seeds", "0", "--methods", "lpq", "--cv", "2", "--cache-dir",
                  str(tmp_path / "clean-cache")))
    assert _results(report) == _results(clean / "report.json")
    a, b = (json.loads((d / "report.json").read_text()) for d in (out, clean))
    assert a["split_hash"] == b["split_hash"] and a["faces"] == b["faces"]
    stale = set(leftovers)  # temporary files a kill cut short keep their hidden names
    assert sorted(p.name for p in out.iterdir() if p not in stale) == sorted(
        p.name for p in clean.iterdir())
    print(f"compare: killed with {first}/14 cache entries, then after the faces "
          f"(report {'present' if second else 'absent'}); rerun results == uninterrupted: "
          f"{len(_results(report))} methods")
