"""The configuration of a fine-tuning run (``config.json``'s ``config``, and every checkpoint's).

It imports no training code (the loop, the model), so the run folder, export and the CLI read it
without the loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fertool.faces.config import FaceConfig
from fertool.train.augment import AugmentConfig

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run (saved as ``config.json`` in the run folder)."""

    data: str
    out: str
    weights: str | None = "casia-webface"
    unfreeze: int = 9
    protocol: str = "movie"
    fold: int = 0
    split_seed: int = 0
    n_folds: int | None = None
    group: str = "sfew"
    split_regex: str | None = None  # protocol "fixed": REGEX=PART rules or a preset (fer2013)
    split_csv: str | None = None  # protocol "fixed": a CSV of path,part
    seed: int = 0
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # head (logits, last_bn, last_linear)
    backbone_lr: float = 1e-4  # trainable pretrained blocks
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weights: bool = False
    grad_clip: float = 5.0
    augment: dict | None = field(default_factory=lambda: AugmentConfig().to_dict())
    tta_flip: bool = True
    val_fraction: float = 0.2
    patience: int = 0  # early stopping on validation accuracy; 0 = off
    cache_frozen: bool = True
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    device: str | None = None
    face: FaceConfig = field(default_factory=FaceConfig)  # to_dict/from_dict: a plain dict
    cache_dir: str | None = None
    limit: int | None = None  # use only the first N images per class (quick runs)
    monitor_angles: bool = False
    monitor_layer: str | None = None
    monitor_neurons: int = 512
    monitor_probe: int = 64
    monitor_patience: int = 3
    monitor_stop: bool = False
    backbone: str = "inception-resnet-v1"  # fertool.models.registry name
    # The fine-tuning recipe (README, "Fine-tuning recipes"); the defaults are the paper's.
    head_on: str = "embedding"  # embedding (after the 512-d bottleneck) | pool (1792-d)
    init_head: str = "random"  # random | logreg (LP-FT: the head starts as a linear probe)
    layer_decay: float = 1.0  # backbone child k below the head: backbone_lr * layer_decay**k
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off
    mixup: float = 0.0  # Beta(a, a) mixup of the trainable part's input; 0 = off
    trunk_cache: bool = True  # keep cached frozen-trunk outputs on disk (train/trunkcache.py)
    init: str | None = None  # staged transfer: start from this run folder's best.pt (staged.py)

    def __post_init__(self):
        if self.weights in ("none", "None", ""):
            self.weights = None  # random initialisation
        if not isinstance(self.face, FaceConfig):  # a dict, as to_dict writes it (or None)
            self.face = FaceConfig.from_dict(self.face)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["face"] = self.face.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["face"] = FaceConfig.from_dict(kw.get("face"))
        return cls(**kw)

    @property
    def augment_config(self) -> AugmentConfig:
        return AugmentConfig.from_dict(self.augment) if self.augment else AugmentConfig.none()
