"""`fertool faces`: detect, align and cache the faces of a dataset; write crops, CSV, sheet."""

from __future__ import annotations

import click

from fertool.cli._options import (
    data_option,
    face_options,
    force_option,
    group_option,
    renamed_option,
)

MAX_ERRORS_SHOWN = 3
MAX_SKIPPED_SHOWN = 20


@click.command("faces")
@data_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Output folder: faces.csv, crops/<label>/*.png, contact_sheet.png, faces.json.",
)
@click.option(
    "--sample",
    type=click.IntRange(1),
    default=None,
    help="Process only a sample of N images, spread evenly over the dataset.",
)
@renamed_option("--limit", "--sample", "sample", type=click.IntRange(1))
@click.option(
    "--all-faces", is_flag=True, help="One row and crop per detected face, not only the chosen one."
)
@face_options
@click.option("--no-cache", is_flag=True, help="Neither read nor write the face-crop cache.")
@click.option("--crops/--no-crops", "write_crops", default=None,
              help="Write the crops under OUT/crops/ (default: yes, except with --faces crop, "
              "whose crops are the images themselves, resized).")
@group_option
@force_option
def command(data, out, sample, all_faces, face, cache_dir, no_cache, write_crops, group, force):
    """Detect, choose and align the face of every image of a dataset.

    DATA is a folder with one sub-folder per expression (or any folder of images, then the
    label column is empty). Writes OUT/faces.csv (one row per image, or per face with
    --all-faces), the aligned crops under OUT/crops/, OUT/contact_sheet.png (a sample of crops:
    green border = face, yellow = one of several faces, red = no face, centre crop) and
    OUT/faces.json (settings, counts, versions). Results are cached, so a second run is fast:
    the later commands take the same face options and reuse the crops.
    """
    from fertool.core.io import printable
    from fertool.faces.extract import extract_dataset

    params = {k: v for k, v in click.get_current_context().params.items() if k[0] != "_"}
    s = extract_dataset(
        data, out, face, group=group, sample=sample, all_faces=all_faces, cache_dir=cache_dir,
        use_cache=not no_cache, force=force, progress=True, params=params,
        write_crops=write_crops,
    )
    click.echo(s.line())
    for message in s.error_messages[:MAX_ERRORS_SHOWN]:
        click.echo(f"  error: {printable(message)}")
    more = len(s.error_messages) - MAX_ERRORS_SHOWN
    if more > 0:
        click.echo(f"  ... and {more} more errors (see faces.csv)")
    if s.skipped_files:
        files = "file" if len(s.skipped_files) == 1 else "files"
        click.echo(f"  {len(s.skipped_files)} {files} skipped (not images; all in faces.json):")
        for path in s.skipped_files[:MAX_SKIPPED_SHOWN]:
            click.echo(f"    {printable(str(path))}")
        if len(s.skipped_files) > MAX_SKIPPED_SHOWN:
            click.echo(f"    ... and {len(s.skipped_files) - MAX_SKIPPED_SHOWN} more")
    crops = f"{s.crops}, " if s.crops.is_dir() else ""
    click.echo(f"wrote {s.csv}, {crops}{s.contact_sheet or 'no contact sheet'}")
