"""Reading and writing images, transforms and point sets."""
from .images import read_image, write_image

__all__ = ["read_image", "write_image"]
