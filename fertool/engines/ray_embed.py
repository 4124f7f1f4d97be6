"""``fertool embed --engine ray``: :func:`fertool.features.embed.embed_folder` on Ray Data.

::

    fertool embed --data photos/ --out photos.npz --engine ray --num-workers 2
    fertool embed --data /shared/faces/ --no-detect --out faces.npz --engine ray \\
        --address ray://head:10001 --num-workers 16 --gpus-per-worker 0.5

The listing is the local engine's (:func:`fertool.features.embed.scan_images`: same order, labels
and ignored files), written as plan files of paths (:mod:`fertool.engines.plan`). Decoding and
the face stage run in the CPU actors of :mod:`fertool.engines.ray_engine`
(:class:`~fertool.engines.ray_engine.FaceStageWorker`; with ``detect=False``
:class:`GivenCropWorker`, the local engine's reading and :func:`~fertool.features.embed.fit_crop`);
the backbone runs in :class:`EmbedWorker` actors, each building it once
(:func:`fertool.features.embed.build_embedder`, on the GPU when the actor has one) and computing
the features with :func:`fertool.features.embed.embed_crops` (same layer, same flip TTA). The
driver keeps exactly one result per input whatever Ray's retries
(:class:`fertool.engines.shards.Collector`) and puts them in the listing's order, so the result
is the local engine's :class:`~fertool.features.embed.EmbeddingSet`: same rows, labels, statuses,
``skipped`` (bad files are entries there, never a failed job), ``ignored`` and ``meta`` (the same
keys and values; neither engine records which one ran). The embeddings agree to float32
rounding (about 1e-7) when the face stage runs torch on as many threads in both engines: the
actors use one (``detector_threads``), and MTCNN's results on more threads can move a crop pixel
by one grey level, and so a FaceNet embedding by up to about 6e-5 (measured on 300 generated
photos; the local engine on one thread against its default of two).

Weights travel to the actors as the resolved :class:`~fertool.models.weights.WeightsInfo`: an
actor reads its ``path``, or, on a node where that file does not exist, resolves the named
weights (``casia-webface``...) in its own torch cache and checks that they have the same sha256.
A ``--weights FILE`` must therefore be readable from every node, like the images. Random weights
(``none``) are seeded, so every actor builds the same network as the local engine.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.engines.ray_engine import (
    FaceStageWorker,
    RayOptions,
    _plan_blocks,
    face_stage,
    model_stage,
    ray_session,
)

if TYPE_CHECKING:  # pragma: no cover
    from fertool.faces.stage import FaceConfig
    from fertool.features.embed import EmbeddingSet
    from fertool.models.weights import WeightsInfo

log = logging.getLogger(__name__)

#: Classes of the head of the network built for embedding (unused by the features).
_NUM_CLASSES = 7


class GivenCropWorker(FaceStageWorker):
    """:class:`FaceStageWorker` for ``detect=False``: every image is a face crop, read and
    resized to ``size`` as the local engine does (status ``given``, an ``error`` record for a
    file that cannot be read)."""

    def __init__(self, size: int, threads: int | None = 1):
        from fertool.faces.stage import FaceConfig

        super().__init__(FaceConfig(size=size).to_dict(), use_cache=False, threads=threads)

    def _records(self, path: str) -> list:
        from fertool.faces.types import FaceRecord, error_record
        from fertool.features.embed import _given_crops

        try:
            item = next(_given_crops([(Path(path), "")], self.config.size))
        except Exception as exc:  # noqa: BLE001 - one input's failure is its row, not the job's
            return [error_record(path, f"cannot read ({type(exc).__name__}: {exc})")]
        if item.crop is None:
            return [error_record(path, item.message)]
        return [FaceRecord(path, item.status, "", 1, -1, None, None, None, item.crop)]


def _weights_here(weights: dict | None) -> WeightsInfo | None:
    """The weights on this node: the driver's file, or the named weights resolved here (same
    sha256)."""
    from fertool.models.weights import WeightsInfo, resolve_weights

    if weights is None:
        return None
    info = WeightsInfo.from_dict(weights)
    if os.path.isfile(info.path) or info.name == "file":
        return info  # a missing file fails in create_model, naming it
    here = resolve_weights(info.name, progress=False)
    if here is None or here.sha256 != info.sha256:
        raise FertoolError(
            f"weights {info.name}: this node's file ({here.path if here else 'none'}) is not the "
            f"driver's (sha256 {info.sha256[:12]})"
        )
    return here


class EmbedWorker:
    """Ray Data callable: face records in, one feature row per record out (zeros and
    ``has_crop`` false where the record has no crop). Builds the backbone once per actor."""

    def __init__(
        self,
        weights: dict | None,
        backbone: str,
        layer: str,
        flip: bool,
        batch_size: int,
        threads: int | None = 1,
    ):
        import ray
        import torch

        from fertool.features.embed import build_embedder

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.model, _ = build_embedder(_weights_here(weights), backbone, device=self.device)
        self.layer, self.flip, self.batch_size = layer, flip, batch_size
        self.width = self.model.spec.feature_taps[layer].width

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from fertool.features.embed import embed_crops

        has = np.asarray(batch["has_crop"], bool)
        emb = np.zeros((len(has), self.width), np.float32)
        if has.any():
            emb[has] = embed_crops(
                self.model,
                batch["crop"][has],
                self.layer,
                batch_size=self.batch_size,
                flip=self.flip,
                progress=False,
                device=self.device,
            )
        out = {k: batch[k] for k in ("_key", "_pos", "_n", "status", "message")}
        out["has_crop"] = has
        out["embedding"] = emb
        return out


def embed_folder_ray(
    root: str | os.PathLike,
    weights: WeightsInfo | str | None = None,
    backbone: str = "inception-resnet-v1",
    *,
    options: RayOptions | None = None,
    detect: bool = True,
    face_config: FaceConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    layer: str = "embedding",
    batch_size: int = 32,
    flip: bool = False,
    progress: bool = True,
    threads: int | None = None,
    detector_threads: int | None = 1,
) -> EmbeddingSet:
    """:func:`fertool.features.embed.embed_folder` on Ray: the same :class:`EmbeddingSet`.

    Parameters
    ----------
    root : path
        A dataset (class sub-folders give labels) or any folder of images; it must be readable
        from every node.
    weights : WeightsInfo, str or None
        What :func:`fertool.models.weights.resolve_weights` returned (or a name or file for it to
        resolve here); None for random weights (seeded, see
        :func:`~fertool.features.embed.build_embedder`).
    backbone : str
        A registered backbone (:mod:`fertool.models.registry`).
    options : RayOptions
        ``num_workers`` face-stage actors (one CPU each) and as many embedding actors
        (``gpus_per_worker`` GPUs each; 0 runs the backbone on the CPU).
    detect, face_config, cache_dir, layer, batch_size, flip, progress
        As in :func:`~fertool.features.embed.embed_folder`; ``use_cache`` false neither reads
        nor writes the face cache.
    threads : int, optional
        torch threads per embedding actor (default 1 on the CPU, torch's own on a GPU).
    detector_threads : int, optional
        torch threads per face-stage actor.
    """
    from tqdm import tqdm

    from fertool.engines.plan import plan_paths
    from fertool.engines.shards import Collector, path_key
    from fertool.features.embed import EmbeddingSet, embed_meta, face_setup, scan_images
    from fertool.models.fernet import default_labels
    from fertool.models.registry import get_backbone
    from fertool.models.weights import WeightsInfo, resolve_weights

    options = options or RayOptions()
    if batch_size < 1:
        raise FertoolError(f"--batch-size {batch_size}: expected at least 1")
    spec = get_backbone(backbone)
    if layer not in spec.feature_taps:
        raise FertoolError(
            f"{layer!r} is not a layer of {spec.name}; choose one of {', '.join(spec.feature_taps)}"
        )
    if weights is not None and not isinstance(weights, WeightsInfo):
        weights = resolve_weights(weights)
    root = Path(root)
    items, not_images = scan_images(root)
    # the preprocessing create_model gives the network (FerNet's default for the backbone)
    model_pre = spec.default_preprocessing(default_labels(_NUM_CLASSES))
    face_config, preprocessing = face_setup(model_pre, detect, face_config)
    gpu = options.gpus_per_worker > 0

    plan_folder = tempfile.mkdtemp(prefix="fertool-embed-plan-")
    index = {path_key(str(p)): i for i, (p, _) in enumerate(items)}
    results: dict[int, dict[str, Any]] = {}  # listing index -> the input's one record
    collector = Collector(None)
    bar = tqdm(
        total=len(items),
        desc=f"embed ({layer}, ray)",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        plan = plan_paths((str(p) for p, _ in items), plan_folder)
        with ray_session(options.address, options.num_cpus) as ray:
            blocks = list(_plan_blocks(ray, plan.files, plan.todo, options.num_workers))
            if detect:
                worker, kwargs = FaceStageWorker, {
                    "face": face_config.to_dict(),
                    "use_cache": use_cache,
                    "cache_dir": None if cache_dir is None else str(cache_dir),
                    "threads": detector_threads,
                }
            else:
                worker, kwargs = GivenCropWorker, {
                    "size": model_pre.size,
                    "threads": detector_threads,
                }
            ds = face_stage(ray, ray.data.from_arrow_refs(blocks), worker, kwargs, options)
            ds = model_stage(
                ray,
                ds,
                EmbedWorker,
                {
                    "weights": None if weights is None else weights.to_dict(),
                    "backbone": spec.name,
                    "layer": layer,
                    "flip": bool(flip),
                    "batch_size": batch_size,
                    "threads": threads or (None if gpu else 1),
                },
                options,
                batch_size,
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i in range(len(batch["_key"])):
                    key = str(batch["_key"][i])
                    rows = collector.add({
                        "_key": key,
                        "_pos": int(batch["_pos"][i]),
                        "_n": int(batch["_n"][i]),
                        "status": str(batch["status"][i]),
                        "message": str(batch["message"][i]),
                        "embedding": batch["embedding"][i] if batch["has_crop"][i] else None,
                    })
                    if rows is not None:  # one record per input (the chosen face)
                        results[index[key]] = rows[0]
                        bar.update(1)
    finally:
        bar.close()
        shutil.rmtree(plan_folder, ignore_errors=True)
    missing = len(items) - len(results)
    if collector.pending or missing:  # cannot happen unless Ray lost rows; say so
        raise FertoolError(f"{missing} inputs came back incomplete from Ray; run again")
    log.info("embedded %d images with Ray in %.1f s", len(items), time.perf_counter() - t0)

    feats, paths, labels, status = [], [], [], []
    skipped: list[tuple[str, str]] = []
    for i, (path, label) in enumerate(items):
        row = results[i]
        rel = path.relative_to(root).as_posix()
        if row["embedding"] is None:
            skipped.append((rel, row["message"] or row["status"]))
            log.info("skipped %s: %s", path, row["message"] or row["status"])
            continue
        feats.append(row["embedding"])
        paths.append(rel)
        labels.append(label)
        status.append(row["status"])
    width = spec.feature_taps[layer].width
    embeddings = np.stack(feats).astype(np.float32) if feats else np.zeros((0, width), np.float32)
    meta = embed_meta(root, layer, flip, weights, preprocessing, face_config)
    ignored = [Path(p).relative_to(root).as_posix() for p in not_images]
    return EmbeddingSet(embeddings, paths, labels, status, skipped, ignored, meta)
