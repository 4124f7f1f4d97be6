"""``--faces crop``: images that already are face crops (FER2013, CK+ crops) skip the detector.

Generated images only: grey and colour crops, a non-square one, an unreadable file, and a
FER2013-style ``train/<class>``, ``test/<class>`` layout.
"""

from __future__ import annotations

import csv
import json

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fertool.cli import main
from fertool.faces.config import FaceConfig
from fertool.faces.stage import FaceStage, extract_faces, face_crops, whole_image_crop

FACE_COMMANDS = ("faces", "embed", "finetune", "compare-baselines", "predict")


def _grey(seed: int, size=(48, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def test_crop_mode_is_recorded_only_when_not_the_default():
    crop = FaceConfig(faces="crop")
    assert "faces" not in FaceConfig().to_dict()
    assert crop.to_dict()["faces"] == "crop"
    assert FaceConfig.from_dict(crop.to_dict()) == crop
    assert crop.key() != FaceConfig().key()
    assert crop.detection_key() != FaceConfig().detection_key()
    with pytest.raises(ValueError, match="faces must be one of detect, crop"):
        FaceConfig(faces="given")


def test_the_whole_image_is_the_face_and_grey_becomes_three_channels():
    stage = FaceStage(FaceConfig(faces="crop", size=64))
    assert stage.detector is None  # no detector is built
    grey = _grey(0, (48, 40))
    image = np.repeat(grey[:, :, None], 3, 2)
    (rec,) = stage.process(image, path="x.png")
    assert rec.status == "crop" and rec.n_faces == 1 and rec.box == (0.0, 0.0, 40.0, 48.0)
    assert rec.crop.shape == (64, 64, 3) and rec.crop.dtype == np.uint8
    # The reference: Pillow's bilinear resize of the grey image, in every channel.
    expected = np.asarray(Image.fromarray(grey).resize((64, 64), Image.BILINEAR))
    for c in range(3):
        np.testing.assert_array_equal(rec.crop[:, :, c], expected)
    assert stage.n_detections == 0
    same = np.zeros((64, 64, 3), np.uint8) + 9
    assert whole_image_crop(same, 64) is not same and (whole_image_crop(same, 64) == 9).all()


def test_files_keep_their_order_and_a_bad_file_gets_an_error_record(tmp_path):
    paths = []
    for i in range(7):
        p = tmp_path / f"img{i}.jpg"
        if i == 3:
            p.write_bytes(b"not a jpeg")
        elif i == 5:  # a colour crop among grey ones
            Image.fromarray(np.dstack([_grey(i)] * 2 + [_grey(99)])).save(p)
        else:
            Image.fromarray(_grey(i)).save(p)
        paths.append(p)
    cfg = FaceConfig(faces="crop", size=32)
    records = list(extract_faces(paths, cfg, cache_dir=tmp_path / "cache", progress=False))
    assert [r.path for r in records] == [str(p) for p in paths]
    assert [r.status for r in records] == ["crop"] * 3 + ["error"] + ["crop"] * 3
    assert "img3.jpg" in records[3].message and records[3].crop is None
    grey = records[0].crop
    assert (grey[:, :, 0] == grey[:, :, 2]).all()
    assert not (records[5].crop[:, :, 0] == records[5].crop[:, :, 2]).all()
    assert not (tmp_path / "cache").exists()  # no face cache in crop mode
    crops, recs = face_crops(paths, cfg, progress=False)
    assert crops.shape == (6, 32, 32, 3) and len(recs) == 7


def _fer_like(root, per=3):
    """train/<class>/Training_*.jpg and test/<class>/{PublicTest,PrivateTest}_*.jpg."""
    k = 0
    for label in ("happy", "sad"):
        for part, prefix in (("train", "Training"), ("test", "PublicTest"),
                             ("test", "PrivateTest")):
            folder = root / part / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                Image.fromarray(_grey(k)).save(folder / f"{prefix}_{k:05d}.jpg")
                k += 1
    return k


def test_faces_command_on_a_fer2013_layout(tmp_path):
    data = tmp_path / "fer"
    n = _fer_like(data)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["faces", "--data", str(data), "--out", str(out),
                                       "--faces", "crop", "--group-regex", "none"])
    assert result.exit_code == 0, result.output
    assert f"{n} images: {n} taken as face crops (no detector), 0 errors" in result.output
    with open(out / "faces.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n and {r["status"] for r in rows} == {"crop"}
    assert {r["label"] for r in rows} == {"happy", "sad"}  # class folders one level down
    assert all(r["crop"] == "" for r in rows) and not (out / "crops").exists()
    meta = json.loads((out / "faces.json").read_text())
    assert meta["face_config"]["faces"] == "crop" and meta["counts"]["given_as_crop"] == n
    assert (out / "contact_sheet.png").is_file()
    # --crops writes them, under the canonical class name, part folder kept
    out2 = tmp_path / "out2"
    result = CliRunner().invoke(main, ["faces", "--data", str(data), "--out", str(out2),
                                       "--faces", "crop", "--crops"])
    assert result.exit_code == 0, result.output
    assert len(list((out2 / "crops").rglob("*.png"))) == n
    assert (out2 / "crops" / "test" / "sad").is_dir()


@pytest.mark.parametrize("name", FACE_COMMANDS)
def test_every_face_command_takes_faces_crop(name):
    cmd = main.get_command(click.Context(main), name)
    (opt,) = [p for p in cmd.params if "--faces" in p.opts]
    assert tuple(opt.type.choices) == ("detect", "crop")
