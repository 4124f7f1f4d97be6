"""Angular-separation monitor: angles against a slow reference, geometry, dead neurons, the
hook-based monitor on a tiny conv net (stuck / not stuck), modes, sampling, resume, plots."""

from __future__ import annotations

import io
import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fertool.train.angles import (
    ANGLE_BINS,
    AngleMonitor,
    AngleStats,
    activation_matrix,
    angle_quantiles,
    default_layer,
    pairwise_angles,
    stuck_flags,
    summarise,
    wasserstein_from_quantiles,
)
from fertool.train.angles_plot import plot_angle_heatmap, plot_angle_summary

ATOL_DEG = 1e-3


def slow_angles(acts: np.ndarray, center: str) -> list[float]:
    """Obviously-correct reference: centre, then one math.acos per pair i < j."""
    p, c = acts.shape
    cols = []
    for j in range(c):
        v = [float(acts[i, j]) for i in range(p)]
        if center == "mean":
            m = sum(v) / p
            v = [x - m for x in v]
        elif center == "half":
            v = [x - 0.5 for x in v]
        cols.append(v)
    out = []
    for a, b in itertools.combinations(cols, 2):
        dot = sum(x * y for x, y in zip(a, b))
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        out.append(math.degrees(math.acos(max(-1.0, min(1.0, dot / (na * nb))))))
    return out


@pytest.mark.parametrize("center", ["mean", "half", "none"])
def test_pairwise_angles_match_slow_reference(center):
    rng = np.random.default_rng(0)
    acts = rng.random((30, 20)).astype(np.float32)
    acts[:, 5] = acts[:, 3] * 2.0 + 0.01 * rng.standard_normal(30).astype(np.float32)  # ~0 deg
    acts[:, 7] = 1.0 - acts[:, 2]  # complementary under "mean" and "half"
    res = pairwise_angles(torch.from_numpy(acts), center=center)
    assert res.n_dead == 0 and res.n_neurons == 20
    assert res.angles.dtype == np.float32 and res.angles.shape == (190,)
    np.testing.assert_allclose(res.angles, slow_angles(acts, center), rtol=0, atol=ATOL_DEG)
    # numpy input gives the same result
    np.testing.assert_array_equal(pairwise_angles(acts, center=center).angles, res.angles)


def test_known_geometry():
    a = np.array([0.1, 0.9, 0.4, 0.7, 0.2, 0.6])
    u = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # zero mean
    w = np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0])  # zero mean, orthogonal to u
    acts = np.stack([a, a, -a, u, w], axis=1)
    ang = pairwise_angles(acts, center="mean").angles
    # pair order: (0,1) (0,2) (0,3) (0,4) (1,2) (1,3) (1,4) (2,3) (2,4) (3,4)
    np.testing.assert_allclose(ang[0], 0.0, atol=ATOL_DEG)  # identical
    np.testing.assert_allclose(ang[1], 180.0, atol=ATOL_DEG)  # negated
    np.testing.assert_allclose(ang[4], 180.0, atol=ATOL_DEG)
    np.testing.assert_allclose(ang[9], 90.0, atol=ATOL_DEG)  # orthogonal
    # Gedeon's sigmoid case: s and 1 - s are complementary once shifted by 0.5
    s = np.array([0.1, 0.8, 0.3, 0.95, 0.5])
    np.testing.assert_allclose(
        pairwise_angles(np.stack([s, 1 - s], 1), center="half").angles, [180.0], atol=ATOL_DEG
    )
    # ... but without centring two non-negative vectors are never more than 90 degrees apart
    assert pairwise_angles(np.stack([s, 1 - s], 1), center="none").angles[0] < 90.0


def test_angles_invariant_to_per_neuron_scale_and_offset():
    rng = np.random.default_rng(1)
    acts = rng.standard_normal((40, 12))
    scaled = acts * rng.uniform(0.01, 100, 12) + rng.uniform(-50, 50, 12)
    np.testing.assert_allclose(
        pairwise_angles(scaled).angles, pairwise_angles(acts).angles, atol=ATOL_DEG
    )


