"""``fertool bench``: what each stage costs on this machine, side by side.

Measured, in images per second:

- the ceilings (:mod:`fertool.ceiling`), float32 and int8: the machine's peak (cores x clock x
  SIMD FMA width from the CPU's flags) and a measured peak (the fastest of onnxruntime's MatMul,
  Conv, MatMulInteger and QLinearConv and torch.mm), over the model's FLOPs per image counted with
  ``torch.utils.flop_counter`` (about 2.84 GFLOP for InceptionResnetV1 at 160 px); every model
  row's share of them;
- the backbone: torch eager, onnxruntime float32 and onnxruntime int8, at batch 1 and 32;
- face detection with each detector (BlazeFace, MTCNN; MTCNN at half resolution too);
- the hand-crafted descriptors (LPQ, PHOG) on 64x64 grey crops;
- ``fertool predict`` end to end on a folder of frames with each detector (decoding, detection,
  alignment, model, CSV), the share of time per stage, and the detectors' speed ratio. Frames:
  ``--frames``, else SFEW-675's raw 720x576 JPEG frames when ``../shared/datasets/sfew-675`` is
  there, else generated 720x576 frames.

Speed does not depend on the weights, so the backbone is a randomly initialised FerNet unless a
model is given; the int8 model is then calibrated on noise (fine for timing, not for accuracy).
Results go to ``bench.md`` (a table) and ``bench.json`` (the same numbers, with the machine).
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fertool.core.errors import FertoolError

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """Sizes of a bench run (the defaults take a few minutes on two cores).

    Attributes
    ----------
    frames : path or None
        Folder of frames (searched recursively) for detection and the end-to-end run; default:
        synthetic 720x576 frames.
    n_frames : int
        Frames used (the first ones, in walk order).
    frame_size : (width, height)
        Size of synthetic frames.
    model : path or None
        Float32 ONNX model to time (its ``NAME.int8.onnx`` sibling too, when present); default:
        a random-weight FerNet exported for the bench.
    quantize : bool
        Make an int8 model when none is given.
    batch_sizes : tuple of int
    min_seconds : float
        Each figure is measured over at least this long (after one warm-up call).
    descriptor_crops : int
        Crops for LPQ and PHOG.
    matmul_size : int
        Side of the square matrices of the ceiling's matrix product.
    detector_threads : int or None
        Detector threads, as ``fertool predict --detector-threads``; None: predict's default
        (the available cores split among the workers).
    detectors : tuple of str
        Detectors timed (detection alone and predict end to end).
    workers : int or None
        ``fertool predict --workers`` for the end-to-end runs (None: the available cores).
    """

    frames: str | None = None
    n_frames: int = 16
    frame_size: tuple[int, int] = (720, 576)
    model: str | None = None
    quantize: bool = True
    batch_sizes: tuple[int, ...] = (1, 32)
    min_seconds: float = 3.0
    descriptor_crops: int = 64
    matmul_size: int = 2048
    detector_threads: int | None = None
    detectors: tuple[str, ...] = ("blazeface", "mtcnn")
    workers: int | None = None


@dataclass
class Row:
    """One figure: ``images_per_s`` of ``what`` (None when ``status`` is not ok)."""

    section: str
    what: str
    images_per_s: float | None
    batch: int | None = None
    n: int = 0
    seconds: float = 0.0
    status: str = "ok"
    note: str = ""


@dataclass
class BenchResult:
    """All figures, the ceiling and the machine."""

    rows: list[Row] = field(default_factory=list)
    ceiling: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    #: Per detector: seconds and shares of decode, detect, align, model in the end-to-end run.
    stages: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def get(self, section: str, what: str, batch: int | None = None) -> Row | None:
        for r in self.rows:
            if r.section == section and r.what == what and (batch is None or r.batch == batch):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "ceiling": self.ceiling,
            "ratios": self.ratios,
            "stages": self.stages,
            "machine": self.machine,
            "config": self.config,
        }


def timed(fn: Callable[[], int], min_seconds: float) -> tuple[float, int, float]:
    """Call ``fn`` (which returns the images it processed) once to warm up, then repeatedly for
    at least ``min_seconds`` (at least once). Returns ``(images/s, images, seconds)``."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt, n, dt


# --------------------------------------------------------------------------------------------
# Sections


def model_flops(model, size: int = 160) -> int:
    """FLOPs of one forward pass of ``model`` on one ``size`` x ``size`` image (2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def matmul_gflops(n: int = 2048, min_seconds: float = 1.0) -> float:
    """float32 GFLOP/s of an ``n`` x ``n`` matrix product (torch, its default threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)

    def step() -> int:
        torch.mm(a, b)
        return 1

    rate, _, _ = timed(step, min_seconds)
    return 2.0 * n**3 * rate / 1e9


