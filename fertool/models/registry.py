"""Backbones by name, in the style of timm: one :class:`Backbone` spec per network.

::

    from fertool.models.registry import create_backbone, get_backbone, list_backbones

    list_backbones()                          # ['inception-resnet-v1']
    spec = get_backbone("facenet")            # an alias: the InceptionResnetV1 spec
    net = create_backbone("inception-resnet-v1", num_classes=7)   # the torch module

A spec is the one place that says how a network is put together, as fertool uses it:

- ``layers``: its top-level children in forward order, what :meth:`Backbone.run_sequence`
  walks (the frozen-trunk cache, the export heads and the feature taps all run through it);
- ``unfreeze_order``: the children from the output end, so that "N layers unfrozen" (the paper's
  Table 3) trains ``unfreeze_order[:N]``;
- ``feature_taps``: the layers :meth:`fertool.models.fernet.FerNet.features` returns, and
  their widths;
- ``preprocessing``: the input contract of the pretrained weights (size, normalisation, channel
  order), which a model carries into checkpoints and ONNX metadata;
- ``weights``: the names of its pretrained weights, their default, and how a state dict is
  loaded into the module.

Nothing here assumes a 160x160 RGB input or InceptionResnetV1's children: a new backbone is a new
module that builds a :class:`Backbone` and calls :func:`register_backbone` (see
``fertool/models/inception_resnet.py``). This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from fertool.core.errors import FertoolError
from fertool.models.preprocessing import Preprocessing

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "Backbone",
    "FeatureTap",
    "UnknownBackboneError",
    "create_backbone",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]


class UnknownBackboneError(FertoolError, ValueError):
    """A backbone name that no registered spec answers to."""


@dataclass(frozen=True)
class FeatureTap:
    """A layer whose output :meth:`FerNet.features` returns.

    Attributes
    ----------
    after : str
        The top-level child whose output is taken. Outputs with spatial dimensions are
        globally average-pooled to ``(N, C)``.
    width : int
        Feature width ``D`` of the ``(N, D)`` result.
    normalize : bool
        L2-normalise the result (the FaceNet embedding).
    """

    after: str
    width: int
    normalize: bool = False


@dataclass(frozen=True)
class Backbone:
    """What fertool needs to know about one network (see the module docstring).

    Attributes
    ----------
    name : str
        Registry name (``inception-resnet-v1``).
    aliases : tuple of str
        Other names it answers to (``facenet``).
    layers : tuple of str
        Top-level children, in forward order.
    classifier : str
        The child that returns the logits (the last of ``layers``); everything before it is
        the embedding path.
    head : tuple of str
        Children trained with the head's learning rate (``lr``; the rest get ``backbone_lr``).
    trunk_end : str
        Last child of the convolutional trunk (what the angle monitor watches by default).
    flatten_before : str or None
        Child before which the activation is flattened to ``(N, D)``.
    stochastic : tuple of str
        Children that are random in training mode (dropout): the cacheable frozen prefix
        ends before them.
    feature_taps : dict of str to FeatureTap
    preprocessing : Preprocessing
        Input contract of the pretrained weights (labels are set per model).
    min_size : int
        Smallest input side the network accepts.
    weights : tuple of str
        Names of its pretrained weights (``--weights NAME``), the default first.
    table_depths : tuple of int
        Unfreeze depths of the trainable-parameter table (the paper's for InceptionResnetV1).
    module_class : str
        Class name of the torch module ``build`` returns (finds the backbone inside a wrapper).
    unfreeze : tuple of str, optional
        Unfreeze order when it is not simply ``layers`` reversed.
    build : callable
        ``build(num_classes, dropout_prob) -> torch.nn.Module`` (imports torch when called).
    load_weights : callable, optional
        ``load_weights(module, state_dict, origin) -> list of notes``: strict loading apart from
        the classifier.
    """

    name: str
    layers: tuple[str, ...]
    classifier: str
    head: tuple[str, ...]
    trunk_end: str
    feature_taps: dict[str, FeatureTap]
    preprocessing: Preprocessing
    build: Callable[..., torch.nn.Module] = field(compare=False, repr=False)
    aliases: tuple[str, ...] = ()
    flatten_before: str | None = None
    stochastic: tuple[str, ...] = ()
    min_size: int = 1
    weights: tuple[str, ...] = ()
    table_depths: tuple[int, ...] = ()
    module_class: str = ""
    unfreeze: tuple[str, ...] | None = None
    load_weights: Callable[..., list[str]] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        known = set(self.layers)
        if len(known) != len(self.layers):
            raise ValueError(f"backbone {self.name!r}: layers has duplicates")
        if self.layers[-1] != self.classifier:
            raise ValueError(f"backbone {self.name!r}: the classifier must be the last layer")
        named = [*self.head, self.trunk_end, *self.stochastic]
        named += [t.after for t in self.feature_taps.values()]
        named += [self.flatten_before] if self.flatten_before else []
        unknown = sorted(set(named) - known)
        if unknown:
            raise ValueError(f"backbone {self.name!r}: unknown layers {', '.join(unknown)}")
        if self.unfreeze is not None and sorted(self.unfreeze) != sorted(self.layers):
            raise ValueError(f"backbone {self.name!r}: unfreeze must order exactly the layers")
        object.__setattr__(self, "feature_taps", dict(self.feature_taps))

    # -- the layer sequence ---------------------------------------------------------------

    @property
    def unfreeze_order(self) -> tuple[str, ...]:
        """Top-level children from the output end: ``set_unfreeze(n)`` trains the first ``n``."""
        return self.unfreeze if self.unfreeze is not None else tuple(reversed(self.layers))

    @property
    def trunk(self) -> tuple[str, ...]:
        """The convolutional trunk: ``layers`` up to ``trunk_end``, in forward order."""
        return self.layers[: self.layers.index(self.trunk_end) + 1]

    @property
    def feature_layers(self) -> dict[str, int]:
        """Feature tap name -> width."""
        return {name: tap.width for name, tap in self.feature_taps.items()}

    def run_sequence(
        self, module: torch.nn.Module, x: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Run children ``layers[start:stop]`` of ``module`` on ``x`` (the forward pass, cut)."""
        for name in self.layers[start:stop]:
            if name == self.flatten_before:
                x = x.flatten(1)
            x = getattr(module, name)(x)
        return x

    def split_point(self, frozen: set[str] | list[str] | tuple[str, ...]) -> int:
        """Index in ``layers`` where the trainable (or stochastic) part starts.

        Everything before it is frozen and deterministic, so its output can be cached.
        """
        frozen = set(frozen)
        for i, name in enumerate(self.layers):
            if name not in frozen or name in self.stochastic:
                return i
        return len(self.layers)

    def default_preprocessing(self, labels: tuple[str, ...]) -> Preprocessing:
        """The pretrained weights' input contract, with ``labels``."""
        return replace(self.preprocessing, labels=tuple(labels))

    # -- a description that round-trips -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The declarative part of the spec, JSON-able (``build`` and ``load_weights`` stay)."""
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("build", "load_weights"):
                continue
            v = getattr(self, f.name)
            if f.name == "feature_taps":
                v = {k: {"after": t.after, "width": t.width, "normalize": t.normalize}
                     for k, t in v.items()}
            elif f.name == "preprocessing":
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Backbone:
        """A spec from :meth:`to_dict`, with the callables of the registered spec of that name.

        Raises
        ------
        UnknownBackboneError
            When no backbone of that name is registered.
        """
        registered = get_backbone(d["name"])
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d or f.name in ("build", "load_weights"):
                continue
            v = d[f.name]
            if f.name == "feature_taps":
                v = {k: FeatureTap(**t) for k, t in v.items()}
            elif f.name == "preprocessing":
                v = Preprocessing.from_dict(v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[f.name] = v
        return replace(registered, **kw)


_REGISTRY: dict[str, Backbone] = {}
_ALIASES: dict[str, str] = {}
#: Modules that register the built-in backbones when imported.
_BUILTIN = ("fertool.models.inception_resnet", "fertool.models.minixception_backbone")


def register_backbone(spec: Backbone) -> Backbone:
    """Add ``spec`` to the registry under its name and aliases; returns it.

    Raises
    ------
    ValueError
        When the name or an alias is already taken by another spec.
    """
    for key in (spec.name, *spec.aliases):
        owner = _ALIASES.get(key)
        if owner is not None and owner != spec.name:
            raise ValueError(f"backbone name {key!r} is already registered for {owner!r}")
    _REGISTRY[spec.name] = spec
    for key in (spec.name, *spec.aliases):
        _ALIASES[key] = spec.name
    return spec


def _load_builtins() -> None:
    import importlib

    for mod in _BUILTIN:
        importlib.import_module(mod)


def list_backbones() -> list[str]:
    """Registered backbone names (aliases left out), sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_backbone(name: str | Backbone) -> Backbone:
    """The spec registered as ``name`` (or one of its aliases); a spec is returned as is.

    Raises
    ------
    UnknownBackboneError
        For an unknown name; the message lists the known ones.
    """
    if isinstance(name, Backbone):
        return name
    _load_builtins()
    key = str(name).strip().lower()
    if key not in _ALIASES:
        known = ", ".join(
            f"{n} ({', '.join(s.aliases)})" if s.aliases else n
            for n, s in sorted(_REGISTRY.items())
        )
        raise UnknownBackboneError(f"unknown backbone={name!r}; known backbones: {known}")
    return _REGISTRY[_ALIASES[key]]


def create_backbone(name: str | Backbone, **kw: Any) -> torch.nn.Module:
    """The torch module of backbone ``name``, built with ``kw`` (``num_classes``, ...)."""
    return get_backbone(name).build(**kw)


def backbone_of_module(module: Any) -> Backbone | None:
    """The registered spec whose ``module_class`` is ``module``'s class, or None."""
    _load_builtins()
    cls = type(module).__name__
    for spec in _REGISTRY.values():
        if spec.module_class and spec.module_class == cls:
            return spec
    return None
