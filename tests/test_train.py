"""Fine-tuning: split forward, resume equivalence, run folder, CLI plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fertool.cli import main
from fertool.models.fernet import FerNet
from fertool.train.loop import TrainConfig, prepare_data, run


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from fertool.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_dataset(root / "data", n_per_class=8, seed=1, n_groups=4, width=200, height=160)


def _cfg(data, out, **kw):
    base = {"data": str(data), "out": str(out), "weights": None, "unfreeze": 2, "epochs": 3,
            "batch_size": 8, "protocol": "movie", "val_fraction": 0.25, "tta_flip": False,
            "cache_dir": str(data.parent / "faces")}
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def prepared(tiny_dataset, tmp_path_factory):
    """Face crops and split of the tiny dataset, prepared once for the module."""
    return prepare_data(_cfg(tiny_dataset, tmp_path_factory.mktemp("p")), progress=False)


@pytest.mark.parametrize("unfreeze", [1, 2, 4, 6, 9])
def test_split_forward_equals_full_forward(unfreeze):
    torch.manual_seed(0)
    model = FerNet()
    model.set_unfreeze(unfreeze)
    model.eval()
    x = torch.randn(2, 3, 160, 160)
    k = model.split_point()
    layers = model.spec.layers
    assert layers[k] not in model.frozen_children() or layers[k] == "dropout"
    with torch.no_grad():
        mid = model.run_sequence(x, 0, k)
        torch.testing.assert_close(model.run_sequence(mid, k), model(x), atol=1e-5, rtol=1e-5)


def test_resume_after_interrupt_matches_uninterrupted(tiny_dataset, prepared, tmp_path):
    """Interrupt after epoch 1 (as Ctrl-C would), resume, and compare final weights.

    Tolerance: exact (atol=0) on the CPU, where every random draw is seeded per epoch.
    """
    cfg_a = _cfg(tiny_dataset, tmp_path / "a", epochs=2)
    data = prepared
    run(cfg_a, progress=False, data=data)

    cfg_b = _cfg(tiny_dataset, tmp_path / "b", epochs=2)

    def interrupt(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg_b, progress=False, data=data, callbacks=[interrupt])
    assert (tmp_path / "b" / "last.pt").is_file()
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    run(cfg_b, resume=True, progress=False, data=data)

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=0, rtol=0)
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in ma] == [r["train_loss"] for r in mb]


def test_run_folder_contents_and_report(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset, tmp_path / "r", epochs=2, augment=None, monitor_angles=True,
               monitor_neurons=64, monitor_probe=8)
    report = run(cfg, progress=False)
    out = tmp_path / "r"
    for name in ("config.json", "last.pt", "best.pt", "metrics.jsonl", "curves.png",
                 "confusion.png", "report.md", "report.json", "angles_heatmap.png"):
        assert (out / name).is_file(), name
    assert report["protocol"] == "movie" and len(report["split_hash"]) == 16
    r = report["results"][0]
    assert 0.0 <= r["accuracy_mean"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for key in ("train_loss", "train_accuracy", "val_accuracy", "val_macro_f1", "lr",
                "seconds", "images_per_s", "angles"):
        assert key in rows[0]
    # The run folder refuses to be reused without --force or --resume.
    from fertool.core.errors import FertoolError

    with pytest.raises(FertoolError, match="not empty"):
        run(cfg, progress=False)


def test_frozen_cache_trains_like_uncached(tiny_dataset, prepared, tmp_path):
    """Without augmentation, the cached-trunk path and the plain path compute the same thing."""
    a = _cfg(tiny_dataset, tmp_path / "c1", epochs=1, augment=None, cache_frozen=True,
             unfreeze=4)
    b = _cfg(tiny_dataset, tmp_path / "c2", epochs=1, augment=None, cache_frozen=False,
             unfreeze=4)
    run(a, progress=False, data=prepared)
    run(b, progress=False, data=prepared)
    wa = torch.load(tmp_path / "c1" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "c2" / "last.pt", weights_only=True)["model"]
    for key in ("backbone.logits.weight", "backbone.last_linear.weight"):
        torch.testing.assert_close(wa[key], wb[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n, expected", [(1, 3_591), (2, 4_615), (4, 922_119), (6, 2_522_887),
                                         (9, 20_773_383)])
def test_dry_run_prints_trainable_parameters(tiny_dataset, tmp_path, n, expected):
    res = CliRunner().invoke(main, ["finetune", "--data", str(tiny_dataset), "--out",
                                    str(tmp_path / "x"), "--unfreeze", str(n), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert f"trainable parameters {expected:,} of 23,486,215" in res.output
    assert not (tmp_path / "x").exists()


def test_unfreeze_zero_is_refused():
    from fertool.core.errors import FertoolError
    from fertool.train.loop import make_optimizer

    model = FerNet()
    model.set_unfreeze(0)
    with pytest.raises(FertoolError, match="nothing to train"):
        make_optimizer(model, TrainConfig(data="x", out="y", unfreeze=0))


def test_scheduler_warmup_then_cosine():
    from fertool.train.loop import make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, TrainConfig(data="x", out="y", epochs=4, warmup_epochs=1), 10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0
    assert np.all(np.diff(lrs[10:]) <= 1e-12) and lrs[-1] < 0.01
