"""scikit-learn transformers that turn a batch of face crops into LPQ or PHOG features.

Both are stateless: ``fit`` only validates its input and returns ``self``, so they can sit at the
head of a Pipeline (descriptor -> scaler -> PCA -> SVM) and be cloned into grid searches.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from fertool.features.descriptors.lpq import _check_grid, _check_rho, _check_window, lpq_grid_batch
from fertool.features.descriptors.phog import _check_params, phog_batch, phog_length

#: ITU-R BT.601 luma weights (R, G, B).
LUMA_601 = (0.299, 0.587, 0.114)


def to_grey(image) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB image, or a grey image as float64.

    Parameters
    ----------
    image : (..., H, W, 3) or (..., H, W) array_like
        RGB (last axis of length 3) or already grey; any real dtype, scale kept.

    Returns
    -------
    grey : (..., H, W) ndarray
        float64, ``0.299 R + 0.587 G + 0.114 B`` for RGB input.
    """
    arr = np.asarray(image)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"images must hold real numbers (uint8 or float), got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim >= 3 and arr.shape[-1] == 3:
        return arr @ np.asarray(LUMA_601)
    return arr


def _check_size(size):
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
        raise ValueError(f"size must be a positive integer (for example 64) or None, got {size!r}")
    return int(size)


def _batch_error(shape) -> ValueError:
    return ValueError(
        "X must be a batch of face crops, (N, H, W, 3) RGB or (N, H, W) grey; got an array of "
        f"shape {shape}"
    )


def prepare_faces(X, size: int | None) -> np.ndarray:
    """Grey, resized float64 stack from a batch of face crops.

    Parameters
    ----------
    X : (N, H, W, 3) or (N, H, W) array_like, or a sequence of (H, W, 3) / (H, W) arrays
        RGB or grey face crops; a sequence may mix sizes when ``size`` is given.
    size : int or None
        Side of the square output (anti-aliased ``skimage.transform.resize``), or None to keep
        the input size (then all crops must have one size).

    Returns
    -------
    faces : (N, size, size) or (N, H, W) ndarray
        float64 grey faces (ITU-R 601 luma) in the input's intensity scale.
    """
    from skimage.transform import resize

    size = _check_size(size)
    if not isinstance(X, np.ndarray):
        items = [np.asarray(x) for x in X]
        if len({x.shape for x in items}) > 1:
            if size is None:
                raise ValueError("the face crops have different sizes; give size= to resize them")
            out = np.empty((len(items), size, size))
            for i, item in enumerate(items):
                if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[-1] != 3):
                    raise ValueError(
                        f"face crop {i} has shape {item.shape}; expected (H, W, 3) or (H, W)"
                    )
                grey = to_grey(item)
                out[i] = resize(grey, (size, size), anti_aliasing=True, preserve_range=True)
            return out
        X = np.stack(items) if items else np.empty((0, size or 1, size or 1))
    if not (X.ndim == 3 or (X.ndim == 4 and X.shape[-1] == 3)):
        raise _batch_error(X.shape)
    grey = to_grey(X)
    if size is None or grey.shape[1:] == (size, size):
        return grey
    if grey.shape[0] == 0:
        return np.empty((0, size, size))
    # one call for the whole stack: the batch axis has zoom factor 1, so nothing mixes across it
    return resize(grey, (grey.shape[0], size, size), anti_aliasing=True, preserve_range=True)


