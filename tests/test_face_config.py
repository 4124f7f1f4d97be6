"""One typed face configuration: cache keys, the detector registry, the shared CLI options,
the deprecated spellings, and ``extract_dataset`` on generated images."""

from __future__ import annotations

import csv
import hashlib
import json
from importlib import metadata

import click
import numpy as np
import pytest
from click.testing import CliRunner

from fertool.cli import main
from fertool.faces import detectors
from fertool.faces.config import FaceConfig

#: The settings of FaceConfig() as fertool wrote them before the detector field existed.
OLD_DEFAULT_SETTINGS = {
    "size": 160,
    "margin": 0.1,
    "policy": "largest",
    "no_face": "center",
    "detect_scale": 1.0,
    "align": True,
    "min_face_size": 20,
}
FACE_FLAGS = {
    "--detector",
    "--face-policy",
    "--no-face",
    "--detect-scale",
    "--margin",
    "--min-face-size",
    "--align",
    "--no-align",
    "--cache-dir",
}
FACE_COMMANDS = ("faces", "embed", "finetune", "compare-baselines", "predict")


def _old_hash(settings: dict) -> str:
    try:
        fp = metadata.version("facenet-pytorch")
    except metadata.PackageNotFoundError:
        fp = "unknown"
    algorithm = f"mtcnn-5pt-similarity-v1/facenet-pytorch-{fp}"
    text = json.dumps({"settings": settings, "algorithm": algorithm}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_mtcnn_keys_are_those_of_existing_caches():
    """MTCNN settings (the default until BlazeFace with ONet landmarks) keep the keys of the caches
    written before the registry; settings that name no detector mean MTCNN."""
    c = FaceConfig(detector="mtcnn")
    detection = {k: v for k, v in OLD_DEFAULT_SETTINGS.items() if k not in ("policy", "no_face")}
    assert c.to_dict() == OLD_DEFAULT_SETTINGS
    assert c.detection_key() == _old_hash(detection)
    assert c.key() == _old_hash(OLD_DEFAULT_SETTINGS)
    if metadata.version("facenet-pytorch") == "2.6.0":  # the keys of caches written at a5af51a
        assert (c.detection_key(), c.key()) == ("c97abf2130945372", "95c3e78371b30b93")
    assert FaceConfig.from_dict(None) == FaceConfig.from_dict({}) == c != FaceConfig()


class _FakeDetector:
    """One fixed face, in the pixels of the image it is given; remembers that image's shape."""

    def __init__(self, min_face: int, device=None):
        self.min_face = min_face
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image):
        self.shapes.append(image.shape)
        h, w = image.shape[:2]
        box = np.array([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]])
        eyes_y, cx = h * 0.4, w * 0.5
        points = np.array([[[cx - w * 0.1, eyes_y], [cx + w * 0.1, eyes_y], [cx, h * 0.5],
                            [cx - w * 0.08, h * 0.6], [cx + w * 0.08, h * 0.6]]])
        return box, np.array([0.9]), points


@pytest.fixture
def fake_detector():
    detectors.register("test-fake", _FakeDetector, version="fake-1")
    try:
        yield "test-fake"
    finally:
        del detectors._REGISTRY["test-fake"]


def test_the_detector_is_recorded_unless_mtcnn(fake_detector):
    c = FaceConfig(detector=fake_detector)
    assert c.to_dict()["detector"] == fake_detector
    assert "detector" not in FaceConfig(detector="mtcnn").to_dict()
    assert FaceConfig().to_dict()["detector"] == detectors.DEFAULT_DETECTOR == "blazeface"
    assert FaceConfig.from_dict(c.to_dict()) == c
    assert c.detection_key() != FaceConfig().detection_key()
    assert "detector" in c.detection_settings()
    assert detectors.available() == ("blazeface", "mtcnn", fake_detector)
    with pytest.raises(ValueError, match="already registered"):
        detectors.register(fake_detector, _FakeDetector, version="x")
    with pytest.raises(ValueError, match="detector must be one of blazeface, mtcnn, test-fake"):
        FaceConfig(detector="retinaface")


