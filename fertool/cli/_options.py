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


def _face_options(f, from_model: bool):
    """The face-stage options; ``from_model``: unset means the model's own settings."""

    def default(value):
        return (None, " (default: the model's)") if from_model else (value, "")

    f = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Face-crop cache (default: $FERTOOL_CACHE or ~/.cache/fertool).",
    )(f)
    value, note = default(1.0)
    f = click.option(
        "--detect-scale",
        type=click.FloatRange(0.1, 1.0),
        default=value,
        show_default=not from_model,
        help="Run detection on a copy downscaled by this factor (boxes mapped back)" + note + ".",
    )(f)
    value, note = default("center")
    f = click.option(
        "--no-face",
        type=click.Choice(["center", "skip"]),
        default=value,
        show_default=not from_model,
        help="What to do with images where no face is found: centre crop (flagged) or skip"
        + note + ".",
    )(f)
    value, note = default("largest")
    f = click.option(
        "--face-policy",
        type=click.Choice(["largest", "most-confident", "center"]),
        default=value,
        show_default=not from_model,
        help="Which face to use when an image has several" + note + ".",
    )(f)
    return f


def face_options(f):
    """Options of the face stage (detection, choice of face, alignment, cache)."""
    return _face_options(f, from_model=False)


def model_face_options(f):
    """The same options for a trained model's inputs: unset, they take the model's settings."""
    return _face_options(f, from_model=True)
