"""Faces linked across the frames of a video by box overlap (IoU), one stable ``track`` id each.

::

    tracker = IouTracker()
    for boxes in boxes_per_frame:            # (n, 4) x1, y1, x2, y2 per sampled frame
        ids = tracker.update(boxes)          # one int per box, in the boxes' order

Greedy matching: the pairs (live track, new box) are taken by decreasing IoU; a pair whose IoU is
at least ``min_iou`` continues the track, every box left over starts a new track (ids 0, 1, ...
in order of appearance). A track not matched for more than ``max_gap`` updates ends; a face that
comes back after that gets a new id. Between two sampled frames a face must still overlap its
last box, so at a low ``--fps`` a fast face may start a new track: the tracker is deliberately
simple (no motion model, no appearance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["IouTracker", "iou_matrix"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (n, 4) with every box of ``b`` (m, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    missed: int = 0


@dataclass
class IouTracker:
    """Greedy IoU tracker (see the module docstring).

    Parameters
    ----------
    min_iou : float
        Least overlap with a track's last box to continue it.
    max_gap : int
        Updates a track may go unmatched before it ends.
    """

    min_iou: float = 0.3
    max_gap: int = 5
    next_id: int = 0
    tracks: list[_Track] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.min_iou <= 1:
            raise ValueError(f"min_iou={self.min_iou}: expected a number in (0, 1]")
        if self.max_gap < 0:
            raise ValueError(f"max_gap={self.max_gap}: expected at least 0")

    def restore(self, boxes, ids, next_id: int | None = None) -> None:
        """Start from known tracks (resuming a video): their last ``boxes`` and ``ids``."""
        self.tracks = [_Track(int(i), np.asarray(b, np.float64)) for b, i in zip(boxes, ids)]
        known = [t.id + 1 for t in self.tracks]
        self.next_id = max([self.next_id, *known] + ([next_id] if next_id is not None else []))

    def update(self, boxes) -> list[int]:
        """Track ids for one frame's ``boxes`` ((n, 4); n may be 0)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes)
        matched: set[int] = set()
        if self.tracks and len(boxes):
            iou = iou_matrix(np.stack([t.box for t in self.tracks]), boxes)
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
            for ti, bi in order:
                if iou[ti, bi] < self.min_iou:
                    break
                if ti in matched or ids[bi] >= 0:
                    continue
                matched.add(int(ti))
                ids[bi] = self.tracks[ti].id
                self.tracks[ti].box = boxes[bi]
                self.tracks[ti].missed = 0
        kept = []
        for k, t in enumerate(self.tracks):
            if k not in matched:
                t.missed += 1
            if t.missed <= self.max_gap:
                kept.append(t)
        for bi in range(len(boxes)):
            if ids[bi] < 0:
                ids[bi] = self.next_id
                kept.append(_Track(self.next_id, boxes[bi]))
                self.next_id += 1
        self.tracks = kept
        return ids
