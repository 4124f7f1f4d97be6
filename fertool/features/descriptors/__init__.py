"""Hand-crafted face descriptors: LPQ and PHOG, as pure functions and scikit-learn transformers.

``lpq``, ``lpq_grid`` and ``phog`` take one grey image and return a vector (or a code image);
the ``*_batch`` versions take an ``(N, H, W)`` stack. :class:`LPQTransformer` and
:class:`PHOGTransformer` (imported lazily, they need scikit-learn and scikit-image) apply them to
a batch of RGB face crops inside a Pipeline.
"""

from fertool.features.descriptors.lpq import lpq, lpq_batch, lpq_grid, lpq_grid_batch
from fertool.features.descriptors.phog import phog, phog_batch, phog_length

_LAZY = {"LPQTransformer", "PHOGTransformer", "prepare_faces", "to_grey"}


def __getattr__(name):
    if name in _LAZY:
        from fertool.features.descriptors import transformers

        return getattr(transformers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LPQTransformer",
    "PHOGTransformer",
    "lpq",
    "lpq_batch",
    "lpq_grid",
    "lpq_grid_batch",
    "phog",
    "phog_batch",
    "phog_length",
    "prepare_faces",
    "to_grey",
]
