"""torchalign: image registration on PyTorch, in world coordinates."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("torchalign")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from .grid import Grid  # noqa: E402
from .image import Image  # noqa: E402

__all__ = ["Grid", "Image", "__version__"]
