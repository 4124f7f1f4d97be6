"""The threaded face stage of predict (fertool.pipeline): the same records in the same order as
the one-thread face stage, bad files as error records, a bounded number of images in flight,
and thread defaults from the available cores."""

from __future__ import annotations

import numpy as np
import pytest

from fertool.core.io import write_png
from fertool.data.synthetic import make_image
from fertool.faces.config import FaceConfig
from fertool.faces.stage import extract_faces
from fertool.pipeline import StageTimes, available_cores, pipelined_faces, thread_plan


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(6):
        p = d / f"{i}.png"
        write_png(p, make_image("happy", rng, 160, 128, n_faces=1 + i % 2)[0])
        paths.append(str(p))
    bad = d / "3-broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    paths.insert(3, str(bad))
    return paths


def _key(r):
    box = None if r.box is None else tuple(np.round(r.box, 3))
    return r.path, r.status, r.n_faces, box


def test_same_records_in_input_order(folder, tmp_path):
    cfg = FaceConfig()
    ref = list(extract_faces(folder, cfg, use_cache=False, progress=False, device="cpu"))
    times = StageTimes()
    got = list(
        pipelined_faces(
            folder, cfg, workers=3, use_cache=False, device="cpu", times=times, detector_threads=1
        )
    )
    assert [_key(r) for r in got] == [_key(r) for r in ref]
    for a, b in zip(got, ref):
        assert (a.crop is None) == (b.crop is None)
        if a.crop is not None:  # torch's thread count moves landmarks by float rounding only
            assert np.abs(a.crop.astype(int) - b.crop).mean() < 0.5
    bad = next(r for r in got if "broken" in r.path)
    assert bad.status == "error" and "broken" in bad.message
    assert times.seconds["decode"] > 0 and times.seconds["detect"] > 0
    assert times.images == len(folder) - 1  # the broken file never reached the detector
    # the cache as extract_faces writes it: a second run reads every readable image from it
    list(pipelined_faces(folder, cfg, workers=2, cache_dir=tmp_path, device="cpu"))
    again = list(pipelined_faces(folder, cfg, workers=2, cache_dir=tmp_path, device="cpu"))
    assert [r.cached for r in again if r.status != "error"] == [True] * (len(folder) - 1)


def test_images_in_flight_are_bounded(folder):
    pulled = []

    def paths():
        for p in folder * 4:
            pulled.append(p)
            yield p

    it = pipelined_faces(
        paths(), FaceConfig(), workers=2, depth=2, use_cache=False, device="cpu", detector_threads=1
    )
    next(it)
    assert len(pulled) <= 2 * 2 + 1  # not the whole (28-image) input
    rest = list(it)
    assert len(pulled) == len(folder) * 4 and len(rest) >= len(folder) * 4 - 1


def test_thread_plan_follows_the_machine(monkeypatch):
    monkeypatch.delenv("FERTOOL_DETECTOR_THREADS", raising=False)
    cores = available_cores()
    assert thread_plan(None) == (cores, 1)
    assert thread_plan(1) == (1, cores)
    assert thread_plan(2, 3) == (2, 3)  # pinned
    monkeypatch.setenv("FERTOOL_DETECTOR_THREADS", "2")
    assert thread_plan(1) == (1, 2)
    with pytest.raises(ValueError, match="workers"):
        thread_plan(0)
