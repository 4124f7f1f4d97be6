"""MTCNN's ONet as BlazeFace's landmark stage (fertool.faces.detectors.onet): the numpy area
resampling against torch's, the ONNX export against facenet-pytorch's network, and the whole
landmark step against a torch reference written the way facenet-pytorch's ``detect_face`` does
it, on generated images and boxes (some partly outside the image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fertool.core.io import sha256_file
from fertool.faces.detectors import onet as on

torch = pytest.importorskip("torch")
pytest.importorskip("facenet_pytorch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return on.ensure_onet_onnx(tmp_path_factory.mktemp("onet-cache"))


@pytest.fixture(scope="module")
def torch_onet():
    from facenet_pytorch.models.mtcnn import ONet

    return ONet(pretrained=True).eval()


@pytest.mark.parametrize(
    "shape", [(100, 100), (37, 53), (200, 161), (20, 30), (48, 48), (7, 300), (1, 5000)]
)
def test_area_resize_equals_torch_area_interpolation(shape):
    from torch.nn.functional import interpolate

    x = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype(np.uint8)
    want = interpolate(torch.from_numpy(x).permute(2, 0, 1).float()[None], size=(48, 48),
                       mode="area")[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(on.area_resize(x), want, atol=1e-4)


def test_export_matches_torch_and_is_cached(onnx_path, torch_onet):
    session = on.OnetLandmarks(onnx_path).session
    x = np.random.default_rng(0).normal(size=(5, 3, 48, 48)).astype(np.float32)
    with torch.no_grad():
        want = [t.numpy() for t in torch_onet(torch.from_numpy(x))]
    for got, ref in zip(session.run(None, {"input": x}), want):
        np.testing.assert_allclose(got, ref, atol=1e-5)
    path = Path(onnx_path)
    assert Path(str(path) + ".sha256").read_text().split()[0] == sha256_file(path)
    mtime = path.stat().st_mtime_ns
    assert on.ensure_onet_onnx(path.parent) == onnx_path  # reused, not exported again
    assert path.stat().st_mtime_ns == mtime


def _torch_reference(image, squares, net):
    """facenet-pytorch's third stage on given boxes (detect_face's pad, crop, imresample, ONet
    and landmark formula, in torch)."""
    from torch.nn.functional import interpolate

    h, w = image.shape[:2]
    img = torch.as_tensor(image.copy()).permute(2, 0, 1).float()[None]
    b = torch.as_tensor(squares)
    t = b.trunc().int().numpy()
    x, y, ex, ey = (t[:, i].copy() for i in range(4))
    x[x < 1], y[y < 1] = 1, 1
    ex[ex > w], ey[ey > h] = w, h
    crops = [interpolate(img[:, :, y[k] - 1:ey[k], x[k] - 1:ex[k]], size=(48, 48), mode="area")
             for k in range(len(t))]
    with torch.no_grad():
        _, points, prob = net((torch.cat(crops) - 127.5) * 0.0078125)
    points = points.double().permute(1, 0)
    wi, hi = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    px = wi.repeat(5, 1) * points[:5, :] + b[:, 0].repeat(5, 1) - 1
    py = hi.repeat(5, 1) * points[5:10, :] + b[:, 1].repeat(5, 1) - 1
    return torch.stack((px, py)).permute(2, 1, 0).numpy(), prob[:, 1].double().numpy()


def test_landmarks_equal_mtcnn_third_stage(onnx_path, torch_onet):
    from fertool.data.synthetic import make_scene

    rng = np.random.default_rng(1)
    image = make_scene("happy", rng, width=320, height=256).image
    squares = np.array([
        [100.3, 60.8, 220.3, 180.8],   # inside
        [-30.5, -20.2, 60.5, 70.8],    # over the top-left corner
        [250.0, 180.0, 350.0, 280.0],  # over the bottom-right corner
        [10.9, 10.1, 30.9, 30.1],      # smaller than 48 px: upsampled
    ])
    got, prob = on.OnetLandmarks(onnx_path)(image, squares)
    # Inside the image the crop is facenet-pytorch's; where a box leaves the image, the original
    # MTCNN's zero padding: facenet-pytorch's own steps on the image inside a black border wide
    # enough that it never clips.
    inside = [0, 3]
    want, want_prob = _torch_reference(image, squares[inside], torch_onet)
    np.testing.assert_allclose(got[inside], want, atol=1e-3)
    border = 64
    framed = np.pad(image, ((border, border), (border, border), (0, 0)))
    want, want_prob = _torch_reference(framed, squares + border, torch_onet)
    want -= border
    assert got.shape == (4, 5, 2) and prob.shape == (4,)
    np.testing.assert_allclose(got, want, atol=1e-3)  # pixels
    np.testing.assert_allclose(prob, want_prob, atol=1e-5)
    outside, _ = on.OnetLandmarks(onnx_path)(image, np.array([[400.0, 300.0, 480.0, 380.0]]))
    assert np.isfinite(outside).all()  # a box wholly outside: ONet sees black, no error
    empty = on.OnetLandmarks(onnx_path)(image, np.zeros((0, 4)))
    assert empty[0].shape == (0, 5, 2) and empty[1].shape == (0,)


@pytest.mark.parametrize("window", [(-5, -7, 40, 50), (3, 2, 10, 12), (-30, -30, 60, 20)])
def test_area_resize_of_a_window_equals_resizing_the_zero_padded_image(window):
    region = np.random.default_rng(3).integers(0, 256, (30, 25, 3)).astype(np.uint8)
    top, left, height, width = window
    big = np.zeros((200, 200, 3), np.uint8)
    big[100:130, 100:125] = region  # region at rows/cols 100..; the window starts at 100 + top
    want = on.area_resize(big[100 + top:100 + top + height, 100 + left:100 + left + width])
    np.testing.assert_allclose(on.area_resize(region, window=window), want, atol=1e-4)


def test_mtcnn_box_is_the_measured_square():
    boxes = np.array([[10.0, 20.0, 110.0, 100.0], [0.0, 0.0, 40.0, 60.0]])
    sq = on.mtcnn_box(boxes)
    np.testing.assert_allclose(sq[:, 2] - sq[:, 0], sq[:, 3] - sq[:, 1])  # squares
    dx, dy, fw, fh = on.MTCNN_BOX_FROM_BLAZEFACE
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    np.testing.assert_allclose(sq[:, 2] - sq[:, 0], np.maximum(fw * bw, fh * bh))
    np.testing.assert_allclose((sq[:, 0] + sq[:, 2]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2 + dx * bw)
    np.testing.assert_allclose((sq[:, 1] + sq[:, 3]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2 + dy * bh)
