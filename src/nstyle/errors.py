"""Every exception nstyle raises on purpose, in one leaf module (it imports nothing of nstyle).

The ``...Error`` classes carry one line a user can act on; front ends print it as it is.
``Interrupted`` (Ctrl-C), ``Cancelled`` (a cancel flag) and ``Diverged`` carry the image as
it was, so no work is lost.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ConfigError(ValueError):
    """An option has an impossible value (a one-line, user-facing message)."""


class ImageError(ValueError):
    """A user-facing, one-line error about reading or writing an image file."""


class WeightsError(RuntimeError):
    """Weights are missing, corrupt or of the wrong layout (a one-line, user-facing message)."""


class VideoError(ValueError):
    """A user-facing, one-line error about reading or writing a video file."""


class LayerError(ValueError):
    """An unknown layer name (a one-line, user-facing message with a suggestion)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; carries the image as it was (3, H, W) at the output size, and
    the last ``Progress`` (None before the first iteration)."""

    def __init__(self, image: "torch.Tensor", progress):  # progress: loop.Progress | None
        super().__init__("interrupted")
        self.image = image
        self.progress = progress


class Cancelled(Interrupted):
    """The run's ``cancel`` flag was set; otherwise exactly as ``Interrupted``."""


class Diverged(RuntimeError):
    """The loss became NaN or infinite; ``image`` is the last image with a finite loss."""

    def __init__(self, message: str, image: "torch.Tensor"):
        super().__init__(message)
        self.image = image
