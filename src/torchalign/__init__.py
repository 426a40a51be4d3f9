"""torchalign: image registration on PyTorch, in world coordinates.

``Grid``, ``Image`` and ``__version__`` are loaded on first access, so that importing a torch-free
submodule (the command line's start-up, ``torchalign.errors``) imports neither torch nor
``importlib.metadata``.
"""
from typing import Any

__all__ = ["Grid", "Image", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Grid":
        from .grid import Grid

        return Grid
    if name == "Image":
        from .image import Image

        return Image
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("torchalign")
        except PackageNotFoundError:  # running from a source tree without installation
            return "0.0.0"
    raise AttributeError(f"module 'torchalign' has no attribute {name!r}")
