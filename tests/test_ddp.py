"""DistributedDataParallel: two CPU processes under torchrun take the single-process steps (same
global batch), and a run resumes with another number of processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_models import REPO

SCRIPT = REPO / "tests" / "ddp_train.py"
#: Float32 sums in another order (two half-batch gradients averaged): measured 1.2e-7.
TOLERANCE = 1e-5


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single(out: Path, *args: str) -> None:
    cmd = [sys.executable, str(SCRIPT), str(out), "--no-dropout", *args]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _torchrun(out: Path, n: int, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(SCRIPT), str(out), "--no-dropout", *args]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _weights(run: Path) -> dict:
    from fertool.train.checkpoint import load_checkpoint

    return load_checkpoint(run / "last.pt")["model"]


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines]


def test_one_process_without_torchrun_is_not_distributed():
    from fertool.core.errors import FertoolError
    from fertool.train import ddp

    assert ddp.init() is None
    with pytest.raises(FertoolError, match="torchrun --nproc_per_node"):
        ddp.init(requested=True)


def test_parts_of_a_global_batch_cover_it_once():
    import numpy as np

    from fertool.train.ddp import Distributed

    batch = np.arange(10, 19)
    parts = [Distributed(r, 4, r, "gloo").part(batch) for r in range(4)]
    assert np.array_equal(np.concatenate(parts), batch)
    assert [len(p) for p in parts] == [3, 2, 2, 2]
    assert Distributed(2, 4, 2, "gloo").part(np.arange(2)).tolist() == [1]  # too few: repeat


@pytest.mark.slow
def test_two_processes_take_the_single_process_steps_and_resume_with_one(tmp_path):
    single, split = tmp_path / "single", tmp_path / "ddp"
    _single(single)  # 3 epochs, one process
    _torchrun(split, 2, "--stop-after", "2")  # 2 epochs on two processes, then "interrupted"
    two = _losses(split)
    assert len(two) == 2 and not (split / "report.json").exists()
    _single(split, "--resume")  # the third epoch on one process
    ref, got = _weights(single), _weights(split)
    diff = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
    moved = max(float((ref[k].float() - _weights_init(ref, k)).abs().max()) for k in ref)
    assert diff <= TOLERANCE, diff
    assert moved > 100 * TOLERANCE  # the weights did change
    assert _losses(split)[:2] == pytest.approx(_losses(single)[:2], abs=1e-6)
    assert _losses(split) == pytest.approx(_losses(single), abs=1e-6)
    assert (split / "report.json").exists()


def _weights_init(ref: dict, key: str):
    """The initial value of ``key``: FerNet built with the run's seed (random weights)."""
    import torch

    from fertool.core.labels import LABELS
    from fertool.faces.config import FaceConfig
    from fertool.models.fernet import create_model
    from fertool.models.preprocessing import Preprocessing

    if "init" not in _CACHE:
        torch.manual_seed(0)
        model, _ = create_model(None, num_classes=len(LABELS), unfreeze=2,
                                preprocessing=Preprocessing(face=FaceConfig(size=80)))
        _CACHE["init"] = model.state_dict()
    return _CACHE["init"][key].float()


_CACHE: dict = {}
