"""Comparison reports: one table in Markdown, the same numbers in JSON.

Used by ``fertool compare-baselines`` and by ``fertool finetune`` (its test report), so that every
result fertool writes has one schema:

.. code-block:: json

    {"protocol": "movie", "split_hash": "...", "splits": [...], "results": [
        {"method": "lpq", "status": "ok", "accuracy_mean": 0.21, "accuracy_std": 0.01,
         "macro_f1": 0.20, "macro_f1_std": 0.01, "per_class_recall": {"angry": 0.3, ...},
         "n_folds": 2, "folds": [...],
         "uncertainty": {"accuracy": {"mean": 0.21, "low": 0.18, "high": 0.24},
                         "macro_f1": {...}, "per_class_recall": {"angry": {...}},
                         "per_fold": [...], "n_boot": 2000, "level": 0.95, "unit": "group"}},
        {"method": "facenet-vggface2", "status": "unavailable", "reason": "..."}],
     "comparisons": {"best": "lpq", "against": [{"method": "phog", "accuracy": {...},
                     "distinguishable": true}, ...]}}

A result that carries its test predictions (``MethodResult.predictions``, one
:class:`fertool.evaluate.uncertainty.FoldPredictions` per test part; never written) gets its
``uncertainty`` from :func:`fertool.evaluate.uncertainty.bootstrap_scores` when the report is
written: the mean over the test parts with a 95% interval from a bootstrap over groups (movies,
subjects), not images.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fertool.core.io import printable, write_json, write_text
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
    #: Group-bootstrap intervals (:func:`fertool.evaluate.uncertainty.bootstrap_scores`).
    uncertainty: dict[str, Any] = field(default_factory=dict)
    #: Test predictions per test part (FoldPredictions); kept in memory, never written.
    predictions: list | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        if self.status == "ok":
            d.pop("reason")
        if not self.uncertainty:
            d.pop("uncertainty")
        return d

    def interval(self, key: str = "accuracy") -> tuple[float, float] | None:
        u = self.uncertainty.get(key) or {}
        if u.get("low") is None:
            return None
        return u["low"], u["high"]


def add_uncertainty(results: list[MethodResult], *, n_boot: int | None = None,
                    seed: int = 0) -> None:
    """Fill ``uncertainty`` of every result that has predictions and none yet (in place)."""
    from fertool.evaluate.uncertainty import N_BOOT, bootstrap_scores

    for r in results:
        if r.status == "ok" and r.predictions and not r.uncertainty:
            r.uncertainty = bootstrap_scores(r.predictions, len(LABELS), labels=LABELS,
                                             n_boot=n_boot or N_BOOT, seed=seed)


def command_line() -> str:
    """The command that is running, quoted so that it can be pasted into a shell."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("fertool", "__main__.py")):
        argv[0] = "fertool"
    return " ".join(shlex.quote(a) for a in argv)


