"""Similarity loss modules: each keeps its hyper-parameters and delegates to
:mod:`torchalign.functional.similarity`. ``forward(fixed, warped, mask=None)`` reduces the per-pair
values ``(B,)`` by ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``)."""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from ..errors import InputError
from ..functional import similarity as S

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


class PairLoss(nn.Module):
    """Base class: validates and applies ``reduction``; ``extra_repr`` lists ``hyper`` attributes."""

    hyper: tuple[str, ...] = ()

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise InputError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def reduce(self, values: Tensor) -> Tensor:
        """Reduce per-pair values ``(B,)`` -> scalar (``mean``/``sum``) or ``(B,)`` (``none``)."""
        if self.reduction == "mean":
            return values.mean()
        return values.sum() if self.reduction == "sum" else values

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in (*self.hyper, "reduction"))


class MSE(PairLoss):
    """Mean squared difference (:func:`torchalign.functional.similarity.mse`)."""

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.mse(fixed, warped, mask))


class SAD(PairLoss):
    """Mean absolute difference (:func:`torchalign.functional.similarity.sad`)."""

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.sad(fixed, warped, mask))


class NCC(PairLoss):
    """Negated global normalised cross-correlation (:func:`torchalign.functional.similarity.ncc`)."""

    hyper = ("eps",)

    def __init__(self, eps: float = 1e-8, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.eps = eps

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.ncc(fixed, warped, mask, self.eps))


class LNCC(PairLoss):
    """Negated local normalised cross-correlation (:func:`torchalign.functional.similarity.lncc`)."""

    hyper = ("radius", "eps", "squared")

    def __init__(self, radius: int | Sequence[int] = 2, eps: float = 1e-5, squared: bool = True,
                 reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.radius, self.eps, self.squared = radius, eps, squared

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.lncc(fixed, warped, mask, self.radius, self.eps, self.squared))


class MI(PairLoss):
    """Negated Parzen-window mutual information (:func:`torchalign.functional.similarity.mi`).

    ``samples`` (a number of voxels, or a fraction of the voxels inside the mask) computes MI on a
    random subset, as ANTs' and elastix' random sampling: levels with fewer voxels use them all.
    With ``resample=False`` every call draws the same subset (``seed``); with ``resample=True`` the
    module counts its calls and draws call ``k`` with seed ``seed + k`` (a new subset each
    iteration, the same sequence on every run).
    """

    hyper = ("bins", "kernel", "samples", "seed", "resample")

    def __init__(self, bins: int = 32, kernel: S.Kernel = "bspline", samples: int | float | None = None,
                 seed: int = 0, resample: bool = False, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        S.check_mi_options(bins, kernel, samples, seed)
        if not isinstance(resample, bool):
            raise InputError(f"resample must be true or false, got {resample!r}")
        self.bins, self.kernel, self.samples, self.seed, self.resample = bins, kernel, samples, seed, resample
        self.calls = 0

    def _seed(self) -> int:
        seed = self.seed + self.calls if self.resample else self.seed
        self.calls += 1
        return seed

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.mi(fixed, warped, mask, self.bins, self.kernel, self.samples, self._seed()))


class NMI(MI):
    """Negated normalised mutual information (:func:`torchalign.functional.similarity.nmi`)."""

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.nmi(fixed, warped, mask, self.bins, self.kernel, self.samples, self._seed()))


class NGF(PairLoss):
    """Normalised gradient fields (:func:`torchalign.functional.similarity.ngf`)."""

    hyper = ("eps", "spacing")

    def __init__(self, eps: float = 1e-2, spacing: Sequence[float] | None = None,
                 reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.eps, self.spacing = eps, spacing

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.ngf(fixed, warped, mask, self.eps, self.spacing))


class MINDSSC(PairLoss):
    """SSD of MIND-SSC descriptors (:func:`torchalign.functional.similarity.mind_ssd`)."""

    hyper = ("radius", "dilation")

    def __init__(self, radius: int = 2, dilation: int = 2, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.radius, self.dilation = radius, dilation

    def forward(self, fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.reduce(S.mind_ssd(fixed, warped, mask, self.radius, self.dilation))


SIMILARITY: dict[str, type[PairLoss]] = {
    "mse": MSE, "sad": SAD, "ncc": NCC, "lncc": LNCC, "mi": MI, "nmi": NMI, "ngf": NGF, "mind": MINDSSC,
}


def make_similarity(name: str, **kwargs: Any) -> PairLoss:
    """Build the similarity loss registered as ``name`` (see ``SIMILARITY``) with ``kwargs``."""
    if name not in SIMILARITY:
        raise InputError(f"unknown similarity {name!r}; expected one of: {', '.join(SIMILARITY)}")
    cls = SIMILARITY[name]
    accepted = [p for p in inspect.signature(cls).parameters]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"similarity {name!r} takes no argument {unknown[0]!r}; it takes: {', '.join(accepted)}")
    return cls(**kwargs)