def bench_backbone(
    res: BenchResult,
    torch_model,
    onnx_paths: dict[str, Path | None],
    cfg: BenchConfig,
    rng: np.random.Generator,
) -> None:
    """torch eager vs onnxruntime float32 vs int8, at each batch size."""
    import torch

    from fertool.serve.runtime import create_session

    size = torch_model.preprocessing.size
    sessions = {}
    for name, path in onnx_paths.items():
        if path is not None:
            sessions[name] = create_session(path, providers="cpu")
    for bs in cfg.batch_sizes:
        x = rng.standard_normal((bs, 3, size, size)).astype(np.float32)
        xt = torch.from_numpy(x)

        def eager(xt=xt, bs=bs) -> int:
            with torch.inference_mode():
                torch_model(xt)
            return bs

        rate, n, dt = timed(eager, cfg.min_seconds)
        res.rows.append(Row("backbone", "torch eager float32", rate, bs, n, dt))
        for name in ("onnxruntime float32", "onnxruntime int8"):
            s = sessions.get(name)
            if s is None:
                res.rows.append(
                    Row(
                        "backbone",
                        name,
                        None,
                        bs,
                        status="unavailable",
                        note="no model (quantisation off and no NAME.int8.onnx)",
                    )
                )
                continue

            def ort_run(s=s, x=x, bs=bs) -> int:
                s.run(["probabilities"], {"input": x})
                return bs

            rate, n, dt = timed(ort_run, cfg.min_seconds)
            res.rows.append(Row("backbone", name, rate, bs, n, dt))


def bench_detection(res: BenchResult, frames: list[np.ndarray], cfg: BenchConfig) -> None:
    """Each detector (with alignment of the faces found) on the frames in one thread of calls;
    MTCNN at half resolution too."""
    from fertool.core.env import torch_threads
    from fertool.faces.stage import FaceConfig, FaceStage
    from fertool.pipeline import _detector_env, thread_plan

    _, threads = thread_plan(1, cfg.detector_threads)
    runs = []
    for name in cfg.detectors:
        runs.append((name, 1.0, f"{name} full resolution"))
        if name == "mtcnn":
            runs.append((name, 0.5, "mtcnn half resolution"))
    for name, scale, what in runs:
        try:
            with _detector_env(threads):
                stage = FaceStage(FaceConfig(detector=name, detect_scale=scale), device="cpu")
        except (FertoolError, ImportError, OSError, ValueError) as exc:
            res.rows.append(Row("faces", what, None, status="unavailable", note=str(exc)[:200]))
            continue
        found = []

        def detect(stage=stage, found=found) -> int:
            found.clear()
            for f in frames:
                found.append(stage.analyse(f).n_faces)
            return len(frames)

        with torch_threads(threads):
            rate, n, dt = timed(detect, cfg.min_seconds)
        h, w = frames[0].shape[:2]
        note = f"{w}x{h} frames, {sum(x > 0 for x in found)}/{len(frames)} with a face"
        note += f", detector threads {threads}"
        res.rows.append(Row("faces", what, rate, None, n, dt, note=note))


def bench_descriptors(res: BenchResult, crops: np.ndarray, cfg: BenchConfig) -> None:
    """LPQ (4x4 cells, window 7) and PHOG (8 bins, 3 levels) on 64x64 grey crops."""
    try:
        from fertool.features.descriptors import lpq_grid_batch, phog_batch
    except ImportError as exc:
        for what in ("LPQ 64x64", "PHOG 64x64"):
            res.rows.append(
                Row(
                    "descriptors",
                    what,
                    None,
                    status="unavailable",
                    note=f"fertool.features.descriptors cannot be imported ({exc})",
                )
            )
        return
    from PIL import Image

    grey = np.stack(
        [
            np.asarray(
                Image.fromarray(c).convert("L").resize((64, 64), Image.BILINEAR), dtype=np.float64
            )
            for c in crops
        ]
    )
    for what, fn in (
        ("LPQ 64x64, 4x4 cells, window 7", lambda: lpq_grid_batch(grey, (4, 4), 7)),
        ("PHOG 64x64, 8 bins, 3 levels", lambda: phog_batch(grey, 8, 3)),
    ):
        rate, n, dt = timed(lambda fn=fn: (fn(), len(grey))[1], cfg.min_seconds)
        res.rows.append(Row("descriptors", what, rate, len(grey), n, dt))