def test_dead_neurons_are_reported_and_excluded():
    rng = np.random.default_rng(2)
    acts = rng.random((16, 6))
    acts[:, 1] = 0.0  # a ReLU channel that never fires
    acts[:, 4] = 3.0  # constant output: no variance
    res = pairwise_angles(acts, center="mean")
    assert res.n_dead == 2 and res.dead.tolist() == [1, 4]
    assert res.angles.shape == (6,) and np.isfinite(res.angles).all()
    live = acts[:, [0, 2, 3, 5]]
    np.testing.assert_allclose(res.angles, slow_angles(live, "mean"), atol=ATOL_DEG)
    # without centring only the all-zero channel has no direction
    assert pairwise_angles(acts, center="none").dead.tolist() == [1]
    # all dead: no angles, no NaN, and the summary says so
    none_live = pairwise_angles(np.ones((5, 3)))
    assert none_live.n_dead == 3 and none_live.angles.size == 0
    stats = summarise(none_live, epoch=0)
    assert stats.n_pairs == 0 and stats.histogram.sum() == 0


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="center"):
        pairwise_angles(np.ones((3, 3)), center="median")
    with pytest.raises(ValueError, match="activation_matrix"):
        pairwise_angles(np.ones((3, 3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        pairwise_angles(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="shape"):
        activation_matrix(torch.ones(5))


def test_conv_activations_are_spatially_pooled():
    acts = torch.randn(7, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    pooled = activation_matrix(acts)
    assert pooled.shape == (7, 5)
    torch.testing.assert_close(pooled, acts.mean(dim=(2, 3)))
    flat = torch.randn(7, 5)
    assert activation_matrix(flat) is flat


def test_summary_histogram_quantiles_and_shift():
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((20, 30))
    res = pairwise_angles(acts)
    s = summarise(res, epoch=4, loss=1.5)
    assert s.histogram.shape == (len(ANGLE_BINS) - 1,) and s.histogram.sum() == s.n_pairs == 435
    assert s.min_angle == pytest.approx(res.angles.min(), abs=1e-4)
    assert s.share_below_15 == pytest.approx(np.mean(res.angles < 15.0))
    # a uniform rotation of every angle by 2 degrees is a Wasserstein shift of 2 degrees
    q = angle_quantiles(res.angles)
    assert wasserstein_from_quantiles(q, angle_quantiles(res.angles + 2.0)) == pytest.approx(
        2.0, abs=1e-4
    )
    assert summarise(res, epoch=5, previous=s).shift == 0.0


def test_stuck_flags_need_patience_and_a_changing_loss():
    def h(shifts, losses):
        return [
            AngleStats(i, 0, 0, 0, 0, 2, 0, 1, np.zeros(36, np.int64), np.zeros(3), sh, lo)
            for i, (sh, lo) in enumerate(zip(shifts, losses))
        ]

    still = [None, 0.0, 0.0, 0.0, 0.0]
    assert stuck_flags(h(still, [2.0, 1.9, 1.8, 1.7, 1.6]), 0.05, 1e-3, 3) == [
        False, False, False, True, True,
    ]  # fmt: skip
    # converged (loss flat too): not stuck
    assert not any(stuck_flags(h(still, [1.0] * 5), 0.05, 1e-3, 3))
    # no loss given: cannot tell, not stuck
    assert not any(stuck_flags(h(still, [None] * 5), 0.05, 1e-3, 3))
    # one moving epoch resets the count
    moving = [None, 0.0, 0.0, 1.0, 0.0]
    assert not any(stuck_flags(h(moving, [2.0, 1.9, 1.8, 1.7, 1.6]), 0.05, 1e-3, 3))


# --- the monitor on a tiny conv net -------------------------------------------------------------


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 4),
    )


def batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return x, y


def train(model, monitor, *, lr, epochs, params=None, fresh_batches=False, momentum=0.9):
    """Train with SGD; measure the monitor after every epoch; return the per-epoch losses."""
    gen = torch.Generator().manual_seed(1)
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    x, y = batch(128, gen)
    losses = []
    for epoch in range(epochs):
        if fresh_batches:
            x, y = batch(128, gen)
        total = 0.0
        for i in range(0, 128, 32):
            loss = nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() / 4
        losses.append(total)
        monitor.measure(epoch, total)
    return losses


@pytest.fixture
def probe():
    return batch(24, torch.Generator().manual_seed(5))[0]


def test_frozen_layer_is_stuck_while_the_head_learns(probe):
    torch.manual_seed(0)
    model = tiny_net()
    for p in model[:4].parameters():
        p.requires_grad_(False)
    mon = AngleMonitor(model, "2", probe, n_neurons=16, patience=3)
    losses = train(model, mon, lr=0.5, epochs=5)
    assert losses[-1] < losses[0] - 0.01  # training goes on and the loss falls
    assert [s.shift for s in mon.history[1:]] == [0.0] * 4
    assert [s.stuck for s in mon.history] == [False, False, False, True, True]
    assert mon.stuck()


def test_learning_rate_zero_with_fresh_batches_is_stuck(probe):
    torch.manual_seed(0)
    model = tiny_net()
    mon = AngleMonitor(model, "3", probe, patience=2)
    losses = train(model, mon, lr=0.0, epochs=4, fresh_batches=True)
    assert min(abs(b - a) for a, b in itertools.pairwise(losses)) > 1e-3  # loss fluctuates
    assert mon.stuck()


def test_training_layer_is_not_stuck(probe):
    torch.manual_seed(0)
    model = tiny_net()
    mon = AngleMonitor(model, "2", probe, n_neurons=16, patience=2)
    train(model, mon, lr=0.05, epochs=4)
    shifts = [s.shift for s in mon.history[1:]]
    assert min(shifts) > 10 * mon.shift_tol
    assert not any(s.stuck for s in mon.history)
    assert all(s.n_neurons == 16 and s.n_pairs == 120 for s in mon.history)


def test_measure_restores_each_modules_mode_and_removes_the_hook(probe):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))
    model.train()
    model[1].eval()  # a frozen batch-norm layer kept in eval mode inside a training model
    before = [m.training for m in model.modules()]
    seen = []
    model[3].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    mon = AngleMonitor(model, "1", probe)
    stats = mon.measure(0)
    assert stats.n_neurons == 8
    assert [m.training for m in model.modules()] == before
    assert seen == []  # the forward pass stopped at the monitored layer
    assert len(model[1]._forward_hooks) == 0
    # the same after a forward pass that fails
    bad = AngleMonitor(model, "1", torch.randn(4, 5, 8, 8))
    with pytest.raises(RuntimeError):
        bad.measure(0)
    assert [m.training for m in model.modules()] == before
    assert len(model[1]._forward_hooks) == 0


