"""``--engine ray``: the local engine's rows on a local Ray instance (2 CPUs), one row group per
input after a killed actor, resume, URLs, planning without reading, the missing-Ray message."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from badfiles import make_bad_corpus
from onnx_models import REPO, casia_faces, tiny_model

from fertool.core.labels import LABELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install fertool[ray])")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module: starting one takes 10-20 s here."""
    from fertool.engines.ray_engine import ray_session

    with ray_session(num_cpus=2) as r:
        yield r


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _images(root: Path, n: int, seed: int = 0) -> Path:
    from fertool.core.io import write_png
    from fertool.data.synthetic import make_image

    rng = np.random.default_rng(seed)
    for i in range(n):
        image, _ = make_image(LABELS[i % len(LABELS)], rng, 224, 168)
        write_png(root / f"{i:04d}.png", image)
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Generated photos, the bad-input corpus and a text file."""
    root = tmp_path_factory.mktemp("mixed")
    _images(root / "good", 8)
    faces = casia_faces()
    make_bad_corpus(root / "corpus", faces=None if faces is None else list(faces))
    (root / "notes.txt").write_text("not an image")
    return root


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_rows(a: list[dict], b: list[dict], tol: float = 1e-6) -> None:
    """Same rows in the same order: equal fields, probabilities within ``tol``."""
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if k.startswith("p_") or k == "score":
                if x[k] in (None, ""):
                    assert y[k] in (None, ""), (x["path"], k)
                else:
                    assert abs(float(x[k]) - float(y[k])) <= tol, (x["path"], k, x[k], y[k])
            else:
                assert x[k] == y[k], (x["path"], k, x[k], y[k])


def _local(tiny, inputs, out, **kw):
    from fertool.predict import predict_paths
    from fertool.serve.runtime import load

    model = load(tiny, providers="cpu", threads=1)
    return predict_paths(inputs, model, out, use_cache=False, progress=False, **kw)


def _ray(tiny, inputs, out, workers=1, **kw):
    from fertool.engines.ray_engine import RayOptions, predict_paths_ray

    kw.setdefault("use_cache", False)
    opts = RayOptions(num_workers=workers)
    return predict_paths_ray(inputs, tiny, out, options=opts, progress=False, **kw)


@pytest.mark.slow
def test_ray_rows_are_the_local_rows(ray_local, tiny, mixed, tmp_path):
    """JSONL with every face (the CSV layout is compared in the tests below)."""
    fmt, all_faces = "jsonl", True
    local = _local(tiny, [mixed], tmp_path / f"local.{fmt}", all_faces=all_faces)
    s = _ray(tiny, [mixed], tmp_path / f"ray.{fmt}", workers=2, all_faces=all_faces)
    a, b = _rows(tmp_path / f"local.{fmt}"), _rows(tmp_path / f"ray.{fmt}")
    assert_same_rows(a, b)
    assert {r["status"] for r in b} >= {"ok", "error", "fallback"}
    assert s.images == local.images and s.rows == local.rows == len(b)
    assert s.status == local.status and s.n_errors == local.n_errors
    assert s.skipped == local.skipped and "notes.txt" in s.skipped[0][0]
    # The shards hold the same rows (CSV columns).
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / f"ray.{fmt}.parquet")
    assert table.column_names[:3] == ["path", "face_index", "n_faces"]
    assert sorted(table.column("path").to_pylist()) == sorted(r["path"] for r in b)


@pytest.mark.slow
def test_ray_refuses_to_overwrite_and_resumes(ray_local, tiny, tmp_path):
    from fertool.core.errors import FertoolError

    folder = _images(tmp_path / "in", 4)
    out = tmp_path / "p.csv"
    first = _ray(tiny, [folder], out)
    assert first.images == 4
    with pytest.raises(FertoolError, match="already exists"):
        _ray(tiny, [folder], out)
    _images(tmp_path / "in" / "more", 3, seed=5)
    s = _ray(tiny, [folder], out, resume=True)
    assert (s.resumed, s.images) == (4, 3)
    _local(tiny, [folder], tmp_path / "local.csv")
    assert_same_rows(_rows(tmp_path / "local.csv"), _rows(out))


def _actor_pids(name: str) -> list[int]:
    """Processes whose title names the Ray actor class ``name`` (``ray::MapWorker(...)``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and name.encode() in cmd:
            pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_killed_actor_every_input_has_exactly_one_row(ray_local, tiny, tmp_path):
    """SIGKILL a face-stage actor and a model actor mid-run: the job finishes, one row each."""
    folder = _images(tmp_path / "in", 24)
    cache = tmp_path / "cache"
    out = tmp_path / "p.csv"
    result: dict = {}

    def run():
        try:
            result["summary"] = _ray(tiny, [folder], out, use_cache=True, cache_dir=cache)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    killed = []
    deadline = time.monotonic() + 240
    # Mid-run: the face stage has cached some images (it caches each one as it is done).
    while time.monotonic() < deadline and t.is_alive():
        done = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
        pids = _actor_pids("FaceStageWorker") + _actor_pids("PredictWorker")
        if done >= 5 and pids:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            break
        time.sleep(0.2)
    t.join(300)
    assert killed, "no actor was found to kill while the run lasted"
    assert "error" not in result, result.get("error")
    rows = _rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 24
    assert result["summary"].images == 24
    assert all(pid not in _actor_pids("FaceStageWorker") for pid in killed)


@pytest.mark.slow
def test_ray_reads_fsspec_urls(ray_local, tiny, tmp_path):
    folder = _images(tmp_path / "in", 3)
    (folder / "readme.md").write_text("x")
    out = tmp_path / "u.jsonl"
    s = _ray(tiny, [f"file://{folder}"], out)
    rows = _rows(out)
    assert [r["path"] for r in rows] == [f"file://{folder}/{i:04d}.png" for i in range(3)]
    assert s.non_images == 1
    _local(tiny, [folder], tmp_path / "local.jsonl")
    local = _rows(tmp_path / "local.jsonl")
    for r in local:
        r["path"] = f"file://{r['path']}"
    assert_same_rows(local, rows)


def test_missing_ray_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from fertool.engines.ray_engine import import_ray\n"
        "from fertool.core.errors import FertoolError\n"
        "try:\n    import_ray()\nexcept FertoolError as e:\n    print(e)\n"
    )
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO)
    assert "pip install 'fertool[ray]'" in out.stdout, out.stderr


