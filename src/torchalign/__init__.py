"""torchalign: image registration on PyTorch, in world coordinates.

``Grid`` and ``Image`` are loaded on first access, so that importing a torch-free submodule (the
command line's start-up, ``torchalign.errors``) does not import torch.
"""
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("torchalign")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["Grid", "Image", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Grid":
        from .grid import Grid

        return Grid
    if name == "Image":
        from .image import Image

        return Image
    raise AttributeError(f"module 'torchalign' has no attribute {name!r}")
