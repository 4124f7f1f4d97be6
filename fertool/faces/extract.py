"""The face stage over a whole dataset: crops, a CSV, a contact sheet and a summary.

::

    from fertool.faces.extract import extract_dataset

    summary = extract_dataset("sfew-675", "faces-out", FaceConfig(detect_scale=0.5))
    print(summary.line())      # "675 images: 660 with a face, 15 no face, ..."

What ``fertool faces`` and the demo run. The output folder gets:

``faces.csv``          one row per image (per face with ``all_faces``): :data:`CSV_COLUMNS`
``crops/<label>/...``  the aligned crops, PNG, named after the image (``_face<i>`` per face)
``contact_sheet.png``  a sample of the crops (see :class:`SheetSample`)
``faces.json``         settings, counts, skipped files, seconds, versions

The dataset is a folder with one sub-folder per expression (:func:`fertool.data.dataset.discover`)
or, when it has none, any folder of images (walked by :func:`fertool.data.walk.iter_image_paths`;
the label and group columns are then empty).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fertool.faces.config import FaceConfig

__all__ = ["CSV_COLUMNS", "FacesSummary", "SheetSample", "extract_dataset", "find_images"]

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


@dataclass
class FacesSummary:
    """What :func:`extract_dataset` did. Counts are per image (its first record)."""

    out: Path
    root: Path
    images: int = 0
    found: int = 0
    no_face: int = 0
    several: int = 0
    #: Images taken whole as the face (``faces="crop"``), no detector run.
    given: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    #: Images per face-stage status of their first record (ok, fallback, no_face, error).
    status: dict[str, int] = field(default_factory=dict)
    #: Files that are not images (by extension), as paths.
    skipped_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rows: int = 0
    contact_sheet: Path | None = None

    @property
    def csv(self) -> Path:
        return self.out / "faces.csv"

    @property
    def crops(self) -> Path:
        return self.out / "crops"

    @property
    def json(self) -> Path:
        return self.out / "faces.json"

    def add(self, status: str, n_faces: int, message: str) -> None:
        """Count one image (its first record)."""
        self.images += 1
        self.status[status] = self.status.get(status, 0) + 1
        if status == "error":
            self.errors += 1
            self.error_messages.append(message)
        elif status == "crop":
            self.given += 1
        elif n_faces == 0:
            self.no_face += 1
        else:
            self.found += 1
            if n_faces > 1:
                self.several += 1

    def counts(self) -> dict[str, int]:
        return {
            "images": self.images,
            "found": self.found,
            "no_face": self.no_face,
            "several": self.several,
            "errors": self.errors,
            **({"given_as_crop": self.given} if self.given else {}),
        }

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else float("inf")
        if self.given:
            return (
                f"{self.images} images: {self.given} taken as face crops (no detector), "
                f"{self.errors} errors ({self.seconds:.1f} s, {rate:.1f} images/s)"
            )
        return (
            f"{self.images} images: {self.found} with a face, {self.no_face} no face, "
            f"{self.several} several faces, {self.errors} errors "
            f"({self.seconds:.1f} s with model loading, {rate:.1f} images/s)"
        )


def find_images(data: str | os.PathLike, group: str = "sfew"):
    """``(root, [(path, label, group)], non-image files)``: the class folders of a dataset, or,
    when it has none, every image under ``data`` (label and group empty).

    Raises
    ------
    DatasetError
        When ``data`` is not a folder or holds no image at all.
    """
    from fertool.core.errors import DatasetError
    from fertool.data.dataset import discover
    from fertool.data.walk import WalkStats, is_hidden, iter_image_paths

    root = Path(data)
    try:
        manifest = discover(root, group=group)
        return root, [(s.path, s.label, s.group) for s in manifest.samples], manifest.skipped_files
    except DatasetError:
        if not root.is_dir():
            raise
        stats = WalkStats(non_image_paths=[])
        plain = [Path(p) for p in iter_image_paths([root], stats) if not is_hidden(p, root)]
        if not plain:
            raise
        plain.sort(key=lambda p: p.relative_to(root).as_posix())
        skipped = [p for p in stats.non_image_paths if not is_hidden(p, root)]
        return root, [(p, "", "") for p in plain], skipped


def spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices of ``range(n)`` spread evenly, first and last included, sorted."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


class SheetSample:
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
        elif mark not in ("ok", "several", "crop") and len(self.problems) < self.problem_max:
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
    from fertool.core.io import csv_text  # names with a carriage return stay in one field

    return csv_text(rows, header=CSV_COLUMNS)


def _crop_name(root: Path, path: Path, label: str, face_index: int, all_faces: bool, used: set):
    from fertool.core.labels import canonical_label

    parts = list(Path(path).relative_to(root).with_suffix("").parts)
    if label:  # the class folder (root/<class>/ or root/<part>/<class>/), under its canonical name
        at = next((i for i, p in enumerate(parts[:-1]) if canonical_label(p) == label), 0)
        parts[at] = label
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


def _check_out(out: Path, force: bool) -> None:
    from fertool.core.errors import FertoolError

    if out.exists() and not out.is_dir():
        raise FertoolError(f"{out} exists and is not a folder; choose another `out`")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FertoolError(
            f"{out} is not empty; pass force=True to write into it, or choose another `out`"
        )


def extract_dataset(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: FaceConfig | None = None,
    *,
    group: str = "sfew",
    sample: int | None = None,
    all_faces: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    force: bool = False,
    progress: bool = True,
    device: str | None = None,
    params: dict | None = None,
    title: str | None = None,
    write_crops: bool | None = None,
) -> FacesSummary:
    """Detect, choose and align the face of every image of ``data``; write them into ``out``.

    Parameters
    ----------
    data : path
        A folder with one sub-folder per expression, or any folder of images.
    out : path
        Output folder (see the module docstring); must be empty unless ``force``.
    config : FaceConfig, optional
        The face settings (default ``FaceConfig()``).
    group : str
        Group key of the dataset (see :func:`fertool.data.dataset.discover`), written to the CSV.
    sample : int, optional
        Only ``sample`` images, spread evenly over the dataset (first and last included).
    all_faces : bool
        One row and crop per detected face instead of the chosen one.
    cache_dir, use_cache, device
        As in :func:`fertool.faces.stage.extract_faces`.
    force : bool
        Write into a non-empty ``out``.
    progress : bool
        Progress bar on stderr.
    params : dict, optional
        Recorded as ``params`` in ``faces.json`` (a command's options).
    title : str, optional
        Contact-sheet title (default ``"fertool faces <data folder name>"``).
    write_crops : bool, optional
        Write the crops as PNG files under ``crops/``. Default: yes, except with
        ``faces="crop"``, whose crops are the images themselves, resized (writing 35,887
        FER2013 crops atomically costs more than all the rest of the run); the ``crop`` column
        is then empty.

    Raises
    ------
    FertoolError
        Before any work, when ``out`` is not an empty folder and ``force`` is false, or
        ``data`` holds no image. Unreadable images never raise: they get an ``error`` row.
    """
    from fertool.faces.stage import extract_faces

    config = config if config is not None else FaceConfig()
    out = Path(out)
    _check_out(out, force)
    root, samples, skipped = find_images(data, group)
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample={sample}; expected at least 1")
        samples = [samples[i] for i in spread(len(samples), sample)]
    summary = FacesSummary(out, root, skipped_files=[str(p) for p in skipped])
    start = time.perf_counter()
    records = extract_faces(
        [p for p, _, _ in samples],
        config,
        cache_dir=cache_dir,
        use_cache=use_cache,
        all_faces=all_faces,
        progress=progress,
        device=device,
    )
    if write_crops is None:
        write_crops = config.faces != "crop"
    rows, sheet = _write_crops(records, samples, summary, all_faces, write_crops)
    summary.seconds = time.perf_counter() - start
    summary.rows = len(rows)
    _write_outputs(summary, rows, sheet, config, params, title)
    return summary


def _write_crops(records, samples, summary: FacesSummary, all_faces: bool, write: bool = True):
    """Write each record's crop under ``summary.out``, count its image; the CSV rows and the
    contact-sheet sample."""
    from fertool.core.io import write_png
    from fertool.faces.contact import mark_of

    root = summary.root
    by_path = {str(p): (i, p, label, grp) for i, (p, label, grp) in enumerate(samples)}
    sheet = SheetSample(len(samples))
    used: set[str] = set()
    rows = []
    last_path = None
    for rec in records:
        index, path, label, grp = by_path[rec.path]
        if rec.path != last_path:
            summary.add(rec.status, rec.n_faces, rec.message)
            last_path = rec.path
        crop_name = ""
        if rec.crop is not None and write:
            crop_name = _crop_name(root, path, label, rec.face_index, all_faces, used)
            write_png(summary.out / crop_name, rec.crop, force=True)
        box = rec.box or (None,) * 4
        rel = Path(path).relative_to(root).as_posix()
        rows.append([rel, label, grp, rec.status, rec.n_faces, rec.face_index,
                     *(_fmt(v) for v in box), _fmt(rec.score, 4), rec.message, crop_name])
        sheet.offer(index, rec.crop, mark_of(rec.status, rec.n_faces), Path(path).stem)
    return rows, sheet


def _write_outputs(summary: FacesSummary, rows, sheet: SheetSample, config: FaceConfig,
                   params: dict | None, title: str | None) -> None:
    """faces.csv, contact_sheet.png (when there is a tile) and faces.json."""
    from fertool.core.env import versions
    from fertool.core.io import write_json, write_png, write_text

    write_text(summary.csv, _csv_text(rows), force=True)
    sheet_image = sheet.image(title or f"fertool faces {summary.root.name}")
    if sheet_image is not None:
        summary.contact_sheet = summary.out / "contact_sheet.png"
        write_png(summary.contact_sheet, sheet_image, force=True)
    write_json(
        summary.json,
        {
            "command": "fertool faces",
            "params": params or {},
            "data": str(summary.root),
            "face_config": config.to_dict(),
            "face_config_key": config.key(),
            "counts": summary.counts(),
            "skipped_files": summary.skipped_files,
            "seconds": round(summary.seconds, 2),
            "versions": versions(),
        },
        force=True,
    )
