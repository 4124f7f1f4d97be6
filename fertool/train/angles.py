"""Angular separation of hidden neurons: a training monitor for CNN layers.

Gedeon (1995) judges hidden neurons by the angle between their activation vectors over the
training patterns: two neurons whose vectors point the same way (angle < 15 degrees) are
near-duplicates, two that point opposite ways (angle > 165 degrees) are complementary; either
pair can be merged or pruned. The original method works on sigmoid activations in [0, 1] and
first shifts them by 0.5, so that they are centred in [-0.5, 0.5].

The published attempt to use this on a CNN gave up because it was too slow with too many
neurons. Here the whole computation is one matrix product: on a fixed probe batch, take one
vector per neuron (conv channels are averaged over space), centre it, scale it to unit length,
and read every pairwise angle off the Gram matrix of the unit vectors (clamped to [-1, 1], then
arccos). For 512 neurons that is about 130,000 angles in about 20 ms on two CPU cores; the
probe's forward pass costs several hundred times more.

Centring (``center``)
    ``"mean"`` (default) subtracts each neuron's mean over the probe patterns. This is the right
    choice for ReLU, batch-normalised or linear outputs, which have no fixed midpoint: without it
    every non-negative ReLU vector lies in one orthant and all angles are below 90 degrees.
    ``"half"`` subtracts 0.5, exactly as Gedeon does for sigmoid units in [0, 1].
    ``"none"`` uses the raw activations.

Dead neurons
    A neuron whose centred vector is (numerically) zero -- a ReLU channel that never fires, a
    constant output -- has no direction. It is counted in ``n_dead`` and left out of every
    angle, so no NaN ever appears. The test is relative to the neuron's own scale: dead when the
    root-mean-square of the centred vector is at most ``eps`` times that of the raw vector (an
    all-zero vector is always dead).

The monitor (:class:`AngleMonitor`) measures one layer once per epoch on a fixed probe batch,
samples a fixed subset of at most ``n_neurons`` channels, and keeps a history of
:class:`AngleStats`. The *shift* between consecutive epochs is the 1-D Wasserstein distance (in
degrees) between the two angle distributions, computed from their quantile functions. A layer
whose angle distribution stops moving while the training loss still changes is *stuck*: it is not
learning although training goes on (a frozen or dead layer, or a learning rate too small for it).

References
----------
T. D. Gedeon and D. Harris, "Network reduction techniques", Proc. Int. Conf. on Neural Networks
Methodologies and Applications, 1991; T. D. Gedeon, "Indicators of hidden neuron functionality:
the weight matrix versus neuron behaviour", Proc. ANNES 1995, pp. 26-29.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

Center = Literal["mean", "half", "none"]

#: Pairs below this angle (degrees) count as near-duplicates.
DUPLICATE_DEG = 15.0
#: Pairs above this angle (degrees) count as complementary.
COMPLEMENT_DEG = 165.0
#: Histogram bin edges in degrees: 36 bins of 5 degrees over [0, 180].
ANGLE_BINS = np.linspace(0.0, 180.0, 37)
#: Number of quantiles kept per epoch to compute the shift between epochs (midpoint rule).
N_QUANTILES = 200

_CENTERS = ("mean", "half", "none")
_STATE_VERSION = 1


@dataclass(frozen=True)
class AngleResult:
    """All pairwise angles between the live neurons of one activation matrix.

    Attributes
    ----------
    angles : (n_live * (n_live - 1) / 2,) float32 ndarray
        Angles in degrees, in [0, 180], for every pair ``i < j`` of live neurons, in row-major
        order of the upper triangle: (0, 1), (0, 2), ..., (1, 2), ...
    n_neurons : int
        Number of neurons given, dead ones included.
    n_dead : int
        Number of neurons left out because their centred activation vector is ~zero.
    dead : (n_dead,) int64 ndarray
        Column indices of the dead neurons in the input.
    """

    angles: np.ndarray
    n_neurons: int
    n_dead: int
    dead: np.ndarray


@dataclass(frozen=True)
class AngleStats:
    """Summary of one epoch's angle distribution, as kept by :class:`AngleMonitor`.

    Attributes
    ----------
    epoch : int
        The epoch the measurement belongs to (as given to :meth:`AngleMonitor.measure`).
    min_angle, mean_angle : float
        Smallest and mean pairwise angle in degrees (NaN with fewer than two live neurons).
    share_below_15, share_above_165 : float
        Share of pairs below :data:`DUPLICATE_DEG` (near-duplicates) and above
        :data:`COMPLEMENT_DEG` (complementary), in [0, 1].
    n_neurons : int
        Neurons measured (the sampled subset), dead ones included.
    n_dead : int
        Neurons left out as dead.
    n_pairs : int
        Number of angles, ``n_live * (n_live - 1) / 2``.
    histogram : (36,) int64 ndarray
        Pair counts over :data:`ANGLE_BINS` (5-degree bins over [0, 180]).
    quantiles : (N_QUANTILES,) float32 ndarray
        Angle quantiles at probabilities ``(k + 0.5) / N_QUANTILES``; used for ``shift``.
    shift : float or None
        1-D Wasserstein distance in degrees between this epoch's angle distribution and the
        previous epoch's (mean absolute difference of the quantile functions); None for the
        first epoch. 0 means the distribution did not move; a uniform 2-degree rotation of every
        angle gives 2.
    loss : float or None
        The training loss given for this epoch, if any.
    stuck : bool
        The monitor's verdict after this epoch (see :meth:`AngleMonitor.stuck`).
    seconds : float
        Wall time of the measurement (probe forward pass plus angles).
    """

    epoch: int
    min_angle: float
    mean_angle: float
    share_below_15: float
    share_above_165: float
    n_neurons: int
    n_dead: int
    n_pairs: int
    histogram: np.ndarray
    quantiles: np.ndarray
    shift: float | None = None
    loss: float | None = None
    stuck: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, floats, ints), safe for JSON and ``torch.load``."""
        d = asdict(self)
        d["histogram"] = [int(v) for v in self.histogram]
        d["quantiles"] = [float(v) for v in self.quantiles]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AngleStats:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["histogram"] = np.asarray(d["histogram"], dtype=np.int64)
        d["quantiles"] = np.asarray(d["quantiles"], dtype=np.float32)
        return cls(**d)


