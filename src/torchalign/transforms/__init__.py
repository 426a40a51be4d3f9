"""Spatial transforms: ``nn.Module``s mapping fixed-space world points to moving-space world points."""
from .base import Compose, SpatialTransform

__all__ = ["Compose", "SpatialTransform"]
