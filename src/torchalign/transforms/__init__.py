"""Spatial transforms: ``nn.Module``s mapping fixed-space world points to moving-space world points."""
from .base import Compose, SpatialTransform
from .bspline import BSplineFFD
from .dense import DenseDisplacement
from .linear import LinearTransform, MatrixTransform
from .velocity import BSplineVelocity, StationaryVelocity, SymmetricVelocity

__all__ = [
    "BSplineFFD", "BSplineVelocity", "Compose", "DenseDisplacement", "LinearTransform", "MatrixTransform",
    "SpatialTransform", "StationaryVelocity", "SymmetricVelocity",
]