def bench_predict(
    res: BenchResult, folder: Path, model_path: Path, work: Path, cfg: BenchConfig
) -> None:
    """``fertool predict`` on the frames with each detector, face cache off (so detection really
    runs), with the share of time per stage."""
    from fertool.faces.config import FaceConfig
    from fertool.predict import predict_paths
    from fertool.serve.runtime import load

    model = load(model_path, providers="cpu")
    for name in cfg.detectors:
        out = work / f"predict-{name}.csv"
        what = f"fertool predict --detector {name} ({model_path.name})"
        face = FaceConfig.from_dict({**model.face_config.to_dict(), "detector": name})
        try:
            s = predict_paths(
                [folder],
                model,
                out,
                batch_size=32,
                force=True,
                use_cache=False,
                face=face,
                detector_threads=cfg.detector_threads,
                workers=cfg.workers,
                progress=False,
            )
        except (FertoolError, ImportError, OSError, ValueError) as exc:
            note = str(exc)[:200]
            res.rows.append(Row("end to end", what, None, status="unavailable", note=note))
            continue
        total = sum(s.stage_seconds.values())
        shares = {k: v / total for k, v in s.stage_seconds.items()} if total > 0 else {}
        res.stages[name] = {"seconds": dict(s.stage_seconds), "shares": shares,
                            "workers": s.workers}
        note = ", ".join(f"{k} {v}" for k, v in sorted(s.status.items()))
        note += f"; {s.workers} workers; time per stage: " + ", ".join(
            f"{k} {100 * v:.0f}%" for k, v in shares.items()
        )
        res.rows.append(
            Row("end to end", what, s.images_per_s, None, s.images, s.seconds, note=note)
        )


# --------------------------------------------------------------------------------------------
# Inputs


