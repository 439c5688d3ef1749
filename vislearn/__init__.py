"""vislearn: the helper library of an interactive course in modern computer vision.

Notebooks import from here; see README.md for what lives where.
"""

from .config import ParameterError, Setup, setup
from .results import record, save_figure

__version__ = "0.1.0"


def __getattr__(name: str):
    # from_timm pulls in timm (seconds to import): load it on first use, so `vislearn --help` is quick
    if name == "from_timm":
        from .models import from_timm

        return from_timm
    raise AttributeError(f"module 'vislearn' has no attribute {name!r}")


__all__ = ["ParameterError", "Setup", "setup", "from_timm", "record", "save_figure", "__version__"]
