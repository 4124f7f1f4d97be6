"""FaceNet backbone with an expression head, and layer freezing.

:class:`FerNet` wraps ``facenet_pytorch.InceptionResnetV1(classify=True, num_classes=C)`` as
``.backbone`` and carries the :class:`~fertool.models.preprocessing.Preprocessing` it expects, so that
checkpoints and ONNX exports record it once. This module imports torch; the CLI imports it only
inside command bodies.

Freezing follows the paper: "N layers unfrozen" means the last N top-level children of
InceptionResnetV1, counted from the output end (:data:`UNFREEZE_ORDER`); N = 1, 2, 4, 6, 9 train
3,591 / 4,615 / 922,119 / 2,522,887 / 20,773,383 of 23,486,215 parameters
(:func:`unfreeze_table`).

Batch norm in training mode: frozen layers keep their batch norms in eval mode, so their running
statistics never change. By default *every* batch norm stays in eval mode, those of trainable layers
included (their scale and shift still learn). The reason: the CASIA-WebFace weights converted from
TensorFlow have batch norm folded into the convolutions (running mean 0, variance 1 - eps), so
batch statistics would replace the learnt normalisation outright; and eval-mode batch norm is the
usual choice on small datasets anyway. ``train_bn=True`` lets trainable layers' batch norms use
batch statistics (sensible with the VGGFace2 weights and a large dataset, or to re-estimate them).
Dropout (``p=0.6`` before ``last_linear``, as in facenet-pytorch) follows the training mode
whatever the unfreeze depth.

Run ``python -m fertool.models.fernet`` (or ``fertool weights table``) to print the trainable-parameter
table.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from facenet_pytorch import InceptionResnetV1

from fertool.core.labels import LABELS
from fertool.models.preprocessing import Preprocessing

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.weights import WeightsInfo

log = logging.getLogger(__name__)

#: Top-level children of InceptionResnetV1, from the output end. ``set_unfreeze(n)`` trains the
#: first ``n`` of these.
UNFREEZE_ORDER: tuple[str, ...] = (
    "logits",
    "last_bn",
    "last_linear",
    "dropout",
    "avgpool_1a",
    "block8",
    "repeat_3",
    "mixed_7a",
    "repeat_2",
    "mixed_6a",
    "repeat_1",
    "conv2d_4b",
    "conv2d_4a",
    "conv2d_3b",
    "maxpool_3a",
    "conv2d_2b",
    "conv2d_2a",
    "conv2d_1a",
)

#: Layers :meth:`FerNet.features` returns, with their output width. Convolutional stages are
#: globally average-pooled; ``pool`` is ``avgpool_1a`` flattened; ``embedding`` is the
#: L2-normalised 512-d FaceNet embedding.
FEATURE_LAYERS: dict[str, int] = {
    "conv2d_4b": 256,
    "repeat_1": 256,
    "mixed_6a": 896,
    "repeat_2": 896,
    "mixed_7a": 1792,
    "repeat_3": 1792,
    "block8": 1792,
    "pool": 1792,
    "embedding": 512,
}
_TRUNK = (
    "conv2d_1a",
    "conv2d_2a",
    "conv2d_2b",
    "maxpool_3a",
    "conv2d_3b",
    "conv2d_4a",
    "conv2d_4b",
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
    "repeat_3",
    "block8",
)
#: Unfreeze depths of the paper's Table 3.
TABLE_DEPTHS = (1, 2, 4, 6, 9)

__all__ = [
    "FEATURE_LAYERS",
    "UNFREEZE_ORDER",
    "FerNet",
    "Preprocessing",
    "create_model",
    "trainable_parameters",
    "unfreeze_table",
]


class FerNet(torch.nn.Module):
    """InceptionResnetV1 with a ``len(labels)``-class head, plus its preprocessing.

    Parameters
    ----------
    num_classes : int
        Size of the logits layer; must equal ``len(preprocessing.labels)``.
    preprocessing : Preprocessing
        Input contract, stored as ``.preprocessing``.
    dropout_prob : float
        Dropout before ``last_linear`` (facenet-pytorch's default, 0.6).
    train_bn : bool
        Let batch norms of trainable layers use batch statistics in training mode (default: all
        batch norms stay in eval mode, see the module docstring).

    Attributes
    ----------
    backbone : facenet_pytorch.InceptionResnetV1
    preprocessing : Preprocessing
    unfreeze : int or None
        Current :meth:`set_unfreeze` depth (None: all trainable).
    weights_info : WeightsInfo or None
        Set by :func:`create_model`.
    """

    def __init__(
        self,
        num_classes: int = len(LABELS),
        preprocessing: Preprocessing | None = None,
        dropout_prob: float = 0.6,
        train_bn: bool = False,
    ):
        super().__init__()
        if preprocessing is None:
            preprocessing = Preprocessing(labels=default_labels(num_classes))
        if len(preprocessing.labels) != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but preprocessing has "
                f"{len(preprocessing.labels)} labels"
            )
        self.backbone = InceptionResnetV1(
            classify=True, num_classes=num_classes, dropout_prob=dropout_prob
        )
        self.preprocessing = preprocessing
        self.train_bn = bool(train_bn)
        self.unfreeze: int | None = None
        self.weights_info: WeightsInfo | None = None

    @property
    def num_classes(self) -> int:
        return self.backbone.logits.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` for standardised ``(N, 3, size, size)`` input."""
        return self.backbone(x)

    def _pooled(self, x: torch.Tensor, until: str | None = None) -> torch.Tensor:
        b = self.backbone
        for name in _TRUNK:
            x = getattr(b, name)(x)
            if name == until:
                return x.mean(dim=(2, 3))
        return b.avgpool_1a(x).flatten(1)

    def features(self, x: torch.Tensor, layer: str = "embedding") -> torch.Tensor:
        """Features ``(N, D)`` of one layer (names and widths: :data:`FEATURE_LAYERS`).

        ``embedding`` is L2-normalised (the FaceNet embedding); ``pool`` is the 1792-d average
        pool before the bottleneck; the other names are globally average-pooled activations.
        """
        if layer not in FEATURE_LAYERS:
            raise ValueError(
                f"unknown layer {layer!r}; expected one of {', '.join(FEATURE_LAYERS)}"
            )
        if layer != "embedding":
            return self._pooled(x, None if layer == "pool" else layer)
        b = self.backbone
        z = b.last_bn(b.last_linear(b.dropout(self._pooled(x))))
        return F.normalize(z, p=2, dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised 512-d FaceNet embedding ``(N, 512)``."""
        return self.features(x, "embedding")

    def set_unfreeze(self, n: int | None) -> None:
        """Train only the last ``n`` top-level children (:data:`UNFREEZE_ORDER`); ``None``: all.

        Parameters of the other children get ``requires_grad=False`` (so no gradients) and their
        batch norms stay in eval mode under :meth:`train`.
        """
        if n is not None and not 0 <= n <= len(UNFREEZE_ORDER):
            raise ValueError(f"unfreeze={n}; expected 0..{len(UNFREEZE_ORDER)} or None (all)")
        trainable = set(UNFREEZE_ORDER if n is None else UNFREEZE_ORDER[:n])
        for name, child in self.backbone.named_children():
            for p in child.parameters():
                p.requires_grad_(name in trainable)
        self.unfreeze = n
        self.train(self.training)

    def frozen_children(self) -> list[str]:
        """Names of the frozen top-level children of the backbone."""
        return [] if self.unfreeze is None else list(UNFREEZE_ORDER[self.unfreeze :])

    def train(self, mode: bool = True) -> FerNet:
        """Set training mode, keeping the batch norms of frozen layers (by default all) in eval."""
        super().train(mode)
        if mode:
            frozen = set(self.frozen_children())
            for name, child in self.backbone.named_children():
                if self.train_bn and name not in frozen:
                    continue
                for m in child.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self


def default_labels(num_classes: int) -> tuple[str, ...]:
    """:data:`fertool.LABELS` for 7 classes, else ``"0"``, ``"1"``, ..."""
    return LABELS if num_classes == len(LABELS) else tuple(str(i) for i in range(num_classes))


def create_model(
    weights: str | WeightsInfo | None = "casia-webface",
    num_classes: int = 7,
    unfreeze: int | None = None,
    preprocessing: Preprocessing | None = None,
    device=None,
    *,
    train_bn: bool = False,
    dropout_prob: float = 0.6,
    download: bool | None = None,
) -> tuple[FerNet, WeightsInfo | None]:
    """Build a :class:`FerNet`, load pretrained weights, set the trainable layers.

    Parameters
    ----------
    weights : str, WeightsInfo or None
        ``casia-webface``, ``vggface2``, a state-dict file, or ``None``/``"none"`` (random
        initialisation), resolved by :func:`fertool.models.weights.resolve_weights`; or a
        :class:`~fertool.models.weights.WeightsInfo` that it returned earlier.
    num_classes : int
        Classes of the head. The head starts from random weights unless ``weights`` holds a
        logits layer of exactly this size.
    unfreeze : int or None
        Train the last ``unfreeze`` top-level children only; ``None`` trains all.
    preprocessing : Preprocessing, optional
        Default: 160 px, (x - 127.5) / 128, RGB, labels from :func:`default_labels`.
    device : str or torch.device, optional
    train_bn : bool
        See :class:`FerNet`.
    dropout_prob : float
    download : bool, optional
        Passed to :func:`fertool.models.weights.resolve_weights`.

    Returns
    -------
    model : FerNet
        In eval mode, with ``model.weights_info`` set.
    info : WeightsInfo or None
        The weights loaded (``None`` for random initialisation).

    Raises
    ------
    WeightsUnavailableError, WeightsFormatError
        From :mod:`fertool.models.weights`.
    """
    from fertool.models.weights import (
        WeightsInfo,
        load_backbone_weights,
        load_state_dict,
        resolve_weights,
    )

    if preprocessing is None:
        preprocessing = Preprocessing(labels=default_labels(num_classes))
    if isinstance(weights, WeightsInfo):
        info = weights
    else:
        info = resolve_weights(weights, download=download)
    model = FerNet(num_classes, preprocessing, dropout_prob=dropout_prob, train_bn=train_bn)
    if info is not None:
        load_backbone_weights(model.backbone, load_state_dict(info.path), origin=info.path)
    model.weights_info = info
    model.set_unfreeze(unfreeze)
    model.eval()
    if device is not None:
        model.to(device)
    return model, info


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unfreeze_table(num_classes: int = 7) -> list[tuple[int, int]]:
    """``(N, trainable parameters)`` for N in 1, 2, 4, 6, 9, then ``(18, total)`` (all children)."""
    model = FerNet(num_classes)
    rows = []
    for n in (*TABLE_DEPTHS, len(UNFREEZE_ORDER)):
        model.set_unfreeze(n)
        rows.append((n, trainable_parameters(model)))
    return rows


def format_unfreeze_table(rows: list[tuple[int, int]]) -> str:
    """Plain-text table of :func:`unfreeze_table` rows."""
    lines = ["unfrozen  deepest trainable   trainable parameters"]
    for n, count in rows:
        label = "all" if n == len(UNFREEZE_ORDER) else str(n)
        lines.append(f"{label:>8}  {UNFREEZE_ORDER[n - 1]:<17}   {count:>20,}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(format_unfreeze_table(unfreeze_table()) + "\n")
