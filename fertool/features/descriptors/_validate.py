"""Input checks shared by the descriptors."""

from __future__ import annotations

import numpy as np


def as_float(array, ndim: int, name: str, method: str) -> np.ndarray:
    """Validate a real, finite array of ``ndim`` dimensions and return it as float64.

    ``name`` is the argument's name and ``method`` the descriptor's, both used in the messages.
    """
    arr = np.asarray(array)
    if arr.ndim != ndim:
        what = "a 2-D grey image (H, W)" if ndim == 2 else "a stack of grey images (N, H, W)"
        hint = "; convert colour images to grey first" if arr.ndim == ndim + 1 else ""
        raise ValueError(f"{name} must be {what}, got an array of shape {arr.shape}{hint}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers (integer or float), got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} contains NaN or infinite values; {method} needs finite pixel values"
        )
    return arr
