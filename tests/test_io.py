"""read_image on the bad-input corpus, and the atomic writers."""

from __future__ import annotations

import numpy as np
import pytest
from badfiles import BAD_KINDS, EXPECTED_SHAPE, ODD_KINDS, make_bad_corpus

from fertool.core.errors import ImageReadError
from fertool.core.io import atomic_write, read_image, write_json, write_npz, write_png

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_bad_corpus(folder)


def test_corpus_covers_many_kinds(corpus):
    _, files = corpus
    kinds = set(files.values())
    assert len(kinds) >= 12
    assert kinds <= BAD_KINDS | ODD_KINDS
    assert BAD_KINDS <= kinds


def test_bad_files_raise_image_read_error_naming_the_file(corpus):
    folder, files = corpus
    for name, kind in files.items():
        if kind not in BAD_KINDS:
            continue
        with pytest.raises(ImageReadError) as info:
            read_image(folder / name)
        assert name in str(info.value), kind
        assert info.value.path.endswith(name)
        assert info.value.reason, kind


def test_odd_files_decode_to_uint8_rgb_of_the_right_size(corpus):
    folder, files = corpus
    for name, kind in files.items():
        if kind not in ODD_KINDS:
            continue
        img = read_image(folder / name)
        assert img.dtype == np.uint8, kind
        assert img.ndim == 3 and img.shape[2] == 3, kind
        assert img.shape[:2] == EXPECTED_SHAPE[kind], kind
        assert img.flags["C_CONTIGUOUS"] and img.flags["WRITEABLE"], kind


def _by_kind(corpus, kind):
    folder, files = corpus
    (name,) = [n for n, k in files.items() if k == kind]
    return read_image(folder / name).astype(int)


def _close(pixel, colour, tol):
    np.testing.assert_allclose(pixel, colour, atol=tol)


def test_exif_orientation_is_applied(corpus):
    # Stored 64 wide x 32 high, left half red; orientation 6 turns the left half into the top.
    img = _by_kind(corpus, "exif-rotated-jpeg")
    _close(img[:28].mean(axis=(0, 1)), RED, 8)
    _close(img[36:].mean(axis=(0, 1)), BLUE, 8)


def test_modes_convert_to_the_expected_colours(corpus):
    grey16 = _by_kind(corpus, "png16-grey")
    _close(grey16[:, :16].mean(axis=(0, 1)), BLACK, 0)
    _close(grey16[:, 16:].mean(axis=(0, 1)), WHITE, 0)

    pal = _by_kind(corpus, "palette-png")  # bands of 8 columns: red, green, blue, white
    for band, colour in enumerate((RED, (0, 255, 0), BLUE, WHITE)):
        _close(pal[:, band * 8 : band * 8 + 8].reshape(-1, 3), np.tile(colour, (24 * 8, 1)), 0)

    tiff = _by_kind(corpus, "palette-grey-tiff")  # grey ramp 0, 8, ..., 248
    _close(tiff[0, :, 0], np.arange(32) * 8, 0)
    assert (tiff[..., 0] == tiff[..., 1]).all() and (tiff[..., 1] == tiff[..., 2]).all()

    _close(_by_kind(corpus, "cmyk-jpeg").mean(axis=(0, 1)), RED, 6)

    rgba = _by_kind(corpus, "rgba-png")  # transparent is composited on white
    _close(rgba[:, :16].mean(axis=(0, 1)), RED, 0)
    _close(rgba[:, 16:].mean(axis=(0, 1)), WHITE, 0)
    la = _by_kind(corpus, "la-png")
    _close(la[:, :16].mean(axis=(0, 1)), BLACK, 0)
    _close(la[:, 16:].mean(axis=(0, 1)), WHITE, 0)

    _close(_by_kind(corpus, "one-pixel")[0, 0], (10, 200, 30), 0)
    png_as_jpg = _by_kind(corpus, "png-named-jpg")  # lossless: exact colours
    _close(png_as_jpg[:, :16].mean(axis=(0, 1)), RED, 0)


def test_atomic_write_leaves_no_file_when_the_block_raises(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target, "w") as fh:
        fh.write("new")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_refuses_to_overwrite_without_force(tmp_path):
    from fertool.core.errors import FertoolError

    target = write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(FertoolError, match="--force"):
        write_json(target, {"x": 2}, force=False)
    assert target.read_text().strip().endswith("}")
    assert '"x": 1' in target.read_text()


def test_writers_round_trip(tmp_path):
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "a.png", img)), img)
    arrays = {"a": np.arange(3.0), "b": np.eye(2, dtype=np.int64)}
    with np.load(write_npz(tmp_path / "a.npz", **arrays), allow_pickle=False) as z:
        for key, value in arrays.items():
            np.testing.assert_array_equal(z[key], value)


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os

    from fertool.core.io import write_text

    mask = os.umask(0o022)
    try:
        p = write_text(tmp_path / "x.txt", "hello")
    finally:
        os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o644
