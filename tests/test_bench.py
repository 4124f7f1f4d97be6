"""A tiny smoke run of the bench: every section runs and the report holds every figure."""

from __future__ import annotations

import json
import re

import pytest
from onnx_models import exported_fernet

pytest.importorskip("onnxruntime")


def test_bench_smoke_run_writes_markdown_and_json(tmp_path_factory, tmp_path):
    from fertool.bench import BenchConfig, run_bench, synthetic_frames, write_bench
    from fertool.core.io import write_png

    onnx_path = exported_fernet(tmp_path_factory)["onnx"]
    frames = tmp_path_factory.mktemp("frames")  # generated, so ../shared's SFEW is not used
    for i, f in enumerate(synthetic_frames(2, (160, 128))):
        write_png(frames / f"{i}.png", f)
    cfg = BenchConfig(
        frames=str(frames),
        n_frames=2,
        frame_size=(160, 128),
        model=str(onnx_path),
        quantize=False,
        batch_sizes=(1, 2),
        min_seconds=0.0,
        descriptor_crops=2,
        matmul_size=256,
    )
    res = run_bench(cfg)
    md, js = write_bench(res, tmp_path)
    data = json.loads(js.read_text())
    whats = {(r["section"], r["what"], r["batch"]) for r in data["rows"]}
    for bs in (1, 2):
        for name in ("torch eager float32", "onnxruntime float32", "onnxruntime int8"):
            assert ("backbone", name, bs) in whats
    faces = [r for r in data["rows"] if r["section"] == "faces"]
    assert {r["what"] for r in faces} == {
        "blazeface full resolution", "mtcnn full resolution", "mtcnn half resolution"
    }
    assert all("detector threads" in r["note"] for r in faces if r["status"] == "ok")
    assert len([r for r in data["rows"] if r["section"] == "descriptors"]) == 2
    e2e = [r for r in data["rows"] if r["section"] == "end to end"]
    assert [r["what"].split()[3] for r in e2e] == ["blazeface", "mtcnn"]
    mtcnn = data["stages"]["mtcnn"]
    assert set(mtcnn["shares"]) == {"decode", "detect", "align", "model"}
    assert sum(mtcnn["shares"].values()) == pytest.approx(1.0)
    assert mtcnn["seconds"]["detect"] > 0 and mtcnn["seconds"]["model"] > 0
    for r in data["rows"]:
        if r["status"] == "ok":
            assert r["images_per_s"] > 0 and r["n"] > 0
    int8 = res.get("backbone", "onnxruntime int8", 1)
    assert int8.status == "unavailable" and "quantisation off" in int8.note
    c = data["ceiling"]
    assert c["model_gflop_per_image"] == pytest.approx(2.835, abs=0.01)
    passes = c["passes_per_image"]
    assert c["images_per_s"] == pytest.approx(
        c["matmul_gflop_per_s"] / (passes * c["model_gflop_per_image"])
    )
    assert c["measured"]["float32_gflop_per_s"] == c["matmul_gflop_per_s"] > 0
    assert c["measured"]["int8_gop_per_s"] > 0
    peak = c["peak"]
    if peak["float32_gflop_per_s"] is not None:  # the machine's peak is above what ran
        assert peak["float32_gflop_per_s"] >= c["measured"]["float32_gflop_per_s"]
        assert peak["int8_gop_per_s"] >= c["measured"]["int8_gop_per_s"]
    share = data["ratios"]["ort_float32_share_of_measured_peak_batch1"]
    assert share is not None and share > 0
    assert data["ratios"]["int8_over_torch_eager_batch1"] is None
    text = md.read_text()
    assert "| backbone | onnxruntime float32 | 2 |" in text and "Ceiling:" in text
    html = md.with_suffix(".html").read_text()  # the same report, self-contained
    assert re.search(r"<td[^>]*>onnxruntime float32</td><td[^>]*>2</td>", html)
    # The session's model was exported from a run evaluated with flip TTA: the report says so.
    assert data["config"]["model_tta_flip"] is True and "flip TTA in the graph" in text
    from fertool.core.errors import FertoolError

    with pytest.raises(FertoolError, match="--force"):
        write_bench(res, tmp_path)


def test_cli_bench_help():
    from click.testing import CliRunner

    from fertool.cli import main

    res = CliRunner().invoke(main, ["bench", "--help"])
    assert res.exit_code == 0 and "--frames" in res.output and "--int8" in res.output
    res = CliRunner().invoke(main, ["bench", "--batch-sizes", "0,x"])
    assert res.exit_code == 2 and "positive integers" in res.output


@pytest.mark.slow
def test_bench_default_exports_and_quantises_its_own_model(tmp_path):
    """Without --model the bench exports a random FerNet, quantises it, and predict loads it."""
    from fertool.bench import BenchConfig, run_bench

    cfg = BenchConfig(n_frames=1, frame_size=(160, 128), batch_sizes=(1,), min_seconds=0.0,
                      descriptor_crops=2, matmul_size=128)
    res = run_bench(cfg)
    for name in ("onnxruntime float32", "onnxruntime int8"):
        row = res.get("backbone", name, 1)
        assert row.status == "ok" and row.images_per_s > 0, row
    e2e = [r for r in res.rows if r.section == "end to end"]  # one row per detector
    assert any(r.status == "ok" for r in e2e), e2e
    for r in e2e:
        assert r.status != "ok" or ("bench.int8.onnx" in r.what and r.n == 1), r
    assert res.config["model_tta_flip"] is False