class _FaceDescriptor(TransformerMixin, BaseEstimator):
    """Shared plumbing: stateless fit, input tags, feature names."""

    _prefix = "feature"

    def fit(self, X, y=None):
        """Validate the parameters (and ``X``); nothing is learned. Returns ``self``."""
        self._validate_params()
        if isinstance(X, np.ndarray) and not (X.ndim == 3 or (X.ndim == 4 and X.shape[-1] == 3)):
            raise _batch_error(X.shape)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names ``{prefix}{i}`` of the output columns (input_features is ignored)."""
        return np.asarray([f"{self._prefix}{i}" for i in range(self._n_features_out)], dtype=object)


class LPQTransformer(_FaceDescriptor):
    """Grid LPQ features of face crops (:func:`fertool.features.descriptors.lpq_grid`).

    Parameters
    ----------
    size : int or None, default 64
        Faces are converted to grey (ITU-R 601 luma) and resized to ``size x size``
        (anti-aliased) first; None keeps their size.
    grid : (int, int), default (4, 4)
        Cells along rows and columns; one 256-bin histogram per cell.
    window : int, default 7
        LPQ window (odd).
    rho : float, default 0.9
        Correlation coefficient of the decorrelation.
    decorrelate : bool, default True
        Whiten the eight channels before quantisation.

    Examples
    --------
    >>> import numpy as np
    >>> faces = np.random.default_rng(0).integers(0, 256, (5, 160, 160, 3), dtype=np.uint8)
    >>> LPQTransformer().fit_transform(faces).shape
    (5, 4096)
    """

    _prefix = "lpq"

    def __init__(self, size=64, *, grid=(4, 4), window=7, rho=0.9, decorrelate=True):
        self.size = size
        self.grid = grid
        self.window = window
        self.rho = rho
        self.decorrelate = decorrelate

    def _validate_params(self):
        _check_size(self.size)
        _check_grid(self.grid)
        _check_window(self.window)
        _check_rho(self.rho)

    @property
    def _n_features_out(self) -> int:
        gy, gx = _check_grid(self.grid)
        return gy * gx * 256

    def transform(self, X) -> np.ndarray:
        """LPQ features ``(N, grid[0] * grid[1] * 256)`` of a batch of face crops.

        Parameters
        ----------
        X : (N, H, W, 3) or (N, H, W) array_like, or a sequence of crops
            uint8 RGB (or grey) face crops.
        """
        self._validate_params()
        faces = prepare_faces(X, self.size)
        if faces.shape[0] == 0:
            return np.empty((0, self._n_features_out))
        return lpq_grid_batch(faces, self.grid, self.window, self.rho, self.decorrelate)


class PHOGTransformer(_FaceDescriptor):
    """PHOG features of face crops (:func:`fertool.features.descriptors.phog`).

    Parameters
    ----------
    size : int or None, default 64
        Faces are converted to grey (ITU-R 601 luma) and resized to ``size x size``
        (anti-aliased) first; None keeps their size. Choose a multiple of ``2**levels``.
    bins : int, default 8
        Orientation bins.
    levels : int, default 3
        Pyramid levels above level 0.
    angle : {360, 180}, default 360
        Orientation range in degrees.

    Examples
    --------
    >>> import numpy as np
    >>> faces = np.random.default_rng(0).integers(0, 256, (5, 160, 160, 3), dtype=np.uint8)
    >>> PHOGTransformer().fit_transform(faces).shape
    (5, 680)
    """

    _prefix = "phog"

    def __init__(self, size=64, *, bins=8, levels=3, angle=360):
        self.size = size
        self.bins = bins
        self.levels = levels
        self.angle = angle

    def _validate_params(self):
        _check_size(self.size)
        _check_params(self.bins, self.levels, self.angle, 1.0)

    @property
    def _n_features_out(self) -> int:
        bins, levels, _, _ = _check_params(self.bins, self.levels, self.angle, 1.0)
        return phog_length(bins, levels)

    def transform(self, X) -> np.ndarray:
        """PHOG features ``(N, bins * (4 ** (levels + 1) - 1) // 3)`` of a batch of face crops.

        Parameters
        ----------
        X : (N, H, W, 3) or (N, H, W) array_like, or a sequence of crops
            uint8 RGB (or grey) face crops.
        """
        self._validate_params()
        faces = prepare_faces(X, self.size)
        if faces.shape[0] == 0:
            return np.empty((0, self._n_features_out))
        return phog_batch(faces, self.bins, self.levels, self.angle)


__all__ = ["LUMA_601", "LPQTransformer", "PHOGTransformer", "prepare_faces", "to_grey"]
