import pytest

from fertool.core.labels import LABELS, canonical_label, label_index


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Angry", "angry"), ("anger", "angry"), ("DISGUST", "disgust"), ("Disgusted", "disgust"),
        ("fearful", "fear"), ("Happiness", "happy"), ("happy", "happy"), ("Neutral", "neutral"),
        ("neutrality", "neutral"), ("sadness", "sad"), ("Surprised", "surprise"),
        ("surprise", "surprise"), ("3_happy", "happy"), ("04-Sad", "sad"), ("  Fear ", "fear"),
    ],
)
def test_synonyms_case_insensitive(name, expected):
    assert canonical_label(name) == expected


@pytest.mark.parametrize("name", ["contempt", "unknown", "train", "", "happysad", "12"])
def test_unknown_names_are_not_guessed(name):
    assert canonical_label(name) is None


def test_label_order_is_canonical():
    assert LABELS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert [label_index(x) for x in LABELS] == list(range(7))
    with pytest.raises(ValueError, match="expected one of"):
        label_index("contempt")
