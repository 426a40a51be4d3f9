"""Reading and writing images, transforms and point sets.

``read_image`` and ``write_image`` are loaded on first access, so that torch-free modules of the
package (``io.lps``, ``io.folders``) can be imported without torch.
"""
from typing import Any

__all__ = ["read_image", "write_image"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import images

        return getattr(images, name)
    raise AttributeError(f"module 'torchalign.io' has no attribute {name!r}")