def md_code(value) -> str:
    """``value`` as Markdown inline code that nothing in it can break: control characters
    escaped visibly (:func:`fertool.core.io.printable`), fenced by more backticks than it holds."""
    import re

    from fertool.core.io import printable

    text = printable(str(value))
    fence = "`" * (1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(u: dict | None, signed: bool = False) -> str:
    """``31.2 [28.0, 34.5]`` from ``{"mean", "low", "high"}`` (fractions), in %."""
    if not u or u.get("mean") is None:
        return "-"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    mean = fmt.format(100 * u["mean"])
    if u.get("low") is None:
        return mean
    return f"{mean} [{fmt.format(100 * u['low'])}, {fmt.format(100 * u['high'])}]"


def _vs_best(r: MethodResult, comparisons: dict | None) -> str:
    if not comparisons or r.status != "ok":
        return "-"
    if r.method == comparisons.get("best"):
        return "best"
    for c in comparisons.get("against", []):
        if c["method"] == r.method:
            return _ci(c["accuracy"], signed=True) + ("" if c["distinguishable"] else " ~")
    return "-"


def markdown_table(results: list[MethodResult], labels: tuple[str, ...] = LABELS,
                   comparisons: dict | None = None) -> str:
    """One row per method: accuracy and macro-F1 (mean over the test parts, with the 95%
    group-bootstrap interval when known, and the std over the parts), per-class recall (all in %);
    with ``comparisons``, the paired difference to the best method (``~``: not distinguishable).
    """
    present = [c for c in labels if any(c in r.per_class_recall for r in results)] or list(labels)
    head = ["method", "accuracy % [95% CI]", "std over parts", "macro-F1 % [95% CI]"]
    if comparisons:
        head.append("best minus this, points [95% CI]")
    head += [f"{c[:4]} rec." for c in present]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.status != "ok":
            row = [r.method, f"not run: {r.reason}", "-", "-"] + ["-"] * (len(head) - 4)
        else:
            acc = r.uncertainty.get("accuracy") or {"mean": r.accuracy_mean}
            f1 = r.uncertainty.get("macro_f1") or {"mean": r.macro_f1}
            std = _pct(r.accuracy_std) if r.n_folds > 1 else "-"
            row = [r.method, _ci(acc), f"{std} ({r.n_folds})", _ci(f1)]
            if comparisons:
                row.append(_vs_best(r, comparisons))
            row += [_pct(r.per_class_recall.get(c)) for c in present]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def recall_table(results: list[MethodResult], labels: tuple[str, ...] = LABELS) -> str:
    """Per-class recall with its 95% group-bootstrap interval, one row per method (in %)."""
    rows = [r for r in results if r.status == "ok" and r.uncertainty.get("per_class_recall")]
    present = [c for c in labels if any(c in r.uncertainty["per_class_recall"] for r in rows)]
    lines = ["| method | " + " | ".join(present) + " |", "|" + "---|" * (len(present) + 1)]
    for r in rows:
        rec = r.uncertainty["per_class_recall"]
        lines.append(f"| {r.method} | " + " | ".join(_ci(rec.get(c)) for c in present) + " |")
    return "\n".join(lines)


def fold_table(results: list[MethodResult]) -> str:
    """Accuracy of every test part, one row per method (in %)."""
    splits: list[str] = []
    for r in results:
        for f in r.folds:
            if f.get("split") not in splits:
                splits.append(f.get("split"))
    short = [s.split("-seed", 1)[-1].replace("-fold", "/") if "-seed" in s else s
             for s in splits]
    lines = ["| method (seed/fold) | " + " | ".join(short) + " |",
             "|" + "---|" * (len(splits) + 1)]
    for r in results:
        if r.status != "ok":
            continue
        acc = {f.get("split"): f.get("accuracy") for f in r.folds}
        lines.append(f"| {r.method} | " + " | ".join(_pct(acc.get(s)) for s in splits) + " |")
    return "\n".join(lines)


def comparisons_table(comparisons: dict) -> str:
    """Paired differences best - other on the same test images, with their intervals."""
    best = comparisons["best"]
    head = (f"| {best} minus | on test parts | accuracy, points [95% CI] | "
            "macro-F1, points [95% CI] | distinguishable |")
    lines = [head, "|---|---|---|---|---|"]
    for c in comparisons["against"]:
        lines.append(
            f"| {c['method']} | {c['n_parts']} | {_ci(c['accuracy'], True)} | "
            f"{_ci(c['macro_f1'], True)} | {'yes' if c['distinguishable'] else 'no'} |"
        )
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
    comparisons: dict | None = None,
    n_boot: int | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into ``out_dir`` (atomically).

    ``meta`` holds everything needed to reproduce the table (seeds, splits, weights hash,
    versions, command); it is written to both files. ``images`` maps a caption to a file name
    relative to ``out_dir`` (confusion matrices, curves) for the Markdown. Results with
    predictions get their group-bootstrap intervals here (:func:`add_uncertainty`, ``n_boot``
    replicates); ``comparisons`` (paired differences to the best method, as
    ``fertool.compare.paired_comparisons`` makes them) gets its own table.
    """
    out = Path(out_dir)
    add_uncertainty(results, n_boot=n_boot)
    payload = {
        "title": title,
        "protocol": protocol,
        "split_hash": split_hash,
        "results": [r.to_dict() for r in results],
        **({"comparisons": comparisons} if comparisons else {}),
        **meta,
    }
    json_path = write_json(out / "report.json", payload)

    md = [f"# {printable(title)}", "", markdown_table(results, comparisons=comparisons), ""]
    boot = next((r.uncertainty for r in results if r.uncertainty), None)
    if boot:
        md.append(
            f"Accuracy and macro-F1: mean over the test parts; in brackets the {boot['level']:.0%} "
            f"interval of a bootstrap that resamples the {boot['n_groups']} groups (movies or "
            f"subjects) of the test parts, not images ({boot['n_boot']} replicates, seed "
            f"{boot['seed']}). `std over parts`: sample standard deviation over the test parts "
            "(their number in brackets)."
            + (" `best minus this`: paired difference of the best method and this one on the same "
               "test images, same bootstrap; `~`: the interval holds 0, not distinguishable from "
               "the best." if comparisons else "")
        )
        md.append("")
    if notes:
        md += [f"- {printable(n)}" for n in notes] + [""]
    if comparisons and comparisons.get("against"):
        md += ["## Paired differences to the best method", "", comparisons_table(comparisons), ""]
    if boot:
        md += ["## Per-class recall, 95% intervals", "", recall_table(results), ""]
    if any(len(r.folds) > 1 for r in results if r.status == "ok"):
        md += ["## Accuracy of each test part", "", fold_table(results), ""]
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
        md.append(f"- {key}: {md_code(value)}")
    if "versions" in meta:
        md.append("- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    if images:
        md += ["", "## Figures", ""]
        md += [f"**{caption}**\n\n![{caption}]({name})\n" for caption, name in images.items()]
    md_path = write_text(out / "report.md", "\n".join(md) + "\n")
    from fertool.evaluate.html import write_html

    write_html(md_path)  # report.html: the same, self-contained (figures inlined)
    return md_path, json_path
