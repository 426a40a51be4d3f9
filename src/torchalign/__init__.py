"""torchalign: image registration on PyTorch, in world coordinates.

``import torchalign as ta`` is light: the names below are imported on first use, so that tools which
only need the package metadata (the command line's ``--help``) do not load torch.
"""
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("torchalign")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchalign' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
