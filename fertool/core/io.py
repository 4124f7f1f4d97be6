"""Robust image reading and atomic file writing.

Every writer in fertool goes through :func:`atomic_write` (temp file in the same folder, fsync,
rename), so an interrupted run never leaves a half-written file under the final name. Every image
goes through :func:`read_image`, which turns any decoding problem into :class:`ImageReadError`
naming the file and the reason, so that a batch can record it and go on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io as _io
import json
import os
import stat
import tempfile
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from fertool.core.errors import FertoolError, ImageReadError

#: Largest image accepted, in pixels (about 16k x 16k). Larger files are refused as possible
#: decompression bombs instead of being decoded into many gigabytes.
MAX_PIXELS = 256_000_000

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
        ".pgm", ".ppm", ".pbm", ".pnm", ".avif", ".jp2", ".j2k",
    }
)

#: Pillow formats recognised by content (:func:`image_format`) when a file's extension is missing
#: or unknown: photographic formats only, so that a data file that happens to start like some
#: exotic format is not taken for a picture.
CONTENT_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF", "PPM", "JPEG2000")


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension fertool reads."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words (``"regular file"``, ``"named pipe (FIFO)"``, ...)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def regular_file_stat(path: str | os.PathLike) -> os.stat_result:
    """``os.stat(path)`` (links followed) when it is a regular file; never opens the file.

    Raises
    ------
    ImageReadError
        Naming the file, when it does not exist, is a dangling link or a link loop, cannot be
        examined, or is not a regular file (a folder, a named pipe, a socket, a device): such a
        file is never opened, since reading a pipe or a device can block forever or never end.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        reason = "dangling symbolic link" if p.is_symlink() else "no such file"
        raise ImageReadError(p, reason) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(p, "symbolic link loop") from None
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(p, "is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(
            p, f"not a regular file but a {file_kind(st.st_mode)}; not opened"
        )
    return st


