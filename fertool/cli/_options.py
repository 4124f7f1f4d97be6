"""Option groups shared by several commands, written once, and the deprecated spellings.

The face options (:func:`face_options`) are the whole face configuration: every command that
runs the face stage takes the same set and receives one ``face`` argument, a
:class:`fertool.faces.config.FaceConfig` (``face_changes``, a dict, for :func:`model_face_options`),
plus ``cache_dir``. Old option spellings stay for one release as hidden aliases
(:func:`renamed_option`) that print a deprecation message.
"""

from __future__ import annotations

import functools

import click
from click.core import ParameterSource

#: Names of fertool.faces.detectors.available(), restated so that `fertool --help` imports
#: nothing (a test keeps the two equal), and the library's default detector, likewise.
DETECTORS = ("blazeface", "mtcnn")
DEFAULT_DETECTOR = "blazeface"
#: Face option -> FaceConfig field.
FACE_FIELDS = {
    "faces": "faces",
    "detector": "detector",
    "face_policy": "policy",
    "no_face": "no_face",
    "detect_scale": "detect_scale",
    "margin": "margin",
    "min_face_size": "min_face_size",
    "align": "align",
}


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


PROTOCOLS = ("paper", "movie", "kfold", "movie-legacy", "fixed")


def fixed_split_options(f):
    """``--split-regex`` and ``--split-csv``: the parts of ``--protocol fixed``."""
    f = click.option(
        "--split-csv",
        type=click.Path(exists=True, dir_okay=False, path_type=str),
        default=None,
        help="--protocol fixed: a CSV with path (relative to --data) and part (train, val, "
        "test; or a FER2013-style usage) columns.",
    )(f)
    f = click.option(
        "--split-regex",
        default=None,
        help="--protocol fixed: rules REGEX=PART (PART: train, val, test) searched in each "
        "image's path, comma-separated, first match wins; or the preset fer2013 "
        "(Training_=train,PublicTest_=val,PrivateTest_=test).",
    )(f)
    return f


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint="--seeds"
        )


def _face_options(command, from_model: bool):
    """The face-stage options; ``from_model``: unset means the model's own settings."""

    @functools.wraps(command)
    def wrapper(*args, **kw):
        given = {FACE_FIELDS[k]: kw.pop(k) for k in FACE_FIELDS}
        given = {k: v for k, v in given.items() if v is not None}
        if from_model:
            kw["face_changes"] = given
        else:
            from fertool.faces.config import FaceConfig

            try:
                kw["face"] = FaceConfig(**given)
            except ValueError as exc:
                raise click.UsageError(f"face settings: {exc}") from None
        return command(*args, **kw)

    def default(value):
        return (None, " (default: the model's)") if from_model else (value, "")

    f = wrapper
    f = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Face-crop cache (default: $FERTOOL_CACHE or ~/.cache/fertool).",
    )(f)
    value, note = default(True)
    f = click.option(
        "--align/--no-align",
        default=value,
        show_default=not from_model,
        help="Rotate and scale the face so the five landmarks fit the template (eyes level); "
        "--no-align crops the detector box without rotation" + note + ".",
    )(f)
    value, note = default(20)
    f = click.option(
        "--min-face-size",
        type=click.IntRange(12),
        default=value,
        show_default=not from_model,
        help="Smallest face to look for, in full-resolution pixels. Detection time falls as "
        "this rises; with --detect-scale 0.5, 40 makes detection about twice as fast as at "
        "full scale" + note + ".",
    )(f)
    value, note = default(0.1)
    f = click.option(
        "--margin",
        type=click.FloatRange(-0.4, 2.0),
        default=value,
        show_default=not from_model,
        help="Context around the face as a fraction (0 = tight MTCNN box)" + note + ".",
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
    value, note = default(DEFAULT_DETECTOR)
    f = click.option(
        "--detector",
        type=click.Choice(DETECTORS),
        default=value,
        show_default=not from_model,
        help="Face detector (five landmarks per face)" + note + ".",
    )(f)
    value, note = default("detect")
    f = click.option(
        "--faces",
        type=click.Choice(["detect", "crop"]),
        default=value,
        show_default=not from_model,
        help="detect: find the face with the detector; crop: every image already is a face "
        "crop (FER2013, CK+ crops, aligned faces): the whole image is resized to the model's "
        "input, no detector runs (status 'crop')" + note + ".",
    )(f)
    return f


def face_options(f):
    """The face settings (detector, choice of face, alignment) and the cache folder: the
    command receives ``face`` (a FaceConfig) and ``cache_dir``."""
    return _face_options(f, from_model=False)


def model_face_options(f):
    """The same options for a trained model's inputs: unset, they take the model's settings;
    the command receives ``face_changes`` (FaceConfig field -> value, only those given)."""
    return _face_options(f, from_model=True)


def deprecated(old: str, new: str) -> None:
    """Print the deprecation message of an old spelling (stderr)."""
    click.echo(
        f"warning: {old} is deprecated and will be removed in the next release; use {new}",
        err=True,
    )


def renamed_option(old: str, new: str, dest: str, **option_kw):
    """A hidden option spelt ``old`` that stands for the option ``new`` (parameter ``dest``)
    for one release: given, it prints a deprecation message and sets ``dest`` (unless ``new``
    was given too, which wins)."""

    hidden = "_deprecated_" + old.lstrip("-").replace("-", "_")

    def decorator(f):
        @functools.wraps(f)
        def wrapper(*args, **kw):
            value = kw.pop(hidden)
            if value is not None:
                deprecated(old, new)
                ctx = click.get_current_context()
                if ctx.get_parameter_source(dest) in (None, ParameterSource.DEFAULT):
                    kw[dest] = value
            return f(*args, **kw)

        return click.option(old, hidden, hidden=True, default=None, **option_kw)(wrapper)

    return decorator


def data_option_or_argument(f):
    """``--data`` (the one spelling) that also accepts the dataset as a positional argument,
    the old spelling of ``fertool embed`` (deprecated)."""

    @functools.wraps(f)
    def wrapper(*args, **kw):
        positional = kw.pop("data_argument")
        if positional is not None:
            deprecated("the positional DATA argument", "--data DATA")
            if kw["data"] is not None and kw["data"] != positional:
                raise click.UsageError("give the dataset once: --data DATA")
            kw["data"] = positional
        if kw["data"] is None:
            raise click.UsageError("Missing option '--data'.")
        return f(*args, **kw)

    wrapped = click.argument(
        "data_argument", required=False, metavar="", type=click.Path(path_type=str)
    )(wrapper)
    return click.option(
        "--data",
        "data",
        default=None,
        type=click.Path(file_okay=False, path_type=str),
        help="Dataset folder: one sub-folder per expression (gives labels), or any folder of "
        "images, searched recursively. Required.",
    )(wrapped)
