"""Videos in ``fertool predict``: decoding and sampling, the face tracker, one row per sampled
frame with its time and track, a truncated file, resume in the middle of a video, and the
per-video summary and timeline.

The test video is made here: a synthetic face (fertool.data.synthetic) that moves from left to
right over 64 frames at 16 fps (320x240) and changes from happy to surprise at frame 32, written
with PyAV. The model is a tiny ONNX graph with fertool's contract whose answer follows the crop's
mean red (the happy crop is redder than the surprise one), so the change must show in the rows
and in the timeline.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from onnx_models import tiny_model

from fertool.core.labels import LABELS

av = pytest.importorskip("av")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FPS = 16
N_FRAMES = 64
CHANGE = 32


def moving_face_frames(n=N_FRAMES, width=320, height=240, change=CHANGE):
    """Frames of one face moving right, happy before ``change``, surprise from it."""
    from fertool.data.synthetic import make_face

    faces = {
        e: make_face(e, np.random.default_rng(3), 120, rotation_deg=0, noise_sigma=0)
        for e in ("happy", "surprise")
    }
    for i in range(n):
        canvas = np.full((height, width, 3), 90, np.uint8)
        x = 30 + round((width - 180) * i / (n - 1))
        canvas[60:180, x : x + 120] = faces["happy" if i < change else "surprise"]
        yield canvas


def colour_model(path: Path) -> Path:
    """A tiny model: p(happy) high when the crop's standardised mean red is above 0.28, else
    p(surprise) high (measured on this video's crops: 0.30 happy, 0.26 surprise)."""
    import onnx
    from onnx import numpy_helper

    tiny_model(path)
    model = onnx.load(str(path))
    w = np.zeros((3, len(LABELS)), np.float32)
    b = np.zeros(len(LABELS), np.float32)
    h, s = LABELS.index("happy"), LABELS.index("surprise")
    w[0, h], w[0, s], b[h], b[s] = 300, -300, -84, 84
    for init in model.graph.initializer:
        if init.name in ("w", "b"):
            init.CopyFrom(numpy_helper.from_array(w if init.name == "w" else b, init.name))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from fertool.core.io import write_png
    from fertool.data.synthetic import make_image
    from fertool.data.video import write_video

    root = tmp_path_factory.mktemp("video")
    video = write_video(root / "clip.mkv", moving_face_frames(), fps=FPS)
    data = video.read_bytes()
    truncated = root / "cut.mkv"
    truncated.write_bytes(data[: len(data) // 2])
    image, _ = make_image("sad", np.random.default_rng(0), 256, 192)
    photo = write_png(root / "photo.png", image)
    return {"root": root, "video": video, "truncated": truncated, "photo": photo}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from fertool.serve.runtime import load

    return load(colour_model(tmp_path_factory.mktemp("m") / "colour.onnx"), providers="cpu")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run(files, model, tmp_path_factory):
    """One run over the video and a photo, every 4th frame."""
    from fertool.predict import predict_paths
    from fertool.video_predict import VideoOptions

    out = tmp_path_factory.mktemp("out") / "preds.csv"
    summary = predict_paths(
        [files["video"], files["photo"]],
        model,
        out,
        video=VideoOptions(every=4),
        progress=False,
        use_cache=False,
    )
    return out, summary


# --------------------------------------------------------------------------------------------
# Decoding and sampling (no model)


def test_frames_times_and_sampling(files):
    from fertool.data.video import iter_frames, probe

    info = probe(files["video"])
    assert (info.width, info.height, info.fps) == (320, 240, FPS)
    assert info.duration == pytest.approx(N_FRAMES / FPS, abs=0.01)
    every = [(f.index, f.time) for f in iter_frames(files["video"])]
    assert [i for i, _ in every] == list(range(N_FRAMES))
    assert all(t == pytest.approx(i / FPS, abs=1e-3) for i, t in every)
    assert [f.index for f in iter_frames(files["video"], fps=2)] == list(range(0, N_FRAMES, 8))
    seg = [f.index for f in iter_frames(files["video"], every=5, start=1.0, end=3.0)]
    assert seg == [20, 25, 30, 35, 40, 45]
    # After a seek (resume): exactly the frames an uninterrupted pass samples after frame 41.
    for kw in ({"every": 4}, {"fps": 4}, {}):
        full = [f.index for f in iter_frames(files["video"], **kw)]
        assert [f.index for f in iter_frames(files["video"], after=41, **kw)] == [
            i for i in full if i > 41
        ]
    # The decoded picture is the one written: the face's left edge moves right.
    first, last = (f.image for f in iter_frames(files["video"], every=N_FRAMES - 1))
    col = lambda img: int(np.argmax(np.abs(img[120].astype(int) - 90).sum(axis=1) > 60))
    assert col(last) - col(first) > 100


def test_truncated_and_broken_files_raise_after_their_frames(files, tmp_path):
    from fertool.data.video import VideoReadError, iter_frames

    got = []
    with pytest.raises(VideoReadError, match="truncated") as err:
        for f in iter_frames(files["truncated"]):
            got.append(f.index)
    assert str(files["truncated"]) in str(err.value)
    assert 10 < len(got) < N_FRAMES and got == list(range(len(got)))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoReadError, match="cannot open"):
        list(iter_frames(junk))
    with pytest.raises(Exception, match="--fps and --every"):
        list(iter_frames(files["video"], fps=2, every=3))


def test_tracker_keeps_ids_through_motion_crossing_and_gaps():
    from fertool.faces.track import IouTracker, iou_matrix

    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]) == pytest.approx(
        np.array([[50 / 150, 0.0]])
    )
    t = IouTracker(min_iou=0.3, max_gap=2)
    a = np.array([0, 0, 40, 40.0])
    b = np.array([200, 0, 240, 40.0])
    ids = [t.update([a + [4 * k, 0, 4 * k, 0], b - [4 * k, 0, 4 * k, 0]]) for k in range(10)]
    assert ids == [[0, 1]] * 10
    assert t.update([b - [36, 0, 36, 0]]) == [1]  # face 0 missing for one frame
    assert t.update([a + [40, 0, 40, 0], b - [40, 0, 40, 0]]) == [0, 1]  # back within the gap
    for _ in range(3):
        t.update([])
    assert t.update([a]) == [2]  # gone longer than max_gap: a new track
    r = IouTracker()
    r.restore([a], [5], next_id=7)
    assert r.update([a + 1, b]) == [5, 7]


