"""Option groups shared by several commands, written once."""

from __future__ import annotations

import click


def force_option(f):
    return click.option("--force", is_flag=True, help="Overwrite existing outputs.")(f)


def data_option(f):
    return click.option(
        "--data",
        "data",
        required=True,
        type=click.Path(file_okay=False, path_type=str),
        help="Dataset folder with one sub-folder per expression (names matched to the 7 labels).",
    )(f)


def group_option(f):
    return click.option(
        "--group-regex",
        "group",
        default="sfew",
        show_default=True,
        help="Group key for leakage-free splits: 'sfew' (movie name from the file name), "
        "'none', or a regular expression whose first group is the key.",
    )(f)


def protocol_options(f):
    f = click.option(
        "--seeds",
        default="0",
        show_default=True,
        help="Comma-separated split seeds (the paper protocol repeats over seeds).",
    )(f)
    f = click.option(
        "--protocol",
        type=click.Choice(["paper", "movie", "kfold"]),
        default="movie",
        show_default=True,
        help="paper: stratified 50/50; movie: grouped 2-fold (no movie on both sides); "
        "kfold: stratified k-fold.",
    )(f)
    return f


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint="--seeds"
        )


def face_options(f):
    """Options of the face stage (detection, choice of face, alignment, cache)."""
    f = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Face-crop cache (default: $FERTOOL_CACHE or ~/.cache/fertool).",
    )(f)
    f = click.option(
        "--detect-scale",
        type=click.FloatRange(0.1, 1.0),
        default=1.0,
        show_default=True,
        help="Run detection on a copy downscaled by this factor (boxes mapped back).",
    )(f)
    f = click.option(
        "--no-face",
        type=click.Choice(["center", "skip"]),
        default="center",
        show_default=True,
        help="What to do with images where no face is found: centre crop (flagged) or skip.",
    )(f)
    f = click.option(
        "--face-policy",
        type=click.Choice(["largest", "most-confident", "center"]),
        default="largest",
        show_default=True,
        help="Which face is the labelled one when an image has several.",
    )(f)
    return f
