"""The backbone registry: names, the spec InceptionResnetV1 declares, and FerNet through it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from fertool.models.registry import (
    Backbone,
    FeatureTap,
    UnknownBackboneError,
    backbone_of_module,
    create_backbone,
    get_backbone,
    list_backbones,
    register_backbone,
)


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Backbones a test registers are gone after it (the registry is process-wide)."""
    from fertool.models import registry

    list_backbones()  # the built-in ones first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


PAPER_TABLE = {1: 3_591, 2: 4_615, 4: 922_119, 6: 2_522_887, 9: 20_773_383}


def test_names_and_aliases():
    assert "inception-resnet-v1" in list_backbones()
    assert "facenet" not in list_backbones()  # aliases are not listed twice
    assert get_backbone("facenet") is get_backbone("inception-resnet-v1")
    assert get_backbone("Inception-ResNet-V1") is get_backbone("inception-resnet-v1")
    spec = get_backbone("facenet")
    assert get_backbone(spec) is spec


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownBackboneError, match="backbone='resnet50'") as err:
        get_backbone("resnet50")
    assert "inception-resnet-v1 (facenet)" in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(UnknownBackboneError, match="known backbones"):
        create_backbone("nope")


def test_unfreeze_table_through_the_spec():
    """The paper's Table 3, counted from the spec's unfreeze order on the built module."""
    spec = get_backbone("inception-resnet-v1")
    with torch.device("meta"):
        module = create_backbone("facenet", num_classes=7)
    assert [n for n, _ in module.named_children()] == list(spec.layers)
    assert spec.unfreeze_order == tuple(reversed(spec.layers))
    children = dict(module.named_children())
    for n, expected in PAPER_TABLE.items():
        count = sum(p.numel() for name in spec.unfreeze_order[:n]
                    for p in children[name].parameters())
        assert count == expected, n
    assert spec.table_depths == tuple(PAPER_TABLE)
    assert backbone_of_module(module) is spec
    assert backbone_of_module(torch.nn.Linear(2, 2)) is None


def test_spec_round_trips_through_json():
    spec = get_backbone("inception-resnet-v1")
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["name"] == "inception-resnet-v1" and d["preprocessing"]["size"] == 160
    assert d["feature_taps"]["embedding"] == {"after": "last_bn", "width": 512, "normalize": True}
    back = Backbone.from_dict(d)
    assert back == spec and back.build is spec.build
    assert back.feature_layers == spec.feature_layers and back.trunk[-1] == "block8"


def test_split_point_and_run_sequence_follow_the_spec():
    spec = get_backbone("inception-resnet-v1")
    assert spec.split_point(spec.unfreeze_order[2:]) == spec.layers.index("dropout")
    assert spec.split_point(spec.unfreeze_order[5:]) == spec.layers.index("avgpool_1a")
    assert spec.split_point(spec.layers) == spec.layers.index("dropout")  # stochastic
    assert spec.split_point([]) == 0


def tiny_spec(name="tiny-grey"):
    """A 1-channel 32x32 network with other children: nothing of InceptionResnetV1 assumed."""
    from fertool.models.preprocessing import Preprocessing

    class Tiny(torch.nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(4, 6)
            self.out = torch.nn.Linear(6, num_classes)

        def forward(self, x):
            return self.out(self.fc(self.pool(self.stem(x)).flatten(1)))

    def build(num_classes=7, dropout_prob=0.0):
        return Tiny(num_classes)

    return Backbone(
        name=name, layers=("stem", "pool", "fc", "out"), classifier="out", head=("fc", "out"),
        trunk_end="stem", flatten_before="fc",
        feature_taps={"stem": FeatureTap("stem", 4), "embedding": FeatureTap("fc", 6, True)},
        preprocessing=Preprocessing(size=32, mean=0.0, std=255.0), min_size=16, build=build,
    )


def test_fernet_runs_any_registered_spec():
    from fertool.models.fernet import FerNet, trainable_parameters
    from fertool.models.inference import predict_proba

    spec = register_backbone(tiny_spec())
    assert "tiny-grey" in list_backbones()
    model = FerNet(7, backbone="tiny-grey").eval()
    assert model.preprocessing.size == 32 and model.spec is spec
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.run_sequence(x), model(x))
        e = model.embed(x)
        assert e.shape == (3, 6) and model.features(x, "stem").shape == (3, 4)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    p = predict_proba(model, x, tta_flip=True)
    assert p.shape == (3, 7)
    torch.testing.assert_close(torch.as_tensor(p).sum(1), torch.ones(3))
    model.set_unfreeze(1)
    assert model.frozen_children() == ["fc", "pool", "stem"]
    assert trainable_parameters(model) == 6 * 7 + 7
    with pytest.raises(ValueError, match="tiny-grey needs at least 16"):
        FerNet(7, replace(spec.preprocessing, size=8, labels=tuple("abcdefg")), backbone=spec)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(replace(tiny_spec("other"), aliases=("tiny-grey",)))


def test_spec_checks_its_layer_names():
    with pytest.raises(ValueError, match="unknown layers nope"):
        replace(tiny_spec(), trunk_end="nope")
    with pytest.raises(ValueError, match="classifier must be the last"):
        replace(tiny_spec(), classifier="fc")
