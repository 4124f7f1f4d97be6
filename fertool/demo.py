"""`fertool demo`: the whole pipeline on a small generated dataset, in a few minutes on a CPU.

Steps (each one the same library call a user makes on a real dataset):

1. generate a deterministic synthetic dataset (:func:`fertool.data.synthetic.make_dataset`);
2. face stage over it: crops, CSV and a contact sheet
   (:func:`fertool.faces.extract.extract_dataset`, what ``fertool faces`` runs);
3. ``compare-baselines``: LPQ, PHOG and the CASIA-WebFace FaceNet embedding + SVM, movie protocol;
4. a short ``finetune`` (CASIA weights, 6 layers unfrozen, frozen-trunk cache, angle monitor);
5. ``export-onnx`` (float32 with a parity check, and int8);
6. ``predict`` on a folder of new generated scenes with the int8 model;
7. one report (``report.md`` + PNGs) that links everything.

The data are synthetic drawings, not faces of people: the numbers show that the pipeline runs
and learns, not how well it recognises real expressions. The report says so and gives the
commands for a real dataset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fertool.core.errors import FertoolError

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    out: Path
    report: Path
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


def _step(name: str, say: Callable[[str], None], steps: dict[str, float]):
    class _Timer:
        def __enter__(self):
            say(f"[{len(steps) + 1}/7] {name} ...")
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            steps[name] = time.perf_counter() - self.t0
            if exc[0] is None:
                say(f"      done in {steps[name]:.0f} s")

    return _Timer()


def _faces(data_root: Path, out: Path, cache_dir: Path) -> dict[str, int]:
    """``fertool faces`` on the generated data (into ``out``): images per status, and how many
    have several faces."""
    from fertool.faces.extract import extract_dataset

    s = extract_dataset(data_root, out, cache_dir=cache_dir, force=True, progress=True,
                        title="synthetic faces after the face stage (aligned 160x160 crops)")
    return {**s.status, "several_faces": s.several}


def run_demo(
    out: str | Path = "demo-output",
    *,
    n_per_class: int = 14,
    seed: int = 0,
    epochs: int = 8,
    detector_threads: int | None = 1,
    force: bool = False,
    say: Callable[[str], None] = log.info,
) -> DemoResult:
    """Run the demo pipeline into ``out`` and write ``out/report.md``.

    Parameters
    ----------
    out : path
        Output folder (data, crops cache, comparison, run, exports, predictions, report).
    n_per_class : int
        Synthetic images per expression in the training/testing set.
    seed : int
        Seed of the synthetic data, the split and training: same seed, same report figures.
    epochs : int
        Fine-tuning epochs.
    detector_threads : int or None
        Torch threads for MTCNN (face stage and predict). One is much faster than two when
        other jobs share the cores; None keeps torch's setting.
    force : bool
        Replace a non-empty ``out``.
    say : callable
        Where progress lines go.

    Raises
    ------
    FertoolError
        When ``out`` is not empty and ``force`` is false, or a step fails (the message names it).
    """
    import shutil

    from fertool.compare import CompareConfig, run_comparison
    from fertool.core.env import torch_threads
    from fertool.core.io import write_text
    from fertool.data.synthetic import make_dataset
    from fertool.predict import predict_paths
    from fertool.serve.export import export_run
    from fertool.serve.runtime import load
    from fertool.train.loop import TrainConfig, run

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FertoolError(f"{out} is not empty; use --force to replace the demo output")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    steps: dict[str, float] = {}
    t0 = time.perf_counter()

    with _step("generate a synthetic dataset (7 expressions)", say, steps):
        data = make_dataset(out / "data", n_per_class=n_per_class, seed=seed, n_groups=6)
        scenes = make_dataset(out / "new-images", n_per_class=2, seed=seed + 1000, n_groups=2)
        _add_bad_inputs(scenes)
    with _step("face stage: detect, align, cache", say, steps), torch_threads(detector_threads):
        faces = _faces(data, out / "faces", cache)
    with _step("compare-baselines: LPQ, PHOG, FaceNet embedding + SVM", say, steps):
        cmp = run_comparison(CompareConfig(
            data=str(data), out=str(out / "compare"), protocol="movie",
            methods=("lpq", "phog", "facenet"), heads=("svm-rbf",), weights="casia-webface",
            cache_dir=str(cache), force=True), progress=True)
    with _step("finetune: CASIA FaceNet, 6 layers unfrozen, angle monitor", say, steps):
        cfg = TrainConfig(
            data=str(data), out=str(out / "run"), weights="casia-webface", unfreeze=6,
            protocol="movie", fold=0, epochs=epochs, batch_size=16, lr=3e-3, backbone_lr=3e-4,
            augment=None, cache_frozen=True, tta_flip=False, cache_dir=str(cache),
            monitor_angles=True, monitor_probe=32, monitor_neurons=256)
        ft = run(cfg, force=True, progress=True)
    with _step("export-onnx: float32 (parity-checked) and int8", say, steps):
        exp = export_run(out / "run", out / "exports" / "demo.onnx", int8=True, force=True,
                         progress=True)
    with _step("predict: a folder of new images, int8 model", say, steps):
        model = load(exp.int8.path if exp.int8 else exp.float32.path, providers="cpu")
        pred = predict_paths([str(scenes)], model, out / "predictions.csv", force=True,
                             cache_dir=cache, progress=True, detector_threads=detector_threads)
    with _step("report", say, steps):
        report = _write_report(out, faces, cmp, ft, exp, pred, steps)
        write_text(out / "report.md", report)
        from fertool.evaluate.html import write_html

        write_html(out / "report.md")  # report.html, figures inlined
    seconds = time.perf_counter() - t0
    return DemoResult(out, out / "report.md", seconds, steps)


def _add_bad_inputs(folder: Path) -> None:
    """Two files a real folder has: a truncated JPEG and a picture with no face in it.

    ``predict`` must report both and go on with the rest (see the report's section 5).
    """
    import numpy as np

    from fertool.core.io import write_bytes, write_png

    bad = folder / "unsorted"
    write_bytes(bad / "truncated.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(40))
    ramp = np.linspace(40, 200, 320, dtype=np.uint8)
    write_png(bad / "no-face.png", np.repeat(np.tile(ramp, (240, 1))[..., None], 3, axis=2))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _write_report(out: Path, faces, cmp, ft, exp, pred, steps) -> str:
    from fertool.evaluate.report import markdown_table

    r = ft["results"][0]
    lines = [
        "# fertool demo report",
        "",
        "> **These data are synthetic**: procedural drawings of faces with seven expressions,",
        "> generated by `fertool.data.synthetic`. The figures show that every stage runs and",
        "> learns; they say nothing about accuracy on real faces. For a real dataset (one folder",
        "> per expression, e.g. SFEW), run the commands at the end.",
        "",
        "## 1. Faces",
        "",
        "Face stage (MTCNN, 5-point alignment, 160x160 crops; [faces/faces.csv](faces/faces.csv)): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(faces.items())) + ".",
        "",
        "![contact sheet](faces/contact_sheet.png)",
        "",
        "## 2. Baselines vs FaceNet embedding (movie protocol, no group on both sides)",
        "",
        markdown_table(cmp.results),
        "",
        (f"Full comparison report: [compare/report.md](compare/report.md) (split hash "
         f"`{cmp.split_hash}`)."),
        "",
        "## 3. Fine-tuning (CASIA-WebFace FaceNet, 6 layers unfrozen)",
        "",
        (f"Test accuracy {_pct(r['accuracy_mean'])}, macro-F1 {_pct(r['macro_f1'])} "
         f"(best epoch {r['details']['best_epoch']} of {r['details']['epochs_run']}); "
         "run folder [run/](run/report.md)."),
        "",
        "![training curves](run/curves.png)",
        "",
        "![confusion matrix](run/confusion.png)",
        "",
        "Angular-separation monitor (Gedeon): the distribution of angles between the activation",
        "vectors of sampled neurons of the monitored layer, per epoch. A distribution that stops",
        "moving while the loss still changes means the layer has stopped learning.",
        "",
        "![angle heat map](run/angles_heatmap.png)",
        "",
        "![angle summary](run/angles_summary.png)",
        "",
        "## 4. ONNX export",
        "",
        (f"- float32: `{exp.float32.path.name}`, {exp.float32.bytes / 1e6:.1f} MB, max abs "
         f"difference of probabilities against torch {exp.parity.probabilities:.2e} "
         f"over {exp.parity.n} faces"),
    ]
    if exp.int8 is not None:
        checks = exp.int8.checks.get("int8_vs_float32", {})
        extra = ""
        if checks.get("int8_accuracy") is not None:
            extra = (f", test accuracy {_pct(checks['int8_accuracy'])} vs float32 "
                     f"{_pct(checks['float32_accuracy'])}, same class on "
                     f"{_pct(checks['agreement'])} of test faces")
        lines.append(f"- int8 (static QDQ, per-channel 7-bit weights, float outputs): "
                     f"`{exp.int8.path.name}`, {exp.int8.bytes / 1e6:.1f} MB{extra}")
    lines += [
        "",
        "## 5. Batch prediction",
        "",
        f"`predictions.csv`: {pred.images} images, {pred.rows} rows, statuses "
        + ", ".join(f"{k}: {v}" for k, v in sorted(pred.status.items()))
        + f", {pred.images_per_s:.1f} images/s end to end. The folder also holds a truncated "
        "JPEG and a picture without a face (`new-images/unsorted/`): the first is an `error` "
        "row naming the file and the reason, the second a flagged `fallback` (centre crop) or "
        "`no_face` row; the batch goes on either way.",
        "",
        *[f"- error: `{Path(path).relative_to(out)}`: {message}" for path, message in pred.errors],
        "",
        "## Time per step",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in steps.items()],
        "",
        "## On a real dataset",
        "",
        "```",
        "fertool faces --data DATA --out faces-out",
        "fertool compare-baselines --data DATA --protocol movie --out report-movie",
        ("fertool finetune --data DATA --weights casia-webface --unfreeze 9 --protocol movie "
         "--fold 0 --out runs/movie0"),
        "fertool export-onnx runs/movie0 --int8",
        "fertool predict FOLDER --model exports/movie0.onnx --out predictions.csv",
        "```",
    ]
    return "\n".join(lines) + "\n"