def activation_matrix(acts: torch.Tensor) -> torch.Tensor:
    """One activation value per (pattern, neuron): conv maps are averaged over space.

    Parameters
    ----------
    acts : (P, C) or (P, C, ...) tensor
        A layer's output for P probe patterns; for conv layers ``(P, C, H, W)``.

    Returns
    -------
    (P, C) tensor
        ``acts`` itself for 2-D input, else the mean over all dimensions after the second.

    Raises
    ------
    ValueError
        If ``acts`` has fewer than 2 dimensions.
    """
    if acts.dim() < 2:
        raise ValueError(
            f"acts should have shape (P, C) or (P, C, H, W); got shape {tuple(acts.shape)}"
        )
    if acts.dim() == 2:
        return acts
    return acts.flatten(2).mean(dim=2)


def pairwise_angles(
    acts_pc: torch.Tensor | np.ndarray, center: Center = "mean", eps: float = 1e-6
) -> AngleResult:
    """All pairwise angles between neurons' activation vectors, in one matrix product.

    Parameters
    ----------
    acts_pc : (P, C) tensor or ndarray
        Activation of each of C neurons on each of P patterns (see :func:`activation_matrix`).
    center : {"mean", "half", "none"}
        How to centre each neuron's vector before taking angles: subtract its mean over the
        patterns (for ReLU/conv outputs), subtract 0.5 (Gedeon's choice for sigmoid units), or
        nothing.
    eps : float
        A neuron is dead when the RMS of its centred vector is at most ``eps`` times the RMS of
        its raw vector. Dead neurons are reported and excluded.

    Returns
    -------
    AngleResult
        Angles in degrees (float32) of all pairs ``i < j`` of live neurons, and the dead ones.

    Raises
    ------
    ValueError
        For a bad shape, an unknown ``center``, or non-finite activations.

    Notes
    -----
    Computed in float64: near 0 and 180 degrees arccos amplifies rounding errors of the cosine
    (an error of 1e-7 in a cosine of 1 is 0.03 degrees), which float32 would not keep below
    1e-3 degrees.
    """
    if center not in _CENTERS:
        raise ValueError(f"center should be one of {', '.join(_CENTERS)}; got {center!r}")
    x = torch.as_tensor(acts_pc).detach()
    if x.dim() != 2:
        raise ValueError(
            f"acts_pc should have shape (P, C) (patterns x neurons); got {tuple(x.shape)}; "
            "use activation_matrix() for conv outputs"
        )
    x = x.to(device="cpu", dtype=torch.float64)
    n_neurons = x.shape[1]
    if not bool(torch.isfinite(x).all()):
        raise ValueError("acts_pc contains NaN or infinite activations")
    if center == "mean":
        xc = x - x.mean(dim=0, keepdim=True)
    elif center == "half":
        xc = x - 0.5
    else:
        xc = x
    n_patterns = max(x.shape[0], 1)
    rms_c = xc.norm(dim=0) / math.sqrt(n_patterns)
    rms_raw = x.norm(dim=0) / math.sqrt(n_patterns)
    dead_mask = rms_c <= eps * rms_raw
    live = xc[:, ~dead_mask]
    units = live / live.norm(dim=0, keepdim=True)
    gram = (units.T @ units).clamp_(-1.0, 1.0)
    k = gram.shape[0]
    upper = torch.ones(k, k, dtype=torch.bool).triu_(diagonal=1)
    angles = torch.rad2deg(torch.arccos(gram[upper]))
    dead = torch.nonzero(dead_mask).flatten()
    return AngleResult(
        angles=angles.to(torch.float32).numpy(),
        n_neurons=int(n_neurons),
        n_dead=int(dead.numel()),
        dead=dead.numpy().astype(np.int64),
    )


