"""A small fine-tuning run for the DDP tests, launched as one process or by torchrun.

    python tests/ddp_train.py OUT [--epochs 3] [--stop-after E] [--resume] [--no-dropout]
    torchrun --nproc_per_node 2 tests/ddp_train.py OUT ...

Generated data (seeded noise crops, 80x80, 7 classes), random weights (``--weights none``), the
last two layers trainable, no augmentation (the frozen trunk is cached), global batch 8, on the
CPU. ``--no-dropout`` turns dropout off (the one per-process random draw left) so that the
weights of one and of two processes can be compared closely.
"""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import numpy as np
import torch


def data(n_fit: int = 32, n_val: int = 8, n_test: int = 8, size: int = 80):
    from fertool.train.loop import Prepared

    n = n_fit + n_val + n_test
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 7
    x = torch.randn(n, 3, size, size, generator=g) * 0.5 + (y.float() / 7)[:, None, None, None]
    idx = np.arange(n)
    split = SimpleNamespace(hash="0123456789abcdef", name="synthetic")
    return Prepared(x, y, [f"img{i}.png" for i in idx], idx[:n_fit], idx[n_fit : n_fit + n_val],
                    idx[n_fit + n_val :], split, [], 0, groups=idx % 5)


class Stop(Exception):
    pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--stop-after", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-dropout", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.no_dropout:
        torch.nn.Dropout.forward = lambda self, x: x
    from fertool.faces.config import FaceConfig
    from fertool.train import ddp
    from fertool.train.loop import TrainConfig, run

    cfg = TrainConfig(data="generated", out=a.out, weights=None, unfreeze=2, epochs=a.epochs,
                      batch_size=8, augment=None, tta_flip=False, device="cpu", amp=False,
                      face=FaceConfig(size=80), warmup_epochs=0.5, lr=1e-2, backbone_lr=1e-2)

    def stop(epoch, row):
        if epoch == a.stop_after:
            raise Stop

    ddp.init(device="cpu")
    try:
        run(cfg, resume=a.resume, force=not a.resume, progress=False, data=data(),
            callbacks=[stop])
    except Stop:
        pass
    finally:
        ddp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
