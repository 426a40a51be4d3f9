"""Regulariser modules: hyper-parameters and a reduction over the pure functions in
:mod:`torchalign.functional.regularisers`. ``forward(disp (B, D, *S), grid)`` returns
``weight * reduce(penalty)`` where the penalty is per pair ``(B,)``.
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from ..errors import InputError
from ..functional import regularisers as F
from ..grid import Grid

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


class _Regulariser(nn.Module):
    def __init__(self, weight: float = 1.0, reduction: Reduction = "mean"):
        super().__init__()
        if not weight >= 0:
            raise InputError(f"weight must be >= 0, got {weight}")
        if reduction not in _REDUCTIONS:
            raise InputError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.weight = float(weight)
        self.reduction = reduction

    def penalty(self, disp: Tensor, grid: Grid) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, disp: Tensor, grid: Grid) -> Tensor:
        value = self.weight * self.penalty(disp, grid)
        if self.reduction == "mean":
            return value.mean()
        if self.reduction == "sum":
            return value.sum()
        return value

    def extra_repr(self) -> str:
        return f"weight={self.weight}, reduction={self.reduction!r}"


class Diffusion(_Regulariser):
    """Squared first derivatives (membrane energy), world mm."""

    def penalty(self, disp: Tensor, grid: Grid) -> Tensor:
        return F.diffusion(disp, grid)


class BendingEnergy(_Regulariser):
    """Squared second derivatives including cross terms (thin-plate energy), world mm."""

    def penalty(self, disp: Tensor, grid: Grid) -> Tensor:
        return F.bending_energy(disp, grid)


class Curvature(_Regulariser):
    """Squared Laplacian of each component (Fischer-Modersitzki curvature), world mm."""

    def penalty(self, disp: Tensor, grid: Grid) -> Tensor:
        return F.curvature(disp, grid)


class LinearElasticity(_Regulariser):
    """Linear-elastic energy with Lamé parameters ``mu`` (shear) and ``lam`` (volume change)."""

    def __init__(self, mu: float = 1.0, lam: float = 1.0, weight: float = 1.0, reduction: Reduction = "mean"):
        super().__init__(weight, reduction)
        if not (mu >= 0 and lam >= 0):
            raise InputError(f"mu and lam must be >= 0, got mu={mu}, lam={lam}")
        self.mu = float(mu)
        self.lam = float(lam)

    def penalty(self, disp: Tensor, grid: Grid) -> Tensor:
        return F.linear_elasticity(disp, grid, self.mu, self.lam)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, lam={self.lam}, " + super().extra_repr()


class JacobianFolding(_Regulariser):
    """``relu(threshold - det J)^2``: penalises folding (and compression below ``threshold``)."""

    def __init__(self, threshold: float = 0.0, weight: float = 1.0, reduction: Reduction = "mean"):
        super().__init__(weight, reduction)
        if not 0 <= threshold < 1:
            raise InputError(f"threshold must be in [0, 1), got {threshold}")
        self.threshold = float(threshold)

    def penalty(self, disp: Tensor, grid: Grid) -> Tensor:
        return F.folding(disp, grid, self.threshold)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, " + super().extra_repr()


REGULARISERS: dict[str, type[_Regulariser]] = {
    "diffusion": Diffusion,
    "bending": BendingEnergy,
    "curvature": Curvature,
    "elastic": LinearElasticity,
    "folding": JacobianFolding,
}
