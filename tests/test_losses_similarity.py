"""Similarity losses: analytic values, masks, finiteness, gradcheck, and oracles nobody here wrote
(MONAI's LNCC and global MI, Heinrich's public MIND-SSC code, real ITK brain slices)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import data_file
from torchalign.errors import InputError
from torchalign.functional import similarity as S
from torchalign.functional.filters import gaussian_smooth
from torchalign.losses import LNCC, MI, MINDSSC, SIMILARITY, PairLoss, make_similarity

# name -> (function, hyper-parameters small enough for tiny test images)
LOSSES = {
    "mse": (S.mse, {}),
    "sad": (S.sad, {}),
    "ncc": (S.ncc, {}),
    "lncc": (S.lncc, {"radius": 2}),
    "lncc_plain": (S.lncc, {"radius": 1, "squared": False}),
    "mi": (S.mi, {"bins": 16}),
    "mi_gaussian": (S.mi, {"bins": 16, "kernel": "gaussian"}),
    "nmi": (S.nmi, {"bins": 16}),
    "ngf": (S.ngf, {"eps": 0.05, "spacing": None}),
    "mind": (S.mind_ssd, {"radius": 1, "dilation": 1}),
}
PERFECT = {"mse": 0.0, "sad": 0.0, "ncc": -1.0, "lncc": -1.0, "lncc_plain": -1.0, "mind": 0.0}
SHAPES = {2: (14, 13), 3: (9, 10, 8)}


def _smooth_pair(shape: tuple[int, ...], batch: int = 1, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Two related, structured float64 images (smoothed noise; the second a noisy copy)."""
    g = torch.Generator().manual_seed(seed)
    f = gaussian_smooth(torch.rand(batch, channels, *shape, generator=g, dtype=torch.float64), 1.0)
    w = f + 0.3 * gaussian_smooth(torch.rand(batch, channels, *shape, generator=g, dtype=torch.float64), 0.7)
    return f, w


