"""``fertool embed --engine ray``: the local engine's EmbeddingSet (same rows, order, labels,
skipped files, metadata; embeddings within 1e-5, float32) on a local Ray instance (2 CPUs), with
and without detection, and through the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fertool.core.labels import LABELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install fertool[ray])")

#: Largest difference allowed between the two engines' float32 features (the batches differ).
TOL = 1e-5
BACKBONE = "minixception"  # small: a random-weight network builds and runs in milliseconds


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module: starting one takes 10-20 s here."""
    from fertool.engines.ray_engine import ray_session

    with ray_session(num_cpus=2) as r:
        yield r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Generated faces in class folders and in a folder that is no class, a blank image (no
    face: a centre crop), a truncated JPEG, a text file named .png, and a text file."""
    from fertool.core.io import write_png
    from fertool.data.synthetic import make_image

    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(3)
    # 12 inputs: two plan blocks (8 inputs each at most), so both actors of a pool get work
    for i, folder in enumerate(["happy", "Sad", "happy", "misc", "Sad", "misc", "happy", "Sad"]):
        image, _ = make_image(LABELS[i % len(LABELS)], rng, 224, 168)
        write_png(root / folder / f"{i:02d}.png", image)
    write_png(root / "misc" / "blank.png", np.full((120, 120, 3), 128, np.uint8))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG")
    (root / "happy" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "Sad" / "notes.png").write_bytes(b"These are my notes, not a picture.\n" * 20)
    (root / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A mini-Xception state-dict file (random values: the engines must load the same file)."""
    import torch

    from fertool.models.fernet import create_model
    from fertool.models.weights import resolve_weights

    torch.manual_seed(7)
    model, _ = create_model(None, backbone=BACKBONE)
    path = tmp_path_factory.mktemp("weights") / "mini.pt"
    torch.save(model.backbone.state_dict(), path)
    return resolve_weights(str(path))


def _local(root, weights, **kw):
    from fertool.features.embed import build_embedder, embed_folder

    model, _ = build_embedder(weights, BACKBONE, device="cpu")
    return embed_folder(model, root, progress=False, **kw)


def _ray(root, weights, workers=1, **kw):
    from fertool.engines.ray_embed import embed_folder_ray
    from fertool.engines.ray_engine import RayOptions

    opts = RayOptions(num_workers=workers)
    return embed_folder_ray(root, weights, BACKBONE, options=opts, progress=False, **kw)


def assert_same_set(a, b) -> None:
    assert b.paths == a.paths
    assert b.labels == a.labels
    assert b.face_status == a.face_status
    assert b.skipped == a.skipped
    assert b.ignored == a.ignored
    assert b.meta == a.meta
    assert b.embeddings.dtype == np.float32 and b.embeddings.shape == a.embeddings.shape
    np.testing.assert_allclose(b.embeddings, a.embeddings, rtol=0, atol=TOL)


@pytest.mark.slow
def test_ray_embed_with_detection_is_the_local_set(ray_local, dataset, tmp_path):
    """Two actors of each kind; random (seeded) weights; the face cache in use."""
    local = _local(dataset, None, cache_dir=tmp_path / "c1")
    got = _ray(dataset, None, workers=2, cache_dir=tmp_path / "c2")
    assert_same_set(local, got)
    assert got.paths[:4] == ["Sad/01.png", "Sad/04.png", "Sad/07.png", "happy/00.png"]
    assert got.paths[-1] == "misc/blank.png" and len(got) == 9
    assert got.labels == ["sad"] * 3 + ["happy"] * 3 + [""] * 3
    assert got.face_status[-1] == "fallback" and set(got.face_status[:-1]) <= {"ok", "fallback"}
    assert [p for p, _ in got.skipped] == ["Sad/notes.png", "happy/truncated.jpg"]
    assert all(p in why for p, why in got.skipped)
    assert got.ignored == ["readme.txt"]
    np.testing.assert_allclose(np.linalg.norm(got.embeddings, axis=1), 1.0, atol=1e-5)
    assert len(set(map(tuple, got.embeddings.round(4)))) == len(got)  # not one row repeated
    assert (tmp_path / "c2").is_dir()  # the actors wrote the face cache


@pytest.mark.slow
def test_ray_embed_given_crops_is_the_local_set(ray_local, dataset, weights_file):
    """--no-detect: reading and resizing in the CPU actors; a weights file; another layer and
    flip TTA travel to the actors."""
    kw = {"detect": False, "layer": "pool", "flip": True, "batch_size": 3}
    local = _local(dataset, weights_file, **kw)
    got = _ray(dataset, weights_file, **kw)
    assert_same_set(local, got)
    assert got.face_status == ["given"] * 9 and got.embeddings.shape == (9, 128)
    assert [p for p, _ in got.skipped] == ["Sad/notes.png", "happy/truncated.jpg"]
    assert got.meta["weights_name"] == "file" and got.meta["layer"] == "pool"
    assert got.meta["flip"] == "true" and got.meta["face_config"] == ""
    # the weights file was used: random (seeded) weights give other features
    other = _local(dataset, None, **kw)
    assert np.abs(other.embeddings - got.embeddings).max() > 1e-3


@pytest.mark.slow
def test_cli_embed_engine_ray(ray_local, dataset, tmp_path):
    from fertool.cli import main
    from fertool.features.embed import EmbeddingSet

    base = [
        "embed",
        "--data",
        str(dataset),
        "--backbone",
        BACKBONE,
        "--weights",
        "none",
        "--no-detect",
    ]
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "local.npz")])
    assert res.exit_code == 0, res.output
    ray_args = [*base, "--out", str(tmp_path / "ray.npz"), "--engine", "ray", "--num-workers", "1"]
    res = CliRunner().invoke(main, ray_args)
    assert res.exit_code == 0, res.output
    assert "wrote 9 embeddings (128-d, layer embedding)" in res.output
    assert "skipped 2 images" in res.output
    local, got = (EmbeddingSet.load(tmp_path / f"{e}.npz") for e in ("local", "ray"))
    assert_same_set(local, got)


def test_cli_embed_ray_options_need_engine_ray(dataset, tmp_path):
    from fertool.cli import main

    base = ["embed", "--data", str(dataset), "--out", str(tmp_path / "e.npz"), "--weights", "none"]
    res = CliRunner().invoke(main, [*base, "--num-workers", "2"])
    assert res.exit_code == 2 and "need --engine ray" in res.output
    res = CliRunner().invoke(main, [*base, "--engine", "ray", "--device", "cpu"])
    assert res.exit_code == 2 and "--gpus-per-worker" in res.output
    assert not (tmp_path / "e.npz").exists()
