"""The seven canonical expression labels and the synonyms datasets use for them."""

from __future__ import annotations

import re

#: The seven canonical expressions, in the order every model, report and ONNX export uses.
LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

#: Synonyms seen in public datasets (SFEW, AFEW, FER2013, RAF-DB, AffectNet, CK+, JAFFE, KDEF),
#: matched case-insensitively after removing separators. Abbreviations are only those that
#: datasets actually use as folder names.
SYNONYMS: dict[str, str] = {
    "angry": "angry", "anger": "angry", "an": "angry", "ang": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust", "di": "disgust",
    "dis": "disgust", "contemptdisgust": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "joyful": "happy", "ha": "happy",
    "hap": "happy", "smile": "happy",
    "neutral": "neutral", "neutrality": "neutral", "ne": "neutral", "neu": "neutral",
    "calm": "neutral",
    "sad": "sad", "sadness": "sad", "sa": "sad", "unhappy": "sad",
    "surprise": "surprise", "surprised": "surprise", "surprising": "surprise", "su": "surprise",
    "sur": "surprise",
}

_STRIP = re.compile(r"[\s_\-.]+")


def canonical_label(name: str) -> str | None:
    """Map a class name to one of :data:`fertool.LABELS`, or ``None`` when unknown.

    Matching is case-insensitive and ignores spaces, dashes, dots and underscores; a leading
    numeric prefix such as ``"3_happy"`` or ``"03-Happy"`` is ignored too. Unknown names are
    never guessed (``"contempt"`` returns ``None``).

    >>> canonical_label("Happiness"), canonical_label("SURPRISED"), canonical_label("contempt")
    ('happy', 'surprise', None)
    """
    key = _STRIP.sub("", re.sub(r"^\d+[\s_\-.]*", "", name.strip().lower()))
    return SYNONYMS.get(key)


def label_index(label: str) -> int:
    """Index of a canonical label in :data:`fertool.LABELS`."""
    try:
        return LABELS.index(label)
    except ValueError:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}") from None
