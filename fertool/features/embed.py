"""FaceNet embeddings (or other layers' features) for crops, folders of crops, and datasets.

::

    from fertool.features.embed import embed_crops, embed_folder, EmbeddingSet

    feats = embed_crops(model, crops)                     # (N, 512) float32, batched
    result = embed_folder(model, "faces/", detect=False)  # a folder of already-cropped faces
    result.save("emb.npz"); EmbeddingSet.load("emb.npz")

:func:`embed_crops` is the one batching function: compare-baselines and training reuse it.
:func:`embed_folder` streams images (bounded memory) through the face stage
(:func:`fertool.faces.stage.extract_faces`) or, with ``detect=False``, straight from the files,
resized to the model's input size when needed. Files that cannot be used are skipped with a reason.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Version of the ``.npz`` layout written by :meth:`EmbeddingSet.save`.
NPZ_FORMAT = "fertool-embeddings-1"


def _embed_batch(model, crops: np.ndarray, layer: str, flip: bool, device) -> np.ndarray:
    from fertool.models.inference import flip_mean

    x = model.preprocessing.to_tensor(crops).to(device)
    # One pass over the crops and their mirror images; the mean embedding is normalised again.
    tap = model.spec.feature_taps.get(layer)  # an unknown layer: features() says so
    renorm = (0,) if tap is not None and tap.normalize else ()
    f = flip_mean(lambda t: model.features(t, layer), x, flip=flip, renormalize=renorm)
    return f.float().cpu().numpy()


class _EvalMode:
    """Eval mode and inference mode for the duration of a block; the previous mode is restored."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import torch

        self.was_training = self.model.training
        self.model.eval()
        self.ctx = torch.inference_mode()
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        self.model.train(self.was_training)
        return False


def _device(model, device):
    return device if device is not None else next(model.parameters()).device


