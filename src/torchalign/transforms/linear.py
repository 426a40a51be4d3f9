"""Linear transforms in world space: translation, rigid, similarity, affine, and a fixed matrix.

``LinearTransform`` composes learnable parameters on top of a fixed ``base`` matrix (an
initialisation or a previous stage): ``T(x) = base(P(x))`` with
``P(x) = R S K (x - c) + c + t`` about the centre ``c`` (fixed-space world mm).
Parameters live in physical space so a pyramid never rescales them, and the rotation, scale and
shear parameters are expressed in millimetres of displacement at ``radius`` from the centre
(angle = p / radius), so one learning rate in mm suits them all.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..grid import Grid, apply_matrix
from .base import SpatialTransform

MODELS = ("translation", "rigid", "similarity", "affine")
GROUPS = {
    "translation": ("translation",),
    "rigid": ("translation", "rotation"),
    "similarity": ("translation", "rotation", "scale"),
    "affine": ("translation", "rotation", "scale", "shear"),
}


def rotation_matrix(rot: Tensor, ndim: int) -> Tensor:
    """Rotation matrices ``(B, D, D)`` from angles ``(B, 1)`` (2-D) or rotation vectors ``(B, 3)`` (3-D)."""
    if ndim == 2:
        c, s = torch.cos(rot[:, 0]), torch.sin(rot[:, 0])
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    # Rodrigues' formula, smooth at zero through the series of sin(t)/t and (1-cos t)/t^2.
    theta2 = (rot * rot).sum(-1, keepdim=True).unsqueeze(-1)
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    x, y, z = rot.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                     torch.stack([-y, x, zero], -1)], -2)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def _homogeneous(linear: Tensor, offset: Tensor) -> Tensor:
    b, d = offset.shape
    m = torch.zeros(b, d + 1, d + 1, dtype=linear.dtype, device=linear.device)
    m[:, :d, :d] = linear
    m[:, :d, d] = offset
    m[:, d, d] = 1
    return m


class MatrixTransform(SpatialTransform):
    """A fixed homogeneous world matrix ``(B, D+1, D+1)`` (no learnable parameters)."""

    def __init__(self, matrix: Tensor | np.ndarray):
        m = matrix.to(torch.float64) if isinstance(matrix, Tensor) else torch.as_tensor(matrix, dtype=torch.float64)
        if m.ndim == 2:
            m = m.unsqueeze(0)
        d = m.shape[-1] - 1
        if m.shape[-2:] != (d + 1, d + 1) or d not in (2, 3):
            raise InputError(f"a linear transform needs a (D+1, D+1) matrix with D in (2, 3), got {tuple(m.shape)}")
        super().__init__(d, m.shape[0])
        self.register_buffer("_matrix", m)

    def matrix(self) -> Tensor:
        return self._matrix

    def linear_matrix(self) -> Tensor:
        return self._matrix

    def forward(self, points: Tensor) -> Tensor:
        return _apply(self.matrix(), points)

    def inverse(self) -> MatrixTransform:
        return MatrixTransform(torch.linalg.inv(self._matrix))

    def select(self, index: int) -> MatrixTransform:
        return MatrixTransform(self._matrix[index:index + 1])

    def learnable_copy(self, grid: Grid) -> LinearTransform:
        """An affine :class:`LinearTransform` on top of this matrix, about ``grid``'s centre."""
        center, radius = linear_center_radius(grid)
        return LinearTransform(self.ndim, "affine", center=torch.as_tensor(center, device=self._matrix.device),
                               radius=radius, base=self._matrix.detach().clone(), batch=self.batch)


def _apply(matrix: Tensor, points: Tensor) -> Tensor:
    m = matrix.to(points.dtype)
    if m.shape[0] == 1:
        return apply_matrix(m[0], points)
    if points.shape[0] == 1 and m.shape[0] > 1:
        points = points.expand(m.shape[0], *points.shape[1:])
    return apply_matrix(m, points)


