"""Image similarity losses as pure functions (all minimised).

Every loss is ``loss(fixed, warped, mask=None, **hyper) -> (B,)`` with ``fixed`` and ``warped``
shaped ``(B, C, *S)`` (``D = len(S)`` in 1..3; MIND needs 2 or 3) and ``mask`` shaped
``(B | 1, 1, *S)`` with weights in ``[0, 1]`` (``None`` = everywhere). A voxel's contribution is
weighted by the mask, channels are averaged, and voxels where the mask is 0 never influence the
value: LNCC uses masked local statistics, MIND compares patches over the voxel pairs inside the
mask, and NGF drops the voxels whose difference stencil reaches outside it. Outside the image, the
image edge is not a mask edge (windows are clipped, MIND pads by replication), so no margin is cut
from an image without a mask.

An axis of at most ``filters.THIN`` voxels (a slab's few slices, a 1-voxel pyramid level) is
treated as absent, as ANTs treats 2-D in 3-D: no window, difference or neighbourhood along it, so a
volume with one 1-voxel axis scores exactly as its 2-D slice.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import InputError
from .filters import (THIN, _box_sum, _BoxSum, _check_image, _radii, _window_counts, box_filter, spatial_gradient,
                      thin_axes)

Kernel = Literal["bspline", "gaussian"]
KERNELS = ("bspline", "gaussian")
_WINDOW = {"bspline": 4, "gaussian": 6}  # bins each Parzen window touches
# Voxels (times batch and channels) per joint-histogram chunk: ~25 MB of temporaries in float32.
# Chunks that fit the cache make forward + backward 1.6x faster than 1 << 19 did (860k voxels,
# 1 thread: 0.19 s instead of 0.32 s); much smaller ones pay the per-chunk overhead.
_HISTOGRAM_CHUNK = 1 << 17


# ---- shared checks and reductions --------------------------------------------------------------
def _check_pair(fixed: Tensor, warped: Tensor, mask: Tensor | None) -> Tensor | None:
    """Validate the pair and the mask; return the mask in the images' dtype (or ``None``)."""
    _check_image(fixed, "fixed")
    _check_image(warped, "warped")
    if fixed.shape != warped.shape:
        raise InputError(f"fixed and warped must have the same shape, got {tuple(fixed.shape)} and "
                         f"{tuple(warped.shape)}")
    if fixed.dtype != warped.dtype or fixed.device != warped.device:
        raise InputError(f"fixed and warped must share dtype and device, got {fixed.dtype}/{fixed.device} "
                         f"and {warped.dtype}/{warped.device}")
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise InputError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    b, _, *shape = fixed.shape
    if mask.ndim != fixed.ndim or mask.shape[0] not in (1, b) or mask.shape[1] != 1 or list(mask.shape[2:]) != shape:
        raise InputError(f"mask must be shaped ({b} or 1, 1, *{tuple(shape)}), got {tuple(mask.shape)}")
    mask = mask.to(device=fixed.device, dtype=fixed.dtype)
    lowest, highest, least_total = torch.stack(
        [mask.min(), mask.max(), mask.flatten(1).sum(1).min()]).tolist()
    if lowest < 0 or highest > 1:
        raise InputError(f"mask weights must lie in [0, 1], got values in [{lowest:g}, {highest:g}]")
    if least_total <= 0:
        raise InputError("mask is empty (all weights are 0 for at least one pair)")
    return mask


