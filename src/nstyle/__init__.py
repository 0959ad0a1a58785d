"""nstyle: neural style transfer after Gatys, Ecker and Bethge (2015), in PyTorch.

>>> from nstyle import stylize, Config  # doctest: +SKIP
>>> image = stylize("photo.jpg", ["painting.jpg"], Config(size=512))  # doctest: +SKIP
"""
from .config import Config, ConfigError, preset
from .image import ImageError, load_image, save_image
from .models import LayerError, WeightsError
from .optimize import Diverged, Interrupted, Progress, stylize

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "preset", "ImageError", "load_image", "save_image", "LayerError",
           "WeightsError", "Diverged", "Interrupted", "Progress", "stylize", "__version__"]