def embed_crops(
    model,
    crops: np.ndarray,
    layer: str = "embedding",
    batch_size: int = 32,
    flip: bool = False,
    progress: bool = True,
    device=None,
) -> np.ndarray:
    """Features of face crops, batched, in eval mode without gradients.

    Parameters
    ----------
    model : fertool.models.fernet.FerNet
    crops : (N, S, S, 3) uint8 ndarray
        RGB crops of the model's input size ``S`` (``model.preprocessing.size``).
    layer : str
        ``embedding`` (L2-normalised 512-d), ``pool`` (1792-d) or another name of
        :data:`fertool.models.fernet.FEATURE_LAYERS`.
    batch_size : int
    flip : bool
        Test-time augmentation: average the features of each crop and its mirror image
        (re-normalised for ``embedding``).
    progress : bool
        Progress bar on stderr.
    device : torch.device or str, optional
        Default: the model's device.

    Returns
    -------
    (N, D) float32 ndarray
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected at least 1")
    crops = np.asarray(crops)
    if crops.ndim != 4:
        raise ValueError(f"crops have shape {crops.shape}; expected (N, S, S, 3) uint8")
    device = _device(model, device)
    n = len(crops)
    out = []
    with (
        _EvalMode(model),
        tqdm(
            total=n,
            desc=f"embed ({layer})",
            unit="img",
            file=sys.stderr,
            disable=not progress or n == 0,
            dynamic_ncols=True,
        ) as bar,
    ):
        for start in range(0, n, batch_size):
            chunk = crops[start : start + batch_size]
            out.append(_embed_batch(model, chunk, layer, flip, device))
            bar.update(len(chunk))
    if not out:
        from fertool.models.fernet import FEATURE_LAYERS

        return np.zeros((0, FEATURE_LAYERS[layer]), np.float32)
    return np.concatenate(out)


@dataclass
class EmbeddingSet:
    """Features of a folder of images, with what produced them.

    Attributes
    ----------
    embeddings : (N, D) float32 ndarray
    paths : list of str
        Paths relative to ``meta["root"]`` (POSIX separators), one per row.
    labels : list of str
        Canonical label per row, ``""`` where the image was not in a class folder.
    face_status : list of str
        ``ok``/``fallback`` (face stage) or ``given`` (``detect=False``), one per row.
    skipped : list of (str, str)
        Image files that produced no row: (path, reason).
    ignored : list of str
        Files that are not images (by extension), relative paths.
    meta : dict of str to str
        ``root``, ``layer``, ``flip``, ``weights_name``, ``weights_sha256``, ``weights_source``,
        ``preprocessing`` (JSON), ``face_config`` (JSON, or "" without detection),
        ``fertool_version``, ``format``.
    """

    embeddings: np.ndarray
    paths: list[str]
    labels: list[str]
    face_status: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_labels(self) -> bool:
        return any(self.labels)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (strings as unicode arrays, nothing pickled)."""
        arrays = {
            "embeddings": np.asarray(self.embeddings, np.float32),
            "paths": np.array(self.paths, dtype=str),
            "face_status": np.array(self.face_status, dtype=str),
            "skipped_paths": np.array([p for p, _ in self.skipped], dtype=str),
            "skipped_reasons": np.array([r for _, r in self.skipped], dtype=str),
            "ignored_paths": np.array(self.ignored, dtype=str),
        }
        if self.has_labels:
            arrays["labels"] = np.array(self.labels, dtype=str)
        for key, value in self.meta.items():
            arrays[f"meta_{key}"] = np.array(str(value))
        return arrays

    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write a compressed ``.npz`` atomically; refuses to overwrite unless ``force``."""
        from fertool.core.io import write_npz

        return write_npz(path, force=force, **self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingSet:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        import pickle
        import zipfile

        from fertool.core.errors import FertoolError

        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
            raise FertoolError(f"{path}: not a readable embeddings file ({exc})") from exc
        if "embeddings" not in data or "paths" not in data:
            raise FertoolError(
                f"{path}: no 'embeddings'/'paths' arrays; not written by fertool embed"
            )
        n = len(data["paths"])
        meta = {k[5:]: str(v) for k, v in data.items() if k.startswith("meta_")}
        labels = [str(x) for x in data["labels"]] if "labels" in data else [""] * n
        status = [str(x) for x in data.get("face_status", np.array(["given"] * n))]
        skipped = list(
            zip(
                (str(p) for p in data.get("skipped_paths", [])),
                (str(r) for r in data.get("skipped_reasons", [])),
            )
        )
        ignored = [str(p) for p in data.get("ignored_paths", [])]
        return cls(
            data["embeddings"],
            [str(p) for p in data["paths"]],
            labels,
            status,
            skipped,
            ignored,
            meta,
        )

    def preprocessing(self):
        """The :class:`~fertool.models.preprocessing.Preprocessing` recorded in ``meta``."""
        from fertool.models.preprocessing import Preprocessing

        return Preprocessing.from_json(self.meta["preprocessing"])


def scan_images(root: str | os.PathLike) -> tuple[list[tuple[Path, str]], list[str]]:
    """Image files under ``root`` (recursive, sorted), with the label of their class folder.

    Returns
    -------
    items : list of (Path, str)
        The label is the canonical name of the top-level folder an image is in, or ``""`` when
        that folder is not an expression name or the image lies directly in ``root``.
    skipped : list of str
        Files that are not images (by extension).

    Raises
    ------
    DatasetError
        When ``root`` is not a folder or holds no image.
    """
    from fertool.core.errors import DatasetError
    from fertool.core.labels import canonical_label
    from fertool.data.walk import WalkStats, is_hidden, iter_image_paths

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root} is not a folder; expected a folder of images (class sub-folders optional)"
        )
    items = []
    stats = WalkStats(non_image_paths=[])
    for p in iter_image_paths([root], stats):
        path = Path(p)
        if is_hidden(path, root):
            continue
        rel = path.relative_to(root).parts
        items.append((path, (canonical_label(rel[0]) or "") if len(rel) > 1 else ""))
    skipped = [p for p in stats.non_image_paths if not is_hidden(p, root)]
    if not items:
        raise DatasetError(f"no image files found under {root}")
    items.sort(key=lambda t: t[0].relative_to(root).as_posix())
    return items, skipped


def fit_crop(image: np.ndarray, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 crop: the image itself, or resized (bilinear, antialiased)."""
    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.uint8)


@dataclass
class _Item:
    path: Path
    label: str
    status: str
    crop: np.ndarray | None
    message: str = ""


def _given_crops(items: Iterable[tuple[Path, str]], size: int) -> Iterator[_Item]:
    from fertool.core.errors import ImageReadError
    from fertool.core.io import read_image

    for path, label in items:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            yield _Item(path, label, "error", None, str(exc))
            continue
        if image.shape[0] != image.shape[1]:
            log.debug(
                "%s is %dx%d, not square; resized to %dx%d",
                path,
                image.shape[1],
                image.shape[0],
                size,
                size,
            )
        yield _Item(path, label, "given", fit_crop(image, size))


def _detected_crops(
    items: list[tuple[Path, str]], config, cache_dir, progress: bool
) -> Iterator[_Item]:
    from fertool.faces.stage import extract_faces

    labels = {str(p): label for p, label in items}
    for rec in extract_faces([p for p, _ in items], config, cache_dir=cache_dir, progress=progress):
        yield _Item(Path(rec.path), labels[rec.path], rec.status, rec.crop, rec.message)


