"""A corpus of bad and odd image files, written on demand, for tests of every stage reading images.

``make_bad_corpus(folder)`` writes one file (or folder, or dangling link) per kind and returns
``{file name: kind}``. Kinds fall in two groups:

- :data:`BAD_KINDS`: :func:`fertool.core.io.read_image` must raise
  :class:`fertool.core.errors.ImageReadError` naming the file (empty, truncated, corrupt, not
  an image, a folder, a dangling link, a decompression bomb).
- :data:`ODD_KINDS`: unusual but valid; ``read_image`` must return uint8 RGB of the shape in
  :data:`EXPECTED_SHAPE` (after EXIF orientation). Their pixel content is documented per kind so
  that tests can check colours, too.

Nothing here is read from the real datasets; the several-faces image is only made when face
crops are passed in (for example the ``casia_ref`` fixture's PNGs).

Usage in a test (pytest puts ``tests/`` on ``sys.path``, so the module imports by its name)::

    from badfiles import BAD_KINDS, make_bad_corpus
    corpus = make_bad_corpus(tmp_path / "corpus")
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

#: Kinds that read_image must refuse with ImageReadError.
BAD_KINDS = frozenset(
    {
        "zero-byte",
        "truncated-jpeg",
        "truncated-png",
        "corrupt-bytes-jpg",
        "text-as-png",
        "html-as-jpg",
        "bomb-png",
        "folder-named-jpg",
        "dangling-symlink",
    }
)

#: Kinds that are odd but valid: read_image returns (H, W, 3) uint8.
ODD_KINDS = frozenset(
    {
        "png16-grey",
        "palette-png",
        "palette-grey-tiff",
        "cmyk-jpeg",
        "rgba-png",
        "la-png",
        "exif-rotated-jpeg",
        "one-pixel",
        "grey-jpeg",
        "png-named-jpg",
        "uppercase-ext",
        "noise-no-face",
        "gradient-no-face",
        "several-faces",
    }
)

#: Decoded (H, W) of each odd kind (EXIF orientation applied).
EXPECTED_SHAPE: dict[str, tuple[int, int]] = {
    "png16-grey": (24, 32),
    "palette-png": (24, 32),
    "palette-grey-tiff": (24, 32),
    "cmyk-jpeg": (32, 32),
    "rgba-png": (24, 32),
    "la-png": (24, 32),
    "exif-rotated-jpeg": (64, 32),  # stored 32 high x 64 wide, orientation 6 (rotate 90 CW)
    "one-pixel": (1, 1),
    "grey-jpeg": (24, 32),
    "png-named-jpg": (24, 32),
    "uppercase-ext": (24, 32),
    "noise-no-face": (240, 320),
    "gradient-no-face": (240, 320),
    "several-faces": (360, 640),
}


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` grey pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * 64  # a few rows of real data; the rest is missing
    idat = zlib.compress(row * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _halves_rgb(h: int, w: int) -> np.ndarray:
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return arr


def several_faces_image(
    faces: Sequence[np.ndarray], size: tuple[int, int] = (360, 640)
) -> np.ndarray:
    """Paste face crops side by side at decreasing sizes on a grey canvas (largest on the left).

    Returns an ``(H, W, 3)`` uint8 image. The first face is pasted at 200 px, the next at
    120 px, then 90 px.
    """
    h, w = size
    canvas = np.full((h, w, 3), 110, np.uint8)
    sides = (200, 120, 90, 70)
    x = 20
    for face, side in zip(faces, sides):
        tile = np.asarray(
            Image.fromarray(np.asarray(face, np.uint8)).resize((side, side), Image.BILINEAR)
        )
        y = (h - side) // 2
        canvas[y : y + side, x : x + side] = tile
        x += side + 40
    return canvas


def make_bad_corpus(
    folder: str | os.PathLike, faces: Sequence[np.ndarray] | None = None
) -> dict[str, str]:
    """Write the corpus into ``folder`` (created if needed) and return ``{file name: kind}``.

    Parameters
    ----------
    folder : path
        Where to write; existing files of the same names are replaced.
    faces : sequence of (H, W, 3) uint8 arrays, optional
        Face crops used to build the ``several-faces`` image; without them that kind is left out.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out: dict[str, str] = {}

    def put(name: str, kind: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        out[name] = kind

    # --- bad files -------------------------------------------------------------------------
    put("zero.jpg", "zero-byte", b"")
    noise = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    jpeg = _encode(Image.fromarray(noise), "JPEG", quality=90)
    put("truncated.jpg", "truncated-jpeg", jpeg[: len(jpeg) // 2])
    png = _encode(Image.fromarray(noise), "PNG")
    put("truncated.png", "truncated-png", png[: len(png) // 2])
    put("corrupt.jpg", "corrupt-bytes-jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("notes.png", "text-as-png", b"These are my notes, not a picture.\n" * 20)
    put(
        "page.jpg",
        "html-as-jpg",
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1></body></html>\n",
    )
    put("bomb.png", "bomb-png", bomb_png_bytes())
    (d / "folder.jpg").mkdir(exist_ok=True)
    out["folder.jpg"] = "folder-named-jpg"
    link = d / "dangling.jpg"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(d / "does-not-exist.jpg")
    out["dangling.jpg"] = "dangling-symlink"

    # --- odd but valid files ---------------------------------------------------------------
    grey16 = np.zeros((24, 32), np.uint16)
    grey16[:, 16:] = 65535  # left black, right white
    put("grey16.png", "png16-grey", _encode(Image.fromarray(grey16), "PNG"))

    pal = Image.fromarray(np.repeat(np.arange(4, dtype=np.uint8), 8)[None, :].repeat(24, 0), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255] + [0] * (256 * 3 - 12))
    put("palette.png", "palette-png", _encode(pal, "PNG"))  # red, green, blue, white bands

    ptiff = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1)), "P")
    ptiff.putpalette([v for i in range(256) for v in (i, i, i)])
    put("palette-grey.tif", "palette-grey-tiff", _encode(ptiff, "TIFF"))

    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red
    put("cmyk.jpg", "cmyk-jpeg", _encode(cmyk, "JPEG", quality=95))

    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 255)  # opaque red left
    rgba[:, 16:] = (0, 0, 255, 0)  # fully transparent right (white after compositing)
    put("rgba.png", "rgba-png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"))

    la = np.zeros((24, 32, 2), np.uint8)
    la[:, :16] = (0, 255)  # opaque black left
    la[:, 16:] = (0, 0)  # transparent right
    put("la.png", "la-png", _encode(Image.fromarray(la, "LA"), "PNG"))

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    stored = Image.fromarray(_halves_rgb(32, 64))  # 64 wide, 32 high: left red, right blue
    put("rotated.jpg", "exif-rotated-jpeg", _encode(stored, "JPEG", quality=95, exif=exif))

    put("one.png", "one-pixel", _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    grey = Image.fromarray(np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1)), "L")
    put("grey.jpg", "grey-jpeg", _encode(grey, "JPEG", quality=95))
    put("really-png.jpg", "png-named-jpg", _encode(Image.fromarray(_halves_rgb(24, 32)), "PNG"))
    put(
        "UPPER.JPG",
        "uppercase-ext",
        _encode(Image.fromarray(_halves_rgb(24, 32)), "JPEG", quality=95),
    )

    put(
        "noise.png",
        "noise-no-face",
        _encode(Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)), "PNG"),
    )
    yy, xx = np.mgrid[0:240, 0:320]
    grad = np.stack([xx * 255 // 319, yy * 255 // 239, np.full_like(xx, 128)], -1).astype(np.uint8)
    put("gradient.jpg", "gradient-no-face", _encode(Image.fromarray(grad), "JPEG", quality=95))

    if faces:
        put(
            "several-faces.png",
            "several-faces",
            _encode(Image.fromarray(several_faces_image(faces)), "PNG"),
        )
    return out


# ------------------------------------------------------------------------------------------------
# More of what a user's folder holds: other formats and layouts (valid), special files and links.

#: Valid files in formats, layouts or names beyond the basic corpus: read_image returns the
#: first frame/page, of the shape in :data:`MORE_SHAPE`.
MORE_ODD_KINDS = frozenset(
    {
        "avif",
        "jpeg-no-extension",
        "png-unknown-extension",
        "animated-gif",
        "animated-png",
        "animated-webp",
        "multipage-tiff",
        "float-tiff",
        "ppm",
        "jpeg2000",
        "progressive-jpeg",
        "tall-strip",
        "wide-strip",
        "broken-exif-jpeg",
        "bad-orientation-jpeg",
        "link-to-image",
        "hard-link",
    }
)

#: Files read_image refuses with ImageReadError (without hanging: none of them is opened when it
#: is not a regular file).
MORE_BAD_KINDS = frozenset(
    {
        "fifo-named-jpg",
        "socket-named-png",
        "link-to-fifo",
        "link-to-device",
        "link-loop",
        "link-to-folder",
        "bomb-jpeg",
        "truncated-gif",
    }
)

#: Kinds that are not regular files (after following links): the folder walker skips them with
#: a reason and never opens them; ``link-loop`` (an image name) is yielded to get an error row.
NOT_REGULAR_KINDS = frozenset(
    {"fifo-named-jpg", "socket-named-png", "link-to-fifo", "link-to-device", "link-to-folder"}
)

#: Files the walker finds by content only (their extension is missing or unknown).
BY_CONTENT_KINDS = frozenset({"jpeg-no-extension", "png-unknown-extension"})

MORE_SHAPE: dict[str, tuple[int, int]] = {
    "avif": (24, 32),
    "jpeg-no-extension": (24, 32),
    "png-unknown-extension": (24, 32),
    "animated-gif": (24, 32),
    "animated-png": (24, 32),
    "animated-webp": (24, 32),
    "multipage-tiff": (24, 32),
    "float-tiff": (24, 32),
    "ppm": (24, 32),
    "jpeg2000": (24, 32),
    "progressive-jpeg": (24, 32),
    "tall-strip": (3000, 2),
    "wide-strip": (1, 4000),
    "broken-exif-jpeg": (24, 32),
    "bad-orientation-jpeg": (24, 32),
    "link-to-image": (24, 32),
    "hard-link": (24, 32),
}


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline JPEG) with the frame header claiming ``width x height``."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def _jpeg_app1(data: bytes, payload: bytes) -> bytes:
    """``data`` (a JPEG) with an APP1 segment holding ``payload`` right after SOI."""
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def make_more_corpus(folder: str | os.PathLike) -> dict[str, str]:
    """Write the further kinds into ``folder`` and return ``{file name: kind}``.

    Special files (a named pipe, a Unix socket, links to them, to ``/dev/zero``, to a folder, to
    themselves) are made with the OS calls; the socket is bound and closed again (the file
    stays). Formats that this Pillow cannot write (AVIF, JPEG 2000 or animated WebP on a minimal
    build) are left out.
    """
    import socket

    from PIL import features

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    halves = Image.fromarray(_halves_rgb(24, 32))

    def put(name: str, kind: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        out[name] = kind

    def link(name: str, kind: str, target, is_dir: bool = False) -> None:
        p = d / name
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(target, target_is_directory=is_dir)
        out[name] = kind

    jpeg = _encode(halves, "JPEG", quality=95)
    if features.check("avif"):
        put("photo.avif", "avif", _encode(halves, "AVIF", quality=90))
    put("IMG_0001", "jpeg-no-extension", jpeg)
    put("scan.dat", "png-unknown-extension", _encode(halves, "PNG"))
    frames = [Image.fromarray(_halves_rgb(24, 32)[:, ::s]) for s in (1, -1)]
    put("anim.gif", "animated-gif", _encode(frames[0], "GIF", save_all=True,
                                               append_images=frames[1:], duration=50, loop=0))
    put("anim.png", "animated-png", _encode(frames[0], "PNG", save_all=True,
                                               append_images=frames[1:], duration=50))
    if features.check("webp"):
        put("anim.webp", "animated-webp", _encode(frames[0], "WEBP", save_all=True,
                                                     append_images=frames[1:], duration=50))
    put("pages.tif", "multipage-tiff", _encode(frames[0], "TIFF", save_all=True,
                                                  append_images=frames[1:]))
    ramp = np.tile(np.linspace(-1.0, 3.0, 32, dtype=np.float32), (24, 1))
    put("float.tif", "float-tiff", _encode(Image.fromarray(ramp, "F"), "TIFF"))
    put("photo.ppm", "ppm", _encode(halves, "PPM"))
    if features.check("jpg_2000"):
        put("photo.jp2", "jpeg2000", _encode(halves, "JPEG2000"))
    put("progressive.jpg", "progressive-jpeg", _encode(halves, "JPEG", progressive=True))
    put("tall.png", "tall-strip", _encode(Image.new("RGB", (2, 3000), (9, 9, 9)), "PNG"))
    put("wide.png", "wide-strip", _encode(Image.new("RGB", (4000, 1), (9, 9, 9)), "PNG"))
    put("broken-exif.jpg", "broken-exif-jpeg",
        _jpeg_app1(jpeg, b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff" + b"\x00" * 7))
    bad_orient = Image.Exif()
    bad_orient[0x0112] = 9  # not one of the eight orientations
    put("bad-orientation.jpg", "bad-orientation-jpeg", _encode(halves, "JPEG", exif=bad_orient))
    (d / "target").mkdir(exist_ok=True)
    (d / "target" / "real.png").write_bytes(_encode(halves, "PNG"))
    link("link-to-image.png", "link-to-image", d / "target" / "real.png")
    hard = d / "hard-link.png"
    if hard.exists():
        hard.unlink()
    os.link(d / "target" / "real.png", hard)
    out["hard-link.png"] = "hard-link"

    put("bomb.jpg", "bomb-jpeg", _jpeg_with_size(jpeg, 60_000, 60_000))
    gif = _encode(frames[0], "GIF")
    put("truncated.gif", "truncated-gif", gif[: len(gif) // 2])

    fifo = d / "pipe.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)
    out["pipe.jpg"] = "fifo-named-jpg"
    sock_path = d / "sock.png"
    if sock_path.exists():
        sock_path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(sock_path))
    out["sock.png"] = "socket-named-png"
    link("link-to-pipe.jpg", "link-to-fifo", fifo)
    link("zeros.jpg", "link-to-device", "/dev/zero")
    link("loop.jpg", "link-loop", d / "loop.jpg")
    link("folder-link.jpg", "link-to-folder", d / "target", is_dir=True)
    return out
