"""FerNet: preprocessing contract, feature layers, freezing (paper Table 3) and batch-norm modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fertool.core.labels import LABELS
from fertool.models.fernet import (
    FEATURE_LAYERS,
    UNFREEZE_ORDER,
    FerNet,
    Preprocessing,
    create_model,
    trainable_parameters,
    unfreeze_table,
)

PAPER_TABLE = {1: 3_591, 2: 4_615, 4: 922_119, 6: 2_522_887, 9: 20_773_383}
TOTAL = 23_486_215


SMALL = Preprocessing(size=96)  # random-weight tests run on small inputs to stay fast


@pytest.fixture(scope="module")
def net() -> FerNet:
    torch.manual_seed(0)
    return FerNet(7, SMALL).eval()


def _batch(n=2, size=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_unfreeze_table_matches_paper():
    rows = dict(unfreeze_table())
    for n, count in PAPER_TABLE.items():
        assert rows[n] == count, n
    assert rows[len(UNFREEZE_ORDER)] == TOTAL


def test_unfreeze_order_is_children_from_output_end(net):
    names = [n for n, _ in net.backbone.named_children()]
    assert tuple(reversed(names)) == UNFREEZE_ORDER


def test_preprocessing_round_trip_and_values():
    p = Preprocessing(face={"margin": 0.2, "policy": "largest"})
    q = Preprocessing.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p and q.labels == LABELS
    assert Preprocessing.from_json(p.to_json()) == p
    x = np.array([[[[0, 127, 255]]]], dtype=np.uint8).repeat(160, 1).repeat(160, 2)
    t = p.to_tensor(x)
    assert t.shape == (1, 3, 160, 160) and t.dtype == torch.float32
    np.testing.assert_allclose(
        t[0, :, 0, 0].numpy(), [-127.5 / 128, -0.5 / 128, 127.5 / 128], atol=0
    )
    bgr = Preprocessing(channel_order="BGR").to_tensor(x)
    np.testing.assert_array_equal(bgr[0, 0].numpy(), t[0, 2].numpy())
    with pytest.raises(ValueError, match=r"expected \(N, 160, 160, 3\)"):
        p.to_tensor(np.zeros((1, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="inception-resnet-v1 needs at least 75"):
        FerNet(7, Preprocessing(size=64))


def test_feature_layers_shapes_and_embedding_matches_facenet(net):
    x = net.preprocessing.to_tensor(_batch())
    with torch.no_grad():
        for layer in ("repeat_1", "mixed_7a", "pool"):
            f = net.features(x, layer)
            assert f.shape == (2, FEATURE_LAYERS[layer]), layer
            assert torch.isfinite(f).all()
        emb = net.embed(x)
        net.backbone.classify = False  # facenet-pytorch's own embedding path
        try:
            ref = net.backbone(x)
        finally:
            net.backbone.classify = True
        assert net(x).shape == (2, 7)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb.numpy(), ref.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown layer"):
        net.features(x, "nope")


def _bn_stats(model):
    return {
        k: v.clone()
        for k, v in model.backbone.state_dict().items()
        if "running_" in k or "num_batches_tracked" in k
    }


def _one_step(model, seed=1):
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = model.preprocessing.to_tensor(_batch(4, size=model.preprocessing.size, seed=seed))
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_frozen_layers_get_no_grad_and_bn_stats_stay():
    torch.manual_seed(0)
    model = FerNet(7, SMALL)
    model.set_unfreeze(6)
    assert trainable_parameters(model) == PAPER_TABLE[6]
    before = _bn_stats(model)
    weights_before = model.backbone.repeat_3[0].branch0.conv.weight.clone()
    _one_step(model)
    trainable = set(UNFREEZE_ORDER[:6])
    for name, child in model.backbone.named_children():
        for p in child.parameters():
            assert (p.grad is not None) == (name in trainable), name
    after = _bn_stats(model)
    for k in before:  # default: every batch norm in eval mode, trainable ones included
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(model.backbone.repeat_3[0].branch0.conv.weight, weights_before)
    assert model.training and not model.backbone.block8.branch0.bn.training


def test_train_bn_updates_only_trainable_batch_norms():
    torch.manual_seed(0)
    model = FerNet(7, SMALL, train_bn=True)
    model.set_unfreeze(6)  # block8 and last_bn trainable, repeat_3 frozen
    before = _bn_stats(model)
    _one_step(model)
    after = _bn_stats(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "last_bn.running_mean" in changed and "block8.branch0.bn.running_mean" in changed
    assert not any(k.split(".")[0] not in ("last_bn", "block8") for k in changed), changed
    assert not model.backbone.repeat_3[0].branch0.bn.training


def test_set_unfreeze_all_and_invalid():
    model = FerNet(7)
    model.set_unfreeze(None)
    assert trainable_parameters(model) == TOTAL and model.frozen_children() == []
    model.set_unfreeze(0)
    assert trainable_parameters(model) == 0
    with pytest.raises(ValueError, match="unfreeze=99"):
        model.set_unfreeze(99)


def test_create_model_random_and_labels():
    model, info = create_model(None, num_classes=3, unfreeze=1)
    assert info is None and model.weights_info is None
    assert model.preprocessing.labels == ("0", "1", "2")
    assert trainable_parameters(model) == 512 * 3 + 3
    assert not model.training
    with pytest.raises(ValueError, match="num_classes=5"):
        create_model("none", num_classes=5, preprocessing=Preprocessing())


def test_create_model_from_state_dict_file(tmp_path, caplog):
    torch.manual_seed(0)
    src = FerNet(5, Preprocessing(labels=tuple("abcde")))
    path = tmp_path / "weights.pt"
    torch.save(src.state_dict(), path)  # keys carry the "backbone." prefix
    with caplog.at_level("INFO", logger="fertool.models.weights"):
        model, info = create_model(str(path), num_classes=7, unfreeze=2)
    assert info.source == "file" and info.path == str(path.resolve())
    assert "dropped the logits layer" in caplog.text
    assert trainable_parameters(model) == PAPER_TABLE[2]
    torch.testing.assert_close(
        model.backbone.block8.conv2d.weight, src.backbone.block8.conv2d.weight
    )
