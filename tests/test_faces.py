"""The face stage: alignment maths, detection on real faces, policies, fallback, cache, CLI.

Real faces come from the four 160x160 crops of ../shared/fixtures/casia-ref (casia_ref fixture),
pasted onto small canvases; MTCNN runs on a few small images only.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from badfiles import BAD_KINDS, make_bad_corpus
from PIL import Image

from fertool.core.io import read_image, write_png
from fertool.faces.align import (
    align_matrix,
    apply_transform,
    box_transform,
    center_square_transform,
    similarity_from_points,
    template,
    warp_affine,
)
from fertool.faces.stage import FaceConfig, FaceStage, choose_face, extract_faces, face_crops

GREY = (110, 110, 110)


def rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def eye_angle(landmarks: np.ndarray) -> float:
    """Angle of the line from the left to the right eye, in degrees (0 = level)."""
    d = landmarks[1] - landmarks[0]
    return math.degrees(math.atan2(d[1], d[0]))


def canvas_with(faces, sides, positions, size=(300, 600)) -> np.ndarray:
    canvas = np.full((*size, 3), GREY, np.uint8)
    for face, side, (x, y) in zip(faces, sides, positions):
        canvas[y : y + side, x : x + side] = np.asarray(
            Image.fromarray(face).resize((side, side), Image.BILINEAR)
        )
    return canvas


@pytest.fixture(scope="module")
def faces(casia_ref):
    return [read_image(casia_ref / f"face{i}.png") for i in range(4)]


@pytest.fixture(scope="module", params=["blazeface", "mtcnn"])
def stage(request):
    """The face stage with each shipped detector (the default first)."""
    return FaceStage(FaceConfig(detector=request.param), device="cpu")


# --- alignment maths (no detector) -----------------------------------------------------------


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    a = 1.7 * rotation(30)
    t = np.array([12.5, -40.0])
    dst = src @ a.T + t
    m = similarity_from_points(src, dst)
    np.testing.assert_allclose(m[:, :2], a, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-7)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-7)


def test_similarity_is_least_squares_and_never_reflects():
    src = np.array([[0.0, 0], [1, 0], [0, 1]])
    dst = src * [-1, 1]  # a mirror image: the best similarity cannot reflect
    m = similarity_from_points(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError, match="all equal"):
        similarity_from_points(np.ones((5, 2)), np.zeros((5, 2)))


def test_template_geometry_at_default_margin():
    t = template(160, 0.1)
    assert t[0, 1] == pytest.approx(t[1, 1])  # eyes level
    assert t[0, 1] / 160 == pytest.approx(0.359, abs=0.002)
    assert (t[1, 0] - t[0, 0]) / 160 == pytest.approx(0.347, abs=0.002)
    assert t[:, 0].mean() == pytest.approx(80.0, abs=1e-9)  # symmetric about the centre line
    wider = template(160, 0.5)
    assert (wider[1, 0] - wider[0, 0]) < (t[1, 0] - t[0, 0])  # more margin, smaller face


def test_warp_translation_copies_pixels_exactly():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    m = np.array([[1.0, 0, -7], [0, 1.0, -11]])  # crop starts at x=7, y=11
    np.testing.assert_array_equal(warp_affine(img, m, 32), img[11:43, 7:39])


def test_warp_rotation_by_90_degrees_matches_rot90():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    # rotate about the image centre by +90 degrees (x, y) -> (40 - y, x), i.e. clockwise on screen
    m = np.array([[0.0, -1, 40], [1, 0, 0]])
    np.testing.assert_array_equal(warp_affine(img, m, 40), np.rot90(img, k=-1))


def test_warp_antialiases_when_shrinking():
    checker = ((np.indices((400, 400)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[:, :, None], 3, axis=2)
    crop = warp_affine(img, center_square_transform(400, 400, 50), 50)  # 8x smaller
    np.testing.assert_allclose(crop.astype(float), 127.5, atol=3)


def test_warp_repeats_the_edge_outside_the_image():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, -1] = 200
    crop = warp_affine(img, np.array([[1.0, 0, -5], [0, 1, 0]]), 10)  # looks past the right edge
    assert (crop[:, 5:] == 200).all() and (crop[:, :4] == 0).all()


def test_box_transform_frames_the_box_like_the_template():
    m = box_transform((100, 50, 200, 200), 160, margin=0.0)
    side = math.sqrt(100 * 150)
    np.testing.assert_allclose(apply_transform(m, [[150, 125]]), [[80, 80]], atol=1e-9)  # centre
    assert m[0, 0] == pytest.approx(160 / side)


# --- settings ------------------------------------------------------------------------------


def test_config_round_trip_keys_and_validation():
    c = FaceConfig(detect_scale=0.5, policy="center")
    assert FaceConfig.from_dict(c.to_dict()) == c
    assert FaceConfig.from_dict({**c.to_dict(), "from_the_future": 1}) == c
    assert c.key() == FaceConfig(detect_scale=0.5, policy="center").key()
    assert c.key() != FaceConfig(detect_scale=0.5).key()  # policy changes the chosen crop
    assert c.detection_key() == FaceConfig(detect_scale=0.5).detection_key()  # ...not detection
    assert c.detection_key() != FaceConfig().detection_key()
    assert len(c.key()) == 16
    for bad in (
        {"policy": "biggest"},
        {"no_face": "drop"},
        {"detect_scale": 0},
        {"size": 8},
        {"min_face_size": 5},
        {"margin": -0.6},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FaceConfig(**bad)


def test_choose_face_policies():
    boxes = np.array([[0, 0, 100, 100], [140, 90, 160, 110], [300, 300, 350, 350.0]])
    scores = np.array([0.9, 0.95, 0.99])
    assert choose_face(boxes, scores, (200, 300), "largest") == 0
    assert choose_face(boxes, scores, (200, 300), "most-confident") == 2
    assert choose_face(boxes, scores, (200, 300), "center") == 1


# --- detection on real faces -----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_faces(faces):
    # A large face at the left edge and a small one in the centre.
    return canvas_with(faces[:2], (180, 100), ((20, 60), (250, 100)))


def test_several_faces_and_the_three_policies(stage, two_faces):
    analysis = stage.analyse(two_faces)
    assert analysis.n_faces == 2
    big, small = sorted(range(2), key=lambda i: -(analysis.boxes[i, 2] - analysis.boxes[i, 0]))
    cx = (analysis.boxes[:, 0] + analysis.boxes[:, 2]) / 2
    assert cx[big] < 200 < cx[small] < 400
    from fertool.faces.stage import analysis_records

    def chosen(policy):
        (rec,) = analysis_records(analysis, FaceConfig(policy=policy), "x.png")
        assert rec.status == "ok" and rec.n_faces == 2 and rec.crop.shape == (160, 160, 3)
        return rec.face_index

    assert chosen("largest") == big
    assert chosen("center") == small
    assert chosen("most-confident") == int(np.argmax(analysis.scores))
    records = analysis_records(analysis, FaceConfig(), "x.png", all_faces=True)
    assert [r.face_index for r in records] == [0, 1]
    # MTCNN keeps faces above 0.7 (third stage), BlazeFace above 0.5.
    floor = 0.9 if stage.config.detector == "mtcnn" else 0.5
    assert all(
        r.box is not None and r.landmarks.shape == (5, 2) and floor < r.score <= 1 for r in records
    )


def test_alignment_levels_the_eyes_of_a_rotated_face(stage, faces):
    upright = canvas_with(faces[:1], (200,), ((100, 100),), size=(400, 400))
    tilted = np.asarray(
        Image.fromarray(upright).rotate(20, resample=Image.BILINEAR, fillcolor=GREY)
    )
    (rec,) = stage.process(tilted, "tilted.png")
    assert rec.status == "ok" and rec.n_faces == 1
    (ref,) = stage.process(upright, "upright.png")
    # The detector sees the tilt (PIL rotates counter-clockwise: the eye line turns by -20 degrees).
    assert eye_angle(rec.landmarks) - eye_angle(ref.landmarks) == pytest.approx(-20, abs=4)
    # The alignment maps the landmarks onto the template: eyes level, at the template's eye height.
    mapped = apply_transform(align_matrix(rec.landmarks, 160, 0.1), rec.landmarks)
    assert abs(eye_angle(mapped)) < 3
    np.testing.assert_allclose(mapped[:2], template(160, 0.1)[:2], atol=6)
    if stage.config.detector == "blazeface":
        return  # full-range BlazeFace finds no face that fills the whole frame (see README)
    # And the detector, run again on the aligned crop, finds a level face at the template position.
    again = stage.analyse(rec.crop)
    assert again.n_faces >= 1
    assert abs(eye_angle(again.landmarks[0])) < 4
    # Position and size only loosely: this face is turned (the 5-point fit centres the nose, not
    # the eyes) and the fixture crops are stretched sideways.
    eyes, ref_eyes = again.landmarks[0][:2], template(160, 0.1)[:2]
    np.testing.assert_allclose(eyes.mean(0), ref_eyes.mean(0), atol=14)
    ratio = np.linalg.norm(eyes[1] - eyes[0]) / np.linalg.norm(ref_eyes[1] - ref_eyes[0])
    assert 0.8 < ratio < 1.25


def test_detect_scale_maps_boxes_back_to_full_resolution(faces, stage, two_faces):
    full = stage.analyse(two_faces)
    half = FaceStage(FaceConfig(detector=stage.config.detector, detect_scale=0.5),
                     device="cpu").analyse(two_faces)
    assert half.n_faces == full.n_faces == 2
    # Largest first in both; boxes and landmarks in full-resolution pixels, within a few percent.
    width = full.boxes[:, 2] - full.boxes[:, 0]
    np.testing.assert_allclose(half.boxes, full.boxes, atol=0.12 * width.max())
    for i in range(2):
        np.testing.assert_allclose(half.landmarks[i], full.landmarks[i], atol=0.08 * width[i])


def test_no_face_fallback_and_skip(stage):
    img = np.zeros((120, 200, 3), np.uint8)
    img[:, 40:160] = (30, 140, 220)  # the central square is one colour
    (rec,) = stage.process(img, "plain.png")
    assert (rec.status, rec.n_faces, rec.face_index, rec.box, rec.crop.shape) == (
        "fallback",
        0,
        -1,
        None,
        (160, 160, 3),
    )
    np.testing.assert_allclose(rec.crop.reshape(-1, 3).mean(0), (30, 140, 220), atol=1)
    skip = FaceStage(FaceConfig(no_face="skip"), device="cpu")
    (rec,) = skip.process(img, "plain.png")
    assert rec.status == "no_face" and rec.crop is None and rec.message


@pytest.mark.parametrize("shape", [(1, 1, 3), (12, 12, 3), (13, 900, 3), (700, 5, 3)])
def test_tiny_and_thin_images_fall_back_without_errors(stage, shape):
    img = np.full(shape, 77, np.uint8)
    (rec,) = stage.process(img)
    assert rec.status == "fallback" and rec.crop.shape == (160, 160, 3)
    assert (rec.crop == 77).all()


def test_process_rejects_arrays_that_are_not_rgb_uint8(stage):
    with pytest.raises(ValueError, match="uint8"):
        stage.process(np.zeros((20, 20), np.uint8))


# --- files, cache, streaming ----------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, faces):
    folder = tmp_path_factory.mktemp("corpus") / "happy"
    return folder, make_bad_corpus(folder, faces=faces[:3])


def test_extract_faces_on_the_bad_corpus_and_the_warm_cache(corpus, tmp_path):
    folder, files = corpus
    names = sorted(files)
    paths = [folder / n for n in names]
    first = list(extract_faces(paths, cache_dir=tmp_path, progress=False, device="cpu"))
    assert [r.path for r in first] == [str(p) for p in paths]  # in order, one per file
    for name, rec in zip(names, first):
        kind = files[name]
        if kind in BAD_KINDS:
            assert rec.status == "error" and name in rec.message and rec.crop is None, kind
        elif kind == "several-faces":
            assert rec.status == "ok" and rec.n_faces == 3 and rec.face_index == 0, kind
        else:
            assert rec.status == "fallback" and rec.crop.shape == (160, 160, 3), kind
    assert not any(r.cached for r in first)

    second = list(extract_faces(paths, cache_dir=tmp_path, progress=False, device="cpu"))
    for a, b in zip(first, second):
        assert (a.status, a.n_faces, a.face_index, a.message) == (
            b.status,
            b.n_faces,
            b.face_index,
            b.message,
        )
        assert b.cached == (b.status != "error")
        if a.crop is not None:
            np.testing.assert_array_equal(a.crop, b.crop)
            assert a.box == b.box


def test_warm_cache_runs_no_detector_and_corrupt_entries_are_recomputed(faces, tmp_path):
    from fertool.core.io import sha256_file
    from fertool.faces.cache import FaceCache

    img = write_png(
        tmp_path / "img" / "face.png", canvas_with(faces[2:3], (150,), ((40, 40),), size=(230, 230))
    )
    cfg = FaceConfig()
    (cold,) = extract_faces([img], cfg, cache_dir=tmp_path / "c", progress=False, device="cpu")
    assert cold.status == "ok" and not cold.cached
    # Another policy and no_face setting share the detection cache.
    (warm,) = extract_faces(
        [img], FaceConfig(policy="center", no_face="skip"), cache_dir=tmp_path / "c", progress=False
    )
    assert warm.cached and warm.face_index == cold.face_index
    np.testing.assert_array_equal(warm.crop, cold.crop)

    entry = FaceCache(tmp_path / "c", cfg).path(sha256_file(img))
    assert entry.is_file()
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated entry
    (again,) = extract_faces([img], cfg, cache_dir=tmp_path / "c", progress=False, device="cpu")
    assert again.status == "ok" and not again.cached
    np.testing.assert_array_equal(again.crop, cold.crop)
    (fixed,) = extract_faces([img], cfg, cache_dir=tmp_path / "c", progress=False)
    assert fixed.cached
    # A different size is a different cache entry, not a wrong-shaped hit.
    (other,) = extract_faces(
        [img], FaceConfig(size=96), cache_dir=tmp_path / "c", progress=False, device="cpu"
    )
    assert not other.cached and other.crop.shape == (96, 96, 3)


def test_extract_faces_streams_and_face_crops_stacks(corpus, tmp_path):
    folder, _files = corpus
    paths = [folder / "grey.jpg", folder / "zero.jpg", folder / "one.png"]
    gen = extract_faces(iter(paths), use_cache=False, progress=False, device="cpu")
    assert next(gen).status == "fallback"  # the first record comes before later files are read
    crops, records = face_crops(
        paths, FaceConfig(size=64), use_cache=False, progress=False, device="cpu"
    )
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    assert [r.status for r in records] == ["fallback", "error", "fallback"]
    empty, records = face_crops([folder / "zero.jpg"], use_cache=False, progress=False)
    assert empty.shape == (0, 160, 160, 3) and records[0].status == "error"


# --- the command ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory):
    """One face cache for the command tests (the second one then runs no detector)."""
    return tmp_path_factory.mktemp("cli-cache")


def test_cli_faces_on_the_bad_corpus(corpus, cli_cache, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    folder, files = corpus
    out = tmp_path / "out"
    args = ["faces", "--data", str(folder.parent), "--out", str(out), "--cache-dir", str(cli_cache)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rows = list(csv.DictReader((out / "faces.csv").open()))
    listed = {r["path"].split("/", 1)[1]: r for r in rows}
    files_only = {
        n: k for n, k in files.items() if k != "folder-named-jpg"
    }  # a folder is not a file
    assert set(listed) == set(files_only)
    n_bad = sum(k in BAD_KINDS for k in files_only.values())
    assert sum(r["status"] == "error" for r in rows) == n_bad
    assert all(r["label"] == "happy" for r in rows)
    summary = result.stdout.splitlines()[0]  # the progress bar goes to stderr
    assert summary.startswith(
        f"{len(files_only)} images: 1 with a face, {len(files_only) - 1 - n_bad} no face, "
        f"1 several faces, {n_bad} errors"
    )
    assert "error: " in result.stdout and "zero.jpg" not in summary
    for r in rows:
        assert bool(r["crop"]) == (r["status"] in ("ok", "fallback"))
        if r["crop"]:
            assert read_image(out / r["crop"]).shape == (160, 160, 3)
    sheet = read_image(out / "contact_sheet.png")
    assert sheet.shape[0] > 128 and sheet.shape[1] >= 420
    assert (out / "faces.json").is_file()

    again = CliRunner().invoke(main, args)  # refuses to write into a non-empty folder
    assert again.exit_code == 1 and "--force" in again.output and "Traceback" not in again.output
    forced = CliRunner().invoke(main, args + ["--force", "--all-faces", "--face-policy", "center"])
    assert forced.exit_code == 0, forced.output
    rows = list(csv.DictReader((out / "faces.csv").open()))
    several = [r for r in rows if r["path"].endswith("several-faces.png")]
    assert [r["face_index"] for r in several] == ["0", "1", "2"]
    assert len({r["crop"] for r in several}) == 3


def test_cli_faces_on_a_plain_folder_with_a_sample(corpus, cli_cache, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    folder, _ = corpus
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "faces",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--sample",
            "3",
            "--cache-dir",
            str(cli_cache),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "faces.csv").open()))
    assert len(rows) == 3 and all(r["label"] == "" for r in rows)
    assert result.stdout.startswith("3 images:")


@pytest.mark.slow
def test_sfew_frames_have_faces(sfew_root, tmp_path):
    paths = sorted((sfew_root / "Happy").glob("*.jpg"))[:4]
    records = list(
        extract_faces(
            paths, FaceConfig(detect_scale=0.5), cache_dir=tmp_path, progress=False, device="cpu"
        )
    )
    assert sum(r.status == "ok" for r in records) >= 3
    for r in records:
        if r.status == "ok":
            x1, y1, x2, y2 = r.box
            assert (
                -40 <= x1 < x2 <= 720 + 40 and -40 <= y1 < y2 <= 576 + 40
            )  # full-resolution pixels
            # Eyes level to within a few degrees (the 5-point fit also weighs nose and mouth).
            assert (
                abs(eye_angle(apply_transform(align_matrix(r.landmarks, 160, 0.1), r.landmarks)))
                < 5
            )


def test_contact_sheet_layout_and_status_borders():
    from fertool.faces.contact import MARKS, contact_sheet

    tiles = [np.full((160, 160, 3), v, np.uint8) for v in (50, 100, 150)] + [None]
    marks = ["ok", "fallback", "several", "error"]
    sheet = contact_sheet(tiles, marks, ["a", "b", "c", "d"], cols=2, tile=96, border=4)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 420  # two tiles, widened for the legend
    header = sheet.shape[0] - 2 * (96 + 16) - 2
    for k, mark in enumerate(marks):
        r, c = divmod(k, 2)
        y0, x0 = header + r * (96 + 16), c * 96
        assert tuple(sheet[y0 + 1, x0 + 1]) == MARKS[mark][0], mark  # the border's colour
        centre = sheet[y0 + 48, x0 + 48]
        expected = (200, 200, 200) if tiles[k] is None else tiles[k][0, 0]
        np.testing.assert_array_equal(centre, expected)
    with pytest.raises(ValueError, match="unknown marks"):
        contact_sheet(tiles[:1], ["bogus"])
