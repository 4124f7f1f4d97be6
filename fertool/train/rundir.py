"""The run folder of ``fertool finetune``: its layout, and reading and writing what it holds.

::

    RUN/config.json      command, TrainConfig, versions, split, weights, preprocessing, labels
    RUN/metrics.jsonl    one JSON row per epoch
    RUN/last.pt          model, optimizer, scheduler, history (every epoch; --resume)
    RUN/best.pt          the best epoch on validation (what export, compare and parity load)
    RUN/report.json/md   the test evaluation of best.pt
    RUN/curves.png, confusion.png, angles_heatmap.png, angles_summary.png

:class:`RunDir` is the one owner of these names. Training writes through it
(:mod:`fertool.train.loop`); :func:`fertool.serve.export.load_run`, the parity checks and
``compare-baselines``' fine-tuned rows read through it (:meth:`RunDir.load_best`,
:meth:`RunDir.read_report`). The file formats are those of earlier fertool versions: recorded
runs (``baselines/sfew-675/finetune-*``, with a report and no checkpoint) are read as they are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fertool.core.errors import FertoolError

if TYPE_CHECKING:  # pragma: no cover
    from fertool.models.fernet import FerNet
    from fertool.models.preprocessing import Preprocessing
    from fertool.train.config import TrainConfig

__all__ = ["RunDir", "RunModel"]


@dataclass
class RunModel:
    """A fine-tuning run's best model, rebuilt from ``RUN_DIR/best.pt``.

    Attributes
    ----------
    run_dir : Path
    model : FerNet
        In eval mode, on the device asked for (the CPU by default).
    preprocessing : Preprocessing
    labels : tuple of str
    config : dict
        The :class:`fertool.train.config.TrainConfig` dict of the run.
    weights : dict or None
        ``{name, sha256, source}`` of the pretrained weights, None for random initialisation.
    split_hash : str
    checkpoint_sha256 : str
    epoch : int
    unfreeze : int or None
    """

    run_dir: Path
    model: FerNet
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    config: dict
    weights: dict | None
    split_hash: str
    checkpoint_sha256: str
    epoch: int
    unfreeze: int | None

    def source(self) -> dict[str, Any]:
        """What the metadata records about the run."""
        cfg = self.config
        return {
            "run": self.run_dir.name,
            "run_dir": str(self.run_dir.resolve()),
            "checkpoint": RunDir.BEST,
            "checkpoint_sha256": self.checkpoint_sha256,
            "epoch": self.epoch,
            "unfreeze": self.unfreeze,
            "split_hash": self.split_hash,
            "protocol": cfg.get("protocol"),
            "fold": cfg.get("fold"),
            "split_seed": cfg.get("split_seed"),
            "data": cfg.get("data"),
        }


class RunDir:
    """A run folder (it need not exist yet): file names, and the reads and writes of a run."""

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    LAST = "last.pt"
    BEST = "best.pt"
    REPORT_JSON = "report.json"
    REPORT_MD = "report.md"
    CURVES = "curves.png"
    CONFUSION = "confusion.png"
    ANGLES_HEATMAP = "angles_heatmap.png"
    ANGLES_SUMMARY = "angles_summary.png"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def last_path(self) -> Path:
        return self.path / self.LAST

    @property
    def best_path(self) -> Path:
        return self.path / self.BEST

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT_JSON

    # -- starting a run ----------------------------------------------------------------------

    def check_start(self, *, resume: bool, force: bool) -> None:
        """Refuse to resume without ``last.pt``, or to start in a non-empty folder without force.

        Raises
        ------
        FertoolError
        """
        if resume:
            if not self.last_path.is_file():
                raise FertoolError(f"nothing to resume: {self.last_path} does not exist")
        elif self.path.exists() and any(self.path.iterdir()) and not force:
            raise FertoolError(
                f"run folder {self.path} is not empty; use --resume to continue or --force"
            )

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # -- config.json, metrics.jsonl ----------------------------------------------------------

    def write_config(self, record: dict[str, Any]) -> None:
        """``config.json`` (atomically): ``record`` holds ``config`` (a TrainConfig dict) etc."""
        from fertool.core.io import write_json

        write_json(self.config_path, record)

    def read_config(self) -> dict[str, Any]:
        """The whole ``config.json``."""
        from fertool.train.checkpoint import from_json

        return from_json(self.config_path.read_text())

    def train_config(self) -> TrainConfig:
        """The run's :class:`~fertool.train.config.TrainConfig`, from ``config.json``."""
        from fertool.train.config import TrainConfig

        return TrainConfig.from_dict(self.read_config()["config"])

    def write_metrics(self, history: list[dict]) -> None:
        """``metrics.jsonl``: one row per epoch so far (rewritten atomically each epoch)."""
        from fertool.core.io import write_text
        from fertool.train.checkpoint import to_json

        write_text(self.metrics_path, "".join(to_json(r) + "\n" for r in history))

    def read_metrics(self) -> list[dict]:
        text = self.metrics_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # -- checkpoints ---------------------------------------------------------------------------

    def save_last(self, payload: dict) -> Path:
        from fertool.train.checkpoint import save_checkpoint

        return save_checkpoint(self.last_path, payload)

    def save_best(self, payload: dict) -> Path:
        from fertool.train.checkpoint import save_checkpoint

        return save_checkpoint(self.best_path, payload)

    def load_last(self, map_location="cpu") -> dict:
        from fertool.train.checkpoint import load_checkpoint

        return load_checkpoint(self.last_path, map_location=map_location)

    def load_best_checkpoint(self, map_location="cpu") -> dict:
        from fertool.train.checkpoint import load_checkpoint

        return load_checkpoint(self.best_path, map_location=map_location)

    def has_best(self) -> bool:
        return self.best_path.is_file()

    def load_best(self, device=None) -> RunModel:
        """Rebuild the best model of the run (``best.pt``), in eval mode.

        Raises
        ------
        FertoolError
            When the folder or its ``best.pt`` is missing or not a fertool checkpoint.
        """
        from fertool.core.io import sha256_file
        from fertool.models.fernet import DEFAULT_BACKBONE, FerNet
        from fertool.models.preprocessing import Preprocessing
        from fertool.train.checkpoint import from_json

        run, best = self.path, self.best_path
        if not run.is_dir():
            raise FertoolError(
                f"run folder {run} not found (expected the --out folder of fertool finetune)"
            )
        if not best.is_file():
            raise FertoolError(
                f"{best} not found: {run} is not a finished fine-tuning run "
                "(fertool finetune writes best.pt after the first epoch)"
            )
        ckpt = self.load_best_checkpoint()
        try:
            pre = Preprocessing.from_json(ckpt["preprocessing"])
            labels = tuple(ckpt.get("labels") or pre.labels)
            config = from_json(ckpt["config"]) if "config" in ckpt else {}
            weights = from_json(ckpt["weights"]) if ckpt.get("weights") else None
        except (KeyError, ValueError, TypeError) as exc:
            raise FertoolError(f"{best}: incomplete checkpoint metadata ({exc})") from None
        if tuple(pre.labels) != labels:
            pre = Preprocessing.from_dict({**pre.to_dict(), "labels": list(labels)})
        backbone = config.get("backbone") or DEFAULT_BACKBONE
        model = FerNet(num_classes=len(labels), preprocessing=pre, backbone=backbone,
                       head_on=config.get("head_on") or "embedding")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise FertoolError(f"{best}: the weights do not fit FerNet ({exc})") from None
        model.eval()
        if device is not None:
            model.to(device)
        unfreeze = ckpt.get("unfreeze")
        return RunModel(
            run, model, pre, labels, config, weights, str(ckpt.get("split_hash", "")),
            sha256_file(best), int(ckpt.get("epoch", 0)),
            None if unfreeze is None else int(unfreeze),
        )

    # -- the report ----------------------------------------------------------------------------

    def write_report(self, **kw: Any) -> dict:
        """``report.json`` and ``report.md`` (:func:`fertool.evaluate.report.write_report`)."""
        from fertool.evaluate.report import write_report

        write_report(self.path, **kw)
        return self.read_report()

    def read_report(self) -> dict:
        """``report.json``, checked to hold a method and a split hash.

        Raises
        ------
        FertoolError
            No report (not a finished run), or not a fertool report.
        """
        path = self.report_path
        if not path.is_file():
            raise FertoolError(
                f"{self.path} has no report.json (not a finished `fertool finetune` run)"
            )
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            report["results"][0]["method"]
            report["split_hash"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise FertoolError(f"{path} is not a fertool report ({exc})") from None
        return report

    def save_plot(self, figure, name: str) -> str:
        """Save a matplotlib figure as ``name`` in the folder (atomically); returns ``name``."""
        from fertool.core.io import save_figure

        save_figure(figure, self.path / name)
        return name