# --------------------------------------------------------------------------------------------
# predict on a video


def test_rows_times_track_and_image_beside(run, files):
    out, summary = run
    rows = _rows(out)
    assert list(rows[0])[:4] == ["path", "frame", "time", "track"]
    video = [r for r in rows if r["path"] == str(files["video"])]
    photo = [r for r in rows if r["path"] == str(files["photo"])]
    assert [int(r["frame"]) for r in video] == list(range(0, N_FRAMES, 4))
    assert all(float(r["time"]) == pytest.approx(int(r["frame"]) / FPS, abs=1e-3) for r in video)
    assert {r["status"] for r in video} == {"ok"}
    assert {r["track"] for r in video} == {"0"}  # one face moving 140 px: one track
    x1 = [float(r["x1"]) for r in video]
    assert x1[-1] - x1[0] > 100 and x1 == sorted(x1)
    labels = [r["label"] for r in video]
    assert labels == ["happy"] * (CHANGE // 4) + ["surprise"] * (CHANGE // 4)
    assert len(photo) == 1 and (photo[0]["frame"], photo[0]["time"], photo[0]["track"]) == ("",) * 3
    assert summary.frames == N_FRAMES // 4 and summary.images == 1
    assert rows == sorted(rows, key=lambda r: r["path"] != str(files["video"]))  # walk order


def test_summary_and_timeline_show_the_change(run, files, model):
    from PIL import Image

    from fertool.video_predict import video_summaries, videos_csv_path

    out, summary = run
    (v,) = summary.videos
    assert v.path == str(files["video"]) and v.frames == N_FRAMES // 4
    (track,) = v.tracks
    h, s = LABELS.index("happy"), LABELS.index("surprise")
    shares = track.shares()
    assert shares[h] == pytest.approx(0.5) and shares[s] == pytest.approx(0.5)
    # The data the timeline draws: p(happy) high before the change, p(surprise) after.
    before, after = track.times < CHANGE / FPS, track.times >= CHANGE / FPS
    assert track.probabilities[before, h].min() > 0.9 > track.probabilities[after, h].max()
    assert track.probabilities[after, s].min() > 0.9 > track.probabilities[before, s].max()
    assert [x.tracks[0].probabilities.tolist() for x in video_summaries(out, "csv", LABELS)] == [
        track.probabilities.tolist()
    ]
    table = _rows(videos_csv_path(out))
    assert [(r["track"], r["rows"], r["share_happy"]) for r in table] == [("0", "16", "0.5000")]
    # The PNG: surprise's colour (C{s}, drawn last, so on top) is low on the left half of the
    # panel and high on the right half.
    from matplotlib.colors import to_rgb

    img = np.asarray(Image.open(v.timeline).convert("RGB")).astype(int)
    colour = np.array(to_rgb(f"C{s}")) * 255
    ys, xs = np.nonzero(np.abs(img - colour).sum(axis=2) < 40)
    mid = (xs.min() + xs.max()) / 2
    assert np.median(ys[xs < mid - 20]) > np.median(ys[xs > mid + 20]) + 50


def test_truncated_video_keeps_its_frames_reports_and_goes_on(files, tmp_path):
    from click.testing import CliRunner

    from fertool.cli import main

    out = tmp_path / "cut.csv"
    model = colour_model(tmp_path / "colour.onnx")
    args = [str(files["truncated"]), str(files["photo"]), "--model", str(model), "--out", str(out)]
    res = CliRunner().invoke(main, ["predict", *args, "--fps", "2", "-q", "--no-cache"])
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    cut = [r for r in rows if r["path"] == str(files["truncated"])]
    frames = [int(r["frame"]) for r in cut if r["frame"]]
    assert frames == [0, 8, 16, 24] and {r["status"] for r in cut[:-1]} == {"ok"}
    assert cut[-1]["status"] == "error" and "truncated" in cut[-1]["message"]
    assert rows[-1]["path"] == str(files["photo"]) and rows[-1]["status"] == "ok"
    assert "1 files could not be read" in res.output and str(files["truncated"]) in res.output


def test_resume_in_the_middle_of_a_video_gives_the_same_rows(run, files, model, tmp_path):
    from fertool.predict import partial_path, predict_paths
    from fertool.video_predict import VideoOptions

    full_out, _ = run
    text = full_out.read_text()
    lines = text.splitlines(keepends=True)
    out = tmp_path / "preds.csv"
    # Interrupted after 10 frames, the last row cut in the middle.
    partial_path(out).write_text("".join(lines[:11]) + lines[11][:25])
    s = predict_paths(
        [files["video"], files["photo"]],
        model,
        out,
        video=VideoOptions(every=4),
        resume=True,
        progress=False,
        use_cache=False,
    )
    assert out.read_text() == text
    assert s.frames == N_FRAMES // 4 - 9  # the 10th frame is redone, in case it was cut


def test_predict_report_renders_in_chromium(run, files, tmp_path):
    from browser import check_page, chromium, self_contained

    out, summary = run
    assert summary.report == out.with_name("preds.report.html") and summary.report.is_file()
    md = out.with_name("preds.report.md").read_text()
    assert "## Videos" in md and "| 0 | 16 | 0.0-3.8 |" in md
    assert self_contained(summary.report)
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    res = check_page(summary.report, tmp_path / "predict.png")
    assert res["images"] == 1 and res["broken"] == [] and res["widths"][0] > 500
    assert res["tables"] == 2 and res["std"] > 10