class LinearTransform(SpatialTransform):
    """Learnable translation / rigid / similarity / affine transform on top of a fixed ``base``.

    Args:
        ndim: 2 or 3.
        model: one of ``translation, rigid, similarity, affine``.
        center: ``(D,)`` or ``(B, D)`` rotation centre in fixed-space world mm.
        radius: mm; rotation/scale/shear parameters are displacements at this distance.
        base: ``(D+1, D+1)`` or ``(B, D+1, D+1)`` initial world matrix (moving_from_fixed).
        freeze: parameter groups kept fixed (``translation, rotation, scale, shear``).
        batch: number of independent transforms.
    """

    def __init__(self, ndim: int, model: str = "affine", center: Sequence[float] | Tensor | None = None,
                 radius: float = 50.0, base: np.ndarray | Tensor | None = None,
                 freeze: Iterable[str] = (), batch: int = 1):
        if model not in MODELS:
            raise InputError(f"unknown linear model {model!r}; expected one of {', '.join(MODELS)}")
        if radius <= 0:
            raise InputError(f"radius must be positive, got {radius}")
        super().__init__(ndim, batch)
        self.model = model
        self.radius = float(radius)
        freeze = set(freeze)
        unknown = freeze - set(GROUPS["affine"])
        if unknown:
            raise InputError(f"cannot freeze {sorted(unknown)}; groups are translation, rotation, scale, shear")
        d = ndim
        device = base.device if isinstance(base, Tensor) else center.device if isinstance(center, Tensor) else None
        c = torch.zeros(batch, d, dtype=torch.float64, device=device) if center is None else \
            torch.as_tensor(center, dtype=torch.float64, device=device).reshape(-1, d).expand(batch, d).clone()
        self.register_buffer("center", c)
        b = torch.eye(d + 1, dtype=torch.float64, device=device).expand(batch, d + 1, d + 1).clone() if base is None \
            else torch.as_tensor(base, dtype=torch.float64, device=device).reshape(-1, d + 1, d + 1).expand(
                batch, d + 1, d + 1).clone()
        self.register_buffer("base", b)
        groups = GROUPS[model]
        sizes = {"translation": d, "rotation": 1 if d == 2 else 3,
                 "scale": 1 if model == "similarity" else d, "shear": d * (d - 1) // 2}
        for name in GROUPS["affine"]:
            if name in groups:
                p = nn.Parameter(torch.zeros(batch, sizes[name], device=device), requires_grad=name not in freeze)
                self.register_parameter(name, p)
            else:
                self.register_parameter(name, None)

    def extra_repr(self) -> str:
        frozen = [n for n, p in self.named_parameters() if not p.requires_grad]
        return f"ndim={self.ndim}, model={self.model!r}, batch={self.batch}, radius={self.radius:g}, frozen={frozen}"

    def local_matrix(self) -> Tensor:
        """The learnable part ``P`` as ``(B, D+1, D+1)`` float64 matrices."""
        d, r = self.ndim, self.radius
        eye = torch.eye(d, dtype=torch.float64, device=self.center.device).expand(self.batch, d, d)
        a = eye
        if self.rotation is not None:
            a = rotation_matrix(self.rotation.double() / r, d)
        if self.scale is not None:
            a = a * torch.exp(self.scale.double() / r).unsqueeze(-2)
        if self.shear is not None:
            k = eye.clone()
            iu = torch.triu_indices(d, d, 1)
            k[:, iu[0], iu[1]] = self.shear.double() / r
            a = a @ k
        t = self.translation.double() if self.translation is not None else 0.0
        offset = self.center - (a @ self.center.unsqueeze(-1)).squeeze(-1) + t
        return _homogeneous(a, offset)

    def matrix(self) -> Tensor:
        """World matrix moving_from_fixed, ``(B, D+1, D+1)`` float64: ``base @ P``."""
        return self.base @ self.local_matrix()

    def linear_matrix(self) -> Tensor:
        return self.matrix()

    def forward(self, points: Tensor) -> Tensor:
        return _apply(self.matrix(), points)

    def inverse(self) -> MatrixTransform:
        return MatrixTransform(torch.linalg.inv(self.matrix().detach()))

    def parameter_dict(self) -> dict[str, list]:
        """Current parameter values in readable units (radians, log-scale, shear)."""
        out: dict[str, list] = {}
        for name in GROUPS[self.model]:
            p = getattr(self, name).detach().double()
            out[name] = (p if name == "translation" else p / self.radius).tolist()
        return out


def linear_center_radius(grid: Grid) -> tuple[np.ndarray, float]:
    """Rotation centre (grid centre, world mm) and radius (mean half-extent, mm) for parameter scaling."""
    extent = np.asarray(grid.shape) * grid.spacing
    return grid.center(), float(extent.mean() / 2)


def degrees(rad: float) -> float:
    return rad * 180.0 / math.pi