def _call(name: str, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    fn, hyper = LOSSES[name]
    return fn(fixed, warped, mask, **hyper)


def _box_mask(shape: tuple[int, ...], margin: int, dtype=torch.float64) -> torch.Tensor:
    """Soft weights in [0.5, 1] inside a box ``margin`` voxels from each side, 0 outside."""
    mask = torch.zeros(1, 1, *shape, dtype=dtype)
    inside = (Ellipsis, *[slice(margin, n - margin) for n in shape])
    mask[inside] = 0.5 + 0.5 * torch.rand(mask[inside].shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    return mask


# ---- properties every loss must have -------------------------------------------------------------
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", sorted(PERFECT))
def test_identical_images_give_the_perfect_value(name, ndim):
    f, _ = _smooth_pair(SHAPES[ndim])
    torch.testing.assert_close(_call(name, f, f), torch.tensor([PERFECT[name]], dtype=f.dtype), atol=1e-9, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_batch_pairs_are_independent(name, ndim):
    f, w = _smooth_pair(SHAPES[ndim], batch=3, channels=2)
    w[1] = w[1].flip(-1)  # make the pairs differ
    values = _call(name, f, w)
    assert values.shape == (3,)
    singles = torch.cat([_call(name, f[i:i + 1], w[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(values, singles, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(values[0], values[1])


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_voxels_outside_the_mask_do_not_matter(name, ndim):
    shape = (13, 14, 12) if (name, ndim) == ("mind", 3) else SHAPES[ndim]  # MIND drops 2 voxels inside the edge
    f, w = _smooth_pair(shape, batch=2)
    mask = _box_mask(shape, margin=2)
    changed = torch.where(mask > 0, w, torch.rand_like(w) * 5 - 2)
    changed_fixed = torch.where(mask > 0, f, torch.rand_like(f) * 3)
    value = _call(name, f, w, mask)
    torch.testing.assert_close(_call(name, changed_fixed, changed, mask), value, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(_call(name, changed_fixed, changed), _call(name, f, w))  # the change is visible unmasked


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_constant_images_give_finite_values_and_gradients(name):
    shape = SHAPES[3]
    constant = torch.full((1, 1, *shape), 0.7, dtype=torch.float64)
    noise, _ = _smooth_pair(shape)
    for fixed, warped in [(constant, constant.clone()), (noise, constant.clone()), (constant.clone(), noise)]:
        fixed, warped = fixed.clone().requires_grad_(), warped.clone().requires_grad_()
        value = _call(name, fixed, warped)
        value.sum().backward()
        assert torch.isfinite(value).all()
        assert torch.isfinite(fixed.grad).all() and torch.isfinite(warped.grad).all()


def _pinned(x: torch.Tensor) -> torch.Tensor:
    """``x`` with its first and last voxel set to 0 and 1, so per-image min/max stay constant."""
    y = x.clone()
    flat = y.flatten(2)
    flat[..., 0], flat[..., -1] = 0.0, 1.0
    return y


@pytest.mark.parametrize("shape, masked", [((1, 1, 6, 5), False), ((1, 1, 5, 4, 5), True)], ids=["2d", "3d-masked"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck(name, shape, masked):
    g = torch.Generator().manual_seed(7)
    f = (0.1 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    w = (0.1 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    mask = None
    if masked:
        mask = 0.3 + 0.7 * torch.rand(shape, generator=g, dtype=torch.float64)
        mask.flatten(2)[..., 1] = 0.0
    assert torch.autograd.gradcheck(lambda a, b: _call(name, _pinned(a), _pinned(b), mask), (f, w), fast_mode=True)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_mask_raises(name):
    f, w = _smooth_pair(SHAPES[2])
    with pytest.raises(InputError, match="mask is empty"):
        _call(name, f, w, torch.zeros(1, 1, *SHAPES[2], dtype=f.dtype))


@pytest.mark.parametrize("call, match", [
    (lambda f, w: S.mse(f, w[..., :-1]), "same shape"),
    (lambda f, w: S.mse(f, w.float()), "dtype"),
    (lambda f, w: S.mse(f, w, torch.ones(1, 2, *f.shape[2:])), "mask must be shaped"),
    (lambda f, w: S.mse(f, w, torch.full((1, 1, *f.shape[2:]), 2.0)), r"\[0, 1\]"),
    (lambda f, w: S.mse(f, w, f.shape), "mask"),
    (lambda f, w: S.ncc(f, w, eps=0.0), "eps"),
    (lambda f, w: S.lncc(f, w, radius=-1), "radius"),
    (lambda f, w: S.lncc(f, w, radius=(1, 2, 3)), "radius"),
    (lambda f, w: S.mi(f, w, bins=3), "bins"),
    (lambda f, w: S.mi(f, w, kernel="parzen"), "kernel"),
    (lambda f, w: S.nmi(f, w, samples=0), "samples"),
    (lambda f, w: S.ngf(f, w, spacing=(1.0, -1.0)), "spacing"),
    (lambda f, w: S.mind_ssd(f, w, dilation=0), "dilation"),
    (lambda f, w: S.mind_ssd(f[..., 0], w[..., 0]), "2-D or 3-D"),
])
def test_bad_input_raises_input_error(call, match):
    f, w = _smooth_pair(SHAPES[2])
    with pytest.raises(InputError, match=match):
        call(f, w)


# ---- correlation ---------------------------------------------------------------------------------
def test_ncc_and_lncc_under_affine_intensity_changes():
    f, w = _smooth_pair(SHAPES[3])
    torch.testing.assert_close(S.ncc(f, 3 * w + 7), S.ncc(f, w))
    torch.testing.assert_close(S.ncc(f, 1 - 2 * w), -S.ncc(f, w))
    torch.testing.assert_close(S.lncc(4 * f - 1, 1 - 2 * w), S.lncc(f, w))  # squared form
    torch.testing.assert_close(S.lncc(f, 1 - 2 * w, squared=False), -S.lncc(f, w, squared=False))


@pytest.mark.parametrize("ndim, radius", [(2, 3), (3, 2)])
def test_local_ncc_map_matches_monai_away_from_the_border(ndim, radius):
    # Same definition (squared local correlation over a (2r+1)^D box) except at the border, where
    # MONAI zero-pads the window and we clip it to the image, and in the variance clamp (MONAI
    # clamps window sums at 1e-5, we clamp means at 1e-5 of the global variance): it never binds here.
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(1)
    f = torch.rand(2, 1, *(20, 17, 15)[:ndim], generator=g, dtype=torch.float64)
    w = 0.5 * f + torch.rand(f.shape, generator=g, dtype=torch.float64)
    theirs = -monai_losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=ndim, kernel_size=2 * radius + 1,
                                                              reduction="none")(w, f)
    ours = S.local_ncc_map(f, w, radius=radius)
    inner = (Ellipsis, *[slice(radius, -radius)] * ndim)
    torch.testing.assert_close(ours[inner], theirs[inner], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_lncc_matches_the_autograd_reference(squared, masked):
    # brain-like: an object on a flat zero background, so the eps clamp binds in places
    f, w = _smooth_pair((12, 11, 13), batch=2)
    f[..., :3, :, :] = 0.0
    w[..., :, :2, :] = 0.0
    mask = _box_mask((12, 11, 13), margin=1) if masked else None
    a, b = f.clone().requires_grad_(), w.clone().requires_grad_()
    value = S.lncc(a, b, mask, radius=(2, 1, 3), squared=squared)
    value.sum().backward()
    c, d = f.clone().requires_grad_(), w.clone().requires_grad_()
    weight = torch.ones_like(f[:, :1]) if mask is None else mask
    local = S.local_ncc_map(c, d, mask, radius=(2, 1, 3), squared=squared)
    reference = -(local * weight).sum((1, 2, 3, 4)) / weight.sum((1, 2, 3, 4)).expand(2)
    reference.sum().backward()
    torch.testing.assert_close(value, reference, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a.grad, c.grad, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(b.grad, d.grad, atol=1e-10, rtol=1e-7)


def test_lncc_float32_on_a_flat_background_matches_float64():
    # float32 cumulative sums used to turn flat background into random correlations
    x = torch.zeros(1, 1, 48, 56, 40, dtype=torch.float64)
    x[..., 10:38, 12:44, 8:32] = 0.5 + 0.3 * torch.rand(1, 1, 28, 32, 24, generator=torch.Generator().manual_seed(0),
                                                       dtype=torch.float64)
    y = x.roll(2, dims=2)
    torch.testing.assert_close(S.lncc(x.float(), y.float(), radius=4).double(), S.lncc(x, y, radius=4),
                               atol=1e-5, rtol=0)  # the drift gave errors ~0.1


# ---- mutual information --------------------------------------------------------------------------
def _levels(shape: tuple[int, ...], probabilities: list[float], values: list[float], seed: int = 0) -> torch.Tensor:
    """An image taking ``values`` with ``probabilities`` (exact counts), min 0 and max 1."""
    n = math.prod(shape)
    counts = [round(p * n) for p in probabilities[:-1]]
    counts.append(n - sum(counts))
    flat = torch.cat([torch.full((c,), v, dtype=torch.float64) for c, v in zip(counts, values)])
    flat = flat[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    return flat.view(1, 1, *shape), torch.tensor(counts, dtype=torch.float64) / n


@pytest.mark.parametrize("kernel", ["bspline", "gaussian"])
def test_mi_of_an_image_with_itself_is_its_entropy(kernel):
    # levels 10 bins apart: the Parzen windows of different levels do not overlap
    x, q = _levels((40, 30, 20), [0.1, 0.2, 0.3, 0.4], [0.0, 1 / 3, 2 / 3, 1.0])
    entropy = -(q * q.log()).sum()
    torch.testing.assert_close(S.mi(x, x, kernel=kernel), -entropy.view(1), atol=1e-7, rtol=0)


def test_nmi_of_an_image_with_itself_matches_the_parzen_formula():
    # 31 bins and levels at t = j/4 put every level on a bin centre (u = 1 + 7j): the cubic
    # B-spline then spreads it over 3 bins as (1/6, 2/3, 1/6), adding kernel entropy H_k to each
    # marginal and 2 H_k to the joint: NMI = 2 (H + H_k) / (H + 2 H_k).
    x, q = _levels((50, 40), [0.3, 0.1, 0.2, 0.15, 0.25], [0.0, 0.25, 0.5, 0.75, 1.0])
    h = -(q * q.log()).sum()
    k = torch.tensor([1 / 6, 2 / 3, 1 / 6], dtype=torch.float64)
    h_k = -(k * k.log()).sum()
    torch.testing.assert_close(S.nmi(x, x, bins=31), (-2 * (h + h_k) / (h + 2 * h_k)).view(1), atol=1e-9, rtol=0)


def test_mi_of_independent_images_is_near_zero():
    g = torch.Generator().manual_seed(2)
    f, w = torch.rand(2, 1, 48, 48, 24, generator=g, dtype=torch.float64).split(1)
    assert abs(S.mi(f, w).item()) < 5e-3  # the finite-sample bias is ~1.5e-3 here
    assert abs(S.nmi(f, w).item() + 1) < 5e-3
    assert S.mi(f, f).item() < -1.0


def test_mi_is_invariant_to_increasing_affine_intensity_maps():
    f, w = _smooth_pair(SHAPES[3])
    torch.testing.assert_close(S.mi(f, 3 * w + 7), S.mi(f, w))
    torch.testing.assert_close(S.nmi(2 * f - 1, w), S.nmi(f, w))


def test_mi_float32_matches_float64_with_a_dominant_background():
    # accumulating the joint histogram in float32 rounded away much of the background bin's mass
    x = torch.zeros(1, 1, 64, 64, 64, dtype=torch.float64)
    x[..., 16:48, 16:48, 16:48] = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0),
                                             dtype=torch.float64)
    y = x.roll(3, dims=2)
    torch.testing.assert_close(S.mi(x.float(), y.float()).double(), S.mi(x, y), atol=2e-6, rtol=0)


def test_gaussian_mi_matches_monai():
    # Same Parzen estimate when intensities span exactly [0, 1]: bin centres k/(bins-1), sigma half
    # a bin, rows normalised. Differences: MONAI clamps to [0, 1] where we rescale by min/max (a
    # no-op here), sums every bin where we keep the 6 nearest (< 2e-8 relative weight dropped), and
    # by default adds 1e-7 inside its logarithm (which moves MI by ~1e-3; set to 1e-300 here).
    monai_losses = pytest.importorskip("monai.losses")
    f, w = _smooth_pair((24, 20, 16), batch=2)
    f, w = _pinned(f / f.max()), _pinned(w / w.max())
    theirs = monai_losses.GlobalMutualInformationLoss(kernel_type="gaussian", num_bins=32, reduction="none",
                                                      smooth_nr=1e-300, smooth_dr=1e-300)(w, f)
    torch.testing.assert_close(S.mi(f, w, kernel="gaussian", bins=32), theirs.flatten(), atol=1e-8, rtol=0)


def test_mi_sampling_fraction_and_module_resampling():
    """A fraction draws that share of the voxels (so 1.0 is every voxel); the module redraws each call
    only with ``resample=True``, in a sequence that repeats on a fresh module. Catches a fixed seed
    ignored by the module, or a resampled one that is not reproducible."""
    f, w = _smooth_pair((24, 20, 16))
    torch.testing.assert_close(S.mi(f, w, samples=1.0), S.mi(f, w))
    torch.testing.assert_close(S.mi(f, w, samples=0.5, seed=3), S.mi(f, w, samples=24 * 20 * 8, seed=3))
    fixed, redrawn = MI(samples=500), MI(samples=500, resample=True)
    assert torch.equal(fixed(f, w), fixed(f, w))
    first = [redrawn(f, w) for _ in range(3)]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    again = MI(samples=500, resample=True)
    assert all(torch.equal(a, again(f, w)) for a in first)


@pytest.mark.parametrize("options, match", [
    ({"samples": 0}, "samples"), ({"samples": 1.5}, "samples"), ({"samples": True}, "samples"),
    ({"samples": "20%"}, "samples"), ({"bins": 4}, "bins"), ({"kernel": "box"}, "kernel"),
    ({"seed": 0.5}, "seed"), ({"resample": "yes"}, "resample"),
])
def test_mi_module_validates_its_options_when_built(options, match):
    """Bad MI options fail when the module is built (config time), not at the first image."""
    with pytest.raises(InputError, match=match):
        make_similarity("mi", **options)


def test_mi_sampling_is_seeded_and_close_to_the_full_value():
    f, w = _smooth_pair((24, 20, 16))
    full = S.mi(f, w).item()
    sampled = S.mi(f, w, samples=4000, seed=5)
    assert torch.equal(sampled, S.mi(f, w, samples=4000, seed=5))
    assert not torch.equal(sampled, S.mi(f, w, samples=4000, seed=6))
    assert abs(sampled.item() - full) < 0.05 * abs(full)
    mask = _box_mask((24, 20, 16), margin=4)
    torch.testing.assert_close(S.mi(f, w, mask, samples=10 ** 6), S.mi(f, w, mask))  # more samples than voxels


def _dense_parzen(t: torch.Tensor, bins: int, kernel: str) -> torch.Tensor:
    """Plain-autograd Parzen weights of every voxel at every bin ``(..., bins)``, from the kernel's formula
    (no windows, no analytic derivatives): the reference for the joint histogram's custom backward."""
    k = torch.arange(bins, dtype=t.dtype)
    if kernel == "gaussian":  # centres k / (bins - 1), sigma half a bin, normalised over all bins
        e = torch.exp(-2.0 * (t.unsqueeze(-1) * (bins - 1) - k) ** 2)
        return e / e.sum(-1, keepdim=True)
    x = (1.0 + t * (bins - 3)).unsqueeze(-1) - k  # cubic B-spline at distance x from bin k
    a = x.abs()
    return torch.where(a < 1, 2 / 3 - a**2 + a**3 / 2, torch.where(a < 2, (2 - a).clamp_min(0) ** 3 / 6, 0.0))


@pytest.mark.parametrize("kernel", ["bspline", "gaussian"])
def test_joint_histogram_matches_the_autograd_reference(kernel):
    """The custom joint-histogram Function (windowed forward, analytic chunked backward) against the dense
    einsum of the kernel formula through plain autograd: values and both gradients, and gradcheck of the
    Function itself in float64. Catches a wrong window offset, derivative or mask factor in the backward."""
    g = torch.Generator().manual_seed(11)
    tf = torch.rand(2, 1, 300, generator=g, dtype=torch.float64).requires_grad_()
    tw = torch.rand(2, 1, 300, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.rand(2, 1, 300, generator=g, dtype=torch.float64)
    probe = torch.randn(2, 1, 16, 16, generator=g, dtype=torch.float64)
    ours = S._JointHistogram.apply(tf, tw, weight, 16, kernel)
    grads = torch.autograd.grad((ours * probe).sum(), (tf, tw))
    reference = torch.einsum("bcna,bcnk->bcak", _dense_parzen(tf, 16, kernel),
                             _dense_parzen(tw, 16, kernel) * weight.unsqueeze(-1))
    expected = torch.autograd.grad((reference * probe).sum(), (tf, tw))
    tolerance = 1e-12 if kernel == "bspline" else 1e-6  # the Gaussian keeps the 6 nearest bins only
    torch.testing.assert_close(ours, reference, atol=tolerance, rtol=0)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=tolerance * 100, rtol=tolerance)
    small = (tf[:1, :, :40].detach().requires_grad_(), tw[:1, :, :40].detach().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: S._JointHistogram.apply(a, b, weight[:1, :, :40], 16, kernel), small)


# ---- gradients and self-similarity ---------------------------------------------------------------
def test_ngf_of_linear_ramps_is_analytic():
    i, j, _ = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (7, 8, 6)], indexing="ij")
    ramp_i, ramp_j = (0.3 * i)[None, None], (0.2 * j)[None, None]
    eps, spacing = 0.1, (2.0, 1.0, 1.0)
    g2 = (0.3 / 2.0) ** 2
    expected = 1 - (g2 / (g2 + eps ** 2)) ** 2
    torch.testing.assert_close(S.ngf(ramp_i, ramp_i, eps=eps, spacing=spacing), torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(S.ngf(ramp_i, ramp_j, eps=eps, spacing=spacing), torch.ones(1, dtype=torch.float64))


def _mind_reference(img: torch.Tensor, radius: int, dilation: int) -> torch.Tensor:
    """Heinrich's public MIND-SSC (ConvexAdam / learn2reg code), transcribed for CPU, B = 1."""
    six = torch.tensor([[0, 1, 1], [1, 1, 0], [1, 0, 1], [1, 1, 2], [2, 1, 1], [1, 2, 1]])
    dist = ((six[:, None, :] - six[None, :, :]) ** 2).sum(-1)
    x, y = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    keep = (x > y).reshape(-1) & (dist == 2).reshape(-1)
    shift1 = six.unsqueeze(1).repeat(1, 6, 1).view(-1, 3)[keep, :]
    shift2 = six.unsqueeze(0).repeat(6, 1, 1).view(-1, 3)[keep, :]
    kernels = []
    for shift in (shift1, shift2):
        k = torch.zeros(12, 1, 3, 3, 3, dtype=img.dtype)
        k.view(-1)[torch.arange(12) * 27 + shift[:, 0] * 9 + shift[:, 1] * 3 + shift[:, 2]] = 1
        kernels.append(k)
    padded = F.pad(img, [dilation] * 6, mode="replicate")
    diff = F.conv3d(padded, kernels[0], dilation=dilation) - F.conv3d(padded, kernels[1], dilation=dilation)
    ssd = F.avg_pool3d(F.pad(diff ** 2, [radius] * 6, mode="replicate"), 2 * radius + 1, stride=1)
    mind = ssd - ssd.min(1, keepdim=True)[0]
    var = mind.mean(1, keepdim=True)
    var = torch.clamp(var, var.mean().item() * 0.001, var.mean().item() * 1000)
    return torch.exp(-mind / var)


def test_mind_ssc_matches_heinrichs_reference_away_from_the_border():
    # Border windows differ (the reference replicate-pads the patch average, we clip it), and the
    # reference orders its 12 channels differently: match channels by their values.
    f, _ = _smooth_pair((16, 15, 14))
    radius, dilation = 2, 2
    ours, theirs = S.mind_ssc(f, radius, dilation), _mind_reference(f, radius, dilation)
    assert ours.shape == theirs.shape == (1, 12, 16, 15, 14)
    inner = (Ellipsis, *[slice(radius, -radius)] * 3)
    ours, theirs = ours[inner].flatten(2)[0], theirs[inner].flatten(2)[0]
    errors = (ours[:, None, :] - theirs[None, :, :]).abs().amax(-1)  # (ours, theirs)
    match = errors.argmin(1)
    assert sorted(match.tolist()) == list(range(12))
    assert errors.min(1).values.max().item() < 2e-3  # the clamp level differs a little via the border


def test_mind_ssc_2d_has_four_channels_in_unit_range():
    f, _ = _smooth_pair((12, 11), batch=2, channels=3)
    d = S.mind_ssc(f, radius=1, dilation=2)
    assert d.shape == (2, 12, 12, 11)
    assert d.min().item() > 0 and d.max().item() <= 1
    assert torch.equal(d.amax(1), torch.ones_like(d[:, 0]))  # the smallest patch distance maps to 1


# ---- real multi-modal slices ---------------------------------------------------------------------
def _itk_slice(name: str) -> torch.Tensor:
    from PIL import Image

    array = np.asarray(Image.open(data_file(f"multimodal/itk2d/{name}")).convert("F"), dtype=np.float64)
    return torch.from_numpy(array / 255.0)[None, None]


@pytest.mark.parametrize("name, hyper", [
    ("mi", {}), ("nmi", {}), ("ngf", {"eps": 0.05}), ("mind", {}), ("lncc", {"radius": 3}),
])
def test_multimodal_brain_slices_score_best_when_aligned(name, hyper):
    t1, pd = _itk_slice("BrainT1Slice.png"), _itk_slice("BrainProtonDensitySlice.png")
    loss = make_similarity(name, reduction="none", **hyper)
    crop = (Ellipsis, slice(12, -12), slice(12, -12))
    aligned = loss(t1[crop], pd[crop])
    for dy, dx in [(3, 0), (0, -4), (6, 5)]:
        shifted = pd[..., 12 + dy:pd.shape[-2] - 12 + dy, 12 + dx:pd.shape[-1] - 12 + dx]
        assert aligned.item() < loss(t1[crop], shifted).item(), (dy, dx)


# ---- modules ---------------------------------------------------------------------------------------
def test_registry_holds_the_cli_names():
    assert set(SIMILARITY) == {"mse", "sad", "ncc", "lncc", "mi", "nmi", "ngf", "mind"}
    assert all(issubclass(cls, PairLoss) for cls in SIMILARITY.values())


def test_make_similarity_rejects_typos_listing_the_valid_names():
    with pytest.raises(InputError, match="unknown similarity 'lnc'.*mse, sad, ncc, lncc, mi, nmi, ngf, mind"):
        make_similarity("lnc")
    with pytest.raises(InputError, match="'radius'.*bins"):
        make_similarity("mi", radius=3)
    with pytest.raises(InputError, match="reduction"):
        make_similarity("mse", reduction="avg")


@pytest.mark.parametrize("name", sorted(SIMILARITY))
def test_modules_reduce_the_functional_values(name):
    f, w = _smooth_pair(SHAPES[2], batch=3)
    mask = _box_mask(SHAPES[2], margin=1)
    per_pair = make_similarity(name, reduction="none")(f, w, mask)
    assert per_pair.shape == (3,)
    torch.testing.assert_close(make_similarity(name)(f, w, mask), per_pair.mean())
    torch.testing.assert_close(make_similarity(name, reduction="sum")(f, w, mask), per_pair.sum())


def test_module_values_and_repr_follow_the_hyper_parameters():
    f, w = _smooth_pair(SHAPES[3], batch=2)
    torch.testing.assert_close(LNCC(radius=1, squared=False, reduction="none")(f, w),
                               S.lncc(f, w, radius=1, squared=False))
    assert repr(LNCC(radius=(1, 2, 3))) == "LNCC(radius=(1, 2, 3), eps=1e-05, squared=True, reduction='mean')"
    assert "bins=16, kernel='gaussian', samples=None, seed=0, resample=False" in repr(
        MI(bins=16, kernel="gaussian"))
    assert repr(MINDSSC()) == "MINDSSC(radius=2, dilation=2, reduction='mean')"


# ---- thin axes: 2-D in 3-D -----------------------------------------------------------------------
NEIGHBOURHOOD = ["lncc", "lncc_plain", "ngf", "mind"]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", NEIGHBOURHOOD)
def test_a_one_voxel_axis_gives_exactly_the_2d_value(name, masked):
    """A volume with a 1-voxel axis scores exactly as its 2-D slice: catches a window, difference or
    neighbour pair taken along the thin axis (MIND's 3-D pairs across it, NGF's erosion there)."""
    f, w = _smooth_pair((14, 13), batch=2)
    mask = _box_mask((14, 13), margin=2) if masked else None
    volume = [None if x is None else x[..., None] for x in (f, w, mask)]
    assert torch.equal(_call(name, *volume), _call(name, f, w, mask))


def test_mind_descriptors_of_a_one_voxel_axis_are_the_2d_ones():
    """MIND-SSC of a (H, W, 1) volume has the 4 in-plane channels of the 2-D slice, not 12."""
    f, _ = _smooth_pair((12, 11), batch=2)
    assert torch.equal(S.mind_ssc(f[..., None], radius=1, dilation=2), S.mind_ssc(f, radius=1, dilation=2)[..., None])


@pytest.mark.parametrize("depth", [2, 3])
def test_lncc_on_a_thin_slab_is_monais_2d_lncc_per_slice(depth):
    """On a slab of 2-3 slices the windows stay in their slice: the local correlation map equals
    MONAI's 2-D LNCC of each slice away from the in-plane border. Catches windows across slices."""
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(4)
    f = torch.rand(1, 1, 20, 17, depth, generator=g, dtype=torch.float64)
    w = 0.5 * f + torch.rand(f.shape, generator=g, dtype=torch.float64)
    ours = S.local_ncc_map(f, w, radius=2)
    monai = monai_losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=5, reduction="none")
    for z in range(depth):
        theirs = -monai(w[..., z], f[..., z])
        torch.testing.assert_close(ours[..., 2:-2, 2:-2, z], theirs[..., 2:-2, 2:-2], atol=1e-10, rtol=1e-8)


def test_ngf_ignores_differences_across_a_thin_axis():
    """Analytic: ramps along a thin axis have no NGF edge (value 1 - 0 = 1 as for constant images), ramps
    in plane keep theirs; the 3-slice slab scores as its 2-D slices. Catches a derivative across slices."""
    i, j, k = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (7, 8, 3)], indexing="ij")
    across, in_plane = (0.5 * k)[None, None], (0.3 * i + 0.1 * k)[None, None]
    torch.testing.assert_close(S.ngf(across, across, eps=0.1), torch.ones(1, dtype=torch.float64))
    g2 = 0.3 ** 2
    torch.testing.assert_close(S.ngf(in_plane, in_plane, eps=0.1), torch.tensor([1 - (g2 / (g2 + 0.01)) ** 2],
                                                                                dtype=torch.float64))


def test_mind_without_a_mask_works_on_a_small_thick_slice_image():
    """A 40x40x5 volume with 17 mm slices (the issue's clinical case): MIND with no mask, with a mask of
    ones (what the engine passes when the user gave none) and with an overlap that loses the top slice
    gives finite values and gradients; a mask of ones cuts no margin (equals no mask). This used to fail
    with "mask is empty once voxels within 4 of its edge are dropped"."""
    f, w = _smooth_pair((40, 40, 5), batch=2)
    ones = torch.ones(1, 1, 40, 40, 5, dtype=torch.float64)
    overlap = ones.clone()
    overlap[..., -1] = 0.0
    torch.testing.assert_close(S.mind_ssd(f, w, ones), S.mind_ssd(f, w), atol=1e-12, rtol=1e-10)
    a = w.clone().requires_grad_()
    value = S.mind_ssd(f, a, overlap)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert not torch.allclose(value, S.mind_ssd(f, w))  # the lost slice is left out
    tiny = torch.zeros_like(ones)
    tiny[..., 20, 20, 2] = 1.0  # one voxel: no pair of neighbours inside
    with pytest.raises(InputError, match="MIND patches"):
        S.mind_ssd(f, w, tiny)


def test_mind_needs_two_axes_that_are_not_thin():
    f, w = _smooth_pair((20, 3, 2))
    with pytest.raises(InputError, match="at least 2 axes of more than 3 voxels"):
        S.mind_ssd(f, w)
