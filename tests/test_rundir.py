"""RunDir: the run folder's layout, its checks, load_best on a tiny run, recorded runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fertool.core.errors import FertoolError
from fertool.train.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent


def test_layout_names_every_file(tmp_path):
    rd = RunDir(tmp_path / "run")
    assert rd.config_path == tmp_path / "run" / "config.json"
    assert rd.metrics_path.name == "metrics.jsonl" and rd.report_path.name == "report.json"
    assert (rd.last_path.name, rd.best_path.name) == ("last.pt", "best.pt")
    assert rd / rd.CURVES == tmp_path / "run" / "curves.png"


def test_start_checks(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.check_start(resume=False, force=False)  # a folder that does not exist yet is fine
    with pytest.raises(FertoolError, match="nothing to resume"):
        rd.check_start(resume=True, force=False)
    rd.create()
    rd.write_metrics([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}])
    with pytest.raises(FertoolError, match="not empty"):
        rd.check_start(resume=False, force=False)
    rd.check_start(resume=False, force=True)
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2]
    with pytest.raises(FertoolError, match="no report.json"):
        rd.read_report()
    rd.report_path.write_text("{}", encoding="utf-8")
    with pytest.raises(FertoolError, match="not a fertool report"):
        rd.read_report()


def test_load_best_of_a_tiny_run(tmp_path):
    """A best.pt written through RunDir (as the trainer writes it) comes back as the same model."""
    from fertool.core.labels import LABELS
    from fertool.models.fernet import FerNet
    from fertool.models.preprocessing import Preprocessing
    from fertool.train.checkpoint import to_json
    from fertool.train.config import TrainConfig

    torch.manual_seed(0)
    model = FerNet(7, Preprocessing(size=96)).eval()
    cfg = TrainConfig(data="d", out=str(tmp_path / "run"), unfreeze=2, tta_flip=False)
    rd = RunDir(cfg.out)
    rd.create()
    rd.write_config({"config": cfg.to_dict()})
    rd.save_best({
        "config": to_json(cfg.to_dict()), "preprocessing": model.preprocessing.to_json(),
        "labels": list(LABELS), "weights": to_json(None), "split_hash": "abc",
        "model": model.state_dict(), "epoch": 3, "unfreeze": 2,
    })
    run = rd.load_best()
    assert run.epoch == 3 and run.unfreeze == 2 and run.split_hash == "abc"
    assert run.labels == LABELS and run.preprocessing.size == 96 and run.weights is None
    assert run.config["tta_flip"] is False and len(run.checkpoint_sha256) == 64
    assert run.source()["checkpoint"] == "best.pt"
    assert rd.train_config().to_dict() == json.loads(json.dumps(cfg.to_dict()))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), model(x), atol=0, rtol=0)
    assert not run.model.training


def test_load_best_errors_name_the_file(tmp_path):
    with pytest.raises(FertoolError, match="not found"):
        RunDir(tmp_path / "nope").load_best()
    (tmp_path / "r").mkdir()
    with pytest.raises(FertoolError, match="best.pt"):
        RunDir(tmp_path / "r").load_best()


@pytest.mark.parametrize("name", ["finetune-movie0", "finetune-movie1", "finetune-paper0"])
def test_recorded_runs_still_read(name):
    """The recorded runs of baselines/ (a report and a config, no checkpoint) read as they are."""
    rd = RunDir(REPO / "baselines" / "sfew-675" / name)
    if not rd.report_path.is_file():
        pytest.skip(f"{rd.path} is not in this checkout")
    report = rd.read_report()
    assert report["results"][0]["method"].startswith("finetune-")
    assert len(report["split_hash"]) == 16 and not rd.has_best()
    cfg = rd.train_config()
    assert cfg.backbone == "inception-resnet-v1"  # recorded before the field existed
    assert json.loads(rd.config_path.read_text())["config"]["protocol"] == cfg.protocol
    assert np.isfinite(report["results"][0]["accuracy_mean"])
