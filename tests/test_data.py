import numpy as np
import pytest

from fertool.core.errors import DatasetError
from fertool.core.labels import LABELS
from fertool.data.dataset import carve_validation, discover, make_splits, sfew_group, splits_hash


def make_tree(root, per_class=12, movies=6):
    """A tiny folder-per-class dataset with SFEW-style names (movie_clip_frame)."""
    folders = {"Angry": "angry", "happiness": "happy", "SAD": "sad", "Surprised": "surprise"}
    for folder in folders:
        d = root / folder
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"Movie{i % movies}_{i:09d}_{i:08d}.png").write_bytes(b"x")
    (root / "contempt").mkdir()
    (root / "contempt" / "a_1_2.png").write_bytes(b"x")
    (root / "Angry" / "notes.txt").write_text("not an image")
    return folders


def test_discover_maps_synonyms_and_reports_unknown(tmp_path):
    make_tree(tmp_path)
    m = discover(tmp_path)
    assert len(m) == 48
    assert m.classes == ["angry", "happy", "sad", "surprise"]
    assert m.unknown_folders == ["contempt"]
    assert any(p.endswith("notes.txt") for p in m.skipped_files)
    assert set(m.groups) == {f"Movie{i}" for i in range(6)}


def test_discover_recurses_into_class_folders(tmp_path):
    (tmp_path / "fear" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "fear" / "sub" / "deeper" / "x_1_2.jpg").write_bytes(b"x")
    assert [s.label for s in discover(tmp_path).samples] == ["fear"]


def test_discover_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "missing")
    (tmp_path / "contempt").mkdir()
    with pytest.raises(DatasetError, match="contempt"):
        discover(tmp_path)


def test_sfew_group_key():
    assert sfew_group("HarryPotter_Deathly_Hallows_1_000046280_00000017.jpg") == (
        "HarryPotter_Deathly_Hallows_1"
    )
    assert sfew_group("face.png") == "face"


def test_regex_group(tmp_path):
    d = tmp_path / "happy"
    d.mkdir()
    for name in ["KA.HA1.29.tiff", "KA.HA2.30.tiff", "KM.HA1.4.tiff"]:
        (d / name).write_bytes(b"x")
    m = discover(tmp_path, group=r"^([A-Z]+)\.")
    assert sorted(set(m.groups)) == ["KA", "KM"]


def test_paper_split_is_stratified_half(tmp_path):
    make_tree(tmp_path, per_class=20)
    m = discover(tmp_path)
    (s,) = make_splits(m, "paper", seeds=[3])
    assert len(s.train) + len(s.test) == len(m)
    assert not set(s.train) & set(s.test)
    for c in range(len(LABELS)):
        n_tr, n_te = (m.y[s.train] == c).sum(), (m.y[s.test] == c).sum()
        assert abs(n_tr - n_te) <= 1


def test_movie_split_never_shares_a_group(tmp_path):
    make_tree(tmp_path, per_class=24, movies=8)
    m = discover(tmp_path)
    splits = make_splits(m, "movie", seeds=[0, 1])
    assert len(splits) == 4
    for s in splits:
        assert not set(m.groups[s.train]) & set(m.groups[s.test])
        assert len(s.train) + len(s.test) == len(m)


def test_same_seed_same_hash_other_seed_other_hash(tmp_path):
    make_tree(tmp_path, per_class=20)
    m = discover(tmp_path)
    a = make_splits(m, "paper", seeds=[0, 1])
    b = make_splits(m, "paper", seeds=[0, 1])
    assert [s.hash for s in a] == [s.hash for s in b]
    assert a[0].hash != a[1].hash
    assert splits_hash(a) == splits_hash(b)
    np.testing.assert_array_equal(a[0].test, b[0].test)


def test_kfold_covers_every_sample_once(tmp_path):
    make_tree(tmp_path, per_class=20, movies=10)
    m = discover(tmp_path)
    splits = make_splits(m, "kfold", n_folds=5)
    tests = np.concatenate([s.test for s in splits])
    assert sorted(tests.tolist()) == list(range(len(m)))


def test_validation_is_carved_from_train_only(tmp_path):
    make_tree(tmp_path, per_class=24, movies=8)
    m = discover(tmp_path)
    s = make_splits(m, "movie")[0]
    fit, val = carve_validation(m, s.train, fraction=0.25)
    assert set(fit) | set(val) == set(s.train)
    assert not set(fit) & set(val)
    assert not set(m.groups[fit]) & set(m.groups[val])


def test_sfew_movie_protocol_real(sfew_root):
    m = discover(sfew_root)
    assert len(m) == 675 and len(set(m.groups)) == 60
    for s in make_splits(m, "movie"):
        assert not set(m.groups[s.train]) & set(m.groups[s.test])


def test_carve_validation_names_classes_rarer_than_folds(tmp_path, caplog):
    import logging
    import warnings

    make_tree(tmp_path, per_class=24, movies=8)
    for i in range(2):  # a class with two images only
        (tmp_path / "fear").mkdir(exist_ok=True)
        (tmp_path / "fear" / f"Movie{i}_{i:09d}_{i:08d}.png").write_bytes(b"x")
    m = discover(tmp_path)
    train = np.arange(len(m))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        fit, val = carve_validation(m, train, fraction=0.25)
    assert set(fit) | set(val) == set(train)
    assert not [w for w in caught if "least populated class" in str(w.message)]
    (record,) = [r for r in caplog.records if "validation carve" in r.message]
    assert "fear (2)" in record.message and "angry" not in record.message
