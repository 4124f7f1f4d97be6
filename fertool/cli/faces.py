"""`fertool faces`: detect, align and cache the faces of a dataset; write crops, CSV, sheet."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from fertool.cli._options import data_option, face_options, force_option, group_option

CSV_COLUMNS = (
    "path",
    "label",
    "group",
    "status",
    "n_faces",
    "face_index",
    "x1",
    "y1",
    "x2",
    "y2",
    "score",
    "message",
    "crop",
)
SHEET_TILES = 64
MAX_ERRORS_SHOWN = 3


@dataclass
class Tally:
    """Per-image counts of a face run."""

    images: int = 0
    found: int = 0
    no_face: int = 0
    several: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)

    def add(self, status: str, n_faces: int, message: str) -> None:
        """Count one image (its first record)."""
        self.images += 1
        if status == "error":
            self.errors += 1
            self.error_messages.append(message)
        elif n_faces == 0:
            self.no_face += 1
        else:
            self.found += 1
            if n_faces > 1:
                self.several += 1

    def line(self, seconds: float) -> str:
        rate = self.images / seconds if seconds > 0 else float("inf")
        return (
            f"{self.images} images: {self.found} with a face, {self.no_face} no face, "
            f"{self.several} several faces, {self.errors} errors "
            f"({seconds:.1f} s with model loading, {rate:.1f} images/s)"
        )


def _samples(data: str, group: str, limit: int | None):
    """(root, [(path, label, group)], skipped files): class folders, or a plain folder of images."""
    from fertool.core.errors import DatasetError
    from fertool.core.io import is_image_path
    from fertool.data.dataset import discover

    root = Path(data)
    try:
        manifest = discover(root, group=group)
        samples = [(s.path, s.label, s.group) for s in manifest.samples]
        skipped = list(manifest.skipped_files)
    except DatasetError:
        plain = sorted(p for p in root.iterdir() if is_image_path(p)) if root.is_dir() else []
        if not plain:
            raise
        samples = [(p, "", "") for p in plain]
        skipped = [str(p) for p in sorted(root.iterdir()) if p.is_file() and not is_image_path(p)]
    if limit is not None and limit < len(samples):
        idx = sorted({round(i * (len(samples) - 1) / max(limit - 1, 1)) for i in range(limit)})
        samples = [samples[i] for i in idx]
    return root, samples, skipped


class _SheetSample:
    """Chooses contact-sheet tiles while records stream past, keeping only those crops.

    Three quarters of the tiles are images spread evenly over the run; the rest are the first
    records without a face (or unreadable) not already chosen.
    """

    def __init__(self, n_images: int, tiles: int = SHEET_TILES) -> None:
        k = min(n_images, tiles * 3 // 4)
        self.even_max = k
        self.problem_max = tiles - k if n_images > k else tiles // 4
        self.chosen = {round(i * (n_images - 1) / max(k - 1, 1)) for i in range(k)}
        self.even: list[tuple] = []
        self.problems: list[tuple] = []

    def offer(self, image_index: int, crop, mark: str, caption: str) -> None:
        entry = (crop, mark, caption)
        if image_index in self.chosen and len(self.even) < self.even_max:
            self.even.append(entry)
        elif mark not in ("ok", "several") and len(self.problems) < self.problem_max:
            self.problems.append(entry)

    def image(self, title: str):
        from fertool.faces.contact import contact_sheet

        tiles = self.even + self.problems
        if not tiles:
            return None
        title += f": {len(self.even)} images spread evenly"
        if self.problems:
            title += f", then {len(self.problems)} more without a face or unreadable"
        return contact_sheet(*zip(*tiles), title=title)


def _csv_text(rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def _crop_name(
    root: Path, path: Path, label: str, face_index: int, all_faces: bool, used: set
) -> str:
    rel = Path(path).relative_to(root)
    parts = list(rel.with_suffix("").parts)
    if label:
        parts[0] = label  # the class folder, under its canonical name
    stem = "/".join(parts)
    if all_faces and face_index >= 0:
        stem += f"_face{face_index}"
    name, k = f"crops/{stem}.png", 2
    while name in used:
        name, k = f"crops/{stem}_{k}.png", k + 1
    used.add(name)
    return name


def _fmt(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


@click.command("faces")
@data_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Output folder: faces.csv, crops/<label>/*.png, contact_sheet.png, faces.json.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="Process only N images, spread evenly over the dataset.",
)
@click.option(
    "--all-faces", is_flag=True, help="One row and crop per detected face, not only the chosen one."
)
@face_options
@click.option(
    "--margin",
    type=click.FloatRange(-0.4, 2.0),
    default=None,
    help="Context around the face as a fraction (default 0.1; 0 = tight MTCNN box).",
)
@click.option(
    "--min-face-size",
    type=click.IntRange(12),
    default=20,
    show_default=True,
    help="Smallest face to look for, in full-resolution pixels. Detection time falls as this "
    "rises; with --detect-scale 0.5, 40 makes detection about twice as fast as at full scale.",
)
@click.option(
    "--no-align", is_flag=True, help="Crop the detector box without rotating the eyes level."
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the face-crop cache.")
@group_option
@force_option
def command(
    data,
    out,
    limit,
    all_faces,
    cache_dir,
    detect_scale,
    no_face,
    face_policy,
    margin,
    min_face_size,
    no_align,
    no_cache,
    group,
    force,
):
    """Detect, choose and align the face of every image of a dataset.

    DATA is a folder with one sub-folder per expression (or a plain folder of images, then the
    label column is empty). Writes OUT/faces.csv (one row per image, or per face with
    --all-faces), the aligned crops under OUT/crops/, OUT/contact_sheet.png (a sample of crops:
    green border = face, yellow = one of several faces, red = no face, centre crop) and
    OUT/faces.json (settings, counts, versions). Results are cached, so a second run is fast.
    """
    from fertool.core.env import versions
    from fertool.core.errors import FertoolError
    from fertool.core.io import write_json, write_png, write_text
    from fertool.faces.contact import mark_of
    from fertool.faces.stage import FaceConfig, extract_faces

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise FertoolError(f"{out_dir} exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise FertoolError(
            f"{out_dir} is not empty; use --force to write into it, or choose another --out"
        )

    settings = {
        "policy": face_policy,
        "no_face": no_face,
        "detect_scale": detect_scale,
        "align": not no_align,
        "min_face_size": min_face_size,
    }
    if margin is not None:
        settings["margin"] = margin
    config = FaceConfig(**settings)
    root, samples, skipped = _samples(data, group, limit)
    by_path = {str(p): (i, p, label, grp) for i, (p, label, grp) in enumerate(samples)}
    sheet = _SheetSample(len(samples))
    tally = Tally()
    used: set[str] = set()
    rows = []
    last_path = None
    start = time.perf_counter()
    records = extract_faces(
        [p for p, _, _ in samples],
        config,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        all_faces=all_faces,
        progress=True,
    )
    for rec in records:
        index, path, label, grp = by_path[rec.path]
        if rec.path != last_path:
            tally.add(rec.status, rec.n_faces, rec.message)
            last_path = rec.path
        crop_name = ""
        if rec.crop is not None:
            crop_name = _crop_name(root, path, label, rec.face_index, all_faces, used)
            write_png(out_dir / crop_name, rec.crop, force=True)
        box = rec.box or (None,) * 4
        rows.append(
            [
                Path(path).relative_to(root).as_posix(),
                label,
                grp,
                rec.status,
                rec.n_faces,
                rec.face_index,
                *(_fmt(v) for v in box),
                _fmt(rec.score, 4),
                rec.message,
                crop_name,
            ]
        )
        sheet.offer(index, rec.crop, mark_of(rec.status, rec.n_faces), Path(path).stem)
    seconds = time.perf_counter() - start

    write_text(out_dir / "faces.csv", _csv_text(rows), force=True)
    sheet_image = sheet.image(f"fertool faces {root.name}")
    if sheet_image is not None:
        write_png(out_dir / "contact_sheet.png", sheet_image, force=True)
    summary = tally.line(seconds)
    params = click.get_current_context().params
    write_json(
        out_dir / "faces.json",
        {
            "command": "fertool faces",
            "params": params,
            "data": str(root),
            "face_config": config.to_dict(),
            "face_config_key": config.key(),
            "counts": {k: v for k, v in vars(tally).items() if k != "error_messages"},
            "skipped_files": skipped,
            "seconds": round(seconds, 2),
            "versions": versions(),
        },
        force=True,
    )

    click.echo(summary)
    for message in tally.error_messages[:MAX_ERRORS_SHOWN]:
        click.echo(f"  error: {message}")
    if len(tally.error_messages) > MAX_ERRORS_SHOWN:
        click.echo(
            f"  ... and {len(tally.error_messages) - MAX_ERRORS_SHOWN} more errors (see faces.csv)"
        )
    if skipped:
        files = "file" if len(skipped) == 1 else "files"
        click.echo(f"  {len(skipped)} {files} skipped (not images), e.g. {skipped[0]}")
    click.echo(
        f"wrote {out_dir / 'faces.csv'}, {out_dir / 'crops'}, {out_dir / 'contact_sheet.png'}"
    )
