"""torchalign: image registration on PyTorch, in world coordinates.

``import torchalign as ta`` is light: the names below (and ``__version__``) are imported on first
use, so that the command line's start-up and torch-free submodules (``torchalign.errors``) import
neither torch nor ``importlib.metadata``.
"""
from importlib import import_module
from typing import Any

# public name -> module that defines it
_LAZY = {
    "Grid": "torchalign.grid",
    "Image": "torchalign.image",
    "read_image": "torchalign.io",
    "write_image": "torchalign.io",
    "register": "torchalign.api",
    "evaluate": "torchalign.api",
    "Registration": "torchalign.api",
}

__all__ = [*_LAZY, "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchalign")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'torchalign' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