def image_format(path: str | os.PathLike) -> str | None:
    """The image format of a file by its content (Pillow's identification, header only).

    Returns a Pillow format name of :data:`CONTENT_FORMATS` (``"JPEG"``, ``"AVIF"``, ...), or
    None for anything else: not an image, unreadable, empty, or not a regular file (which is not
    opened). Nothing is decoded beyond the header, so this is cheap on large files.
    """
    from PIL import Image

    try:
        st = regular_file_stat(path)
    except ImageReadError:
        return None
    if st.st_size == 0:
        return None
    formats = [f for f in CONTENT_FORMATS if f in _pil_open_formats()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(path, "rb") as fh, Image.open(fh, formats=formats) as img:
                return img.format
    except Exception:  # noqa: BLE001 - any failure to identify means "not an image we read"
        return None


def _pil_open_formats() -> frozenset[str]:
    from PIL import Image

    Image.init()
    return frozenset(Image.OPEN)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with control and other invisible characters escaped visibly, on one line.

    For places where a file name is shown rather than stored (log lines, terminal messages,
    Markdown, contact-sheet captions): a newline becomes ``\\n``, other control, format and
    unassigned characters ``\\xNN``/``\\uNNNN``, and a byte that was not UTF-8 (held by Python as a
    lone surrogate) ``\\xNN`` of the byte. Printable text, quotes and non-ASCII letters are kept.
    CSV and JSON writers keep names as they are (exact round trip) and do not use this.
    """
    if text.isprintable():
        return text
    return "".join(_printable_char(ch) for ch in text)


def _printable_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: an undecodable byte of a name
        return f"\\x{code - 0xDC00:02x}"
    category = unicodedata.category(ch)
    if category[0] not in "CZ" or category == "Zs":
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _to_uint8_rgb(img) -> np.ndarray:
    """Convert a decoded PIL image of any mode to a (H, W, 3) uint8 RGB array."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = np.clip((np.nan_to_num(arr, nan=lo) - lo) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: transparent regions of face crops are background, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a ``(H, W, 3)`` uint8 RGB array.

    Handles JPEG, PNG, TIFF (including palette-mode and 16-bit grey), BMP, WebP and GIF (first
    frame); grey, palette, RGBA (composited on white), CMYK and 16-bit modes; applies the EXIF
    orientation tag. The file's type is checked before it is opened: a named pipe, a socket or a
    device (even behind a symbolic link) is refused without being opened.

    Raises
    ------
    ImageReadError
        For a missing, empty, truncated, corrupt or non-image file, one that is not a regular
        file, or one above :data:`MAX_PIXELS`; the message names the file and the reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    size = regular_file_stat(p).st_size  # never opens a pipe, a socket or a device
    if size == 0:
        raise ImageReadError(p, "empty file (0 bytes)")
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with fh, Image.open(fh) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(
                        p, f"image is {w}x{h}, above the limit of {MAX_PIXELS:,} pixels"
                    )
                if w == 0 or h == 0:
                    raise ImageReadError(p, f"image has zero size ({w}x{h})")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_uint8_rgb(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image file, or a format fertool cannot decode") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(p, f"refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            reason = f"truncated or incomplete image data ({msg})"
        else:
            reason = f"corrupt image data ({msg})"
        raise ImageReadError(p, reason) from None
    except MemoryError:
        raise ImageReadError(p, "not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - a decoder bug on hostile data is still a bad file
        raise ImageReadError(p, f"corrupt image data ({type(exc).__name__}: {exc})") from None


def csv_text(rows, header=None) -> str:
    """Rows (sequences of values) as CSV text, ``\\n`` line ends, any value kept exactly.

    Values holding a carriage return are quoted too (Python's csv module before 3.12 leaves
    them bare with a ``\\n`` line terminator, and readers then cut the row there); None is
    written as an empty field.
    """
    import csv

    buf = _io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    if header is not None:
        plain.writerow(header)
    for row in rows:
        values = ["" if v is None else v for v in row]
        cr = any(isinstance(v, str) and "\r" in v for v in values)
        (quoted if cr else plain).writerow(values)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks.

    Raises
    ------
    OSError
        When the file cannot be read, and also when it is not a regular file (a named pipe, a
        socket, a device, a folder): those are refused before opening, since reading them can
        block forever or never end.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"not a regular file but a {file_kind(st.st_mode)}", str(path))
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``; return the path."""
    p = Path(path)
    if p.exists() and not force:
        raise FertoolError(f"{p} already exists; use --force to overwrite it")
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", force: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file is removed if the block raises (including KeyboardInterrupt), so the final
    name only ever holds a complete file. With ``force=False`` an existing file is an error.
    Text is UTF-8; a file name that is not valid UTF-8 (Python holds its bytes as lone
    surrogates) is written back as its original bytes (``errors="surrogateescape"``), so that
    names round-trip instead of crashing the writer.
    """
    p = Path(path)
    if not force:
        check_writable(p, force=False)
    p.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name must fit the file system's limit (255 bytes) even for a long ``path``.
    prefix = f".{p.name}." if len(os.fsencode(p.name)) <= 200 else ".fertool-long-name."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=p.parent)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape"}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path, data: bytes, force: bool = True) -> Path:
    with atomic_write(path, "wb", force=force) as fh:
        fh.write(data)
    return Path(path)


def write_text(path, text: str, force: bool = True) -> Path:
    with atomic_write(path, "w", force=force) as fh:
        fh.write(text)
    return Path(path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_json(path, obj, force: bool = True) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_text(path, text, force=force)


def write_npz(path, force: bool = True, **arrays) -> Path:
    """Write arrays to a compressed ``.npz`` atomically (no pickled objects)."""
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(path, buf.getvalue(), force=force)


def write_png(path, image: np.ndarray, force: bool = True) -> Path:
    """Write a uint8 array (H, W) or (H, W, 3) as PNG atomically."""
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return write_bytes(path, buf.getvalue(), force=force)


def save_figure(fig, path, force: bool = True, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return write_bytes(path, buf.getvalue(), force=force)
