"""fertool: facial expression recognition with FaceNet transfer learning.

Importing the package is cheap: torch, onnxruntime and scikit-learn are imported lazily by the
modules that need them.
"""

from fertool.core.labels import LABELS
from fertool.core.version import __version__


def load(path, **kwargs):
    """Load an exported ONNX model for inference (see :mod:`fertool.serve.runtime`)."""
    from fertool.serve.runtime import load as _load

    return _load(path, **kwargs)


__all__ = ["LABELS", "__version__", "load"]