def test_probe_runs_in_eval_mode_without_grad(probe):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Dropout(0.9), nn.Conv2d(8, 4, 1))
    seen = []
    model[2].register_forward_pre_hook(
        lambda m, a: seen.append((model[1].training, torch.is_grad_enabled()))
    )
    model.train()
    mon = AngleMonitor(model, "2", probe)
    a, b = mon.measure(0), mon.measure(1)
    assert seen == [(False, False), (False, False)]
    assert b.shift == 0.0 and np.array_equal(a.histogram, b.histogram)  # dropout was off


def test_neuron_sample_is_fixed_across_epochs(probe):
    torch.manual_seed(0)
    model = tiny_net()
    mon = AngleMonitor(model, "2", probe, n_neurons=10, seed=3)
    mon.measure(0)
    idx = mon.indices
    assert idx.tolist() == sorted(set(idx.tolist())) and len(idx) == 10
    assert 0 <= idx.min() and idx.max() < 32
    with torch.no_grad():
        model[2].weight.mul_(-1.5)  # the layer changes ...
    mon.measure(1)
    assert torch.equal(mon.indices, idx)  # ... the neurons measured do not
    other = AngleMonitor(model, "2", probe, n_neurons=10, seed=4)
    other.measure(0)
    assert not torch.equal(other.indices, idx)
    # with no more channels than n_neurons, all are measured
    full = AngleMonitor(model, "2", probe, n_neurons=32)
    full.measure(0)
    assert full.indices is None and full.history[0].n_neurons == 32