def embed_folder(
    model,
    root: str | os.PathLike,
    *,
    detect: bool = True,
    face_config=None,
    cache_dir: str | os.PathLike | None = None,
    layer: str = "embedding",
    batch_size: int = 32,
    flip: bool = False,
    progress: bool = True,
    device=None,
) -> EmbeddingSet:
    """Features of every image under ``root``.

    Parameters
    ----------
    model : fertool.models.fernet.FerNet
    root : path
        A dataset (one sub-folder per expression gives labels) or any folder of images.
    detect : bool
        Run the face stage (detection, alignment, crop cache). With ``False`` the images are
        taken as crops, resized to the model's input size when needed.
    face_config : fertool.faces.stage.FaceConfig, optional
        Face-stage settings (default ``FaceConfig()``); its crop size is set to the model's
        input size.
    cache_dir : path, optional
        Face-crop cache root (default :func:`fertool.core.env.cache_dir`).
    layer, batch_size, flip, progress, device
        As in :func:`embed_crops`.

    Returns
    -------
    EmbeddingSet
        Rows for images with a crop; unreadable files, and images without a face when the face
        stage is told to skip them, are listed in ``skipped``.
    """
    from tqdm import tqdm

    root = Path(root)
    items, not_images = scan_images(root)
    size = model.preprocessing.size
    face_config, preprocessing = face_setup(model.preprocessing, detect, face_config)
    if detect:
        stream = _detected_crops(items, face_config, cache_dir, progress)
    else:
        stream = _given_crops(items, size)
    device = _device(model, device)

    feats, paths, labels, status = [], [], [], []
    skipped: list[tuple[str, str]] = []
    batch: list[_Item] = []
    # With detection the face stage shows its own progress bar; otherwise this one counts files.
    bar = tqdm(
        total=len(items),
        desc=f"embed ({layer})",
        unit="img",
        file=sys.stderr,
        disable=not progress or detect,
        dynamic_ncols=True,
    )

    def flush():
        if batch:
            crops = np.stack([it.crop for it in batch])
            feats.append(_embed_batch(model, crops, layer, flip, device))
            for it in batch:
                paths.append(it.path.relative_to(root).as_posix())
                labels.append(it.label)
                status.append(it.status)
            bar.update(len(batch))
            batch.clear()

    try:
        with _EvalMode(model):
            for it in stream:
                if it.crop is None:
                    skipped.append((it.path.relative_to(root).as_posix(), it.message or it.status))
                    log.info("skipped %s: %s", it.path, it.message or it.status)
                    bar.update(1)
                    continue
                batch.append(it)
                if len(batch) >= batch_size:
                    flush()
            flush()
    finally:
        bar.close()

    from fertool.models.fernet import FEATURE_LAYERS

    embeddings = (
        np.concatenate(feats) if feats else np.zeros((0, FEATURE_LAYERS[layer]), np.float32)
    )
    info = getattr(model, "weights_info", None)
    meta = embed_meta(root, layer, flip, info, preprocessing, face_config if detect else None)
    ignored = [Path(p).relative_to(root).as_posix() for p in not_images]
    return EmbeddingSet(embeddings, paths, labels, status, skipped, ignored, meta)


def face_setup(preprocessing, detect: bool, face_config=None):
    """``(face_config, preprocessing)`` of an embedding run: with detection the face settings
    (default ``FaceConfig()``, the crop size set to the model's input size unless the
    preprocessing resizes) and the preprocessing that records them; without, ``(None,
    preprocessing)``. Shared by both engines, so that they crop and record alike."""
    if not detect:
        return None, preprocessing
    from fertool.faces.stage import FaceConfig

    face_config = face_config or FaceConfig()
    if preprocessing.resize is None:  # else the preprocessing resizes the face stage's crops
        face_config = replace(face_config, size=preprocessing.size)
    return face_config, replace(preprocessing, face=face_config)


def embed_meta(root, layer: str, flip: bool, info, preprocessing, face_config) -> dict[str, str]:
    """The ``meta`` of an :class:`EmbeddingSet` (``face_config`` None without detection); the
    same keys and values whichever engine computed the embeddings."""
    from fertool.core.version import __version__

    return {
        "format": NPZ_FORMAT,
        "root": str(root),
        "layer": layer,
        "flip": str(bool(flip)).lower(),
        "weights_name": info.name if info else "none",
        "weights_sha256": info.sha256 if info else "",
        "weights_source": info.source if info else "",
        "preprocessing": preprocessing.to_json(),
        "face_config": (
            "" if face_config is None else json.dumps(face_config.to_dict(), sort_keys=True)
        ),
        "fertool_version": __version__,
    }


#: Seed of the random initialisation of ``--weights none`` (:func:`build_embedder`).
RANDOM_WEIGHTS_SEED = 0


def build_embedder(weights, backbone="inception-resnet-v1", device=None):
    """``(model, info)``: :func:`fertool.models.fernet.create_model` for embedding.

    ``weights`` is what :func:`fertool.models.weights.resolve_weights` returned (or a name,
    file or None for it to resolve). Random weights (None) are drawn from a fixed seed
    (:data:`RANDOM_WEIGHTS_SEED`, the global torch generator left as it was), so that two runs,
    and every actor of ``--engine ray``, build the same network.
    """
    import torch

    from fertool.models.fernet import create_model
    from fertool.models.weights import WeightsInfo, resolve_weights

    if weights is not None and not isinstance(weights, WeightsInfo):
        weights = resolve_weights(weights)  # None for "none"
    if weights is not None:
        return create_model(weights, device=device, backbone=backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return create_model(None, device=device, backbone=backbone)