def angle_quantiles(angles: np.ndarray, n: int = N_QUANTILES) -> np.ndarray:
    """Quantiles of ``angles`` at probabilities ``(k + 0.5) / n`` (all NaN when empty)."""
    if angles.size == 0:
        return np.full(n, np.nan, dtype=np.float32)
    probs = (np.arange(n) + 0.5) / n
    return np.quantile(angles.astype(np.float64), probs).astype(np.float32)


def wasserstein_from_quantiles(q_a: np.ndarray, q_b: np.ndarray) -> float:
    """1-D Wasserstein distance between two distributions given by equal-probability quantiles.

    Parameters
    ----------
    q_a, q_b : (n,) ndarray
        Quantiles at the same probabilities (as :func:`angle_quantiles` returns them).

    Returns
    -------
    float
        ``mean(|q_a - q_b|)``, the midpoint-rule value of the integral of the absolute
        difference of the quantile functions; in the units of the values (degrees here).
    """
    if q_a.shape != q_b.shape:
        raise ValueError(f"quantile arrays differ in shape: {q_a.shape} vs {q_b.shape}")
    return float(np.mean(np.abs(q_a.astype(np.float64) - q_b.astype(np.float64))))


def summarise(
    result: AngleResult,
    epoch: int,
    previous: AngleStats | None = None,
    loss: float | None = None,
    seconds: float = 0.0,
) -> AngleStats:
    """Reduce an :class:`AngleResult` to an :class:`AngleStats` (``stuck`` left False).

    ``shift`` is measured against ``previous`` when given.
    """
    a = result.angles
    if a.size:
        a64 = a.astype(np.float64)
        min_angle, mean_angle = float(a64.min()), float(a64.mean())
        below, above = float(np.mean(a64 < DUPLICATE_DEG)), float(np.mean(a64 > COMPLEMENT_DEG))
    else:
        min_angle = mean_angle = below = above = math.nan
    hist, _ = np.histogram(a, bins=ANGLE_BINS)
    quantiles = angle_quantiles(a)
    shift = None
    if previous is not None:
        shift = wasserstein_from_quantiles(quantiles, previous.quantiles)
    return AngleStats(
        epoch=int(epoch),
        min_angle=min_angle,
        mean_angle=mean_angle,
        share_below_15=below,
        share_above_165=above,
        n_neurons=result.n_neurons,
        n_dead=result.n_dead,
        n_pairs=int(a.size),
        histogram=hist.astype(np.int64),
        quantiles=quantiles,
        shift=shift,
        loss=None if loss is None else float(loss),
        seconds=float(seconds),
    )