def _plan_peak(n: int, tmp: Path) -> tuple[int, int]:
    from fertool.engines.plan import plan_paths

    paths = (f"/archive/2024/{i // 1000:04d}/frame-{i:07d}.jpg" for i in range(n))
    tracemalloc.start()
    try:
        plan = plan_paths(paths, tmp, shard_paths=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return plan.todo, peak


def test_planning_memory_does_not_grow_with_the_inputs(tmp_path):
    """Planning 20,000 paths takes no more memory than 2,000: one plan file's paths at a time."""
    small, peak_small = _plan_peak(2_000, tmp_path / "a")
    big, peak_big = _plan_peak(20_000, tmp_path / "b")
    assert (small, big) == (2_000, 20_000)
    assert peak_big < 1.5 * peak_small + 256 * 1024, (peak_small, peak_big)


def test_planning_a_folder_opens_no_image(tmp_path):
    """Empty files with image names: planned without being opened (an open would fail them)."""
    from fertool.engines.plan import read_plan, write_plan

    folder = tmp_path / "in"
    for d in range(5):
        (folder / f"{d}").mkdir(parents=True)
        for i in range(400):
            (folder / f"{d}" / f"{i:04d}.jpg").touch()
    (folder / "0" / "0000.jpg").chmod(0)  # unreadable: an open would raise
    plan = write_plan([folder], tmp_path / "plan", done={str(folder / "1" / "0000.jpg")})
    assert (plan.inputs, plan.todo, plan.resumed) == (2000, 1999, 1)
    got = list(read_plan(plan))
    assert [i for i, _, _ in got] == list(range(2000))
    assert got[0][1] == str(folder / "0" / "0000.jpg")
    assert sum(not todo for _, _, todo in got) == 1


@pytest.mark.slow
def test_cli_engine_ray(ray_local, tiny, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    folder = _images(tmp_path / "in", 2)
    out = tmp_path / "p.csv"
    args = ["predict", str(folder), "--model", str(tiny), "--out", str(out), "--no-cache", "-q",
            "--engine", "ray", "--num-workers", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert f"wrote {out}: 2 images" in res.output
    assert len(_rows(out)) == 2 and (tmp_path / "p.csv.parquet").is_dir()


def test_cli_ray_options_need_engine_ray(tiny, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    args = ["predict", str(tmp_path), "--model", str(tiny), "--out", str(tmp_path / "p.csv"),
            "--num-workers", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "need --engine ray" in res.output
