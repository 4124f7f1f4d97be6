"""Models for the ONNX tests: a tiny ONNX graph with fertool's contract, and a real FerNet run
exported once per test session (memoised here, so test files share it).

Import by name (pytest puts ``tests/`` on ``sys.path``)::

    from onnx_models import exported_fernet, tiny_model
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fertool.core.labels import LABELS

REPO = Path(__file__).resolve().parent.parent
#: As in conftest: FERTOOL_SHARED, else ../shared beside the checkout.
SHARED = Path(os.environ.get("FERTOOL_SHARED", REPO.parent / "shared"))
CASIA_REF = SHARED / "fixtures" / "casia-ref"

_SESSION: dict[str, object] = {}


def tiny_model(
    path: Path, labels=LABELS, size: int = 160, face: dict | None = None, seed: int = 0
) -> Path:
    """A small ONNX model with fertool's input, outputs and metadata (no FaceNet inside).

    ``input`` (N, 3, size, size) -> mean over pixels (N, 3) -> a linear map -> ``logits``,
    ``probabilities`` (softmax) and ``embedding`` (L2-normalised, 8-d).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fertool.models.preprocessing import Preprocessing
    from fertool.serve.onnxmeta import build_metadata, set_metadata

    rng = np.random.default_rng(seed)
    c = len(labels)
    w = (rng.standard_normal((3, c)) * 3).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    we = rng.standard_normal((3, 8)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["pooled4"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled4", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("MatMul", ["pooled4", "we"], ["e"]),
        helper.make_node("LpNormalization", ["e"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", c]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8]),
        ],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(we, "we"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    pre = Preprocessing(size=size, labels=tuple(labels), face=face or {"size": size})
    set_metadata(path, build_metadata(pre, source={"run": "tiny"}, weights=None, opset=17))
    return path


def casia_faces() -> np.ndarray | None:
    """The four real aligned 160x160 faces of the shared CASIA reference, when present."""
    from fertool.core.io import read_image

    files = sorted(CASIA_REF.glob("face*.png"))
    if not files:
        return None
    return np.stack([read_image(f) for f in files])


def sample_faces(n: int = 8) -> np.ndarray:
    """Real faces where the shared fixtures exist (flipped copies to reach ``n``), else noise."""
    faces = casia_faces()
    if faces is None:
        return np.random.default_rng(0).integers(0, 256, (n, 160, 160, 3), dtype=np.uint8)
    faces = np.concatenate([faces, faces[:, :, ::-1]])
    return np.resize(faces, (n, *faces.shape[1:])).astype(np.uint8)


def make_run(run_dir: Path, seed: int = 0) -> Path:
    """A run folder with the contract of ``fertool finetune`` (random weights, no training)."""
    import torch

    from fertool.core.io import write_json
    from fertool.faces.stage import FaceConfig
    from fertool.models.fernet import FerNet
    from fertool.models.preprocessing import Preprocessing
    from fertool.train.checkpoint import save_checkpoint, to_json
    from fertool.train.loop import TrainConfig

    torch.manual_seed(seed)
    pre = Preprocessing(face=FaceConfig().to_dict())
    model = FerNet(num_classes=len(LABELS), preprocessing=pre).eval()
    cfg = TrainConfig(
        data=str(run_dir / "no-such-dataset"),
        out=str(run_dir),
        weights=None,
        unfreeze=2,
        epochs=1,
        face=FaceConfig().to_dict(),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        run_dir / "best.pt",
        {
            "model": model.state_dict(),
            "preprocessing": pre.to_json(),
            "config": to_json(cfg.to_dict()),
            "weights": to_json(None),
            "labels": list(LABELS),
            "split_hash": "0123456789abcdef",
            "versions": to_json({}),
            "epoch": 1,
            "unfreeze": 2,
        },
    )
    write_json(
        run_dir / "config.json",
        {
            "command": "test",
            "config": cfg.to_dict(),
            "labels": list(LABELS),
            "preprocessing": pre.to_dict(),
        },
    )
    return run_dir


def exported_fernet(tmp_path_factory, int8: bool = False) -> dict:
    """A random-weight FerNet run exported once per session: ``{"run", "onnx", "int8"?, "result"}``.

    The int8 model is made on first request (it takes about as long as the export).
    """
    from fertool.serve.export import export_run, load_run
    from fertool.serve.parity import RunFaces
    from fertool.serve.quantize import compare_int8, quantize_int8

    if "fernet" not in _SESSION:
        root = tmp_path_factory.mktemp("fernet-export")
        run = make_run(root / "run-tiny")
        pre = load_run(run).preprocessing
        x = pre.normalize(sample_faces(8))
        faces = RunFaces(x, x, np.arange(len(x)) % len(LABELS), "test faces")
        result = export_run(
            run, root / "exports" / "run-tiny.onnx", faces=faces, n_parity=8, progress=False
        )
        _SESSION["fernet"] = {
            "run": run,
            "onnx": result.float32.path,
            "result": result,
            "faces": faces,
        }
    entry = _SESSION["fernet"]
    if int8 and "int8" not in entry:
        import tempfile

        target = Path(entry["onnx"]).with_name("run-tiny.int8.onnx")
        with tempfile.TemporaryDirectory() as tmp:
            quantize_int8(entry["onnx"], target, entry["faces"].train, work_dir=tmp)
        entry["int8"] = target
        entry["int8_check"] = compare_int8(
            entry["onnx"], target, entry["faces"].test, entry["faces"].test_labels
        )
    return entry


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
