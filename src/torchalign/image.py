"""Image: a ``(B, C, *S)`` tensor and the Grid that places it in world space."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .errors import InputError
from .grid import Grid


@dataclass(eq=False)
class Image:
    """Intensities ``data`` of shape ``(B, C, *S)`` on ``grid``; a ``(C, *S)`` input gets ``B = 1``.

    ``meta`` carries file metadata (e.g. the NIfTI header) so that saving keeps it.
    """

    data: Tensor
    grid: Grid
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.data, Tensor):
            self.data = torch.as_tensor(self.data)
        extra = self.data.ndim - self.grid.ndim
        if extra == 1:
            self.data = self.data.unsqueeze(0)
        elif extra != 2:
            raise InputError(
                f"image data must be (C, *S) or (B, C, *S) for a {self.grid.ndim}-D grid, "
                f"got shape {tuple(self.data.shape)}"
            )
        if tuple(self.data.shape[2:]) != self.grid.shape:
            raise InputError(f"data spatial shape {tuple(self.data.shape[2:])} != grid shape {self.grid.shape}")

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def channels(self) -> int:
        return self.data.shape[1]

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    def with_data(self, data: Tensor) -> Image:
        """Same grid and metadata, new data."""
        return replace(self, data=data)

    def to(self, *args: Any, **kwargs: Any) -> Image:
        return self.with_data(self.data.to(*args, **kwargs))

    def float(self) -> Image:
        return self.with_data(self.data.float())

    def check_finite(self, name: str = "image") -> Image:
        """Raise InputError if the data holds NaN or Inf."""
        if self.data.is_floating_point() and not torch.isfinite(self.data).all():
            n = int((~torch.isfinite(self.data)).sum())
            raise InputError(f"{name} contains {n} NaN/Inf values (use nan_to= / --nan-to to replace them)")
        return self


def normalize_intensity(data: Tensor, lower: float = 0.5, upper: float = 99.5,
                        mask: Tensor | None = None) -> Tensor:
    """Robust min/max normalisation of ``(B, C, *S)`` data to [0, 1] per image and channel -> ``(B, C, *S)``.

    The ``lower``/``upper`` percentiles (computed inside ``mask`` when given) map to 0 and 1; values
    beyond are clipped. A constant image raises InputError (nothing can be registered to it).
    """
    if not 0 <= lower < upper <= 100:
        raise InputError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    b, c = data.shape[:2]
    flat = data.reshape(b, c, -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    out = torch.empty_like(flat)
    if mask is not None and (mask.ndim != data.ndim or mask.shape[0] not in (1, b) or mask.shape[1] != 1
                             or mask.shape[2:] != data.shape[2:]):
        raise InputError(f"mask of shape {tuple(mask.shape)} does not fit data of shape {tuple(data.shape)}; "
                         f"expected (1|B, 1, *S)")
    m = None if mask is None else (mask.reshape(mask.shape[0], -1) > 0)
    for i in range(b):
        for j in range(c):
            values = flat[i, j] if m is None else flat[i, j][m[min(i, m.shape[0] - 1)]]
            if values.numel() == 0:
                raise InputError("mask is empty: no voxel to compute intensity percentiles from")
            sample = values if values.numel() <= 2_000_000 else values[:: values.numel() // 1_000_000 + 1]
            q = torch.quantile(sample, torch.tensor([lower / 100, upper / 100], dtype=flat.dtype, device=data.device))
            lo, hi = float(q[0]), float(q[1])
            if hi - lo <= 1e-12 * max(1.0, abs(hi)):
                lo, hi = float(values.min()), float(values.max())
                if hi - lo <= 1e-12 * max(1.0, abs(hi)):
                    raise InputError("image has zero intensity variance (constant image): cannot normalise it")
            out[i, j] = ((flat[i, j] - lo) / (hi - lo)).clamp(0, 1)
    return out.reshape(data.shape)
