"""sklearn heads on the FaceNet embedding, served from onnxruntime alone.

A head saved by :func:`fertool.evaluate.classify.save_head` (a Pipeline: scaler, optional PCA, SVM /
logistic regression / kNN, fitted on 512-d embeddings) is converted with skl2onnx and joined to
the FaceNet backbone with ``onnx.compose.merge_models``: one graph from an aligned crop to class
probabilities, so that serving needs neither torch nor scikit-learn.

The joined graph has outputs ``probabilities`` (N, C) and ``embedding`` (N, 512), plus ``scores``
for heads without ``predict_proba`` (SVMs trained without Platt scaling): their
``probabilities`` are the softmax of the decision values (same class ranking, uncalibrated), which
the ``head`` metadata says. Class names come from the head's classes (label indices into
:data:`fertool.LABELS`, or names).

Which backbone: a fine-tuning run (``run_dir``), or pretrained weights (``weights``, default the
ones the head's sidecar names under ``features``). The sidecar's ``features`` are expected to be an
:class:`fertool.features.embed.EmbeddingSet`'s ``meta`` (``layer``, ``flip``, ``weights_name``,
``weights_sha256``, ``preprocessing``, ``face_config``, ``root``): only ``layer == "embedding"``
can be joined; ``flip`` puts the mirror-image average into the graph; a weights checksum that
differs from the backbone's is refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.core.errors import FertoolError
from fertool.core.labels import LABELS

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)

HEAD_PREFIX = "head_"
ML_OPSET = 3


@dataclass
class HeadInfo:
    """A saved head, as the export needs it."""

    path: Path
    sha256: str
    name: str
    labels: tuple[str, ...]
    calibrated: bool  # True: predict_proba; False: softmax of decision values
    flip: bool
    features: dict[str, Any]

    def metadata(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "head": self.name,
            "classes": list(self.labels),
            "probabilities": "predict_proba"
            if self.calibrated
            else "softmax of decision values (uncalibrated)",
            "flip": self.flip,
            "layer": "embedding",
        }


def head_labels(classes) -> tuple[str, ...]:
    """Class names of a head: label indices -> :data:`fertool.LABELS` names; names kept."""
    out = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(LABELS):
            out.append(LABELS[int(c)])
        else:
            out.append(str(c))
    return tuple(out)


def _truthy(v) -> bool:
    return str(v).strip().lower() in {"1", "true", "yes", "on"}


def read_head(path: str | os.PathLike) -> tuple[Any, HeadInfo]:
    """Load a head with its checksum check and describe it.

    Raises
    ------
    FertoolError
        A head that cannot be loaded, or one not trained on the 512-d embedding.
    """
    from fertool.evaluate.classify import load_head

    estimator, meta = load_head(path)
    features = dict(meta.get("features") or {})
    layer = features.get("layer", "embedding")
    if layer != "embedding":
        raise FertoolError(
            f"{path}: the head was trained on the {layer!r} layer; only heads on the 512-d "
            "embedding can be joined to the exported graph"
        )
    if not hasattr(estimator, "classes_"):
        raise FertoolError(f"{path}: not a fitted classifier (no classes_)")
    info = HeadInfo(
        Path(path),
        str(meta["sha256"]),
        str(meta.get("head", type(estimator).__name__)),
        head_labels(estimator.classes_),
        hasattr(estimator, "predict_proba") and _has_proba(estimator),
        _truthy(features.get("flip", False)),
        features,
    )
    return estimator, info


def _has_proba(estimator) -> bool:
    try:
        estimator.predict_proba(np.zeros((1, estimator.n_features_in_)))
    except (AttributeError, ValueError):
        return False
    except Exception:  # noqa: BLE001 - sklearn raises NotFittedError etc.; any means "no"
        return False
    return True


def reference_probabilities(estimator, embedding: np.ndarray, calibrated: bool) -> np.ndarray:
    """What the head gives for embeddings: predict_proba, or softmax of decision values."""
    if calibrated:
        return np.asarray(estimator.predict_proba(embedding), dtype=np.float64)
    scores = np.asarray(estimator.decision_function(embedding), dtype=np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=1, keepdims=True)


def head_to_onnx(estimator, n_features: int, opset: int, calibrated: bool) -> onnx.ModelProto:
    """The head as an ONNX graph: input ``embedding``, output ``probabilities`` (+ ``scores``)."""
    import onnx
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    last = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    try:
        with warnings.catch_warnings():
            # skl2onnx reads SVC.probA_/probB_, which scikit-learn 1.9 flags as deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            model = convert_sklearn(
                estimator,
                initial_types=[("embedding", FloatTensorType([None, n_features]))],
                target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
                options={id(last): {"zipmap": False}},
            )
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many types for unsupported models
        raise FertoolError(f"skl2onnx cannot convert this head ({exc})") from None
    graph = model.graph
    out_names = [o.name for o in graph.output]
    if "probabilities" not in out_names:
        raise FertoolError(f"unexpected outputs of the converted head: {out_names}")
    keep = [o for o in graph.output if o.name == "probabilities"]
    if not calibrated:
        _rename(graph, "probabilities", "scores")
        graph.node.append(helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1))
        prob = onnx.helper.make_tensor_value_info(
            "probabilities", onnx.TensorProto.FLOAT, ["batch", len(estimator.classes_)]
        )
        keep = [o for o in graph.output if o.name == "scores"] + [prob]
    del graph.output[:]
    graph.output.extend(keep)
    # One opset per domain in the joined model: the backbone's.
    imports = {}
    for op in model.opset_import:
        imports[op.domain] = max(imports.get(op.domain, 0), op.version)
    imports[""] = opset
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in imports.items())
    return model


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for o in graph.output:
        if o.name == old:
            o.name = new


def join(backbone: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """Feed the backbone's ``embedding`` into the head; outputs probabilities (+scores),
    embedding."""
    import onnx.compose
    import onnx.utils

    if [o.name for o in backbone.graph.output] != ["embedding"]:
        inputs = [i.name for i in backbone.graph.input]
        backbone = onnx.utils.Extractor(backbone).extract_model(inputs, ["embedding"])
    head = onnx.compose.add_prefix(head, HEAD_PREFIX)
    head.ir_version = backbone.ir_version = max(head.ir_version, backbone.ir_version)
    imports = {op.domain: op.version for op in backbone.opset_import}
    for op in head.opset_import:
        imports[op.domain] = max(imports.get(op.domain, 0), op.version)
    for m in (backbone, head):
        del m.opset_import[:]
        m.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in imports.items())
    head_outputs = [o.name for o in head.graph.output]
    joined = onnx.compose.merge_models(
        backbone,
        head,
        io_map=[("embedding", HEAD_PREFIX + "embedding")],
        outputs=[*head_outputs, "embedding"],
    )
    for name in head_outputs:
        _rename(joined.graph, name, name[len(HEAD_PREFIX) :])
    return joined


def export_head(
    head_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    calibration: str | os.PathLike | None = None,
    opset: int = 17,
    exporter: str = "auto",
    tolerance: float = 1e-4,
    n_parity: int = 64,
    force: bool = False,
    int8: bool = False,
    progress: bool = True,
):
    """Export FaceNet + a saved sklearn head as one ONNX graph (see the module docstring).

    Parameters
    ----------
    head_path : path
        ``FILE.joblib`` written by :func:`fertool.evaluate.classify.save_head` (with its sidecar).
    out : path, optional
        Default ``exports/<head file stem>.onnx``.
    run_dir : path, optional
        Take the backbone from this fine-tuning run instead of pretrained weights.
    weights : str, optional
        Pretrained weights (default: those the head's sidecar names, else casia-webface).
    calibration : path, optional
        Folder of images for the parity faces (default: the run's data, or the head's dataset).
    opset, exporter, tolerance, n_parity, force, progress
        As in :func:`fertool.serve.export.export_run`.

    Returns
    -------
    fertool.serve.graph.ExportResult
    """
    import onnx

    from fertool.core.io import check_writable
    from fertool.models.inference import run_outputs
    from fertool.serve.graph import (
        ExportResult,
        check_onnx,
        graph_opset,
        publish,
        sidecar_path,
        staging_dir,
        torch_to_onnx,
    )
    from fertool.serve.onnxmeta import build_metadata, decode_metadata, set_metadata
    from fertool.serve.parity import Parity, ParityError
    from fertool.serve.session import create_session, run_onnx

    if int8:
        raise FertoolError(
            "--int8 is not supported with --head yet: export the float32 model (the sklearn "
            "part is small; the backbone's int8 speed-up needs its own calibration)"
        )
    t0 = time.perf_counter()
    estimator, info = read_head(head_path)
    final = Path(out) if out is not None else Path("exports") / f"{info.path.stem}.onnx"
    for t in (final, sidecar_path(final)):
        check_writable(t, force)
    model, pre, source, weights_meta = _backbone(info, run_dir, weights)
    x = _parity_faces(info, pre, run_dir, calibration, n_parity, progress)

    with staging_dir(final) as tmp:
        staged_backbone = torch_to_onnx(
            model,
            tmp / "backbone.onnx",
            opset=opset,
            exporter=exporter,
            outputs=("embedding",),
            flip=info.flip,
        )
        opset = graph_opset(staged_backbone)
        head_graph = head_to_onnx(estimator, 512, opset, info.calibrated)
        joined = join(onnx.load(str(staged_backbone)), head_graph)
        staged = tmp / "joined.onnx"
        onnx.save(joined, str(staged))
        outputs = tuple(o.name for o in joined.graph.output)
        props = build_metadata(
            pre,
            source=source,
            weights=weights_meta,
            opset=opset,
            outputs=outputs,
            head=info.metadata(),
        )
        set_metadata(staged, props, doc=f"fertool FaceNet + sklearn head {info.name}")
        check_onnx(staged)
        got = run_onnx(create_session(staged, "cpu"), x, batch_size=16)
        emb = run_outputs(model, x, 16, outputs=("embedding",), flip=info.flip)["embedding"]
        ref = reference_probabilities(estimator, emb, info.calibrated)
        diff = float(np.max(np.abs(got["probabilities"] - ref)))
        agree = float(np.mean(got["probabilities"].argmax(1) == ref.argmax(1)))
        emb_diff = float(np.max(np.abs(got["embedding"] - emb)))
        parity = Parity(len(x), diff, float("nan"), emb_diff, agree, tolerance)
        if not parity.ok:
            raise ParityError(
                f"{final}: the joined graph and torch + scikit-learn disagree by {diff:.2e} in "
                f"probability (tolerance {tolerance:.0e}) over {len(x)} faces. float32 rounding "
                "of the embedding is amplified by features of tiny variance in the head's scaler "
                "and flips near-ties of kNN; check the head, or raise --tolerance knowingly"
            )
        sidecar = {
            "command": _command(),
            "source": source,
            "weights": weights_meta,
            "head": {**info.metadata(), "features": info.features},
            "metadata": decode_metadata(props),
        }
        checks = {"onnx_checker": "passed", "parity": parity.to_dict()}
        result = publish(staged, final, sidecar, "float32", checks, force)
    return ExportResult(result, None, parity, time.perf_counter() - t0, "parity faces")


def _backbone(info: HeadInfo, run_dir, weights):
    """The torch backbone, its preprocessing, the source record and the weights record."""
    from fertool.models.preprocessing import Preprocessing

    feats = info.features
    if run_dir is not None:
        from fertool.train.rundir import RunDir

        run = RunDir(run_dir).load_best()
        pre = Preprocessing.from_dict({**run.preprocessing.to_dict(), "labels": list(info.labels)})
        return run.model, pre, run.source(), run.weights
    from fertool.models.fernet import create_model

    name = weights or feats.get("weights_name") or "casia-webface"
    model, winfo = create_model(name)
    expected = feats.get("weights_sha256")
    if expected and winfo is not None and expected != winfo.sha256:
        raise FertoolError(
            f"{info.path}: the head was trained on embeddings of weights with sha256 "
            f"{str(expected)[:16]}..., but {name} resolves to {winfo.sha256[:16]}...; pass the "
            "same --weights (or the fine-tuning RUN_DIR) the embeddings came from"
        )
    base = Preprocessing.from_json(feats["preprocessing"]) if feats.get("preprocessing") else None
    face = json.loads(feats["face_config"]) if feats.get("face_config") else None
    d = (base or model.preprocessing).to_dict()
    d.update(labels=list(info.labels), face=face or d.get("face"))
    w = (
        None
        if winfo is None
        else {"name": winfo.name, "sha256": winfo.sha256, "source": winfo.source}
    )
    source = {"head": info.path.name, "head_sha256": info.sha256, "weights": name}
    return model, Preprocessing.from_dict(d), source, w


def _parity_faces(info: HeadInfo, pre, run_dir, calibration, n: int, progress: bool) -> np.ndarray:
    """Standardised real faces for the parity check."""
    from fertool.data.walk import iter_image_paths
    from fertool.faces.stage import FaceConfig
    from fertool.serve.parity import folder_crops

    if calibration is None and run_dir is not None:
        from fertool.serve.parity import run_faces
        from fertool.train.rundir import RunDir

        faces = run_faces(RunDir(run_dir).load_best(), None, limit=n, progress=progress)
        return faces.test[:n] if len(faces.test) else faces.train[:n]
    folder = calibration or info.features.get("root")
    if not folder or not Path(folder).is_dir():
        raise FertoolError(
            "the parity check needs real faces: pass --calibration DIR (a folder of images)"
        )
    crops = folder_crops(
        iter_image_paths([folder]), pre.face or FaceConfig(), n, progress
    )
    if len(crops) == 0:
        raise FertoolError(f"no usable images found in {folder} for the parity check")
    return pre.normalize(crops)


def _command() -> str:
    from fertool.evaluate.report import command_line

    return command_line()
