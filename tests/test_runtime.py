"""Serving: providers, metadata from the model or its sidecar, predictions, no torch for crops."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from onnx_models import REPO, tiny_model

from fertool.core.labels import LABELS

ort = pytest.importorskip("onnxruntime")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _reference(path, crops):
    """The model's probabilities computed by hand: plain session, standardisation from metadata."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pre = json.loads(s.get_modelmeta().custom_metadata_map["fertool.preprocessing"])
    x = ((crops.astype(np.float32) - pre["mean"]) / pre["std"]).transpose(0, 3, 1, 2)
    return s.run(["probabilities"], {"input": np.ascontiguousarray(x)})[0]


def test_predict_crops_matches_a_plain_session(tiny):
    from fertool.serve.runtime import load

    model = load(tiny, providers="cpu")
    crops = np.random.default_rng(1).integers(0, 256, (5, 160, 160, 3), dtype=np.uint8)
    p = model.predict_crops(crops, batch_size=2)
    assert p.shape == (5, len(LABELS)) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, _reference(tiny, crops), atol=1e-6, rtol=0)
    np.testing.assert_allclose(model.predict_crops(crops[0]), p[:1], atol=1e-6, rtol=0)
    assert model.predict_crops(crops[:0]).shape == (0, len(LABELS))
    e = model.embed_crops(crops)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert model.labels == LABELS and model.providers == ["CPUExecutionProvider"]


def test_wrong_crop_shape_is_a_clear_error(tiny):
    from fertool.serve.runtime import load

    model = load(tiny, providers="cpu")
    with pytest.raises(ValueError, match=r"expected \(N, 160, 160, 3\)"):
        model.predict_crops(np.zeros((2, 64, 64, 3), np.uint8))


def test_metadata_falls_back_to_the_sidecar(tiny, tmp_path):
    import onnx

    from fertool.core.errors import FertoolError
    from fertool.core.io import sha256_file
    from fertool.serve.onnxmeta import decode_metadata
    from fertool.serve.runtime import load

    m = onnx.load(str(tiny))
    meta = decode_metadata({p.key: p.value for p in m.metadata_props})
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(FertoolError, match="bare.json"):
        load(bare, providers="cpu")
    (tmp_path / "bare.json").write_text(
        json.dumps({"sha256": sha256_file(bare), "metadata": {**meta, "labels": list("abcdefg")}})
    )
    model = load(bare, providers="cpu")
    assert model.labels == tuple("abcdefg")


def test_missing_model_and_unknown_provider_are_clear_errors(tiny, tmp_path):
    from fertool.core.errors import FertoolError
    from fertool.serve.runtime import load

    with pytest.raises(FertoolError, match="export-onnx"):
        load(tmp_path / "nope.onnx")
    with pytest.raises(FertoolError, match="auto, cpu, cuda"):
        load(tiny, providers="tpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(FertoolError, match="junk.onnx"):
        load(junk, providers="cpu")


def test_providers_follow_the_machine(tiny, capfd):
    from fertool.core.errors import FertoolError
    from fertool.serve.runtime import cuda_device_count, load, resolve_providers

    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0
    if has_cuda:
        assert resolve_providers("auto")[0] == "CUDAExecutionProvider"
        model = load(tiny, providers="cuda")
        assert model.providers[0] == "CUDAExecutionProvider"
        crops = np.random.default_rng(2).integers(0, 256, (3, 160, 160, 3), dtype=np.uint8)
        np.testing.assert_allclose(model.predict_crops(crops), _reference(tiny, crops), atol=1e-5)
    else:
        assert resolve_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(FertoolError, match="--providers cpu"):
            load(tiny, providers="cuda")
        capfd.readouterr()
        for choice in ("auto", "cpu"):
            assert load(tiny, providers=choice).providers == ["CPUExecutionProvider"]
        err = capfd.readouterr().err
        assert "CUDA" not in err and "onnxruntime" not in err  # no provider warnings on CPU


def test_runtime_serves_crops_without_torch(tiny):
    """fertool.serve.runtime must not import torch: serving needs only onnxruntime and numpy."""
    code = (
        "import sys, numpy as np\n"
        "import fertool\n"
        f"m = fertool.load({str(tiny)!r}, providers='auto')\n"
        "p = m.predict_crops(np.zeros((2, 160, 160, 3), np.uint8))\n"
        "assert p.shape == (2, 7), p.shape\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'facenet_pytorch'))\n"
        "print('imported:', bad)\n"
    )
    res = subprocess.run(
        check=False,
        args=[sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "imported: []"
    assert res.stderr.strip() == ""


def test_predict_one_image_runs_the_face_stage(tiny):
    """``predict`` on an array and on a file: face stage with the model's settings, then model."""
    from fertool.data.synthetic import make_image
    from fertool.serve.runtime import load

    model = load(tiny, providers="cpu")
    image, boxes = make_image("happy", np.random.default_rng(3), 320, 256, n_faces=1)
    (pred,) = model.predict(image)
    assert pred.status in ("ok", "fallback") and pred.path == "<array>"
    assert pred.label in LABELS and 0 < pred.score <= 1
    assert pred.probabilities.shape == (len(LABELS),)
    if pred.status == "ok":
        x1, y1, x2, y2 = pred.box
        bx1, by1, bx2, by2 = boxes[0]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert bx1 <= cx <= bx2 and by1 <= cy <= by2  # the detected face is the drawn one
    grey = model.predict(image[:, :, 0])
    assert len(grey) == 1 and grey[0].probabilities is not None
    d = pred.to_dict(model.labels)
    assert list(d)[:3] == ["path", "face_index", "n_faces"] and "p_happy" in d


def test_predict_unreadable_file_raises_image_read_error(tiny, tmp_path):
    from fertool.core.errors import ImageReadError
    from fertool.serve.runtime import load

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        load(tiny, providers="cpu").predict(bad)


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs a CUDA machine")
def test_cuda_provider_on_a_gpu_machine(tiny):
    from fertool.serve.runtime import load

    model = load(tiny, providers="cuda")
    assert model.providers[0] == "CUDAExecutionProvider"
