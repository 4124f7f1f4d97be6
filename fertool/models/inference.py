"""Running a model: class probabilities, the export heads, and flip test-time augmentation.

:func:`flip_mean` is the one flip-TTA helper: a function run on a batch of crops and their
mirror images (one pass, twice the batch), its outputs averaged per pair. Fine-tuning's
evaluation (:func:`predict_proba`), embeddings (:mod:`fertool.features.embed`) and the ONNX
graph (:func:`output_module`) all go through it.

:func:`output_module` is the torch module an export traces (and that parity checks run): the
named outputs of :data:`OUTPUT_NAMES`, in one pass. :func:`run_outputs` runs it on numpy
input. This module is torch-free at import (torch is imported when a function runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fertool.models.fernet import FerNet

#: The outputs of an exported model, in graph order.
OUTPUT_NAMES = ("probabilities", "logits", "embedding")


def flip_mean(fn: Callable, x: torch.Tensor, flip: bool = True, renormalize: tuple = ()):
    """``fn`` on ``x`` and its mirror image (flipped along the width) in one batch, averaged.

    Parameters
    ----------
    fn : callable
        ``fn(batch) -> tensor`` or a tuple of tensors, each with the batch as first dimension.
    x : (N, C, H, W) tensor
    flip : bool
        False: just ``fn(x)``.
    renormalize : tuple of int
        Indices of outputs (0 for a single tensor) that are L2-normalised rows: their mean is
        normalised again.

    Returns
    -------
    tensor or tuple of tensors
        ``(fn(x) + fn(mirror(x))) / 2`` per output.
    """
    import torch
    import torch.nn.functional as F

    if not flip:
        return fn(x)
    n = x.shape[0]
    out = fn(torch.cat([x, x.flip(-1)]))
    single = not isinstance(out, tuple)
    outs = (out,) if single else out
    means = []
    for i, t in enumerate(outs):
        m = (t[:n] + t[n:]) / 2
        means.append(F.normalize(m, p=2.0, dim=1) if i in renormalize else m)
    return means[0] if single else tuple(means)


def predict_proba(
    model: FerNet,
    x: torch.Tensor,
    batch_size: int = 64,
    tta_flip: bool = False,
    device: torch.device | str = "cpu",
    start: int = 0,
) -> np.ndarray:
    """Class probabilities ``(N, C)`` in eval mode, batched.

    Parameters
    ----------
    model : FerNet
    x : tensor
        Standardised inputs, or (``start > 0``) cached activations of the children before
        ``model.spec.layers[start]``.
    batch_size : int
    tta_flip : bool
        Average the softmax of each crop and of its mirror image (only from the input,
        ``start == 0``).
    device : torch.device or str
    start : int
    """
    import torch
    import torch.nn.functional as F

    def proba(t):
        return F.softmax(model.run_sequence(t, start).float(), dim=1)

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            out.append(flip_mean(proba, xb, flip=tta_flip and start == 0).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


def output_module(
    model: FerNet, outputs: tuple[str, ...] = OUTPUT_NAMES, flip: bool = False
) -> torch.nn.Module:
    """A module whose forward returns the named ``outputs`` of a FerNet, in that order.

    One pass through the network: the embedding is the normalised input of the classifier
    that the logits layer also reads (exactly :meth:`FerNet.embed` and ``FerNet.forward`` in
    eval mode).

    Parameters
    ----------
    model : FerNet
    outputs : tuple of str
        Any of ``probabilities``, ``logits``, ``embedding``.
    flip : bool
        Test-time augmentation through :func:`flip_mean`: ``probabilities`` is the mean of the
        two softmaxes (what ``fertool finetune`` reports with ``tta_flip``), ``logits`` the mean
        of the two, ``embedding`` the mean of the two normalised embeddings, normalised again
        (what ``fertool embed --tta-flip`` computes). Twice the CNN work per crop.
    """
    import torch
    import torch.nn.functional as F

    unknown = set(outputs) - set(OUTPUT_NAMES)
    if unknown or not outputs:
        raise ValueError(f"outputs={outputs}; expected names among {OUTPUT_NAMES}")
    embedding_only = tuple(outputs) == ("embedding",)

    class _OutputHeads(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def _heads(self, x):
            if embedding_only:
                spec = self.net.spec
                z = self.net.run_sequence(x, 0, spec.layers.index(spec.classifier))
                return (F.normalize(z, p=2.0, dim=1),)
            e, logits = self.net.embedding_and_logits(x)
            return e, F.softmax(logits, dim=1), logits

        def forward(self, x):
            found = flip_mean(self._heads, x, flip=flip, renormalize=(0,))
            named = dict(zip(("embedding", "probabilities", "logits"), found))
            return tuple(named[name] for name in outputs)

    return _OutputHeads(model).eval()


def run_outputs(
    model: FerNet,
    x: np.ndarray,
    batch_size: int = 32,
    outputs: tuple[str, ...] = OUTPUT_NAMES,
    flip: bool = False,
) -> dict[str, np.ndarray]:
    """The ``outputs`` of the torch model on standardised ``x`` (see :func:`output_module`)."""
    import torch

    module = output_module(model, outputs, flip)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs = module(torch.as_tensor(np.asarray(x[i : i + batch_size], np.float32)))
            for n, o in zip(outputs, outs):
                parts[n].append(o.numpy())
    return {n: np.concatenate(v) for n, v in parts.items()}
