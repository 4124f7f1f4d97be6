"""DistributedDataParallel for ``fertool finetune``: one process per GPU (or per CPU share).

::

    torchrun --nproc_per_node 4 -m fertool finetune --data D --out runs/x --ddp
    torchrun --nnodes 2 --node_rank 0 --master_addr HEAD --master_port 29500 \\
        --nproc_per_node 8 -m fertool finetune --data D --out runs/x --ddp

A launch by ``torchrun`` is detected from its environment (``WORLD_SIZE`` > 1, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); ``--ddp`` asks for it explicitly (and is an
error outside such a launch). The process group is ``nccl`` when the processes train on CUDA
(process ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``), ``gloo`` on the CPU.

What stays the same as one process, so that a run's result does not depend on how many
processes trained it:

- ``--batch-size`` is the global batch. Every process draws the same sample order from
  ``(seed, epoch)`` (:func:`torch.randperm`, as a single process does), cuts it into the same
  global batches, and takes its part of each (:meth:`Distributed.part`); DDP averages the
  gradients, so with a batch size that the number of processes divides, each step is the
  single-process step (up to the order of float additions).
- The number of optimizer steps per epoch, the learning-rate schedule and the checkpoints are
  those of one process, so ``--resume`` works with another number of processes.
- Batch norm is unchanged: frozen layers' batch norms stay in eval mode (FerNet.train), so no
  statistics are synchronised.

What differs by design: augmentation and dropout draw from per-process generators seeded with
``(seed, epoch, rank)`` (process 0 uses the single-process seeds), and only process 0 writes
checkpoints, metrics, reports and the configuration; the others wait at barriers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fertool.core.errors import FertoolError

_CURRENT: Distributed | None = None


@dataclass
class Distributed:
    """This process's place in the group."""

    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, default: torch.device) -> torch.device:
        """``cuda:LOCAL_RANK`` when training on CUDA, else ``default``."""
        if default.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return default

    def part(self, batch: np.ndarray) -> np.ndarray:
        """This process's part of a global batch (contiguous, sizes differing by at most one).

        A batch smaller than the number of processes leaves some without a sample: they take
        the batch's last sample again (every process must take part in each step).
        """
        piece = np.array_split(np.asarray(batch), self.world)[self.rank]
        return piece if len(piece) else np.asarray(batch)[-1:]

    def seed(self, base: int) -> int:
        """A per-process seed: ``base`` on process 0 (the single-process value)."""
        return base + 1_000_003 * self.rank

    def generator(self, shared: torch.Generator, base: int) -> torch.Generator:
        """Augmentation draws: the shared generator on process 0, its own one elsewhere."""
        if self.rank == 0:
            return shared
        return torch.Generator().manual_seed(self.seed(base))

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes."""
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            t = t.cuda(self.local_rank)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def from_main(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process (so that all take the same decisions)."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun (or a similar launcher) started."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init(requested: bool = False, device: str | None = None) -> Distributed | None:
    """Join the process group of a torchrun launch; None for a single process.

    Parameters
    ----------
    requested : bool
        ``--ddp``: an error when the process was not launched by torchrun.
    device : str, optional
        The training device asked for (``cpu`` forces gloo); default CUDA when available.
    """
    import torch.distributed as dist

    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if not launched_by_torchrun():
        if requested:
            raise FertoolError(
                "--ddp: this process was not started by torchrun (WORLD_SIZE is not set above "
                "1); launch it as: torchrun --nproc_per_node N -m fertool finetune ... --ddp"
            )
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://")
    _CURRENT = Distributed(rank, world, local_rank, backend)
    return _CURRENT


def current() -> Distributed | None:
    """The group joined by :func:`init`, or None."""
    return _CURRENT


def shutdown() -> None:
    """Leave the process group (after the run)."""
    import torch.distributed as dist

    global _CURRENT
    if _CURRENT is not None and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = None


class _Tail(torch.nn.Module):
    """The trainable end of the network as one module, so that DDP sees its forward."""

    def __init__(self, backbone: torch.nn.Module, run: Callable):
        super().__init__()
        self.backbone = backbone
        self._run = run

    def forward(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self._run(self.backbone, x, start, stop)


def wrap_tail(backbone: torch.nn.Module, run: Callable, device: torch.device) -> Callable:
    """``run(backbone, x, start, stop)``, through DistributedDataParallel when in a group.

    Only parameters with ``requires_grad`` are synchronised (the frozen trunk is not).
    Buffers (frozen batch-norm statistics) are broadcast from process 0 at each step, as
    DDP does by default: they are equal anyway.
    """
    group = current()
    if group is None:
        return lambda x, start, stop: run(backbone, x, start, stop)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Tail(backbone, run), device_ids=ids)
