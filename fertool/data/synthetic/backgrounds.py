"""Backgrounds and camera effects of :mod:`fertool.data.synthetic`.

Random colours, a separable Gaussian blur, the three background kinds (gradient, smooth noise,
cluttered shapes) and :func:`_finish`: global light gradient, colour cast, blur and sensor noise.
"""

from __future__ import annotations

import math

import numpy as np

from fertool.data.synthetic.spec import SyntheticSpec


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random RGB colours of moderate saturation, float32 (n, 3)."""
    c = rng.uniform(15, 240, size=(n, 3))
    grey = c.mean(axis=1, keepdims=True)
    return (grey + rng.uniform(0.25, 0.9, (n, 1)) * (c - grey)).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image over H and W (edges repeated)."""
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        padded = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return img.astype(np.float32)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c1, c2 = _colours(rng, 2)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = (g.astype(np.float32) / max(h, w) for g in np.ogrid[0:h, 0:w])
    t = xx * math.cos(ang) + yy * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return c1 + (c2 - c1) * t[..., None]


def _background(rng: np.random.Generator, h: int, w: int, kinds: tuple[str, ...]) -> np.ndarray:
    """A (h, w, 3) float32 background of one of ``kinds``."""
    from PIL import Image, ImageDraw

    kind = kinds[int(rng.integers(len(kinds)))]
    bg = _gradient(rng, h, w)
    if kind == "noise":
        # two octaves of smooth noise, mostly in brightness
        for cell, amp in ((int(rng.integers(24, 64)), 1.0), (int(rng.integers(6, 16)), 0.35)):
            grid = rng.normal(0, 1, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
            grid = 0.7 * grid.mean(axis=2, keepdims=True) + 0.3 * grid
            up = np.stack([
                np.asarray(Image.fromarray(grid[..., c], mode="F").resize((w, h), Image.BICUBIC))
                for c in range(3)
            ], axis=-1)  # fmt: skip
            bg = bg + amp * float(rng.uniform(25, 50)) * up
    elif kind == "clutter":
        ss = 2
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).resize((w * ss, h * ss))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 15))):
            colour = tuple(int(v) for v in _colours(rng, 1)[0])
            cx, cy = rng.uniform(0, w * ss), rng.uniform(0, h * ss)
            rx, ry = rng.uniform(0.03, 0.3) * w * ss, rng.uniform(0.03, 0.3) * h * ss
            shape = int(rng.integers(4))
            if shape == 0:
                draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
            elif shape == 1:
                draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
            elif shape == 2:
                draw.line(
                    [cx - rx, cy - ry, cx + rx, cy + ry],
                    fill=colour,
                    width=int(rng.integers(2, 12)),
                )
            else:
                pts = rng.uniform(-1, 1, (3, 2)) * (rx, ry) + (cx, cy)
                draw.polygon([tuple(v) for v in pts.tolist()], fill=colour)
        bg = np.asarray(img.reduce(ss), dtype=np.float32)
        bg = _blur(bg, float(rng.uniform(0.5, 2.0)))
    return bg


def _finish(
    img: np.ndarray,
    rng: np.random.Generator,
    spec: SyntheticSpec,
    noise_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Global light gradient, colour cast, blur and noise; returns uint8.

    The settings come from ``rng``, the noise pixels from ``noise_rng`` (default ``rng``), so
    that the frames of a clip share a camera but not a noise pattern.
    """
    h, w = img.shape[:2]
    strength = rng.uniform(*spec.gradient)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = (g.astype(np.float32) for g in np.ogrid[0:h, 0:w])
    ramp = ((xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)) / (0.5 * math.hypot(w, h))
    gain = 1 + rng.normal(0, 1, 3) * spec.color_cast
    img = img * ((1 + np.float32(strength) * ramp)[..., None] * gain.astype(np.float32))
    sigma = rng.uniform(*spec.blur_sigma)
    if sigma > 0.05:
        img = _blur(img, float(sigma))
    noise = rng.uniform(*spec.noise_sigma)
    if noise > 0:
        noise_rng = rng if noise_rng is None else noise_rng
        img = img + np.float32(noise) * noise_rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