def test_settings_without_a_detector_mean_mtcnn_whatever_the_default():
    """Caches, reports and ONNX models recorded without a detector were made with MTCNN: the
    BlazeFace default must not reinterpret them, and must itself be written down."""

    old = FaceConfig(detector="mtcnn", margin=0.2).to_dict()  # as written before the switch
    assert "detector" not in old
    assert FaceConfig().detector == "blazeface"
    assert FaceConfig.from_dict(old).detector == "mtcnn"
    assert FaceConfig.from_dict({}).detector == "mtcnn"
    assert FaceConfig(detector="blazeface").to_dict()["detector"] == "blazeface"
    assert FaceConfig.from_dict(FaceConfig(detector="blazeface").to_dict()).detector == "blazeface"


def test_the_stage_runs_a_registered_detector_and_maps_boxes_back(fake_detector):
    from fertool.faces.stage import FaceStage

    stage = FaceStage(FaceConfig(detector=fake_detector, detect_scale=0.5, min_face_size=40))
    assert stage.detector_min_face == 20  # min_face_size at the detection scale
    image = np.zeros((200, 300, 3), np.uint8)
    (rec,) = stage.process(image)
    assert stage.detector.shapes == [(100, 150, 3)]  # it saw the downscaled copy
    assert rec.status == "ok" and rec.crop.shape == (160, 160, 3)
    np.testing.assert_allclose(rec.box, (75, 50, 225, 150))  # full-resolution pixels
    np.testing.assert_allclose(rec.landmarks[0], (120, 80))


def test_cli_detector_names_match_the_registry():
    from fertool.cli._options import DEFAULT_DETECTOR, DETECTORS

    assert set(DETECTORS) == set(detectors.available())
    assert DEFAULT_DETECTOR == detectors.DEFAULT_DETECTOR


@pytest.mark.parametrize("name", ["faces", "embed", "finetune", "compare-baselines"])
def test_cli_default_detector_is_the_library_default(name):
    """The option's default is the library's (it once followed the first name of the list)."""
    cmd = main.get_command(click.Context(main), name)
    (opt,) = [p for p in cmd.params if "--detector" in getattr(p, "opts", ())]
    assert opt.default == detectors.DEFAULT_DETECTOR == "blazeface"