def _spatial_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mask-weighted mean of ``(B, C, *S)`` over ``S`` -> ``(B, C, 1, ...)``."""
    dims = tuple(range(2, x.ndim))
    if mask is None:
        return x.mean(dim=dims, keepdim=True)
    return (x * mask).sum(dim=dims, keepdim=True) / mask.sum(dim=dims, keepdim=True)


def _pair_mean(v: Tensor, mask: Tensor | None) -> Tensor:
    """Mask-weighted mean of a voxelwise map ``(B, C, *S)`` over space and channels -> ``(B,)``."""
    return _spatial_mean(v, mask).flatten(1).mean(1)


def _window_radii(radius: int | Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """Validated window radii per axis of ``shape``, 0 along thin axes (no window across them)."""
    return tuple(0 if thin else r for r, thin in zip(_radii(radius, len(shape)), thin_axes(shape)))


def _erode(mask: Tensor | None, radii: tuple[int, ...]) -> Tensor | None:
    """Zero the weight of voxels whose window of ``radii`` leaves the mask (``m > 0``).

    Windows are clipped at the image edge, so only a mask's own edge is cut, never the image's.
    """
    if mask is None or not any(radii):
        return mask
    inside = box_filter((mask > 0).to(mask.dtype), radii)
    weight = mask * (inside > 1 - 0.5 / math.prod(2 * r + 1 for r in radii))
    if weight.flatten(1).sum(1).min().item() <= 0:
        raise InputError(f"mask is empty once voxels within {max(radii)} of its edge are dropped "
                         f"(the loss looks that far); enlarge the mask")
    return weight


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise InputError(f"{name} must be > 0, got {value}")
    return float(value)


# ---- intensity differences ---------------------------------------------------------------------
def mse(fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared difference -> ``(B,)``; range ``[0, inf)``, 0 for identical images."""
    mask = _check_pair(fixed, warped, mask)
    return _pair_mean((fixed - warped).square(), mask)