def stuck_flags(
    history: list[AngleStats], shift_tol: float, loss_tol: float, patience: int
) -> list[bool]:
    """For each epoch of ``history``, whether the layer counts as stuck after that epoch.

    An epoch *stalls* when its angle distribution moved less than ``shift_tol`` degrees since
    the previous epoch while the loss changed by more than ``loss_tol`` (both the shift and the
    two losses must be known). The layer is stuck after ``patience`` consecutive stalled epochs.
    A layer whose loss has also stopped changing has converged; it is not stuck.
    """
    flags: list[bool] = []
    run = 0
    for i, s in enumerate(history):
        prev_loss = history[i - 1].loss if i > 0 else None
        stalled = (
            s.shift is not None
            and s.shift < shift_tol
            and s.loss is not None
            and prev_loss is not None
            and abs(s.loss - prev_loss) > loss_tol
        )
        run = run + 1 if stalled else 0
        flags.append(run >= patience)
    return flags


def default_layer(model: torch.nn.Module) -> str:
    """The layer to monitor by default in a model that contains facenet-pytorch's InceptionResnetV1.

    Returns the dotted name (for ``model.get_submodule``) of the output-most block of the
    convolutional trunk (``block8``, ``repeat_3``, ... ``conv2d_1a``) that has a trainable
    parameter; when no trunk block trains (only the head is fine-tuned), ``block8``, whose
    output the head sees. With the paper's "9 layers unfrozen" this is ``block8`` (1792
    channels, 3x3 at 160x160 input); inside a wrapper it carries the wrapper's prefix, for
    example ``"backbone.block8"``.

    Raises
    ------
    ValueError
        If the model contains no InceptionResnetV1.
    """
    from fertool.models.registry import backbone_of_module

    for prefix, module in model.named_modules():
        spec = backbone_of_module(module)  # the trunk is the one its backbone spec declares
        if spec is not None and hasattr(module, spec.trunk_end):
            dot = f"{prefix}." if prefix else ""
            for name in reversed(spec.trunk):
                block = getattr(module, name, None)
                if block is not None and any(p.requires_grad for p in block.parameters()):
                    return dot + name
            return dot + spec.trunk_end
    raise ValueError(
        "the model contains no facenet_pytorch InceptionResnetV1; pass the layer to monitor "
        "explicitly as a dotted module name (see model.named_modules())"
    )


def _resolve_layer(model: torch.nn.Module, layer: str) -> torch.nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
        top = [n for n, _ in model.named_children()]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"layer {layer!r} is not a module of {type(model).__name__}; {hint}"
            f"top-level modules: {', '.join(top)} ({len(names)} names in all, "
            "see model.named_modules())"
        ) from None