@pytest.mark.parametrize("name", FACE_COMMANDS)
def test_every_face_command_takes_the_full_face_option_set(name):
    cmd = main.get_command(click.Context(main), name)
    flags = {o for p in cmd.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
    assert FACE_FLAGS <= flags, f"fertool {name} lacks {sorted(FACE_FLAGS - flags)}"


def test_library_parameter_names_become_the_commands_flags():
    from fertool.cli._messages import to_flags

    faces = main.get_command(click.Context(main), "faces")
    finetune = main.get_command(click.Context(main), "finetune")
    msg = "out/ is not empty; pass force=True to write into it, or choose another `out`"
    assert to_flags(msg, faces) == (
        "out/ is not empty; pass --force to write into it, or choose another --out"
    )
    assert to_flags("fold=3 is out of range", finetune) == "--fold 3 is out of range"
    assert to_flags("sample=0; expected at least 1", faces) == "--sample 0; expected at least 1"
    assert to_flags("min_face_size=5 and a=b.jpg", faces) == "--min-face-size 5 and a=b.jpg"


def test_a_renamed_option_warns_and_reaches_its_new_name():
    from fertool.cli._options import renamed_option

    @click.command()
    @click.option("--sample", type=int, default=None)
    @renamed_option("--limit", "--sample", "sample", type=int)
    def cmd(sample):
        click.echo(f"sample={sample}")

    res = CliRunner().invoke(cmd, ["--limit", "4"])
    assert res.exit_code == 0 and res.stdout == "sample=4\n"
    assert "--limit is deprecated" in res.stderr and "use --sample" in res.stderr
    res = CliRunner().invoke(cmd, ["--limit", "4", "--sample", "2"])  # the new name wins
    assert res.stdout == "sample=2\n"
    res = CliRunner().invoke(cmd, ["--sample", "2"])
    assert res.stderr == "" and "--limit" not in cmd.get_help(click.Context(cmd))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from fertool.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return make_dataset(root, n_per_class=1, seed=3, n_groups=2)


@pytest.fixture(scope="module")
def face_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("face-cache")


def test_extract_dataset_summary_on_generated_images(synthetic, face_cache, tmp_path):
    from fertool.faces.extract import extract_dataset

    config = FaceConfig(detect_scale=0.5)
    s = extract_dataset(synthetic, tmp_path / "out", config, cache_dir=face_cache,
                        progress=False, params={"who": "test"})
    rows = list(csv.DictReader(s.csv.open()))
    assert s.images == len(rows) == 7 == s.rows
    assert s.found + s.no_face + s.errors == 7 and s.errors == 0 and s.found >= 5
    assert sum(s.status.values()) == 7 and s.status.get("ok", 0) == s.found
    assert {r["label"] for r in rows} == {"angry", "disgust", "fear", "happy", "neutral", "sad",
                                          "surprise"}
    for r in rows:
        assert (tmp_path / "out" / r["crop"]).is_file()
    assert s.contact_sheet is not None and s.contact_sheet.is_file()
    written = json.loads(s.json.read_text())
    assert written["counts"] == s.counts() and written["params"] == {"who": "test"}
    assert written["face_config"] == config.to_dict()
    assert written["face_config_key"] == config.key()
    assert s.skipped_files == []

    few = extract_dataset(synthetic, tmp_path / "few", config, sample=3, cache_dir=face_cache,
                          progress=False)
    paths = [r["path"] for r in csv.DictReader(few.csv.open())]
    assert few.images == 3 and paths[0] == rows[0]["path"] and paths[-1] == rows[-1]["path"]
    with pytest.raises(Exception, match="not empty; pass force=True"):
        extract_dataset(synthetic, tmp_path / "few", config, progress=False)


def test_faces_command_records_every_face_option_and_keeps_old_spellings(
    synthetic, face_cache, tmp_path
):
    out = tmp_path / "out"
    args = ["faces", "--data", str(synthetic), "--out", str(out), "--cache-dir", str(face_cache),
            "--limit", "2", "--no-align", "--margin", "0.2", "--min-face-size", "30",
            "--detect-scale", "0.5", "--face-policy", "center"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "--limit is deprecated" in res.stderr and res.stdout.startswith("2 images:")
    written = json.loads((out / "faces.json").read_text())
    assert FaceConfig.from_dict(written["face_config"]) == FaceConfig(
        align=False, margin=0.2, min_face_size=30, detect_scale=0.5, policy="center"
    )
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "pass --force" in again.output and "--out" in again.output


def test_embed_keeps_its_positional_dataset_and_flip_tta(tmp_path):
    from fertool.core.io import write_png
    from fertool.features.embed import EmbeddingSet

    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(tmp_path / "crops" / "happy" / f"{i}.png",
                  rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
    out = tmp_path / "e.npz"
    args = ["embed", str(tmp_path / "crops"), "--no-detect", "--weights", "none",
            "--flip-tta", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "positional DATA argument is deprecated" in res.stderr
    assert "--flip-tta is deprecated" in res.stderr
    emb = EmbeddingSet.load(out)
    assert len(emb) == 2 and emb.meta["flip"] == "true" and emb.labels == ["happy", "happy"]
    res = CliRunner().invoke(main, ["embed", "--no-detect", "--out", str(out)])
    assert res.exit_code == 2 and "--data" in res.output