def sad(fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute difference -> ``(B,)``; range ``[0, inf)``, 0 for identical images."""
    mask = _check_pair(fixed, warped, mask)
    return _pair_mean((fixed - warped).abs(), mask)


# ---- correlation ------------------------------------------------------------------------------
def ncc(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Negated global normalised cross-correlation -> ``(B,)``; range ``[-1, 1]``, -1 is perfect.

    Pearson correlation per channel over the (mask-weighted) voxels, averaged over channels.
    Variances are clamped below at ``eps`` (squared intensity units), so a constant image gives
    0 with finite gradients.
    """
    mask = _check_pair(fixed, warped, mask)
    eps = _positive(eps, "eps")
    f = fixed - _spatial_mean(fixed, mask)
    w = warped - _spatial_mean(warped, mask)
    cov = _spatial_mean(f * w, mask)
    var_f = _spatial_mean(f.square(), mask).clamp_min(eps)
    var_w = _spatial_mean(w.square(), mask).clamp_min(eps)
    return -(cov * torch.rsqrt(var_f * var_w)).flatten(1).mean(1)


def _standardisation(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Global (masked) mean and inverse standard deviation per ``(b, c)``, as constants."""
    with torch.no_grad():
        mean = _spatial_mean(x, mask)
        var = _spatial_mean((x - mean).square(), mask)
        return mean, torch.rsqrt(var.clamp_min(torch.finfo(x.dtype).tiny))


def _standardise(x: Tensor, mask: Tensor | None) -> Tensor:
    """``(x - mean) / std`` per ``(b, c)`` over the mask, the statistics treated as constants."""
    mean, scale = _standardisation(x, mask)
    return (x - mean) * scale


def _local_ncc(fixed: Tensor, warped: Tensor, mask: Tensor | None, radius: int | Sequence[int], eps: float,
               squared: bool) -> Tensor:
    """Unchecked body of :func:`local_ncc_map` (plain autograd; the reference for ``_LNCC``)."""
    radii = _window_radii(radius, fixed.shape[2:])
    eps = _positive(eps, "eps")
    f, w = _standardise(fixed, mask), _standardise(warped, mask)
    products = torch.cat([f, w, f * f, w * w, f * w], dim=1)
    if mask is None:
        moments = box_filter(products, radii)
    else:
        inverse = torch.where(mask > 0, box_filter(mask, radii).reciprocal(), 0.0)  # off-mask: moments 0
        moments = box_filter(products * mask, radii) * inverse
    mean_f, mean_w, ff, ww, fw = moments.split(fixed.shape[1], dim=1)
    var_f = (ff - mean_f * mean_f).clamp_min(eps)
    var_w = (ww - mean_w * mean_w).clamp_min(eps)
    cov = fw - mean_f * mean_w
    if squared:
        return cov * cov / (var_f * var_w)
    return cov * torch.rsqrt(var_f * var_w)


class _LNCC(torch.autograd.Function):
    """Mask-weighted mean local correlation per ``(b, c)`` -> ``(B, C)``, with an analytic backward.

    Same maths as ``_local_ncc`` followed by the weighted mean, but in place on one-channel
    buffers: 5 box sums forward, 3 backward per differentiated image (autograd through
    ``_local_ncc`` needs 5 and, at 160x192x224, ~2.5x the memory). The moments are
    ``mu[z] = A z`` with ``A z = S(m z) / S(m)`` (``S`` the symmetric window sum), whose adjoint
    is ``A^T g = m S(g / S(m))``. With ``q_k = m (dL/dc) (dc/dk) / S(m)`` for ``k`` in
    ``cov, var_w, mu_w``: ``dL/dw = m (f S(q_cov) + 2 w S(q_var_w) + S(q_mu_w))``, and likewise
    for ``f``. The mask receives no gradient; the standardisation statistics are constants (as
    in ``_standardise``).
    """

    @staticmethod
    def forward(ctx, fixed: Tensor, warped: Tensor, mask: Tensor | None, radii: tuple[int, ...], eps: float,
                squared: bool) -> Tensor:  # type: ignore[override]
        dims = tuple(range(2, fixed.ndim))
        stats = (_standardisation(fixed, mask), _standardisation(warped, mask))
        f, w = ((x - mean).mul_(scale) for x, (mean, scale) in zip((fixed, warped), stats))

        def weighted(z: Tensor) -> Tensor:
            return z if mask is None else z.mul_(mask)

        if mask is None:
            inverse = _window_counts(fixed.shape[2:], radii, fixed).reciprocal_()
            total = torch.full((fixed.shape[0], 1), float(fixed[0, 0].numel()), dtype=fixed.dtype,
                               device=fixed.device)
        else:
            inverse = torch.where(mask > 0, _box_sum(mask, radii).reciprocal_(), 0.0)
            total = mask.sum(dim=dims).expand(fixed.shape[0], 1)

        def moment(z: Tensor) -> Tensor:
            z = weighted(z)
            return _box_sum(z, radii, out=z).mul_(inverse)

        mean_f, mean_w = moment(f.clone()), moment(w.clone())
        var_f = moment(f * f).addcmul_(mean_f, mean_f, value=-1).clamp_min_(eps)
        var_w = moment(w * w).addcmul_(mean_w, mean_w, value=-1).clamp_min_(eps)
        cov = moment(f * w).addcmul_(mean_f, mean_w, value=-1)
        del f, w
        if squared:  # c = cov^2 / (vf vw): dc/dcov = 2 cov / (vf vw) and c = cov dc/dcov / 2
            d_cov = (var_f * var_w).reciprocal_().mul_(cov).mul_(2.0)
            corr = cov.mul_(d_cov).mul_(0.5)
        else:  # c = cov / sqrt(vf vw)
            d_cov = torch.rsqrt(var_f * var_w)
            corr = cov.mul_(d_cov)
        values = (corr if mask is None else corr * mask).sum(dim=dims) / total
        ctx.radii = radii
        need_f, need_w = ctx.needs_input_grad[:2]
        if not (need_f or need_w):
            return values
        # dc/dvar = -c / var (squared) or -c / (2 var), zero where the clamp at eps binds;
        # then through var = E[z^2] - mu^2 and cov = E[fw] - mu_f mu_w
        power = 1.0 if squared else 0.5
        d_vf = torch.where(var_f > eps, corr / var_f, 0.0).mul_(-power) if need_f else None
        d_vw = torch.where(var_w > eps, corr / var_w, 0.0).mul_(-power) if need_w else None
        d_mf = torch.addcmul(d_cov * mean_w, d_vf, mean_f, value=2.0).neg_() if need_f else None
        d_mw = torch.addcmul(d_cov * mean_f, d_vw, mean_w, value=2.0).neg_() if need_w else None
        factor = inverse if mask is None else inverse.mul_(mask)
        terms = [None if t is None else t.mul_(factor) for t in (d_cov, d_vf, d_vw, d_mf, d_mw)]
        ctx.save_for_backward(fixed, warped, mask, total, *terms)
        ctx.stats = stats
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        fixed, warped, mask, total, q_cov, q_vf, q_vw, q_mf, q_mw = ctx.saved_tensors
        (mean_f, scale_f), (mean_w, scale_w) = ctx.stats
        f, w = (fixed - mean_f) * scale_f, (warped - mean_w) * scale_w
        extra = (1,) * (fixed.ndim - 2)
        g = (grad / total).view(*grad.shape, *extra)
        s_cov = _box_sum(q_cov, ctx.radii)

        def gradient(own: Tensor, other: Tensor, q_var: Tensor, q_mean: Tensor, scale: Tensor) -> Tensor:
            out = _box_sum(q_var, ctx.radii).mul_(2.0 * own).addcmul_(other, s_cov).add_(_box_sum(q_mean, ctx.radii))
            if mask is not None:
                out.mul_(mask)
            return out.mul_(g * scale)

        grad_f = gradient(f, w, q_vf, q_mf, scale_f) if ctx.needs_input_grad[0] else None
        grad_w = gradient(w, f, q_vw, q_mw, scale_w) if ctx.needs_input_grad[1] else None
        return grad_f, grad_w, None, None, None, None


def local_ncc_map(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, radius: int | Sequence[int] = 2,
                  eps: float = 1e-5, squared: bool = True) -> Tensor:
    """Local correlation of each voxel's ``(2r+1)^D`` window -> ``(B, C, *S)`` (1 is perfect).

    ``squared=True`` gives ``cov^2 / (var_f var_w)`` in ``[0, 1]`` (ANTs' CC, MONAI's LNCC);
    ``squared=False`` gives ``cov / sqrt(var_f var_w)`` in ``[-1, 1]``. Windows are clipped at the
    image border and, with a mask, are mask-weighted moments. Each image is first standardised by
    its global (masked) mean and standard deviation, so the local variances are clamped below at
    ``eps`` *relative to the global variance*: flat windows give 0 with finite gradients, and the
    value is invariant to affine intensity changes. Thin axes get no window (radius 0).
    """
    mask = _check_pair(fixed, warped, mask)
    return _local_ncc(fixed, warped, mask, radius, eps, squared)


def lncc(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, radius: int | Sequence[int] = 2,
         eps: float = 1e-5, squared: bool = True) -> Tensor:
    """Negated mean local normalised cross-correlation -> ``(B,)``.

    Range ``[-1, 0]`` (``squared=True``, the default) or ``[-1, 1]``; -1 is perfect. See
    :func:`local_ncc_map` for the window, the ``eps`` clamp and the two forms; ``radius`` is in
    voxels per axis (window ``2r+1``). Flat windows contribute 0.
    """
    mask = _check_pair(fixed, warped, mask)
    radii = _window_radii(radius, fixed.shape[2:])
    return -_LNCC.apply(fixed, warped, mask, radii, _positive(eps, "eps"), bool(squared)).mean(1)


# ---- mutual information -----------------------------------------------------------------------
def _unit_limits(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each ``(b, c)`` min and ``1 / (max - min)`` of ``(B, C, N)`` intensities inside the mask, so that
    ``(x - min) / (max - min)`` lies in ``[0, 1]``. Constants (as ITK's Mattes metric fixes its
    histogram limits)."""
    with torch.no_grad():
        inside = None if mask is None else mask > 0
        lo = (x if inside is None else x.masked_fill(~inside, torch.inf)).amin(-1, keepdim=True)
        hi = (x if inside is None else x.masked_fill(~inside, -torch.inf)).amax(-1, keepdim=True)
        return lo, 1.0 / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)


def _parzen(t: Tensor, bins: int, kernel: Kernel, derivative: bool = False
            ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Parzen window of intensities ``t`` in ``[0, 1]`` (no autograd).

    Returns the first bin ``(...)`` (long), the weights ``(..., K)`` of bins ``first .. first+K-1``
    and, if asked, their derivatives with respect to ``t``. ``bspline``: cubic B-spline (Mattes et
    al. 2003), ``t`` mapped to ``[1, bins - 2]`` so the support (``K = 4``) stays inside; the weights
    sum to 1. ``gaussian``: bin centres at ``t = k / (bins - 1)``, standard deviation half a bin
    (as DeepReg and MONAI), the ``K = 6`` nearest bins (the others weigh < 2e-8 of the peak),
    normalised to sum 1.
    """
    if kernel == "gaussian":
        u = t * (bins - 1)
        first = (u.floor() - 2).clamp_(0, bins - 6)
        d = (u - first).unsqueeze(-1) - torch.arange(6, dtype=t.dtype, device=t.device)
        w = torch.exp(-2.0 * d * d)  # sigma = 0.5 bin
        w /= w.sum(-1, keepdim=True)
        dw = None
        if derivative:  # d/du of e_k / sum(e) with de_k/du = -4 d_k e_k
            dw = w * (d - (w * d).sum(-1, keepdim=True)) * (-4.0 * (bins - 1))
        return first.long(), w, dw
    u = 1.0 + t * (bins - 3)
    first = u.floor().clamp_(1, bins - 3)
    s = u - first  # in [0, 1]; weights of bins first-1 .. first+2
    s2 = s * s
    r = 1.0 - s
    w0, w1, w3 = r * r * r / 6.0, s2 * (0.5 * s - 1.0) + 2.0 / 3.0, s2 * s / 6.0
    w = torch.stack([w0, w1, 1.0 - w0 - w1 - w3, w3], dim=-1)
    dw = None
    if derivative:
        d0, d1, d3 = -0.5 * r * r, s * (1.5 * s - 2.0), 0.5 * s2
        dw = torch.stack([d0, d1, -(d0 + d1 + d3), d3], dim=-1) * (bins - 3)
    return first.long() - 1, w, dw


class _JointHistogram(torch.autograd.Function):
    """Unnormalised Parzen joint histogram ``(B, C, bins, bins)`` of ``(B, C, N)`` intensities.

    Each voxel adds the outer product of its two ``K``-bin windows (times its mask weight) at its
    pair of first bins. Voxels go in chunks and nothing per voxel is kept: the backward pass
    recomputes the windows, gathers the ``K x K`` block of ``dL/dP`` each voxel touched and applies
    the windows' analytic derivatives. The mask receives no gradient.
    """

    @staticmethod
    def forward(ctx, tf: Tensor, tw: Tensor, weight: Tensor | None, bins: int,
                kernel: Kernel) -> Tensor:  # type: ignore[override]
        b, c, n = tf.shape
        k = _WINDOW[kernel]
        # (pair of first bins) x (K x K window products), accumulated in float64: in float32, adding
        # millions of values < 1 to one bin (e.g. the background's) rounds most of them away
        rows = tf.new_zeros(b * c * bins * bins, k * k, dtype=torch.float64)
        pair = torch.arange(b * c, device=tf.device).view(b, c, 1) * (bins * bins)
        for part in _chunks(n, b * c):
            first_f, w_f, _ = _parzen(tf[..., part], bins, kernel)
            first_w, w_w, _ = _parzen(tw[..., part], bins, kernel)
            if weight is not None:
                w_w *= weight[..., part].unsqueeze(-1)
            index = (pair + first_f * bins + first_w).flatten()
            products = (w_f.unsqueeze(-1) * w_w.unsqueeze(-2)).reshape(-1, k * k)
            rows.index_put_((index,), products.to(torch.float64), accumulate=True)
        patches = rows.view(b * c, bins * bins, k * k).transpose(1, 2)
        joint = F.fold(patches, (bins + k - 1, bins + k - 1), k)  # adds each K x K block at its first bins
        joint = joint.view(b, c, bins + k - 1, bins + k - 1)[..., :bins, :bins]  # first bins <= bins - K
        ctx.save_for_backward(tf, tw, weight)
        ctx.bins, ctx.kernel = bins, kernel
        return joint.to(tf.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        tf, tw, weight = ctx.saved_tensors
        bins, kernel = ctx.bins, ctx.kernel
        need_f, need_w = ctx.needs_input_grad[:2]
        b, c, n = tf.shape
        k = _WINDOW[kernel]
        blocks = grad.unfold(-2, k, 1).unfold(-2, k, 1).reshape(-1, k, k)  # block at each pair of first bins
        pair = torch.arange(b * c, device=tf.device).view(b, c, 1) * (bins - k + 1) ** 2
        grad_f = torch.empty_like(tf) if need_f else None
        grad_w = torch.empty_like(tw) if need_w else None
        for part in _chunks(n, b * c):
            first_f, w_f, d_f = _parzen(tf[..., part], bins, kernel, need_f)
            first_w, w_w, d_w = _parzen(tw[..., part], bins, kernel, need_w)
            g = blocks.index_select(0, (pair + first_f * (bins - k + 1) + first_w).flatten()).view(*w_f.shape, k)
            if weight is not None:
                g *= weight[..., part].unsqueeze(-1).unsqueeze(-1)
            if need_f:
                grad_f[..., part] = ((g * w_w.unsqueeze(-2)).sum(-1) * d_f).sum(-1)
            if need_w:
                grad_w[..., part] = ((g * w_f.unsqueeze(-1)).sum(-2) * d_w).sum(-1)
        return grad_f, grad_w, None, None, None


def _chunks(n: int, rows: int) -> list[slice]:
    """Slices of ``n`` voxels, ``_HISTOGRAM_CHUNK / rows`` at a time."""
    step = max(1, _HISTOGRAM_CHUNK // rows)
    return [slice(start, start + step) for start in range(0, n, step)]


def _entropy(p: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``-sum p log p`` over ``dims``; empty bins add 0 with a finite gradient."""
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(dim=dims)


def check_mi_options(bins: int, kernel: str, samples: int | float | None, seed: int) -> None:
    """Validate MI's options (the loss module calls this when it is built, before any image is read)."""
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 6:
        raise InputError(f"bins must be an integer >= 6, got {bins!r}")
    if kernel not in KERNELS:
        raise InputError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    whole = isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1
    fraction = isinstance(samples, float) and 0 < samples <= 1
    if not (samples is None or whole or fraction):
        raise InputError(f"samples must be a number of voxels (integer >= 1), a fraction in (0, 1] or None, "
                         f"got {samples!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")


def _sample(count: int, samples: int | float, seed: int, device: torch.device) -> Tensor | None:
    """Indices of ``samples`` of ``count`` candidates (a number, or a fraction of ``count``), drawn with
    replacement from a generator seeded by ``seed`` on ``device``; ``None`` when that is all of them."""
    wanted = samples if isinstance(samples, int) else round(samples * count)
    if wanted >= count:
        return None
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(count, (max(1, wanted),), generator=generator, device=device)


def _entropies(fixed: Tensor, warped: Tensor, mask: Tensor | None, bins: int, kernel: Kernel,
               samples: int | float | None, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Marginal and joint Parzen entropies ``H(f), H(w), H(f, w)``, each ``(B, C)``, in nats."""
    check_mi_options(bins, kernel, samples, seed)
    flat_mask = None if mask is None else mask.flatten(2)
    f, w = fixed.flatten(2), warped.flatten(2)
    limits = [_unit_limits(x, flat_mask) for x in (f, w)]  # from every voxel: no jitter with the sample
    if samples is not None:
        candidates = None if flat_mask is None else (flat_mask > 0).any(0).flatten().nonzero().flatten()
        pick = _sample(f.shape[-1] if candidates is None else candidates.numel(), samples, seed, f.device)
        if pick is not None:
            chosen = pick if candidates is None else candidates[pick]
            f, w = f[..., chosen], w[..., chosen]
            if flat_mask is not None:
                flat_mask = flat_mask[..., chosen]
                if flat_mask.sum(-1).min().item() <= 0:
                    raise InputError("mask is empty at the sampled voxels for at least one pair; raise samples")
    tf, tw = ((x - lo).mul(scale).clamp(0.0, 1.0) for x, (lo, scale) in zip((f, w), limits))
    joint = _JointHistogram.apply(tf, tw, flat_mask, bins, kernel)
    p = joint / joint.sum(dim=(-1, -2), keepdim=True)
    return _entropy(p.sum(-1), (-1,)), _entropy(p.sum(-2), (-1,)), _entropy(p, (-1, -2))


def mi(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, bins: int = 32, kernel: Kernel = "bspline",
       samples: int | float | None = None, seed: int = 0) -> Tensor:
    """Negated mutual information ``-(H(f) + H(w) - H(f, w))`` in nats -> ``(B,)``.

    Range ``[-min(H(f), H(w)), 0]``: 0 for independent images, lower is better. Entropies come
    from a differentiable Parzen-window joint histogram with ``bins`` bins per image and a cubic
    B-spline or Gaussian ``kernel`` (see ``_parzen``); each image's intensities are scaled by its
    min/max inside the mask (over every voxel, sampled or not). ``samples`` (a number of voxels or
    a fraction of those inside the mask) draws that many, with replacement, from a generator
    seeded by ``seed`` on the images' device: the same ``seed`` draws the same voxels there;
    ``None``, or a number at least the voxels inside the mask, uses every voxel.
    """
    mask = _check_pair(fixed, warped, mask)
    h_f, h_w, h_fw = _entropies(fixed, warped, mask, bins, kernel, samples, seed)
    return -(h_f + h_w - h_fw).mean(1)


def nmi(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, bins: int = 32, kernel: Kernel = "bspline",
        samples: int | float | None = None, seed: int = 0) -> Tensor:
    """Negated normalised mutual information ``-(H(f) + H(w)) / H(f, w)`` (Studholme) -> ``(B,)``.

    Range ``[-2, -1]``: -1 for independent images, lower is better. The Parzen kernel blurs the
    joint histogram, so identical images reach somewhat above -2. Parameters as :func:`mi`.
    """
    mask = _check_pair(fixed, warped, mask)
    h_f, h_w, h_fw = _entropies(fixed, warped, mask, bins, kernel, samples, seed)
    return -((h_f + h_w) / h_fw).mean(1)


# ---- gradients and self-similarity -------------------------------------------------------------
def ngf(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, eps: float = 1e-2,
        spacing: Sequence[float] | None = None) -> Tensor:
    """Normalised gradient fields (Haber and Modersitzki 2006) -> ``(B,)``; range ``[0, 1]``.

    Mean of ``1 - (g_f . g_w)^2 / ((|g_f|^2 + eps^2)(|g_w|^2 + eps^2))`` with ``g`` the spatial
    gradient in intensity per mm (``spacing`` per axis, voxels when ``None``). ``eps`` is the edge
    parameter (intensity per mm): gradients well above it count as edges. 0 is reached where both
    images have strong parallel or anti-parallel edges; identical images give the minimum for
    their edge strength. Thin axes contribute no derivative.
    """
    mask = _check_pair(fixed, warped, mask)
    eps = _positive(eps, "eps")
    shape = fixed.shape[2:]
    keep = [axis for axis, thin in enumerate(thin_axes(shape)) if not thin]
    g_f = spatial_gradient(fixed, spacing)[:, :, keep]
    g_w = spatial_gradient(warped, spacing)[:, :, keep]
    dot = (g_f * g_w).sum(2)
    norms = (g_f.square().sum(2) + eps * eps) * (g_w.square().sum(2) + eps * eps)
    return _pair_mean(1 - dot * dot / norms, _erode(mask, _window_radii(1, shape)))


def _ssc_pairs(axes: Sequence[int], ndim: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Pairs of face neighbours along ``axes`` that are not opposite: 12 for 3 axes, 4 for 2
    (Heinrich et al. 2013), as offsets over all ``ndim`` axes."""
    neighbours = [tuple(s * (i == a) for i in range(ndim)) for a in axes for s in (-1, 1)]
    return [(p, q) for p, q in itertools.combinations(neighbours, 2) if any(a + b for a, b in zip(p, q))]


def _check_mind(radius: int, dilation: int) -> int:
    (radius,) = _radii(radius, 1)
    if not isinstance(dilation, int) or dilation < 1:
        raise InputError(f"dilation must be a positive integer, got {dilation!r}")
    return radius


def _mind(image: Tensor, radius: int, dilation: int, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Unchecked body of :func:`mind_ssc` -> (descriptors ``(B, C K, *S)``, voxel weights or ``None``).

    With a mask, a patch distance sums only the voxels ``y`` whose two neighbours ``y + p`` and
    ``y + q`` are both inside (``m > 0``), so intensities outside the mask never reach a descriptor;
    the weight is the mask where every pair has such voxels in the patch, 0 elsewhere.
    """
    shape = image.shape[2:]
    ndim = len(shape)
    axes = [axis for axis, thin in enumerate(thin_axes(shape)) if not thin]
    if ndim not in (2, 3) or len(axes) < 2:
        raise InputError(f"MIND-SSC needs 2-D or 3-D images with at least 2 axes of more than {THIN} voxels, "
                         f"got spatial shape {tuple(shape)}")
    b, c = image.shape[:2]
    pad = [dilation if axis in axes else 0 for axis in range(ndim)]
    radii = tuple(radius if axis in axes else 0 for axis in range(ndim))

    def shifted(padded: Tensor, offset: tuple[int, ...]) -> Tensor:
        for axis, o in enumerate(offset):
            padded = padded.narrow(axis + 2, pad[axis] + o * dilation, shape[axis])
        return padded

    def pad_replicate(x: Tensor) -> Tensor:
        return F.pad(x, [p for p in reversed(pad) for _ in (0, 1)], mode="replicate")

    pairs = _ssc_pairs(axes, ndim)
    k = len(pairs)
    padded = pad_replicate(image)
    diffs = torch.stack([(shifted(padded, p) - shifted(padded, q)).square() for p, q in pairs], dim=2)
    weight = None
    if mask is None:
        ssd = box_filter(diffs.reshape(b, c * k, *shape), radii).reshape(b, c, k, *shape)
    else:
        inside = pad_replicate((mask > 0).to(image.dtype))
        both = torch.cat([shifted(inside, p) * shifted(inside, q) for p, q in pairs], dim=1)  # (B | 1, K, *S)
        counts = _box_sum(both, radii).unsqueeze(1)  # voxels compared in each patch
        both = both.unsqueeze(1)
        sums = _BoxSum.apply((diffs * both).reshape(b, c * k, *shape), radii).reshape(b, c, k, *shape)
        ssd = sums / counts.clamp_min(1.0)
        weight = mask * (counts > 0.5).all(dim=2)
        if weight.flatten(1).sum(1).min().item() <= 0:
            raise InputError("mask leaves no voxel whose MIND patches can be compared inside it; enlarge the mask")
    ssd = ssd - ssd.amin(dim=2, keepdim=True)
    var = ssd.mean(dim=2, keepdim=True)
    with torch.no_grad():
        level = _spatial_mean(var.squeeze(2), weight).unsqueeze(2)
        floor = torch.finfo(image.dtype).eps ** 2
        low, high = (0.001 * level).clamp_min(floor), (1000 * level).clamp_min(floor)
    return torch.exp(-ssd / torch.clamp(var, low, high)).reshape(b, c * k, *shape), weight


def mind_ssc(image: Tensor, radius: int = 2, dilation: int = 2, mask: Tensor | None = None) -> Tensor:
    """MIND-SSC descriptors (Heinrich et al. 2013) of ``(B, C, *S)`` -> ``(B, C * K, *S)``.

    ``K`` = 12 in 3-D (4 in 2-D, and in 3-D with a thin axis): for each pair ``(p, q)`` of
    non-opposite face neighbours at distance ``dilation``, the patch distance
    ``d = box_r((I(x + p) - I(x + q))^2)`` (patch radius ``radius``, replicate padding; with a mask,
    the mean over the patch's voxels whose two neighbours are inside). Then
    ``exp(-(d - min_K d) / v)`` with ``v = mean_K(d - min_K d)`` clamped to ``[0.001, 1000] x`` its
    mean over the image (mask-weighted when a mask is given). Values in ``(0, 1]``; channel order is
    ours (the C++ reference permutes them).
    """
    mask = _check_pair(image, image, mask)
    return _mind(image, _check_mind(radius, dilation), dilation, mask)[0]


def mind_ssd(fixed: Tensor, warped: Tensor, mask: Tensor | None = None, radius: int = 2,
             dilation: int = 2) -> Tensor:
    """Mean squared difference of MIND-SSC descriptors -> ``(B,)``; range ``[0, 1]``, 0 is perfect.

    With a mask, descriptors compare only voxel pairs inside it (see :func:`mind_ssc`), so no margin
    is cut: a mask that covers the image (an overlap weight of ones) is used whole.
    """
    mask = _check_pair(fixed, warped, mask)
    radius = _check_mind(radius, dilation)
    d_f, weight = _mind(fixed, radius, dilation, mask)
    d_w, _ = _mind(warped, radius, dilation, mask)
    return _pair_mean((d_f - d_w).square(), weight)
