"""Batch augmentation of aligned face crops, on tensors, deterministic under a generator.

Every random draw comes from an explicit :class:`torch.Generator`, so an epoch's augmentation is
a pure function of (seed, epoch): resuming a run reproduces it exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; zero disables it."""

    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # max rotation, degrees
    scale: float = 0.08  # max relative scale change
    translate: float = 0.06  # max shift, fraction of the crop side
    brightness: float = 0.25  # max relative brightness change
    contrast: float = 0.25  # max relative contrast change
    saturation: float = 0.25  # max relative saturation change
    erase: float = 0.25  # probability of erasing one rectangle
    erase_area: tuple[float, float] = (0.02, 0.15)  # its area, fraction of the crop

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        d = dict(d)
        if "erase_area" in d:
            d["erase_area"] = tuple(d["erase_area"])
        return cls(**d)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(0, 0, 0, 0, 0, 0, 0, 0)

    @property
    def enabled(self) -> bool:
        return any(
            v for k, v in asdict(self).items() if k != "erase_area"
        )


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment a batch of standardised crops.

    Parameters
    ----------
    x : (N, 3, H, W) float tensor
        Crops after standardisation ((pixel - 127.5) / 128, so roughly in [-1, 1]).
    cfg : AugmentConfig
    g : torch.Generator
        Source of every random draw (on the CPU).

    Returns
    -------
    (N, 3, H, W) tensor on the same device as ``x``.
    """
    n, _, h, w = x.shape
    dev = x.device
    if cfg.flip > 0:
        flip = torch.rand(n, generator=g) < cfg.flip
        if flip.any():
            x = torch.where(flip.to(dev)[:, None, None, None], x.flip(-1), x)
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.translate > 0:
        ang = _uniform(n, -cfg.rotate, cfg.rotate, g) * math.pi / 180
        s = 1.0 + _uniform(n, -cfg.scale, cfg.scale, g)
        tx = _uniform(n, -cfg.translate, cfg.translate, g) * 2
        ty = _uniform(n, -cfg.translate, cfg.translate, g) * 2
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.stack(
            [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
        ).to(dev, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Border padding: a replicated edge is closer to a real frame than a black corner.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0 or cfg.saturation > 0:
        b = _uniform(n, -cfg.brightness, cfg.brightness, g).to(dev, x.dtype)[:, None, None, None]
        c = (1 + _uniform(n, -cfg.contrast, cfg.contrast, g)).to(dev, x.dtype)[:, None, None, None]
        sat = (1 + _uniform(n, -cfg.saturation, cfg.saturation, g)).to(dev, x.dtype)
        # a grey model's input (one channel) has no saturation to change
        if x.shape[1] == 1:
            grey = x
        else:
            grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        x = grey + (x - grey) * sat[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean + b
        x = x.clamp(-1.0, 1.0)
    if cfg.erase > 0:
        do = (torch.rand(n, generator=g) < cfg.erase).tolist()
        area = _uniform(n, *cfg.erase_area, g)
        aspect = torch.exp(_uniform(n, math.log(0.5), math.log(2.0), g))
        fy, fx = torch.rand(n, generator=g), torch.rand(n, generator=g)
        fill = torch.randn(n, 3, generator=g).clamp(-1, 1)
        if any(do):
            x = x.clone()
            for i in range(n):
                if not do[i]:
                    continue
                eh = max(1, min(h, round(math.sqrt(area[i] * h * w * aspect[i]))))
                ew = max(1, min(w, round(math.sqrt(area[i] * h * w / aspect[i]))))
                y0, x0 = int(fy[i] * (h - eh)), int(fx[i] * (w - ew))
                x[i, :, y0 : y0 + eh, x0 : x0 + ew] = fill[i, : x.shape[1]].to(dev, x.dtype)[
                    :, None, None
                ]
    return x
