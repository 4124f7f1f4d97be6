"""Comparison reports: one table in Markdown, the same numbers in JSON.

Used by ``fertool compare-baselines`` and by ``fertool finetune`` (its test report), so that every
result fertool writes has one schema:

.. code-block:: json

    {"protocol": "movie", "split_hash": "...", "splits": [...], "results": [
        {"method": "lpq", "status": "ok", "accuracy_mean": 0.21, "accuracy_std": 0.01,
         "macro_f1": 0.20, "macro_f1_std": 0.01, "per_class_recall": {"angry": 0.3, ...},
         "n_folds": 2, "folds": [...]},
        {"method": "facenet-vggface2", "status": "unavailable", "reason": "..."}]}
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fertool.core.io import write_json, write_text
from fertool.core.labels import LABELS


@dataclass
class MethodResult:
    """Summary of one method over all folds/seeds, or the reason it could not run."""

    method: str
    status: str = "ok"  # "ok" | "unavailable" | "failed"
    reason: str = ""
    accuracy_mean: float | None = None
    accuracy_std: float | None = None
    macro_f1: float | None = None
    macro_f1_std: float | None = None
    per_class_recall: dict[str, float] = field(default_factory=dict)
    n_folds: int = 0
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    folds: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        if self.status == "ok":
            d.pop("reason")
        return d


def command_line() -> str:
    """The command that is running, quoted so that it can be pasted into a shell."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("fertool", "__main__.py")):
        argv[0] = "fertool"
    return " ".join(shlex.quote(a) for a in argv)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(results: list[MethodResult], labels: tuple[str, ...] = LABELS) -> str:
    """One row per method: accuracy mean +- std, macro-F1, per-class recall (all in %)."""
    present = [c for c in labels if any(c in r.per_class_recall for r in results)] or list(labels)
    head = ["method", "accuracy % (mean +- std)", "macro-F1 %"] + [f"{c[:4]} rec." for c in present]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.status != "ok":
            row = [r.method, f"not run: {r.reason}", "-"] + ["-"] * len(present)
        else:
            acc = f"{_pct(r.accuracy_mean)} +- {_pct(r.accuracy_std)}"
            row = [r.method, acc, _pct(r.macro_f1)]
            row += [_pct(r.per_class_recall.get(c)) for c in present]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    protocol: str,
    split_hash: str,
    results: list[MethodResult],
    meta: dict[str, Any],
    notes: list[str] | None = None,
    images: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into ``out_dir`` (atomically).

    ``meta`` holds everything needed to reproduce the table (seeds, splits, weights hash,
    versions, command); it is written to both files. ``images`` maps a caption to a file name
    relative to ``out_dir`` (confusion matrices, curves) for the Markdown.
    """
    out = Path(out_dir)
    payload = {
        "title": title,
        "protocol": protocol,
        "split_hash": split_hash,
        "results": [r.to_dict() for r in results],
        **meta,
    }
    json_path = write_json(out / "report.json", payload)

    md = [f"# {title}", "", markdown_table(results), ""]
    if notes:
        md += [f"- {n}" for n in notes] + [""]
    md += ["## Setup", "", f"- protocol: `{protocol}`", f"- split hash: `{split_hash}`"]
    for key, value in meta.items():
        if key in ("versions", "splits"):
            continue
        if isinstance(value, (dict, list)):
            value = (
                ", ".join(f"{k}={v}" for k, v in value.items())
                if isinstance(value, dict)
                else ", ".join(map(str, value))
            )
        md.append(f"- {key}: `{value}`" if key != "command" else f"- command: `{value}`")
    if "versions" in meta:
        md.append("- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    if images:
        md += ["", "## Figures", ""]
        md += [f"**{caption}**\n\n![{caption}]({name})\n" for caption, name in images.items()]
    md_path = write_text(out / "report.md", "\n".join(md) + "\n")
    return md_path, json_path
