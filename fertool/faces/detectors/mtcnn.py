"""MTCNN (facenet-pytorch, its weights ship inside the package) as a face detector."""

from __future__ import annotations

import numpy as np

#: MTCNN cannot look for faces smaller than its 12-pixel first-stage window.
MTCNN_MIN_FACE = 12


class MTCNNDetector:
    """``facenet_pytorch.MTCNN(keep_all=True, select_largest=True)``: every face, largest first.

    Parameters
    ----------
    min_face : int
        Smallest face to look for, in pixels of the image given to :meth:`detect` (at least 12).
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default CUDA when available, else CPU.
    """

    def __init__(self, min_face: int = 20, device: str | None = None) -> None:
        import torch
        from facenet_pytorch import MTCNN

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.min_face = max(MTCNN_MIN_FACE, int(min_face))
        self._mtcnn = MTCNN(
            keep_all=True,
            select_largest=True,
            post_process=False,
            min_face_size=self.min_face,
            device=device,
        )

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (n, 4), scores (n,), landmarks (n, 5, 2), float64, in ``image``'s pixels."""
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        if min(image.shape[:2]) < self.min_face:
            return empty  # smaller than the smallest face MTCNN looks for (it would fail)
        boxes, probs, points = self._mtcnn.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return empty
        return (
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(probs, dtype=np.float64).reshape(-1),
            np.asarray(points, dtype=np.float64).reshape(-1, 5, 2),
        )
