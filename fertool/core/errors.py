"""Exception types. Every error a user can act on derives from :class:`FertoolError`."""


class FertoolError(Exception):
    """Base class: a problem the user can fix (bad file, missing weights, bad option)."""


class ImageReadError(FertoolError):
    """An image file could not be decoded. The message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsUnavailableError(FertoolError):
    """Pretrained weights are neither cached nor downloadable."""


class DatasetError(FertoolError):
    """A dataset folder is missing, empty or laid out in a way fertool cannot read."""


class WeightsFormatError(FertoolError):
    """A weights file (state dict, checkpoint or TensorFlow graph) does not fit the model."""
