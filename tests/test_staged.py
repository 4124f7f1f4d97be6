"""Staged transfer (finetune --init RUN): weights copied, classifier rows matched by label name."""

from __future__ import annotations

import json

import pytest
import torch

from fertool.core.errors import FertoolError
from fertool.train.loop import TrainConfig, Trainer, prepare_data, run
from fertool.train.rundir import RunDir
from fertool.train.staged import load_init_run, prefix_digest

FLIP_ONLY = {"flip": 0.5, "rotate": 0, "scale": 0, "translate": 0, "brightness": 0,
             "contrast": 0, "saturation": 0, "erase": 0, "erase_area": [0.02, 0.15]}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from fertool.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_dataset(root / "data", n_per_class=6, seed=2, n_groups=4, width=200, height=160)


def _cfg(data, out, **kw):
    base = {"data": str(data), "out": str(out), "weights": None, "unfreeze": 4, "epochs": 1,
            "batch_size": 8, "protocol": "movie", "val_fraction": 0.25, "tta_flip": False,
            "head_on": "pool", "augment": FLIP_ONLY, "cache_dir": str(data.parent / "faces")}
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def prepared(tiny_dataset, tmp_path_factory):
    return prepare_data(_cfg(tiny_dataset, tmp_path_factory.mktemp("p")), progress=False)


@pytest.fixture(scope="module")
def first_run(tiny_dataset, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "run"
    run(_cfg(tiny_dataset, out, seed=3), progress=False, data=prepared)
    return out


def _state(path):
    return torch.load(path / "best.pt", weights_only=True)


def test_second_stage_starts_from_the_first_runs_best_weights(tiny_dataset, prepared, first_run,
                                                              tmp_path):
    trainer = Trainer(_cfg(tiny_dataset, tmp_path / "b", init=str(first_run), seed=9), prepared,
                      progress=False)
    best = _state(first_run)["model"]
    own = trainer.model.state_dict()
    assert set(own) == set(best)
    for key, value in best.items():
        torch.testing.assert_close(own[key], value, atol=0, rtol=0)
    assert trainer.init_info["labels_new"] == []
    assert trainer.init_info["checkpoint_sha256"] == RunDir(first_run).load_best().checkpoint_sha256
    # Without --init the same seed gives other (random) weights: the copy is what made them equal.
    plain = Trainer(_cfg(tiny_dataset, tmp_path / "c", seed=9), prepared, progress=False)
    assert not torch.equal(plain.model.state_dict()["backbone.logits.weight"],
                           best["backbone.logits.weight"])


def test_the_second_stage_records_where_it_started(tiny_dataset, prepared, first_run, tmp_path):
    report = run(_cfg(tiny_dataset, tmp_path / "b", init=str(first_run)), progress=False,
                 data=prepared)
    assert report["results"][0]["method"] == "finetune-none-unfreeze4-staged-pool"
    rec = json.loads((tmp_path / "b" / "config.json").read_text())
    assert rec["config"]["init"] == str(first_run)
    assert rec["init"]["checkpoint_sha256"] == RunDir(first_run).load_best().checkpoint_sha256
    assert rec["init"]["split_hash"] == prepared.split.hash
    assert "started from" in (tmp_path / "b" / "report.md").read_text()


def _relabelled_copy(src, dst, labels, order):
    """A copy of run ``src``: classifier rows ``order`` of the original, named ``labels``."""
    import shutil

    shutil.copytree(src, dst)
    ckpt = torch.load(src / "best.pt", weights_only=True)
    for key in ("backbone.logits.weight", "backbone.logits.bias"):
        ckpt["model"][key] = ckpt["model"][key][list(order)].clone()
    ckpt["labels"] = list(labels)
    torch.save(ckpt, dst / "best.pt")
    return ckpt


def test_classifier_rows_follow_the_label_names(tiny_dataset, prepared, first_run, tmp_path):
    from fertool.core.labels import LABELS

    # The earlier run had the labels in reverse order, and no 'neutral'.
    order = [i for i in reversed(range(len(LABELS))) if LABELS[i] != "neutral"]
    names = [LABELS[i] for i in order]
    ckpt = _relabelled_copy(first_run, tmp_path / "rev", names, order)
    trainer = Trainer(_cfg(tiny_dataset, tmp_path / "b", seed=5), prepared, progress=False)
    before = trainer.model.backbone.logits.weight.detach().clone()
    info = load_init_run(trainer.model, tmp_path / "rev")
    w = trainer.model.backbone.logits.weight.detach()
    src = ckpt["model"]["backbone.logits.weight"]
    for i, name in enumerate(LABELS):
        if name == "neutral":
            torch.testing.assert_close(w[i], before[i], atol=0, rtol=0)
        else:
            torch.testing.assert_close(w[i], src[names.index(name)], atol=0, rtol=0)
    assert info["labels_new"] == ["neutral"]
    assert set(info["labels_copied"]) == set(LABELS) - {"neutral"}
    # ... so the relabelled copy predicts, per label name, what the original run predicts.
    orig = RunDir(first_run).load_best().model
    x = prepared.x[:4]
    with torch.no_grad():
        a, b = orig(x), trainer.model(x)
    keep = [i for i, n in enumerate(LABELS) if n != "neutral"]
    torch.testing.assert_close(a[:, keep], b[:, keep], atol=1e-5, rtol=0)


def test_another_backbone_or_head_placement_is_refused(tiny_dataset, prepared, first_run,
                                                       tmp_path):
    with pytest.raises(FertoolError, match="head-on pool"):
        Trainer(_cfg(tiny_dataset, tmp_path / "e", head_on="embedding", init=str(first_run)),
                prepared, progress=False)
    with pytest.raises(FertoolError, match="not a finished fine-tuning run"):
        (tmp_path / "empty").mkdir()
        Trainer(_cfg(tiny_dataset, tmp_path / "f", init=str(tmp_path / "empty")), prepared,
                progress=False)


def test_prefix_digest_follows_the_frozen_numbers_only():
    from fertool.models.fernet import FerNet

    torch.manual_seed(0)
    a = FerNet(head_on="pool")
    b = FerNet(head_on="pool")
    b.load_state_dict(a.state_dict())
    stop = a.spec.layers.index("repeat_2")
    assert prefix_digest(a, stop) == prefix_digest(b, stop)
    with torch.no_grad():  # a change above the prefix leaves it; one inside it changes it
        b.backbone.block8.conv2d.weight.add_(1.0)
        assert prefix_digest(a, stop) == prefix_digest(b, stop)
        b.backbone.conv2d_1a.conv.weight[0, 0, 0, 0] += 1e-3
    assert prefix_digest(a, stop) != prefix_digest(b, stop)