def synthetic_frames(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` synthetic scenes with one to three faces (see :mod:`fertool.data.synthetic`)."""
    from fertool.core.labels import LABELS
    from fertool.data.synthetic import make_image

    rng = np.random.default_rng(seed)
    w, h = size
    return [make_image(LABELS[i % len(LABELS)], rng, w, h, n_faces=1 + i % 3)[0] for i in range(n)]


def load_frames(cfg: BenchConfig, work: Path) -> tuple[list[np.ndarray], Path, str]:
    """Frames as arrays, a folder holding exactly them, and where they came from."""
    from fertool.core.io import read_image, write_png
    from fertool.data.walk import iter_image_paths

    folder = work / "frames"
    frames: list[np.ndarray] = []
    if cfg.frames:
        for p in iter_image_paths([cfg.frames]):
            try:
                frames.append(read_image(p))
            except FertoolError:
                continue
            os.symlink(os.path.abspath(p), _mkdir(folder) / f"{len(frames):05d}{Path(p).suffix}")
            if len(frames) >= cfg.n_frames:
                break
        if not frames:
            raise FertoolError(f"--frames {cfg.frames}: no readable images")
        source = f"{len(frames)} frames from {cfg.frames}"
    elif SFEW.is_dir():
        return load_frames(BenchConfig(**{**asdict(cfg), "frames": str(SFEW)}), work)
    else:
        frames = synthetic_frames(cfg.n_frames, cfg.frame_size)
        for i, f in enumerate(frames):
            write_png(folder / f"{i:05d}.png", f)
        source = f"{len(frames)} synthetic {cfg.frame_size[0]}x{cfg.frame_size[1]} frames"
    return frames, folder, source


#: SFEW-675's raw 720x576 JPEG frames, the bench's default frames when the folder is there.
SFEW = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sfew-675"


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def bench_models(cfg: BenchConfig, work: Path, rng: np.random.Generator):
    """The torch model and the ONNX files to time: given ones, or exported now."""
    from fertool.models.fernet import FerNet
    from fertool.serve.export import int8_path, torch_to_onnx

    model = FerNet().eval()
    if cfg.model:
        fp32 = Path(cfg.model)
        if not fp32.is_file():
            raise FertoolError(f"--model {fp32} not found")
        i8 = int8_path(fp32) if int8_path(fp32).is_file() else None
        if fp32.name.endswith(".int8.onnx"):
            fp32, i8 = None, fp32
    else:
        fp32 = torch_to_onnx(model, work / "bench.onnx")
        _label(fp32, model, "float32")
        i8 = None
    if i8 is None and cfg.quantize and fp32 is not None:
        from fertool.serve.quantize import quantize_int8

        calib = rng.standard_normal((32, 3, 160, 160)).astype(np.float32)
        i8 = quantize_int8(fp32, work / "bench.int8.onnx", calib, work_dir=work)
        _label(i8, model, "int8")
    return model, {"onnxruntime float32": fp32, "onnxruntime int8": i8}


def _label(path: Path, model, precision: str) -> None:
    """fertool metadata for the bench's own model, so that ``predict`` can load it."""
    from fertool.serve.export import graph_opset
    from fertool.serve.onnxmeta import build_metadata, set_metadata

    props = build_metadata(model.preprocessing, source=None, weights=None,
                           opset=graph_opset(path), precision=precision)
    set_metadata(path, props, doc="fertool bench model (random weights: speed only)")


def _has_tta(paths: dict[str, Path | None]) -> bool:
    """Whether a given model runs each crop and its mirror (``fertool.tta_flip`` metadata)."""
    from fertool.serve.onnxmeta import read_metadata

    path = next((p for p in paths.values() if p is not None), None)
    return path is not None and bool(read_metadata(path).get("tta_flip", False))


def machine_info() -> dict[str, Any]:
    """CPU, threads, load and versions of what was measured."""
    from fertool.core.env import versions

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["processor"] = line.split(":", 1)[1].strip()
                break
        flags = set(next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split())
        info["simd"] = sorted(
            f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags
        )
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info["versions"] = versions()
    return info


# --------------------------------------------------------------------------------------------
# The run


def run_bench(
    cfg: BenchConfig | None = None, progress: Callable[[str], None] | None = None
) -> BenchResult:
    """Measure everything (see the module docstring) and return the figures."""
    cfg = cfg if cfg is not None else BenchConfig()
    say = progress or (lambda msg: log.info("%s", msg))
    res = BenchResult(machine=machine_info(), config=asdict(cfg))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="fertool-bench-") as tmp:
        work = Path(tmp)
        say("models")
        model, onnx_paths = bench_models(cfg, work, rng)
        res.config["model_tta_flip"] = bool(cfg.model) and _has_tta(onnx_paths)
        say("ceilings: machine peak, the fastest float32 and int8 kernels measured, FLOPs")
        from fertool.ceiling import cpu_peak, measured_peak

        flops = model_flops(model)
        passes = 2 if res.config["model_tta_flip"] else 1  # flip TTA: two CNN passes per image
        measured = measured_peak(cfg.matmul_size, min(cfg.min_seconds, 2.0))
        gflops = measured["float32_gflop_per_s"]
        res.ceiling = {
            "model_gflop_per_image": flops / 1e9,
            "passes_per_image": passes,
            "matmul_gflop_per_s": gflops,
            "matmul_size": cfg.matmul_size,
            "images_per_s": gflops / (passes * flops / 1e9),
            "peak": cpu_peak(),
            "measured": measured,
        }
        say("backbone: torch eager, onnxruntime float32 and int8")
        bench_backbone(res, model, onnx_paths, cfg, rng)
        say("frames")
        frames, folder, source = load_frames(cfg, work)
        res.config["frames_source"] = source
        say("face detection")
        bench_detection(res, frames, cfg)
        say("descriptors")
        from fertool.faces.stage import FaceConfig, FaceStage

        stage = FaceStage(FaceConfig(), device="cpu")
        crops = [r.crop for f in frames for r in stage.process(f) if r.crop is not None]
        crops = np.stack([crops[i % len(crops)] for i in range(cfg.descriptor_crops)])
        bench_descriptors(res, crops, cfg)
        say("end to end")
        served = onnx_paths["onnxruntime int8"] or onnx_paths["onnxruntime float32"]
        bench_predict(res, folder, Path(served), work, cfg)
    res.ratios = ratios(res)
    if hasattr(os, "getloadavg"):
        res.machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return res


def ratios(res: BenchResult) -> dict[str, float | None]:
    """int8 / torch eager; every backbone row's share of the measured and the machine's peak
    (float32 rows of the float32 peaks, the int8 row of the int8 peaks); BlazeFace / MTCNN end
    to end."""
    from fertool.ceiling import share

    out: dict[str, float | None] = {}
    c = res.ceiling
    gflop = c.get("model_gflop_per_image", 0.0) * c.get("passes_per_image", 1)
    peak, measured = c.get("peak", {}), c.get("measured", {})
    for bs in sorted({r.batch for r in res.rows if r.section == "backbone"}):
        eager = res.get("backbone", "torch eager float32", bs)
        i8 = res.get("backbone", "onnxruntime int8", bs)
        out[f"int8_over_torch_eager_batch{bs}"] = (
            i8.images_per_s / eager.images_per_s if i8 and i8.images_per_s and eager else None
        )
        for name, key, kind in (
            ("torch eager float32", "torch_eager", "float32_gflop_per_s"),
            ("onnxruntime float32", "ort_float32", "float32_gflop_per_s"),
            ("onnxruntime int8", "ort_int8", "int8_gop_per_s"),
        ):
            row = res.get("backbone", name, bs)
            rate = row.images_per_s if row else None
            out[f"{key}_share_of_measured_peak_batch{bs}"] = share(rate, gflop, measured.get(kind))
            out[f"{key}_share_of_machine_peak_batch{bs}"] = share(rate, gflop, peak.get(kind))
    e2e = {r.what.split("--detector ")[1].split()[0]: r for r in res.rows
           if r.section == "end to end" and "--detector " in r.what and r.images_per_s}
    if "blazeface" in e2e and "mtcnn" in e2e:
        out["end_to_end_blazeface_over_mtcnn"] = (
            e2e["blazeface"].images_per_s / e2e["mtcnn"].images_per_s
        )
    return out


def to_markdown(res: BenchResult) -> str:
    """The figures as a Markdown report."""
    m = res.machine
    lines = [
        "# fertool bench",
        "",
        (
            f"Machine: {m.get('processor', '?')}, {m.get('cpus', '?')} CPUs "
            f"(SIMD: {', '.join(m.get('simd', [])) or 'unknown'}), torch threads "
            f"{m.get('torch_threads', '?')}; load average {m.get('load_average_start', '?')} at "
            f"the start, {m.get('load_average_end', '?')} at the end."
        ),
        f"Frames: {res.config.get('frames_source', '?')}.",
        *(
            [("The ONNX models have flip TTA in the graph: two CNN passes per image, so their "
              "images/s compare with half the torch eager figure and the ceiling.")]
            if res.config.get("model_tta_flip") else []
        ),
        "",
        "| section | what | batch | images/s | measured over | note |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in res.rows:
        rate = "-" if r.images_per_s is None else f"{r.images_per_s:.1f}"
        over = f"{r.n} images, {r.seconds:.1f} s" if r.status == "ok" else r.status
        lines.append(f"| {r.section} | {r.what} | {r.batch or ''} | {rate} | {over} | {r.note} |")
    c = res.ceiling
    lines += ["", *_ceiling_lines(c), ""]
    for key, value in res.ratios.items():
        text = (
            "-" if value is None else (f"{value:.2f}x" if "over" in key else f"{100 * value:.1f}%")
        )
        lines.append(f"- {key.replace('_', ' ')}: **{text}**")
    return "\n".join(lines) + "\n"


def _ceiling_lines(c: dict[str, Any]) -> list[str]:
    def num(v, unit):
        return "unknown" if v is None else f"{v:.1f} {unit}"

    p, m = c.get("peak", {}), c.get("measured", {})
    lines = [
        (
            f"Ceiling: {c['matmul_gflop_per_s']:.1f} GFLOP/s (the fastest float32 kernel measured: "
            f"{c['measured']['float32_kernel']}) / {c['model_gflop_per_image']:.3f} GFLOP per "
            f"image = **{c['images_per_s']:.1f} images/s**."
        )
    ]
    if p:
        lines.append(
            f"- Machine peak: {p['cores']} cores x {num(p['clock_ghz'], 'GHz')} x "
            f"{p['float32_lanes']} float32 lanes ({p['simd']}) x 2 (FMA) x "
            f"{p['fma_units_assumed']} FMA units (assumed) = float32 "
            f"**{num(p['float32_gflop_per_s'], 'GFLOP/s')}**, int8 (4 per lane"
            f"{', VNNI' if p['vnni'] else ', no VNNI'}) **{num(p['int8_gop_per_s'], 'GOP/s')}**."
        )
    if m:
        lines.append(
            f"- Measured peak: float32 **{m['float32_gflop_per_s']:.1f} GFLOP/s** "
            f"({m['float32_kernel']}), int8 **{m['int8_gop_per_s']:.1f} GOP/s** "
            f"({m['int8_kernel']}); all: "
            + ", ".join(f"{k} {v:.1f}" for k, v in m.get("all", {}).items())
            + "."
        )
    return lines


def write_bench(res: BenchResult, out: str | os.PathLike, force: bool = False) -> tuple[Path, Path]:
    """Write ``bench.md`` and ``bench.json`` into ``out`` (atomically; no overwrite without
    force)."""
    from fertool.core.io import check_writable, write_json, write_text

    out = Path(out)
    md, js = out / "bench.md", out / "bench.json"
    check_writable(md, force)
    check_writable(js, force)
    write_json(js, res.to_dict())
    write_text(md, to_markdown(res))
    from fertool.evaluate.html import write_html

    write_html(md)  # bench.html, self-contained
    return md, js