def test_state_dict_round_trip_resumes_history_and_shift(probe, tmp_path):
    torch.manual_seed(0)
    model = tiny_net()
    mon = AngleMonitor(model, "2", probe, n_neurons=12, patience=2)
    train(model, mon, lr=0.05, epochs=2)
    state = mon.state_dict()
    json.dumps(state)  # plain values only
    torch.save({"angles": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["angles"]

    resumed = AngleMonitor(model, "2", probe.clone(), n_neurons=12, patience=2, seed=99)
    resumed.load_state_dict(loaded)
    assert torch.equal(resumed.indices, mon.indices)
    for a, b in zip(resumed.history, mon.history):
        assert a.to_dict() == b.to_dict()
    with torch.no_grad():
        model[2].bias.add_(0.3)
    s_orig, s_resumed = mon.measure(2, 1.0), resumed.measure(2, 1.0)
    assert s_resumed.shift == pytest.approx(s_orig.shift, abs=1e-9) and s_orig.shift > 0

    with pytest.raises(ValueError, match="probe"):
        AngleMonitor(model, "2", probe + 1, n_neurons=12).load_state_dict(state)
    with pytest.raises(ValueError, match="layer"):
        AngleMonitor(model, "0", probe, n_neurons=12).load_state_dict(state)


def test_bad_layer_name_lists_valid_names(probe):
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    model.add_module("head", nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"features\.0.*top-level modules: features, head"):
        AngleMonitor(model, "features.O", probe)
    with pytest.raises(ValueError, match="center"):
        AngleMonitor(model, "head", probe, center="median")


def test_default_layer_for_facenet_inside_a_wrapper():
    facenet = pytest.importorskip("facenet_pytorch")
    with torch.device("meta"):  # structure only: no weights allocated
        backbone = facenet.InceptionResnetV1(classify=False)
    wrapper = nn.Module()
    wrapper.backbone = backbone
    wrapper.head = nn.Linear(512, 7)
    assert default_layer(wrapper) == "backbone.block8"
    for p in backbone.parameters():
        p.requires_grad_(False)
    for p in backbone.repeat_3.parameters():
        p.requires_grad_(True)
    assert default_layer(wrapper) == "backbone.repeat_3"
    for p in backbone.repeat_3.parameters():
        p.requires_grad_(False)
    assert default_layer(backbone) == "block8"  # only the head trains: what it sees
    with pytest.raises(ValueError, match="InceptionResnetV1"):
        default_layer(tiny_net())


# --- plots -------------------------------------------------------------------------------------


def test_plots_render(probe):
    torch.manual_seed(0)
    model = tiny_net()
    for p in model[:4].parameters():
        p.requires_grad_(False)
    mon = AngleMonitor(model, "2", probe, n_neurons=16, patience=2)
    train(model, mon, lr=0.5, epochs=4)
    heat = plot_angle_heatmap(mon.history)
    summary = plot_angle_summary(mon.history)
    assert len(summary.axes) >= 3
    for fig in (heat, summary):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="history"):
        plot_angle_heatmap([])
    with pytest.raises(ValueError, match="losses"):
        plot_angle_summary(mon.history, losses=[1.0])
