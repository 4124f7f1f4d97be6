"""The face settings (:class:`FaceConfig`): one typed object from the CLI to the cache key.

Standard library only, so that the model's preprocessing contract and ``fertool --help`` can
import it without numpy, torch or a detector.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields

from fertool.faces.detectors import (
    DEFAULT_DETECTOR,
    UNNAMED_DETECTOR,
    available,
    detector_version,
)

__all__ = ["FACES", "MIN_FACE", "NO_FACE", "POLICIES", "FaceConfig"]

log = logging.getLogger(__name__)

POLICIES = ("largest", "most-confident", "center")
NO_FACE = ("center", "skip")
#: Where faces come from: found by the detector, or the whole image is the face crop.
FACES = ("detect", "crop")
#: Version of ``faces="crop"`` (whole image resized, Pillow bilinear); bump when its output
#: changes.
CROP_VERSION = "whole-image-bilinear-v1"
#: The smallest ``min_face_size`` (MTCNN cannot look below its 12-pixel first-stage window).
MIN_FACE = 12


@dataclass(frozen=True)
class FaceConfig:
    """Settings of the face stage.

    Attributes
    ----------
    size : int
        Side of the output crop (RGB uint8, ``size`` x ``size``).
    margin : float
        Context around the face as a fraction: 0 frames the face like facenet-pytorch's tight
        MTCNN crop (a square of the detector box's area); the face is shrunk by ``1/(1+margin)``.
        At the default 0.1 the eyes are level at 36% of the height and 35% of the width apart
        (see :mod:`fertool.faces.align` for the full template).
    policy : {"largest", "most-confident", "center"}
        Which face is the labelled one when there are several: largest box, highest detector
        probability, or box centre nearest the image centre.
    no_face : {"center", "skip"}
        Without a face: a centre crop (status ``fallback``) or no crop (status ``no_face``).
    detect_scale : float
        Detect on a copy downscaled by this factor (0.1 to 1); boxes and landmarks are mapped
        back to full resolution and the crop is taken from the full-resolution image.
    align : bool
        Rotate and scale so the five landmarks fit the template (eyes level). When false, the
        box is cropped without rotation at the same scale.
    min_face_size : int
        Smallest face to look for, in full-resolution pixels (MTCNN cannot go below 12 pixels of
        the image it is given, so with ``detect_scale < 1`` the effective minimum is
        ``max(min_face_size, 12 / detect_scale)``).
    detector : str
        Name of the face detector in :mod:`fertool.faces.detectors` (default ``"mtcnn"``). It is
        written into :meth:`to_dict` and the keys only when it is not the default, so the keys
        of default settings are those of fertool versions without this field.
    faces : {"detect", "crop"}
        ``detect`` (default): the detector finds the faces. ``crop``: every image already is a
        face crop (FER2013, CK+-style crops, a user's aligned faces): the whole image is resized
        to ``size`` x ``size``, no detector runs, and the record's status is ``crop``. Grey
        images become three equal channels. Written into :meth:`to_dict` and the keys only when
        not the default, as ``detector`` is.
    """

    size: int = 160
    margin: float = 0.1
    policy: str = "largest"
    no_face: str = "center"
    detect_scale: float = 1.0
    align: bool = True
    min_face_size: int = 20
    detector: str = DEFAULT_DETECTOR
    faces: str = "detect"

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 16:
            raise ValueError(f"size must be an integer of at least 16 pixels, got {self.size!r}")
        if not -0.5 < float(self.margin) <= 2.0:
            raise ValueError(f"margin must be in (-0.5, 2], got {self.margin!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.no_face not in NO_FACE:
            raise ValueError(f"no_face must be one of {', '.join(NO_FACE)}, got {self.no_face!r}")
        if not 0.1 <= float(self.detect_scale) <= 1.0:
            raise ValueError(f"detect_scale must be in [0.1, 1], got {self.detect_scale!r}")
        if int(self.min_face_size) != self.min_face_size or self.min_face_size < MIN_FACE:
            raise ValueError(
                f"min_face_size must be an integer of at least {MIN_FACE}, "
                f"got {self.min_face_size!r}"
            )
        if self.detector not in available():
            raise ValueError(
                f"detector must be one of {', '.join(available())}, got {self.detector!r}"
            )
        if self.faces not in FACES:
            raise ValueError(f"faces must be one of {', '.join(FACES)}, got {self.faces!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the settings (``detector`` only when not MTCNN, the detector
        of settings that name none; ``faces`` only when not ``detect``)."""
        d = asdict(self)
        if d["detector"] == UNNAMED_DETECTOR:
            del d["detector"]
        if d["faces"] == "detect":
            del d["faces"]
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> FaceConfig:
        """Inverse of :meth:`to_dict` (None or ``{}``: the defaults, except that settings without
        a ``detector`` mean MTCNN, :data:`~fertool.faces.detectors.UNNAMED_DETECTOR`, even if the
        default detector changes); unknown keys (a newer fertool) are ignored with a warning."""
        d = d or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            log.warning("ignoring unknown face settings: %s", ", ".join(unknown))
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs.setdefault("detector", UNNAMED_DETECTOR)
        return cls(**kwargs)

    def key(self) -> str:
        """Stable short hash of all settings and the algorithm version (identifies the crops
        a downstream stage receives, including which face is chosen)."""
        return _hash({"settings": self.to_dict(), "algorithm": self.algorithm_version()})

    def detection_settings(self) -> dict:
        """The settings that change detection and crops: all but ``policy`` and ``no_face``,
        which only choose among the results."""
        d = self.to_dict()
        del d["policy"], d["no_face"]
        return d

    def detection_key(self) -> str:
        """Hash of :meth:`detection_settings` and the algorithm version: the face cache's key."""
        return _hash({"settings": self.detection_settings(), "algorithm": self.algorithm_version()})

    def algorithm_version(self) -> str:
        """The detector's and alignment's version string (part of every key); in ``crop`` mode
        the version of the whole-image resize."""
        if self.faces == "crop":
            return CROP_VERSION
        return detector_version(self.detector)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
