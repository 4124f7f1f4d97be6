"""Contact sheets: a grid of face crops with each tile's status marked by its border colour.

Pure image composition (numpy + Pillow drawing); the caller writes the array with
:func:`fertool.core.io.write_png`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Border colour of each mark, and the legend text.
MARKS: dict[str, tuple[tuple[int, int, int], str]] = {
    "ok": ((40, 170, 60), "face"),
    "several": ((240, 190, 0), "face, several in image"),
    "fallback": ((220, 30, 30), "no face: centre crop"),
    "crop": ((40, 110, 220), "image taken as the face (--faces crop)"),
    "no_face": ((120, 120, 120), "no face: skipped"),
    "error": ((0, 0, 0), "unreadable file"),
}


def mark_of(status: str, n_faces: int) -> str:
    """The contact-sheet mark of a face record (``several`` for a face among others)."""
    if status == "ok" and n_faces > 1:
        return "several"
    return status if status in MARKS else "error"


def contact_sheet(
    tiles: Sequence[np.ndarray | None],
    marks: Sequence[str],
    captions: Sequence[str] | None = None,
    *,
    cols: int = 8,
    tile: int = 128,
    border: int = 4,
    title: str = "",
) -> np.ndarray:
    """Compose crops into one RGB image.

    Parameters
    ----------
    tiles : sequence of (h, w, 3) uint8 ndarray or None
        The crops (resized to ``tile``); None draws an empty grey tile.
    marks : sequence of str
        One key of :data:`MARKS` per tile: the border colour.
    captions : sequence of str, optional
        A short text under each tile (cut to fit). Captions and the title are user data (file
        names): control characters are shown escaped (a newline as ``\\n``, see
        :func:`fertool.core.io.printable`), so every caption stays on its line.
    cols : int
        Tiles per row.
    tile : int
        Side of a tile in pixels, border included.
    border : int
        Border width in pixels.
    title : str
        A line above the grid. A legend of the marks used is drawn below it.

    Returns
    -------
    (H, W, 3) uint8 ndarray
    """
    from PIL import Image, ImageDraw, ImageFont

    from fertool.core.io import printable

    if len(marks) != len(tiles) or (captions is not None and len(captions) != len(tiles)):
        raise ValueError("tiles, marks and captions must have the same length")
    unknown = sorted(set(marks) - set(MARKS))
    if unknown:
        raise ValueError(f"unknown marks {unknown}; expected keys of MARKS: {', '.join(MARKS)}")
    if tile <= 2 * border + 1:
        raise ValueError(f"tile ({tile}) must be larger than twice the border ({border})")
    # Pillow's default FreeType font drops spaces at its default 10 px; 12 px reads cleanly.
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: bitmap font, no size
        font = ImageFont.load_default()
    line = 16
    n = len(tiles)
    cols = max(1, min(cols, n)) if n else 1
    rows = (n + cols - 1) // cols
    cap_h = line if captions is not None else 0
    header = line * 2 + 8
    width = max(cols * tile, 420)
    sheet = Image.new("RGB", (width, header + rows * (tile + cap_h) + 2), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), printable(title), fill=(0, 0, 0), font=font)
    x = 4
    for key in dict.fromkeys(marks):
        colour, text = MARKS[key]
        draw.rectangle((x, line + 6, x + 10, line + 16), fill=colour)
        draw.text((x + 14, line + 4), text, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(text, font=font))
    inner = tile - 2 * border
    for k, (crop, mark) in enumerate(zip(tiles, marks)):
        r, c = divmod(k, cols)
        x0, y0 = c * tile, header + r * (tile + cap_h)
        draw.rectangle((x0, y0, x0 + tile - 1, y0 + tile - 1), fill=MARKS[mark][0])
        if crop is None:
            body = Image.new("RGB", (inner, inner), (200, 200, 200))
        else:
            body = Image.fromarray(np.ascontiguousarray(crop, dtype=np.uint8)).resize(
                (inner, inner), Image.BILINEAR
            )
        sheet.paste(body, (x0 + border, y0 + border))
        if captions is not None:
            text = printable(str(captions[k]))
            while text and draw.textlength(text, font=font) > tile - 2:
                text = text[:-1]
            draw.text((x0 + 1, y0 + tile), text, fill=(0, 0, 0), font=font)
    return np.asarray(sheet, dtype=np.uint8).copy()
