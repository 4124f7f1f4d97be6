"""The report of a ``fertool predict`` run: ``OUT-stem.report.md`` and its self-contained twin
``OUT-stem.report.html`` beside the output.

What the command prints, kept: rows per status, speed, the files that could not be read and the
files skipped (each list cut at :data:`LISTED`), and per video the share of each expression per
track with its timeline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: ``summary`` below is a :class:`fertool.predict.PredictSummary` (not imported: predict calls
#: this module).
PredictSummary = Any

#: Entries listed per list (errors, skipped files); the output and the skipped-files CSV have all.
LISTED = 200


def report_path(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.stem + ".report.md")


def _cell(text) -> str:
    from fertool.evaluate.report import md_code

    return md_code(text).replace("|", "\\|")


def predict_markdown(summary: PredictSummary, labels, model: str | None = None) -> str:
    """The report's Markdown (image links relative to the output's folder)."""
    from fertool.evaluate.report import md_code

    out = Path(summary.out)
    md = [f"# Predictions: {md_code(out.name)}", ""]
    md.append(f"- output: {md_code(out)}")
    if model:
        md.append(f"- model: {md_code(model)}")
    files = f"{summary.images} images"
    if summary.videos:
        files += f", {len(summary.videos)} videos ({summary.frames} frames predicted in this run)"
    md.append(f"- this run: {files}, {summary.rows} rows in {summary.seconds:.1f} s")
    if summary.resumed:
        md.append(f"- resumed: {summary.resumed} files were already done")
    md += ["", "| status | rows |", "|:--|--:|"]
    md += [f"| {k} | {v} |" for k, v in sorted(summary.status.items())]
    if summary.videos:
        md += ["", "## Videos", ""]
        md.append("Per track: the share of its rows whose most probable class is each class (%).")
        head = ["video", "track", "rows", "seconds", *labels]
        md += ["", "| " + " | ".join(head) + " |", "|:--|--:|--:|:--|" + "--:|" * len(labels)]
        for v in summary.videos:
            for t in v.tracks:
                shares = " | ".join(f"{100 * s:.0f}" for s in t.shares())
                span = f"{t.times.min():.1f}-{t.times.max():.1f}"
                md.append(f"| {_cell(v.path)} | {t.track} | {t.n} | {span} | {shares} |")
            if not v.tracks:
                dashes = " | ".join("-" for _ in labels)
                md.append(f"| {_cell(v.path)} | - | 0 | - | {dashes} |")
        for v in summary.videos:
            md += ["", f"### {md_code(Path(v.path).name)}", ""]
            md.append(f"{v.frames} frames; rows: " + ", ".join(
                f"{k} {n}" for k, n in sorted(v.status.items())))
            for e in v.errors:
                md += ["", f"- error: {md_code(e)}"]
            if v.timeline is not None:
                rel = os.path.relpath(v.timeline, out.parent)
                md += ["", f"![timeline of {Path(v.path).name}]({Path(rel).as_posix()})"]
    if summary.n_errors:
        md += ["", f"## Files that could not be read ({summary.n_errors})", ""]
        md += [f"- {md_code(p)}: {md_code(m)}" for p, m in summary.errors[:LISTED]]
    if summary.skipped:
        md += ["", f"## Files skipped ({summary.non_images})", ""]
        md += [f"- {md_code(p)}: {why}" for p, why in summary.skipped[:LISTED]]
        if summary.skipped_file is not None:
            md += ["", f"All of them: {md_code(summary.skipped_file)}."]
    return "\n".join(md) + "\n"


def write_predict_report(summary: PredictSummary, labels, model: str | None = None) -> Path:
    """Write the Markdown report and its HTML twin; returns the HTML file."""
    from fertool.core.io import write_text
    from fertool.evaluate.html import write_html

    md = write_text(report_path(summary.out), predict_markdown(summary, labels, model))
    return write_html(md)
