"""vislearn: the helper library of an interactive course in modern computer vision.

Notebooks import from here; see README.md for what lives where.
"""

from .config import ParameterError, Setup, setup
from .models import from_timm
from .results import record, save_figure

__version__ = "0.1.0"
__all__ = ["ParameterError", "Setup", "setup", "from_timm", "record", "save_figure", "__version__"]
