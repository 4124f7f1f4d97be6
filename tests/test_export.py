"""ONNX export: graph, metadata, checker, parity with torch, int8, sidecars, the README snippet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from onnx_models import REPO, exported_fernet, make_run, read_json, sample_faces

from fertool.core.labels import LABELS

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return exported_fernet(tmp_path_factory)


def test_graph_has_dynamic_batch_three_outputs_and_metadata(exported):
    import onnx

    model = onnx.load(str(exported["onnx"]), load_external_data=False)
    (inp,) = model.graph.input
    assert inp.name == "input"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 160, 160]
    assert [o.name for o in model.graph.output] == ["probabilities", "logits", "embedding"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["fertool.labels"]) == list(LABELS)
    pre = json.loads(props["fertool.preprocessing"])
    assert (pre["size"], pre["mean"], pre["std"], pre["channel_order"]) == (
        160,
        127.5,
        128.0,
        "RGB",
    )
    assert pre["face"]["align"] is True and pre["face"]["margin"] == 0.1
    src = json.loads(props["fertool.source"])
    assert src["run"] == "run-tiny" and len(src["checkpoint_sha256"]) == 64
    assert json.loads(props["fertool.opset"]) == 17
    assert json.loads(props["fertool.precision"]) == "float32"
    assert "fertool.version" in props and "fertool.weights" in props


def test_sidecar_records_hash_size_and_checks(exported):
    from fertool.core.io import sha256_file

    path = exported["onnx"]
    side = read_json(path.with_suffix(".json"))
    assert side["sha256"] == sha256_file(path)
    assert side["bytes"] == path.stat().st_size
    assert side["metadata"]["labels"] == list(LABELS)
    parity = side["checks"]["parity"]
    assert parity["ok"] and parity["probabilities"] <= 1e-4 and parity["n"] == 8
    assert side["checks"]["onnx_checker"] == "passed"
    # No staging leftovers next to the model.
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        p.name for p in path.parent.iterdir() if not p.name.startswith(".")
    )


def test_onnx_matches_torch_at_several_batch_sizes(exported):
    from fertool.models.inference import run_outputs as run_torch
    from fertool.serve.export import load_run
    from fertool.serve.session import create_session, run_onnx

    model = load_run(exported["run"]).model
    x = model.preprocessing.normalize(sample_faces(5))
    session = create_session(exported["onnx"], "cpu")
    # The run was evaluated with flip TTA (TrainConfig's default), so the graph has it.
    assert exported["result"].tta_flip is True
    ref = run_torch(model, x, flip=True)
    for bs in (1, 5):
        got = run_onnx(session, x, batch_size=bs)
        np.testing.assert_allclose(got["probabilities"], ref["probabilities"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["embedding"], ref["embedding"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(ref["embedding"], axis=1), 1.0, atol=1e-5)


def test_tta_flip_follows_the_run_and_can_be_turned_off(exported, tmp_path):
    """Default: the graph reproduces the run's evaluation (finetune's predict_proba with flip
    TTA); --no-tta-flip exports the single pass, and the metadata says which."""
    import torch

    from fertool.models.inference import predict_proba
    from fertool.models.inference import run_outputs as run_torch
    from fertool.serve.export import export_run, load_run
    from fertool.serve.session import create_session, run_onnx

    model = load_run(exported["run"]).model
    x = model.preprocessing.normalize(sample_faces(4))
    p_run = predict_proba(model, torch.as_tensor(x), tta_flip=True)
    p_tta = run_onnx(create_session(exported["onnx"], "cpu"), x)["probabilities"]
    np.testing.assert_allclose(p_tta, p_run, atol=1e-5, rtol=0)
    assert read_json(exported["onnx"].with_suffix(".json"))["metadata"]["tta_flip"] is True

    single = export_run(exported["run"], tmp_path / "single.onnx", tta_flip=False,
                        faces=exported["faces"], n_parity=8, progress=False)
    assert single.tta_flip is False
    assert read_json(tmp_path / "single.json")["metadata"]["tta_flip"] is False
    one = run_onnx(create_session(single.float32.path, "cpu"), x)
    ref = run_torch(model, x, flip=False)
    np.testing.assert_allclose(one["probabilities"], ref["probabilities"], atol=1e-5, rtol=0)
    # Really a different graph: random weights give near-uniform probabilities either way, but
    # the embeddings differ by more than 5x the 1e-5 agreement asserted above (1.8e-4 here).
    tta = run_onnx(create_session(exported["onnx"], "cpu"), x)
    assert np.abs(one["embedding"] - tta["embedding"]).max() > 5e-5


def test_parity_check_refuses_a_model_that_differs(exported):
    import torch

    from fertool.serve.export import load_run
    from fertool.serve.parity import ParityError, check_parity

    model = load_run(exported["run"]).model
    with torch.no_grad():
        model.backbone.logits.bias[0] += 1.0  # not the model that was exported any more
    x = model.preprocessing.normalize(sample_faces(2))
    with pytest.raises(ParityError, match="disagree"):
        check_parity(exported["onnx"], model, x, tolerance=1e-4)


def test_export_refuses_to_overwrite_and_needs_faces(exported, tmp_path):
    from fertool.core.errors import FertoolError
    from fertool.serve.export import export_run

    with pytest.raises(FertoolError, match="already exists"):
        export_run(exported["run"], exported["onnx"], progress=False)
    # The run's dataset is gone and no --calibration folder: a clear error, nothing written.
    out = tmp_path / "m.onnx"
    with pytest.raises(FertoolError, match="--calibration"):
        export_run(exported["run"], out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_load_run_errors_name_the_file(tmp_path):
    from fertool.core.errors import FertoolError
    from fertool.serve.export import load_run

    with pytest.raises(FertoolError, match="not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    with pytest.raises(FertoolError, match="best.pt"):
        load_run(tmp_path / "r")
    (tmp_path / "r" / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FertoolError, match="checkpoint"):
        load_run(tmp_path / "r")


def test_default_output_and_int8_names(tmp_path):
    from fertool.serve.export import default_output, int8_path
    from fertool.serve.onnxmeta import sidecar_path

    assert default_output(tmp_path / "runs" / "movie0").as_posix() == "exports/movie0.onnx"
    assert int8_path("exports/movie0.onnx").as_posix() == "exports/movie0.int8.onnx"
    assert sidecar_path("exports/movie0.int8.onnx").as_posix() == "exports/movie0.int8.json"


def test_exports_folder_ignores_models_but_not_sidecars():
    out = subprocess.run(
        check=False,
        args=["git", "check-ignore", "exports/x.onnx", "exports/x.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.stdout.split() == ["exports/x.onnx"]


def _readme_snippet() -> str:
    text = (REPO / "exports" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    snippet = next(b for b in blocks if "import onnxruntime" in b and "import fertool" not in b)
    assert len(snippet.strip().splitlines()) <= 14
    return snippet


def test_readme_snippet_reproduces_fertool_probabilities(exported, tmp_path):
    """The README's plain-onnxruntime block, run as written, gives fertool's probabilities."""
    import fertool
    from fertool.core.io import read_image, write_png

    face = sample_faces(1)[0]
    write_png(tmp_path / "face.png", face)
    (tmp_path / "exports").mkdir()
    os.symlink(exported["onnx"], tmp_path / "exports" / "movie0.onnx")
    snippet = _readme_snippet()
    code = snippet + "\nimport numpy\nnumpy.save('p.npy', probabilities)\n"
    res = subprocess.run(
        check=False,
        args=[sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "fertool" not in snippet.replace("fertool.", "")  # no fertool import in the snippet
    printed = res.stdout.strip()
    assert printed.startswith("{") and "'happy'" in printed
    p_snippet = np.load(tmp_path / "p.npy")
    p_fertool = fertool.load(exported["onnx"], providers="cpu").predict_crops(
        read_image(tmp_path / "face.png")
    )[0]
    np.testing.assert_allclose(p_snippet, p_fertool, atol=1e-6, rtol=0)
    assert res.stderr.strip() == ""  # no provider warnings either


def test_cli_export_onnx_help_and_usage_errors(tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["export-onnx", "--help"])
    assert res.exit_code == 0 and "--int8" in res.output and "--head" in res.output
    res = runner.invoke(main, ["export-onnx"])
    assert res.exit_code != 0 and "RUN_DIR" in res.output
    res = runner.invoke(main, ["export-onnx", str(tmp_path / "missing-run")])
    assert res.exit_code == 1 and "not found" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_cli_export_with_int8_on_a_calibration_folder(tmp_path):
    """The whole command: float32 + int8, calibrated on faces from a folder of images."""
    from click.testing import CliRunner

    from fertool.cli import main
    from fertool.core.io import write_png

    run = make_run(tmp_path / "run-cli")
    calib = tmp_path / "calib"
    for i, face in enumerate(sample_faces(8)):
        write_png(calib / f"{i}.png", face)
    out = tmp_path / "exports" / "cli.onnx"
    res = CliRunner().invoke(
        main, ["export-onnx", str(run), "--out", str(out), "--int8", "--calibration", str(calib)]
    )
    assert res.exit_code == 0, res.output
    assert "parity with torch over 8 faces" in res.output and "int8 vs float32" in res.output
    side8 = read_json(out.with_name("cli.int8.json"))
    check = side8["checks"]["int8_vs_float32"]
    assert check["int8_bytes"] < check["float32_bytes"] / 3
    assert side8["metadata"]["precision"] == "int8"
    assert side8["metadata"]["calibration"]["per_channel"] is True
    assert side8["float32_sha256"] == read_json(out.with_suffix(".json"))["sha256"]
    # Random weights make near-uniform probabilities; int8 stays close to float32 anyway.
    assert check["max_abs_diff"] < 0.05
    # Outputs stay float: no probabilities rounded to multiples of 1/255.
    import onnx

    graph = onnx.load(str(out.with_name("cli.int8.onnx"))).graph
    producer = {name: node.op_type for node in graph.node for name in node.output}
    assert all(producer[o.name] != "DequantizeLinear" for o in graph.output)
    (softmax,) = [n for n in graph.node if n.op_type == "Softmax"]
    assert producer[softmax.input[0]] == "Gemm"  # float logits, not dequantised ones
    (logits,) = [n for n in graph.node if n.output[0] == softmax.input[0]]
    assert logits.input[1] not in producer  # float weights (an initializer), not DQ of int8
    res = CliRunner().invoke(main, ["export-onnx", str(run), "--out", str(out)])
    assert res.exit_code == 1 and "--force" in res.output


@pytest.mark.parametrize("name", ["logreg", "svm-rbf", "pca+svm-linear"])
def test_sklearn_head_joins_a_backbone_graph(name, tmp_path):
    """skl2onnx head + backbone in one graph gives scikit-learn's answer on the embedding."""
    import onnx
    import onnxruntime as ort
    from onnx_models import tiny_model

    from fertool.evaluate.classify import make_head
    from fertool.serve.onnxhead import head_to_onnx, join, reference_probabilities

    backbone = onnx.load(str(tiny_model(tmp_path / "tiny.onnx")))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3, 160, 160)).astype(np.float32) + rng.standard_normal(
        (40, 3, 1, 1)
    ).astype(np.float32)
    s0 = ort.InferenceSession(backbone.SerializeToString(), providers=["CPUExecutionProvider"])
    emb = s0.run(["embedding"], {"input": x})[0]
    y = np.arange(40) % 3
    est = make_head(name).fit(emb, y)
    calibrated = name == "logreg"
    joined = join(backbone, head_to_onnx(est, emb.shape[1], 17, calibrated))
    onnx.checker.check_model(joined, full_check=True)
    s = ort.InferenceSession(joined.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    assert set(names) == {"probabilities", "embedding"} | (set() if calibrated else {"scores"})
    got = dict(zip(names, s.run(None, {"input": x})))
    ref = reference_probabilities(est, emb, calibrated)
    np.testing.assert_allclose(got["probabilities"], ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, atol=1e-5)
    assert (got["probabilities"].argmax(1) == np.searchsorted(est.classes_, est.predict(emb))).all()


@pytest.mark.slow
def test_export_head_with_casia_backbone(casia_torch_home, casia_ref, monkeypatch, tmp_path):
    """FaceNet (CASIA) + a saved logistic-regression head, exported, served by fertool.load.

    Needs the real faces of ../shared/fixtures/casia-ref (``casia_ref`` skips without them)."""
    from onnx_models import casia_faces

    from fertool.core.io import write_png
    from fertool.evaluate.classify import FittedHead, make_head, save_head
    from fertool.features.embed import embed_crops
    from fertool.models.fernet import create_model
    from fertool.serve.onnxhead import export_head
    from fertool.serve.runtime import load

    monkeypatch.setenv("TORCH_HOME", str(casia_torch_home))
    faces = casia_faces()
    faces = np.concatenate([faces, faces[:, :, ::-1]])
    for i, f in enumerate(faces):
        write_png(tmp_path / "faces" / f"{i}.png", f)
    model, info = create_model("casia-webface")
    emb = embed_crops(model, faces, progress=False)
    rng = np.random.default_rng(0)
    X = np.concatenate([emb + rng.normal(0, 0.02, emb.shape) for _ in range(4)])
    y = np.tile(np.array([3, 5, 6, 3, 5, 6, 3, 5]), 4)[: len(X)]  # happy, sad, surprise
    est = make_head("logreg").fit(X, y)
    head = tmp_path / "facenet-logreg.joblib"
    meta = {
        "layer": "embedding",
        "flip": "False",
        "weights_name": "casia-webface",
        "weights_sha256": info.sha256,
    }
    save_head(FittedHead("logreg", est, {}, 0.0, {}), head, meta=meta)
    out = tmp_path / "exports" / "head.onnx"
    res = export_head(head, out, calibration=tmp_path / "faces", progress=False)
    assert res.parity.ok and res.parity.n == len(faces)
    served = load(out, providers="cpu")
    assert served.labels == ("happy", "sad", "surprise")
    assert served.metadata["head"]["probabilities"] == "predict_proba"
    p = served.predict_crops(faces)
    np.testing.assert_allclose(p, est.predict_proba(emb), atol=1e-4, rtol=0)
    side = read_json(out.with_suffix(".json"))
    assert side["head"]["sha256"] == side["metadata"]["head"]["sha256"]
    assert side["weights"]["sha256"] == info.sha256
    # A head trained on other weights' embeddings is refused.
    meta["weights_sha256"] = "0" * 64
    save_head(FittedHead("logreg", est, {}, 0.0, {}), tmp_path / "other.joblib", meta=meta)
    from fertool.core.errors import FertoolError

    with pytest.raises(FertoolError, match="--weights"):
        export_head(
            tmp_path / "other.joblib",
            tmp_path / "o.onnx",
            calibration=tmp_path / "faces",
            progress=False,
        )


@pytest.mark.slow
def test_dynamo_exporter_writes_an_equivalent_graph(tmp_path, capfd):
    """The torch.export-based exporter (what ``auto`` falls back to) gives the same model."""
    from fertool.models.fernet import FerNet
    from fertool.serve.export import graph_opset, torch_to_onnx
    from fertool.serve.parity import check_parity

    model = FerNet().eval()
    path = torch_to_onnx(model, tmp_path / "dynamo.onnx", exporter="dynamo", opset=17)
    assert graph_opset(path) == 18  # dynamo's lowest; no failing down-conversion
    x = model.preprocessing.normalize(sample_faces(3))
    for n in (1, 3):
        assert check_parity(path, model, x[:n]).probabilities < 1e-5
    assert "Traceback" not in capfd.readouterr().err
