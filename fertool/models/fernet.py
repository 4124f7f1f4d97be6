"""The expression model: a registered backbone with a C-class head, and layer freezing.

:class:`FerNet` builds the backbone its spec names (:mod:`fertool.models.registry`; default
``inception-resnet-v1``, facenet-pytorch's ``InceptionResnetV1(classify=True, num_classes=C)``)
as ``.backbone``, keeps the spec as ``.spec`` and carries the
:class:`~fertool.models.preprocessing.Preprocessing` it expects, so that checkpoints and ONNX
exports record it once. Everything about the network's structure (layer sequence, unfreeze
order, feature taps) is read from the spec. This module imports torch; the CLI imports it only
inside command bodies.

Freezing follows the paper: "N layers unfrozen" means the last N top-level children of the
backbone, counted from the output end (``spec.unfreeze_order``); for InceptionResnetV1,
N = 1, 2, 4, 6, 9 train 3,591 / 4,615 / 922,119 / 2,522,887 / 20,773,383 of 23,486,215
parameters (:func:`unfreeze_table`).

Batch norm in training mode: frozen layers keep their batch norms in eval mode, so their running
statistics never change. By default *every* batch norm stays in eval mode, those of trainable layers
included (their scale and shift still learn). The reason: the CASIA-WebFace weights converted from
TensorFlow have batch norm folded into the convolutions (running mean 0, variance 1 - eps), so
batch statistics would replace the learnt normalisation outright; and eval-mode batch norm is the
usual choice on small datasets anyway. ``train_bn=True`` lets trainable layers' batch norms use
batch statistics (sensible with the VGGFace2 weights and a large dataset, or to re-estimate them).
Dropout (``p=0.6`` before ``last_linear``, as in facenet-pytorch) follows the training mode
whatever the unfreeze depth.

Run ``python -m fertool.models.fernet`` (or ``fertool weights table``) to print the
trainable-parameter table.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from fertool.core.labels import LABELS
from fertool.models.inception_resnet import INCEPTION_RESNET_V1
from fertool.models.preprocessing import Preprocessing
from fertool.models.registry import Backbone, get_backbone

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.weights import WeightsInfo

log = logging.getLogger(__name__)

#: Name of the backbone a model gets when none is named.
DEFAULT_BACKBONE = INCEPTION_RESNET_V1.name
#: The default backbone's unfreeze order, feature layers (name -> width) and the unfreeze depths
#: of the paper's Table 3, as its spec declares them (:mod:`fertool.models.inception_resnet`).
UNFREEZE_ORDER: tuple[str, ...] = INCEPTION_RESNET_V1.unfreeze_order
FEATURE_LAYERS: dict[str, int] = INCEPTION_RESNET_V1.feature_layers
TABLE_DEPTHS = INCEPTION_RESNET_V1.table_depths

__all__ = [
    "DEFAULT_BACKBONE",
    "FEATURE_LAYERS",
    "UNFREEZE_ORDER",
    "FerNet",
    "Preprocessing",
    "create_model",
    "trainable_parameters",
    "unfreeze_table",
]


class FerNet(torch.nn.Module):
    """A registered backbone with a ``len(labels)``-class head, plus its preprocessing.

    Parameters
    ----------
    num_classes : int
        Size of the classifier; must equal ``len(preprocessing.labels)``.
    preprocessing : Preprocessing
        Input contract, stored as ``.preprocessing`` (default: the backbone's, with
        :func:`default_labels`).
    dropout_prob : float
        Dropout before the bottleneck (facenet-pytorch's default, 0.6).
    train_bn : bool
        Let batch norms of trainable layers use batch statistics in training mode (default: all
        batch norms stay in eval mode, see the module docstring).
    backbone : str or Backbone
        Registry name (``inception-resnet-v1``, ``facenet``) or a spec.
    head_on : {"embedding", "pool"}
        Where the classifier reads: ``embedding`` (the backbone's own head: for
        InceptionResnetV1 the 512-d bottleneck ``last_linear``/``last_bn``, then ``logits``), or
        ``pool``: the head children before the classifier become identities and the classifier
        reads the spec's ``pool`` tap (1792-d for InceptionResnetV1) directly
        (:meth:`use_pool_head`). The layer sequence, and so "N layers unfrozen", is unchanged.

    Attributes
    ----------
    backbone : torch.nn.Module
        The network the spec builds (``facenet_pytorch.InceptionResnetV1`` by default).
    spec : Backbone
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
        backbone: str | Backbone = DEFAULT_BACKBONE,
        head_on: str = "embedding",
    ):
        super().__init__()
        spec = get_backbone(backbone)
        if preprocessing is None:
            preprocessing = spec.default_preprocessing(default_labels(num_classes))
        if len(preprocessing.labels) != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but preprocessing has "
                f"{len(preprocessing.labels)} labels"
            )
        if preprocessing.size < spec.min_size:
            raise ValueError(
                f"size={preprocessing.size} is too small; {spec.name} needs at least "
                f"{spec.min_size} pixels"
            )
        self.spec = spec
        self.backbone = spec.build(num_classes=num_classes, dropout_prob=dropout_prob)
        self.preprocessing = preprocessing
        self.train_bn = bool(train_bn)
        self.unfreeze: int | None = None
        self.weights_info: WeightsInfo | None = None
        self.head_on = "embedding"
        if head_on != "embedding":
            self.use_pool_head(head_on)

    @property
    def num_classes(self) -> int:
        return getattr(self.backbone, self.spec.classifier).out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` for standardised ``(N, channels, size, size)`` input."""
        return self.backbone(x)

    # -- the layer sequence -----------------------------------------------------------------

    def run_sequence(self, x: torch.Tensor, start: int = 0, stop: int | None = None):
        """Run the backbone's children ``spec.layers[start:stop]`` on ``x``."""
        return self.spec.run_sequence(self.backbone, x, start, stop)

    def split_point(self) -> int:
        """Index in ``spec.layers`` where the trainable (or stochastic) part starts.

        Everything before it is frozen and deterministic, so its output can be cached.
        """
        return self.spec.split_point(self.frozen_children())

    def embedding_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: the L2-normalised embedding and the logits computed from it.

        The embedding is the input of the classifier, normalised (exactly :meth:`embed`; the
        logits are exactly :meth:`forward` in eval mode).
        """
        spec = self.spec
        z = self.run_sequence(x, 0, spec.layers.index(spec.classifier))
        logits = getattr(self.backbone, spec.classifier)(z)
        return F.normalize(z, p=2.0, dim=1), logits

    def features(self, x: torch.Tensor, layer: str = "embedding") -> torch.Tensor:
        """Features ``(N, D)`` of one layer (names and widths: ``spec.feature_layers``).

        ``embedding`` is L2-normalised (the FaceNet embedding); ``pool`` is the 1792-d average
        pool before the bottleneck; the other names are globally average-pooled activations.
        """
        taps = self.spec.feature_taps
        if layer not in taps:
            raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(taps)}")
        tap = taps[layer]
        f = self.run_sequence(x, 0, self.spec.layers.index(tap.after) + 1)
        if f.dim() > 2:
            f = f.mean(dim=tuple(range(2, f.dim())))
        return F.normalize(f, p=2, dim=1) if tap.normalize else f

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised 512-d FaceNet embedding ``(N, 512)``."""
        return self.features(x, "embedding")

    def use_pool_head(self, head_on: str = "pool") -> None:
        """Put a fresh classifier on the ``pool`` tap; the other head children become identities.

        InceptionResnetV1: ``last_linear`` and ``last_bn`` (the 512-d identity bottleneck) are
        replaced by ``torch.nn.Identity`` and ``logits`` by a ``Linear(1792, C)``, so the
        forward pass is avgpool -> dropout -> logits. Call it after loading pretrained weights
        (which hold the bottleneck). The current unfreeze depth is re-applied.

        Raises
        ------
        ValueError
            For ``head_on`` other than ``pool``, or a backbone without a ``pool`` tap.
        """
        if head_on != "pool":
            raise ValueError(f"head_on={head_on!r}; expected 'embedding' or 'pool'")
        spec = self.spec
        tap = spec.feature_taps.get("pool")
        if tap is None or tap.normalize:
            raise ValueError(f"head_on='pool': backbone {spec.name!r} declares no 'pool' tap")
        after = spec.layers.index(tap.after)
        for name in spec.head:
            if name != spec.classifier and spec.layers.index(name) > after:
                setattr(self.backbone, name, torch.nn.Identity())
        old = getattr(self.backbone, spec.classifier)
        setattr(self.backbone, spec.classifier, torch.nn.Linear(
            tap.width, old.out_features, device=old.weight.device, dtype=old.weight.dtype))
        self.head_on = "pool"
        self.set_unfreeze(self.unfreeze)

    # -- freezing ---------------------------------------------------------------------------

    def set_unfreeze(self, n: int | None) -> None:
        """Train only the last ``n`` top-level children (``spec.unfreeze_order``); None: all.

        Parameters of the other children get ``requires_grad=False`` (so no gradients) and their
        batch norms stay in eval mode under :meth:`train`.
        """
        order = self.spec.unfreeze_order
        if n is not None and not 0 <= n <= len(order):
            raise ValueError(f"unfreeze={n}; expected 0..{len(order)} or None (all)")
        trainable = set(order if n is None else order[:n])
        for name, child in self.backbone.named_children():
            for p in child.parameters():
                p.requires_grad_(name in trainable)
        self.unfreeze = n
        self.train(self.training)

    def frozen_children(self) -> list[str]:
        """Names of the frozen top-level children of the backbone."""
        return [] if self.unfreeze is None else list(self.spec.unfreeze_order[self.unfreeze :])

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
    backbone: str | Backbone = DEFAULT_BACKBONE,
    head_on: str = "embedding",
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
        Default: the backbone's (InceptionResnetV1: 160 px, (x - 127.5) / 128, RGB), labels
        from :func:`default_labels`.
    device : str or torch.device, optional
    train_bn : bool
        See :class:`FerNet`.
    dropout_prob : float
    download : bool, optional
        Passed to :func:`fertool.models.weights.resolve_weights`.
    backbone : str or Backbone
        Registry name or spec (:mod:`fertool.models.registry`).
    head_on : {"embedding", "pool"}
        See :class:`FerNet`; ``pool`` replaces the head after the weights are loaded.

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
    from fertool.models.weights import WeightsInfo, load_state_dict, resolve_weights

    spec = get_backbone(backbone)
    if isinstance(weights, WeightsInfo):
        info = weights
    else:
        info = resolve_weights(weights, download=download)
    model = FerNet(
        num_classes, preprocessing, dropout_prob=dropout_prob, train_bn=train_bn, backbone=spec
    )
    if info is not None:
        if spec.load_weights is None:
            raise ValueError(f"backbone {spec.name!r} declares no way to load weights")
        spec.load_weights(model.backbone, load_state_dict(info.path), origin=info.path)
    model.weights_info = info
    if head_on != "embedding":
        model.use_pool_head(head_on)
    model.set_unfreeze(unfreeze)
    model.eval()
    if device is not None:
        model.to(device)
    return model, info


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unfreeze_table(
    num_classes: int = 7, backbone: str | Backbone = DEFAULT_BACKBONE
) -> list[tuple[int, int]]:
    """``(N, trainable parameters)`` for the spec's table depths, then ``(all children, total)``.

    InceptionResnetV1: N in 1, 2, 4, 6, 9, then ``(18, total)``. The model is built on the meta
    device (structure only, no weights allocated).
    """
    spec = get_backbone(backbone)
    with torch.device("meta"):
        model = FerNet(num_classes, backbone=spec)
    rows = []
    for n in (*spec.table_depths, len(spec.unfreeze_order)):
        model.set_unfreeze(n)
        rows.append((n, trainable_parameters(model)))
    return rows


def format_unfreeze_table(
    rows: list[tuple[int, int]], backbone: str | Backbone = DEFAULT_BACKBONE
) -> str:
    """Plain-text table of :func:`unfreeze_table` rows."""
    order = get_backbone(backbone).unfreeze_order
    lines = ["unfrozen  deepest trainable   trainable parameters"]
    for n, count in rows:
        label = "all" if n == len(order) else str(n)
        lines.append(f"{label:>8}  {order[n - 1]:<17}   {count:>20,}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(format_unfreeze_table(unfreeze_table()) + "\n")