def _fingerprint(t: torch.Tensor) -> str:
    arr = t.detach().to("cpu").contiguous().numpy()
    h = hashlib.sha256(str((arr.shape, arr.dtype.str)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


class _StopForward(Exception):
    """Raised by the capture hook to skip the rest of the network once the layer has run."""


@dataclass
class _Capture:
    output: Any = None
    calls: int = 0


class AngleMonitor:
    """Track the angular separation of one layer's neurons across training epochs.

    Parameters
    ----------
    model : torch.nn.Module
        The network being trained.
    layer : str
        Dotted name of the monitored module, as ``model.get_submodule`` takes it (for
        facenet-pytorch see :func:`default_layer`). Its output must be a tensor ``(P, C)`` or
        ``(P, C, H, W)``; conv channels are averaged over space.
    probe : (P, ...) tensor
        A fixed batch of inputs (for example 64 face crops). The same probe must be used at every
        epoch, and after resuming, for the shifts to mean anything.
    n_neurons : int
        At most this many channels are measured. When the layer has more, a fixed subset is
        drawn once (seeded by ``seed``) at the first measurement and kept for every epoch.
    seed : int
        Seed of that draw.
    patience : int
        Consecutive stalled epochs after which :meth:`stuck` is True.
    shift_tol : float
        An epoch stalls when the angle distribution moved less than this (Wasserstein
        distance, degrees) ...
    loss_tol : float
        ... while the loss changed by more than this since the previous epoch.
    center : {"mean", "half", "none"}
        Centring of activation vectors (see :func:`pairwise_angles`).

    Notes
    -----
    :meth:`measure` runs the probe under ``torch.no_grad()`` with every module in eval mode and
    then restores each module's own train/eval flag (a model in train mode with frozen
    batch-norm layers kept in eval mode stays exactly that way). The forward hook exists only
    during the probe, and the forward pass stops once the monitored layer has produced its
    output.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layer: str,
        probe: torch.Tensor,
        *,
        n_neurons: int = 512,
        seed: int = 0,
        patience: int = 3,
        shift_tol: float = 0.05,
        loss_tol: float = 1e-3,
        center: Center = "mean",
    ) -> None:
        if center not in _CENTERS:
            raise ValueError(f"center should be one of {', '.join(_CENTERS)}; got {center!r}")
        if n_neurons < 2:
            raise ValueError(f"n_neurons should be at least 2; got {n_neurons}")
        if patience < 1:
            raise ValueError(f"patience should be at least 1; got {patience}")
        if not isinstance(probe, torch.Tensor) or probe.dim() < 1 or probe.shape[0] < 2:
            raise ValueError("probe should be a tensor batch of at least 2 inputs")
        self.model = model
        self.layer = layer
        self._module = _resolve_layer(model, layer)
        self.probe = probe.detach()
        self.n_neurons = int(n_neurons)
        self.seed = int(seed)
        self.patience = int(patience)
        self.shift_tol = float(shift_tol)
        self.loss_tol = float(loss_tol)
        self.center: Center = center
        self._probe_id = _fingerprint(self.probe)
        self._n_channels: int | None = None
        self._indices: torch.Tensor | None = None
        self._history: list[AngleStats] = []

    @property
    def history(self) -> list[AngleStats]:
        """The measurements so far, oldest first (a copy of the list)."""
        return list(self._history)

    @property
    def indices(self) -> torch.Tensor | None:
        """Sorted channel indices measured (None before the first measurement or when all are)."""
        return None if self._indices is None else self._indices.clone()

    def _select(self, acts_pc: torch.Tensor) -> torch.Tensor:
        n_channels = acts_pc.shape[1]
        if self._n_channels is None:
            self._n_channels = n_channels
            if n_channels > self.n_neurons:
                gen = torch.Generator().manual_seed(self.seed)
                idx = torch.randperm(n_channels, generator=gen)[: self.n_neurons]
                self._indices = idx.sort().values
        elif n_channels != self._n_channels:
            raise ValueError(
                f"layer {self.layer!r} had {self._n_channels} channels at the first measurement "
                f"and has {n_channels} now"
            )
        if self._indices is None:
            return acts_pc
        return acts_pc.index_select(1, self._indices.to(acts_pc.device))

    def _probe_activations(self) -> torch.Tensor:
        """Run the probe and return the layer's (P, C) activation matrix."""
        capture = _Capture()

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            capture.calls += 1
            if capture.calls == 1:
                capture.output = output
            raise _StopForward

        modes = [(m, m.training) for m in self.model.modules()]
        param = next(self.model.parameters(), None)
        probe = self.probe if param is None else self.probe.to(param.device)
        handle = self._module.register_forward_hook(hook)
        try:
            self.model.eval()
            with torch.no_grad():
                try:
                    self.model(probe)
                except _StopForward:
                    pass
        finally:
            handle.remove()
            for module, mode in modes:
                module.training = mode
        out = capture.output
        if out is None:
            raise RuntimeError(
                f"layer {self.layer!r} did not run during the model's forward pass on the probe"
            )
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"layer {self.layer!r} returns {type(out).__name__}, not a tensor; "
                "monitor a module that returns one tensor"
            )
        return activation_matrix(out.detach().float())

    def measure(self, epoch: int, loss: float | None = None) -> AngleStats:
        """Measure the layer on the probe batch and append the result to :attr:`history`.

        Parameters
        ----------
        epoch : int
            Epoch number to record.
        loss : float, optional
            The epoch's training loss; needed for :meth:`stuck`.

        Returns
        -------
        AngleStats
            This epoch's summary, with ``shift`` against the previous measurement and the
            ``stuck`` verdict.
        """
        start = time.perf_counter()
        acts = self._select(self._probe_activations())
        result = pairwise_angles(acts, center=self.center)
        previous = self._history[-1] if self._history else None
        stats = summarise(result, epoch, previous, loss, time.perf_counter() - start)
        flags = stuck_flags([*self._history, stats], self.shift_tol, self.loss_tol, self.patience)
        stats = replace(stats, stuck=flags[-1])
        self._history.append(stats)
        return stats

    def stuck(self) -> bool:
        """True when the last ``patience`` epochs each moved the angle distribution by less than
        ``shift_tol`` degrees while the loss changed by more than ``loss_tol``: the layer is not
        learning although training goes on."""
        if not self._history:
            return False
        return stuck_flags(self._history, self.shift_tol, self.loss_tol, self.patience)[-1]

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state as plain Python values (loadable with ``torch.load(...,
        weights_only=True)`` and serialisable as JSON)."""
        return {
            "version": _STATE_VERSION,
            "layer": self.layer,
            "center": self.center,
            "n_neurons": self.n_neurons,
            "seed": self.seed,
            "probe": self._probe_id,
            "n_channels": self._n_channels,
            "indices": None if self._indices is None else [int(i) for i in self._indices],
            "history": [s.to_dict() for s in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history and the neuron subset saved by :meth:`state_dict`.

        The saved channel indices replace this monitor's own draw, so ``seed`` does not matter
        after a resume.

        Raises
        ------
        ValueError
            If the state was saved for another layer, centring, neuron count or probe batch,
            since the angles would then not be comparable.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown AngleMonitor state version {state.get('version')!r}")
        for key, mine in (
            ("layer", self.layer),
            ("center", self.center),
            ("n_neurons", self.n_neurons),
            ("probe", self._probe_id),
        ):
            if state[key] != mine:
                what = "probe batch fingerprint" if key == "probe" else key
                raise ValueError(
                    f"AngleMonitor state was saved with {what} {state[key]!r}, this monitor has "
                    f"{mine!r}; resume with the same settings and probe batch"
                )
        self._n_channels = state["n_channels"]
        idx = state["indices"]
        self._indices = None if idx is None else torch.as_tensor(idx, dtype=torch.long)
        self._history = [AngleStats.from_dict(d) for d in state["history"]]
