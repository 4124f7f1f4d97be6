"""Pieces of the fine-tuning recipe beyond the paper's: LP-FT head, layer-wise LR, EMA, mixup.

- :func:`fit_linear_head` (LP-FT, ``--init-head logreg``): a multinomial logistic regression on
  the frozen features that reach the classifier (grouped inner CV over C on the fitting part
  only, :func:`fertool.evaluate.classify.fit_head`), copied into the classifier with the
  standardisation folded into the weights: the network then predicts exactly what the probe
  predicts, before the first fine-tuning step.
- :func:`param_groups`: the head at ``lr``; the trainable backbone children at ``backbone_lr``,
  times ``layer_decay ** k`` for the k-th child with parameters below the head (k = 0 nearest
  the head). ``layer_decay = 1`` gives the two groups of earlier versions, unchanged.
- :class:`ModelEMA` (``--ema DECAY``): an exponential moving average of the trainable
  parameters, updated after every optimizer step; validation, ``best.pt`` and the test use it.
- :func:`mixup_batch` (``--mixup ALPHA``): convex combinations of pairs of inputs of the
  trainable part and of their losses.

This module imports torch and scikit-learn inside functions only where it can.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch

from fertool.core.errors import FertoolError

__all__ = ["ModelEMA", "fit_linear_head", "fold_linear_probe", "mixup_batch", "param_groups"]

HEAD_ON = ("embedding", "pool")
INIT_HEAD = ("random", "logreg")


def check_recipe(cfg) -> None:
    """Refuse recipe settings that make no sense, naming the parameter."""
    if cfg.head_on not in HEAD_ON:
        raise FertoolError(f"head_on={cfg.head_on!r}; expected one of {', '.join(HEAD_ON)}")
    if cfg.init_head not in INIT_HEAD:
        raise FertoolError(f"init_head={cfg.init_head!r}; expected one of {', '.join(INIT_HEAD)}")
    if not 0 < cfg.layer_decay <= 1:
        raise FertoolError(f"layer_decay={cfg.layer_decay}; expected 0 < layer_decay <= 1")
    if not 0 <= cfg.ema < 1:
        raise FertoolError(f"ema={cfg.ema}; expected 0 (off) <= ema < 1")
    if cfg.mixup < 0:
        raise FertoolError(f"mixup={cfg.mixup}; expected 0 (off) or a Beta parameter > 0")


# --------------------------------------------------------------------------------------------
# Parameter groups


def param_groups(model, lr: float, backbone_lr: float, layer_decay: float = 1.0) -> list[dict]:
    """Optimizer groups: the head at ``lr``, the backbone at ``backbone_lr`` (layer-decayed).

    Raises
    ------
    FertoolError
        When no parameter is trainable.
    """
    head, body = [], []
    for name in model.spec.unfreeze_order:  # from the output end
        params = [p for p in getattr(model.backbone, name).parameters() if p.requires_grad]
        if params:
            (head if name in model.spec.head else body).append((name, params))
    groups = []
    if head:
        groups.append({"params": [p for _, ps in head for p in ps], "lr": lr, "name": "head"})
    if body and layer_decay == 1.0:
        groups.append({"params": [p for _, ps in body for p in ps], "lr": backbone_lr,
                       "name": "backbone"})
    elif body:
        for k, (name, params) in enumerate(body):
            groups.append({"params": params, "lr": backbone_lr * layer_decay**k,
                           "name": f"backbone:{name}"})
    if not groups:
        raise FertoolError("nothing to train: --unfreeze 0 leaves every parameter frozen")
    return groups


# --------------------------------------------------------------------------------------------
# LP-FT


def fold_linear_probe(estimator, n_classes: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` with ``softmax(W z + b)`` equal to a fitted scaler + logreg's ``predict_proba``.

    ``estimator``: a Pipeline ``scale`` (StandardScaler) -> ``clf`` (multinomial
    LogisticRegression) over classes ``0..n_classes-1``. Classes absent from its training data
    get a zero row and an intercept 10 under the smallest (probability near zero).
    """
    scale = estimator.named_steps["scale"]
    clf = estimator.named_steps["clf"]
    mean = np.zeros(width) if scale.mean_ is None else scale.mean_
    sd = np.ones(width) if scale.scale_ is None else scale.scale_
    coef = np.asarray(clf.coef_, np.float64) / sd  # (K, D) on raw features
    intercept = np.asarray(clf.intercept_, np.float64) - coef @ mean
    classes = np.asarray(clf.classes_)
    if len(classes) == 2:  # sklearn's binary form: one row, for class 1
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    W = np.zeros((n_classes, width))
    b = np.full(n_classes, intercept.min() - 10.0)
    W[classes] = coef
    b[classes] = intercept
    return W, b


