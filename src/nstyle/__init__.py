"""nstyle: neural style transfer after Gatys, Ecker and Bethge (2015), in PyTorch.

>>> from nstyle import stylize, Config  # doctest: +SKIP
>>> image = stylize("photo.jpg", ["painting.jpg"], Config(size=512))  # doctest: +SKIP

``Stylizer`` keeps its network between runs; ``jobs.run_job`` is the whole job a front end
runs (paths checked, weights, memory, snapshots, metadata, log).
"""
__version__ = "0.1.0"  # before the imports: jobs.py reads it

from .config import Config, preset
from .engine import Stylizer, stylize
from .errors import Cancelled, ConfigError, Diverged, ImageError, Interrupted, LayerError, WeightsError
from .image import load_image, save_image
from .loop import Progress
from .objective import Term

__all__ = ["Config", "ConfigError", "preset", "ImageError", "load_image", "save_image", "LayerError",
           "WeightsError", "Diverged", "Interrupted", "Cancelled", "Progress", "Term", "Stylizer", "stylize",
           "__version__"]
