"""fertool: facial expression recognition with FaceNet transfer learning.

Importing the package is cheap: torch, onnxruntime and scikit-learn are imported lazily by the
modules that need them.
"""

__version__ = "0.1.0"

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def load(path, **kwargs):
    """Load an exported ONNX model for inference (see :mod:`fertool.runtime`)."""
    from fertool.runtime import load as _load

    return _load(path, **kwargs)


__all__ = ["LABELS", "__version__", "load"]
