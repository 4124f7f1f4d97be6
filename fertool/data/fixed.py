"""The ``fixed`` protocol: datasets that come with their split (train / validation / test).

Which part an image belongs to is read from its path or from a CSV:

``--split-regex 'Training_=train,PublicTest_=val,PrivateTest_=test'``
    rules ``REGEX=PART`` (PART: ``train``, ``val`` or ``test``), separated by commas (a comma
    inside a regular expression stays in it: a piece only ends a rule when it ends with
    ``=train``, ``=val`` or ``=test``). Each regular expression is searched in the image's path
    relative to the dataset folder (``/`` separators); the first rule that matches decides.
``--split-regex fer2013``
    a preset: FER2013's usage prefixes (:data:`PRESETS`).
``--split-csv FILE``
    a CSV with a header holding ``path`` and ``part`` (or ``usage``, as FER2013's
    ``manifest.csv``) columns; paths relative to the dataset folder. Part names: ``train``,
    ``val``, ``test`` and the synonyms of :data:`PART_SYNONYMS`.

Every image must get a part (an image that no rule or row names is an error that lists a few),
and train and test must not be empty; the validation part may be. The split's hash covers the
three parts' exact membership, like the other protocols' hashes.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fertool.core.errors import DatasetError

__all__ = ["PARTS", "PRESETS", "FixedSpec", "fixed_parts", "parse_rules", "part_of_samples"]

PARTS = ("train", "val", "test")
#: Other spellings accepted for the parts (lower case).
PART_SYNONYMS = {
    "training": "train", "validation": "val", "valid": "val", "dev": "val",
    "publictest": "val", "privatetest": "test", "testing": "test",
}
#: Named rule sets for ``--split-regex``.
PRESETS = {
    "fer2013": "Training_=train,PublicTest_=val,PrivateTest_=test",
}


@dataclass(frozen=True)
class FixedSpec:
    """Where the parts come from: ``regex`` rules (or a preset name) or a ``csv`` file."""

    regex: str | None = None
    csv: str | None = None

    def __post_init__(self) -> None:
        if (self.regex is None) == (self.csv is None):
            raise ValueError(
                "the fixed protocol needs exactly one of `split_regex` (rules REGEX=PART or a "
                f"preset: {', '.join(PRESETS)}) and `split_csv` (a CSV of path,part)"
            )
        if self.regex is not None:
            parse_rules(self.regex)  # fail now, naming the bad rule

    def describe(self) -> str:
        if self.csv is not None:
            return f"parts from {self.csv}"
        rules = ", ".join(f"{rx!r} -> {part}" for rx, part in parse_rules(self.regex))
        preset = f"preset {self.regex}: " if self.regex in PRESETS else ""
        return f"parts from the path ({preset}{rules})"


def _part_name(text: str, where: str) -> str:
    t = text.strip().lower()
    part = PART_SYNONYMS.get(t, t)
    if part not in PARTS:
        raise DatasetError(f"{where}: unknown part {text!r}; expected one of {', '.join(PARTS)}")
    return part


def parse_rules(text: str) -> list[tuple[str, str]]:
    """``'A=train,B=val,C=test'`` (or a preset name) -> ``[(regex, part), ...]``.

    Raises
    ------
    ValueError
        For a rule without ``=PART``, an unknown part, or a regular expression that does not
        compile.
    """
    text = PRESETS.get(text.strip().lower(), text)
    rules, piece = [], ""
    ends = re.compile(r"=\s*(\w+)\s*$")
    for token in text.split(","):
        piece = f"{piece},{token}" if piece else token
        m = ends.search(piece)
        if m and PART_SYNONYMS.get(m.group(1).lower(), m.group(1).lower()) in PARTS:
            rules.append((piece[:m.start()].strip(), m.group(1)))
            piece = ""
    if piece.strip() or not rules:
        raise ValueError(
            f"split_regex {text!r}: expected rules REGEX=PART separated by commas (PART: "
            f"{', '.join(PARTS)}), for example 'Training_=train,PublicTest_=val,"
            f"PrivateTest_=test', or a preset ({', '.join(PRESETS)})"
        )
    out = []
    for rx, part in rules:
        try:
            re.compile(rx)
        except re.error as exc:
            raise ValueError(f"split_regex: {rx!r} is not a regular expression ({exc})") from None
        out.append((rx, _part_name(part, "split_regex")))
    return out


def _read_csv(path: str) -> dict[str, str]:
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            reader.fieldnames = fields
            col = "part" if "part" in fields else "usage" if "usage" in fields else None
            if "path" not in fields or col is None:
                raise DatasetError(
                    f"split_csv {p}: expected a header with `path` and `part` (or `usage`) "
                    f"columns, got {', '.join(fields) or 'none'}"
                )
            return {Path(row["path"].strip()).as_posix(): _part_name(row[col], f"{p} line "
                    f"{reader.line_num}") for row in reader if row.get("path")}
    except OSError as exc:
        raise DatasetError(f"split_csv {p}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"split_csv {p}: not a readable CSV ({exc})") from None


def part_of_samples(manifest: Any, spec: FixedSpec) -> np.ndarray:
    """The part (``train``/``val``/``test``) of every sample of ``manifest``.

    Raises
    ------
    DatasetError
        When some image gets no part (the message counts them and names up to five).
    """
    rel = [manifest.relpath(s.path) for s in manifest.samples]
    if spec.csv is not None:
        table = _read_csv(spec.csv)
        parts = [table.get(r, table.get(Path(s.path).as_posix(), "")) for r, s in
                 zip(rel, manifest.samples)]
        how = f"split_csv {spec.csv}"
    else:
        rules = [(re.compile(rx), part) for rx, part in parse_rules(spec.regex)]
        parts = [next((part for rx, part in rules if rx.search(r)), "") for r in rel]
        how = f"split_regex {spec.regex!r}"
    missing = [r for r, p in zip(rel, parts) if not p]
    if missing:
        raise DatasetError(
            f"{how} gives no part to {len(missing)} of {len(rel)} images (for example "
            f"{', '.join(missing[:5])}); add a rule or a row for them"
        )
    return np.array(parts)


def _hash(manifest: Any, parts: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(b"fixed")
    for tag, idx in parts.items():
        h.update(f"\n[{tag}]\n".encode())
        h.update("\n".join(sorted(manifest.relpath(manifest.samples[i].path) for i in idx))
                 .encode())
    return h.hexdigest()[:16]


def fixed_parts(manifest: Any, spec: FixedSpec) -> tuple[dict[str, np.ndarray], str]:
    """Indices of the ``train``, ``val`` and ``test`` parts (``val`` may be empty) and the hash
    of their membership; :func:`fertool.data.splits.make_splits` makes them the protocol's one
    :class:`~fertool.data.splits.Split` (seed 0, fold 0, ``val`` set).

    Raises
    ------
    DatasetError
        An image without a part (see :func:`part_of_samples`), or an empty train or test part.
    """
    part = part_of_samples(manifest, spec)
    idx = {p: np.flatnonzero(part == p) for p in PARTS}
    for p in ("train", "test"):
        if len(idx[p]) == 0:
            raise DatasetError(f"the fixed protocol ({spec.describe()}) puts no image in the "
                               f"{p} part; every protocol needs a train and a test part")
    return idx, _hash(manifest, idx)