def fit_linear_head(model, feats: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                    seed: int = 0) -> dict[str, Any]:
    """Fit a logistic regression on ``feats`` and copy it into the model's classifier.

    Parameters
    ----------
    model : FerNet
    feats : (N, D) array
        The classifier's input on the fitting part, in eval mode (frozen features).
    y : (N,) int array
    groups : (N,) array, optional
        Groups (movies) of the rows: the inner CV over C never splits one.
    seed : int

    Returns
    -------
    dict
        ``C``, ``cv_accuracy``, ``grouped``, ``n``: what the report records.
    """
    from threadpoolctl import threadpool_limits

    from fertool.evaluate.classify import fit_head

    grouped = groups is not None and len(np.unique(groups)) >= 3
    # One BLAS thread: these fits are small, and on a busy machine a thread pool made them
    # 10-40x slower (measured here: 10 s against 0.27 s for one 22 x 1792 fit).
    with threadpool_limits(1):
        fitted = fit_head("logreg", feats, y, groups if grouped else None, cv=3, seed=seed)
    clf = getattr(model.backbone, model.spec.classifier)
    W, b = fold_linear_probe(fitted.estimator, clf.out_features, clf.in_features)
    with torch.no_grad():
        clf.weight.copy_(torch.as_tensor(W, dtype=clf.weight.dtype))
        clf.bias.copy_(torch.as_tensor(b, dtype=clf.bias.dtype))
    return {"C": float(fitted.best_params_["clf__C"]), "cv_accuracy": fitted.cv_score_,
            "grouped": bool(grouped), "n": len(y)}


# --------------------------------------------------------------------------------------------
# EMA


class ModelEMA:
    """Exponential moving average of a model's trainable parameters.

    After optimizer step ``t`` (1, 2, ...), with ``d_t = min(decay, (1 + t) / (10 + t))`` (the
    usual warm-up, so early averages are not dominated by the initial weights)::

        ema <- d_t * ema + (1 - d_t) * param

    The average starts as a copy of the parameters. :meth:`swapped` puts the averages into the
    model for a block (validation, saving ``best.pt``) and restores the live weights after it.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.steps = 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().clone() for n in self.names}

    def factor(self, step: int) -> float:
        """``d_t`` of step ``t``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = self.factor(self.steps)
        params = dict(model.named_parameters())
        for n in self.names:
            self.shadow[n].mul_(d).add_(params[n].detach(), alpha=1.0 - d)

    @contextlib.contextmanager
    def swapped(self, model: torch.nn.Module):
        params = dict(model.named_parameters())
        live = {n: params[n].detach().clone() for n in self.names}
        with torch.no_grad():
            for n in self.names:
                params[n].copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(live[n])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.steps = int(state["steps"])
        for n in self.names:
            self.shadow[n].copy_(state["shadow"][n])


# --------------------------------------------------------------------------------------------
# Mixup


def mixup_batch(x: torch.Tensor, alpha: float, g: torch.Generator):
    """``(lam * x + (1 - lam) * x[perm], perm, lam)``, ``lam ~ Beta(alpha, alpha)``.

    Every draw comes from ``g`` (the permutation, and a seed for the Beta draw), so a resumed
    epoch mixes the same pairs.
    """
    n = x.shape[0]
    perm = torch.randperm(n, generator=g)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)  # the first sample dominates: its label stays the majority
    if not math.isfinite(lam):
        lam = 1.0
    return lam * x + (1.0 - lam) * x[perm.to(x.device)], perm, lam
