"""Embeddings: batching, flip TTA, folders of crops, the face-stage path, and `fertool embed`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fertool.cli import main
from fertool.features.embed import EmbeddingSet, embed_crops, embed_folder, scan_images
from fertool.models.fernet import FEATURE_LAYERS, FerNet, Preprocessing

SMALL = Preprocessing(size=96)  # random-weight tests run on small inputs to stay fast


@pytest.fixture(scope="module")
def net() -> FerNet:
    torch.manual_seed(0)
    return FerNet(7, SMALL).eval()


def _crops(n, size=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_batching_and_training_mode_restored(net):
    crops = _crops(5)
    net.train()
    a = embed_crops(net, crops, batch_size=2, progress=False)
    assert net.training
    net.eval()
    b = embed_crops(net, crops, batch_size=5, progress=False)
    assert a.shape == (5, 512) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    pool = embed_crops(net, crops[:2], layer="pool", progress=False)
    assert pool.shape == (2, 1792)
    assert embed_crops(net, crops[:0], progress=False).shape == (0, 512)


def test_flip_tta(net):
    crops = _crops(3, seed=1)
    plain = embed_crops(net, crops, progress=False)
    mirrored = embed_crops(net, crops[:, :, ::-1], progress=False)
    tta = embed_crops(net, crops, flip=True, progress=False)
    expected = plain + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(tta, expected, rtol=0, atol=1e-5)
    symmetric = np.concatenate([crops[:, :, :48], crops[:, :, :48][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(
        embed_crops(net, symmetric, flip=True, progress=False),
        embed_crops(net, symmetric, progress=False),
        rtol=0,
        atol=1e-5,
    )


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_of_crops(net, tmp_path):
    crops = _crops(3, size=96, seed=2)
    _write(tmp_path / "Happy" / "a.png", crops[0])
    _write(tmp_path / "sadness" / "deep" / "b.png", crops[1])
    big = np.asarray(Image.fromarray(crops[2]).resize((200, 200), Image.BILINEAR))
    _write(tmp_path / "misc" / "c.png", big)  # not an expression: no label; resized to 96
    (tmp_path / "Happy" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")

    result = embed_folder(net, tmp_path, detect=False, batch_size=2, progress=False)
    assert result.paths == ["Happy/a.png", "misc/c.png", "sadness/deep/b.png"]
    assert result.labels == ["happy", "", "sad"]
    assert result.face_status == ["given"] * 3
    assert [p for p, _ in result.skipped] == ["Happy/broken.jpg"]
    assert "Happy/broken.jpg" in result.skipped[0][1] or "broken.jpg" in result.skipped[0][1]
    assert result.ignored == ["notes.txt"]
    direct = embed_crops(net, crops[[0, 1]], progress=False)
    np.testing.assert_allclose(result.embeddings[[0, 2]], direct, rtol=0, atol=1e-5)
    assert result.meta["weights_name"] == "none" and result.meta["face_config"] == ""

    out = result.save(tmp_path / "emb.npz")
    with np.load(out, allow_pickle=False) as z:  # nothing pickled
        assert z["labels"].tolist() == ["happy", "", "sad"]
        assert json.loads(str(z["meta_preprocessing"]))["size"] == 96
    back = EmbeddingSet.load(out)
    np.testing.assert_array_equal(back.embeddings, result.embeddings)
    assert back.paths == result.paths and back.skipped == result.skipped
    assert back.preprocessing() == SMALL


def test_scan_images_errors(tmp_path):
    from fertool.core.errors import DatasetError

    with pytest.raises(DatasetError, match="no image files"):
        scan_images(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        scan_images(tmp_path / "missing")


@pytest.mark.sfew
def test_face_stage_path(net, sfew_root, tmp_path):
    happy = sorted((sfew_root / "Happy").iterdir())[:2]
    for p in happy:
        (tmp_path / "Happy").mkdir(exist_ok=True)
        (tmp_path / "Happy" / p.name).symlink_to(p)
    (tmp_path / "Happy" / "empty.jpg").write_bytes(b"")
    result = embed_folder(net, tmp_path, detect=True, progress=False, cache_dir=tmp_path / ".cache")
    assert len(result) == 2 and set(result.face_status) <= {"ok", "fallback"}
    assert result.labels == ["happy", "happy"]
    assert [p for p, _ in result.skipped] == ["Happy/empty.jpg"]
    assert json.loads(result.meta["face_config"])["size"] == 96
    assert result.preprocessing().face.size == 96


def test_cli_layers_match_models():
    from fertool.cli.embed import LAYERS

    assert set(LAYERS) == set(FEATURE_LAYERS)


def test_cli_reproduces_tensorflow(casia_torch_home, casia_ref, tmp_path, monkeypatch):
    from fertool.models.weights import resolve_weights

    monkeypatch.setenv("TORCH_HOME", str(casia_torch_home))
    out = tmp_path / "ref.npz"
    args = ["embed", str(casia_ref), "--no-detect", "--weights", "casia-webface", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "wrote 4 embeddings (512-d" in res.output
    with np.load(out, allow_pickle=False) as z:
        emb, paths = z["embeddings"], z["paths"].tolist()
        meta_sha = str(z["meta_weights_sha256"])
        assert "labels" not in z.files
    assert paths == [f"face{i}.png" for i in range(4)]
    ref = np.load(casia_ref / "embeddings_tf.npy")
    np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-5)
    assert meta_sha == resolve_weights("casia-webface", download=False).sha256

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--force" in again.output


def test_cli_vggface2_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("FERTOOL_OFFLINE", "1")
    (tmp_path / "crops").mkdir()
    _write(tmp_path / "crops" / "a.png", _crops(1, 160)[0])
    res = CliRunner().invoke(
        main,
        [
            "embed",
            str(tmp_path / "crops"),
            "--no-detect",
            "--weights",
            "vggface2",
            "--out",
            str(tmp_path / "e.npz"),
        ],
    )
    assert res.exit_code == 1
    assert "20180402-114759-vggface2.pt" in res.output and "MiB" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "e.npz").exists()
