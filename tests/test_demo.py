"""`fertool demo`: the whole pipeline on generated data, end to end (small settings)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fertool.core.errors import FertoolError


@pytest.fixture(scope="module")
def demo(casia_torch_home, tmp_path_factory):
    from fertool.demo import run_demo

    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(casia_torch_home))
    mp.setenv("FERTOOL_CACHE", str(tmp_path_factory.mktemp("demo-cache")))
    lines: list[str] = []
    try:
        res = run_demo(tmp_path_factory.mktemp("demo") / "out", n_per_class=6, epochs=2,
                       say=lines.append)
    finally:
        mp.undo()
    return res, lines


def test_report_says_synthetic_and_has_every_section(demo):
    res, lines = demo
    text = res.report.read_text()
    assert "These data are synthetic" in text
    for section in ("## 1. Faces", "## 2. Baselines", "## 3. Fine-tuning", "## 4. ONNX export",
                    "## 5. Batch prediction", "## On a real dataset"):
        assert section in text
    # Every method of the comparison has a row with an accuracy figure.
    for method in ("lpq", "phog", "facenet-casia-webface/svm-rbf"):
        assert re.search(rf"^\| {re.escape(method)} \| \d+\.\d", text, re.MULTILINE), method
    # Progress: one announced line and one "done" line per step.
    assert sum(line.startswith("[") for line in lines) == len(res.steps) == 7
    assert sum("done in" in line for line in lines) == 7


def test_every_linked_image_exists_and_is_not_blank(demo):
    res, _ = demo
    text = res.report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert {"faces/contact_sheet.png", "run/curves.png", "run/confusion.png",
            "run/angles_heatmap.png", "run/angles_summary.png"} <= set(links)
    for link in links:
        img = np.asarray(Image.open(res.out / link).convert("L"), dtype=float)
        assert img.shape[0] > 100 and img.shape[1] > 100, link
        assert img.std() > 5, f"{link} is nearly uniform"


def test_markdown_links_resolve(demo):
    res, _ = demo
    text = res.report.read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (res.out / link).exists(), link


def test_html_reports_render_in_chromium(demo, tmp_path):
    """demo, compare-baselines, finetune and predict reports: self-contained HTML, every image
    loaded in headless Chromium."""
    from browser import check_page, chromium, self_contained

    res, _ = demo
    pages = {
        "demo": res.out / "report.html",
        "compare": res.out / "compare" / "report.html",
        "finetune": res.out / "run" / "report.html",
        "predict": res.out / "predictions.report.html",
    }
    for name, page in pages.items():
        assert page.is_file() and self_contained(page), name
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    for name, page in pages.items():
        got = check_page(page, tmp_path / f"{name}.png")
        md = page.with_suffix(".md")  # predictions.report.html -> predictions.report.md
        assert got["images"] == len(re.findall(r"!\[", md.read_text())), name
        assert got["broken"] == [] and got["std"] > 10, name
        if name == "demo":
            assert got["images"] >= 5  # contact sheet, curves, confusion, angle plots


def test_predictions_cover_every_new_image_and_the_bad_ones(demo):
    res, _ = demo
    images = sorted([*(res.out / "new-images").rglob("*.png"),
                     *(res.out / "new-images").rglob("*.jpg")])
    with open(res.out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["path"] for r in rows} == {str(p) for p in images}
    status = {Path(r["path"]).name: r for r in rows}
    assert status["truncated.jpg"]["status"] == "error" and status["truncated.jpg"]["message"]
    assert status["no-face.png"]["status"] in {"fallback", "no_face"}
    text = res.report.read_text()
    assert "error: `new-images/unsorted/truncated.jpg`" in text
    rows = [r for r in rows if "unsorted" not in r["path"]]
    assert all(r["status"] in {"ok", "fallback"} for r in rows)
    probs = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    assert probs.shape[1] == 7
    # The int8 model keeps its softmax in float32: probabilities are not rounded to 1/255.
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_exports_and_run_folder_written(demo):
    res, _ = demo
    for name in ("demo.onnx", "demo.json", "demo.int8.onnx", "demo.int8.json"):
        assert (res.out / "exports" / name).stat().st_size > 0, name
    for name in ("best.pt", "last.pt", "metrics.jsonl", "config.json", "report.json"):
        assert (res.out / "run" / name).is_file(), name


def test_non_empty_output_needs_force(tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main
    from fertool.demo import run_demo

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FertoolError, match="--force"):
        run_demo(out)
    res = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert res.exit_code != 0
    assert "--force" in res.output
    assert (out / "keep.txt").read_text() == "mine"
