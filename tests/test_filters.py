"""Filters against independent oracles: scipy.ndimage, numpy.gradient, brute-force window means,
PyTorch's avg_pool (count_include_pad=False) and Grid.downsample's shape rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from torchalign.errors import InputError
from torchalign.functional.filters import box_filter, downsample, gaussian_smooth, spatial_gradient
from torchalign.grid import Grid


def _brute_box_mean(a: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """Mean over the in-image part of each window, one voxel at a time."""
    out = np.empty_like(a)
    for idx in np.ndindex(*a.shape[2:]):
        window = tuple(slice(max(0, i - r), i + r + 1) for i, r in zip(idx, radii))
        out[(slice(None), slice(None), *idx)] = a[(slice(None), slice(None), *window)].mean(axis=tuple(range(2, a.ndim)))
    return out


# ---- gaussian_smooth ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, sigma", [((2, 3, 20, 17), 1.3), ((1, 2, 12, 15, 11), (0.7, 0.0, 2.2))])
def test_gaussian_matches_scipy_nearest_mode(rng, shape, sigma):
    x = rng.standard_normal(shape)
    sigmas = np.broadcast_to(sigma, (len(shape) - 2,))
    radius = [int(np.ceil(3 * s)) for s in sigmas]  # our truncation, told to scipy explicitly
    expected = np.stack([[ndimage.gaussian_filter(x[b, c], sigmas, mode="nearest", radius=radius)
                          for c in range(shape[1])] for b in range(shape[0])])
    got = gaussian_smooth(torch.from_numpy(x), sigma).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_gaussian_keeps_constants_and_dtype():
    x = torch.full((1, 1, 9, 8, 7), 3.5)
    y = gaussian_smooth(x, 2.0)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, x)


def test_gaussian_zero_sigma_is_identity(rng):
    x = torch.from_numpy(rng.standard_normal((1, 1, 6, 7)))
    assert torch.equal(gaussian_smooth(x, 0.0), x)


def test_gaussian_gradcheck(rng):
    x = torch.from_numpy(rng.standard_normal((1, 1, 5, 4))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gaussian_smooth(t, (0.8, 1.1)), (x,), fast_mode=True)


# ---- box_filter ---------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [1, (2, 0, 3), (9, 1, 2), 30])
def test_box_filter_is_mean_over_inside_voxels(rng, radius):
    x = rng.standard_normal((2, 2, 7, 9, 8))
    radii = tuple(np.broadcast_to(radius, (3,)).tolist())
    got = box_filter(torch.from_numpy(x), radius).numpy()
    np.testing.assert_allclose(got, _brute_box_mean(x, radii), atol=1e-12)


def test_box_filter_matches_avg_pool_2d(rng):
    x = torch.from_numpy(rng.standard_normal((3, 1, 31, 24)))
    expected = F.avg_pool2d(x, (5, 9), stride=1, padding=(2, 4), count_include_pad=False)
    torch.testing.assert_close(box_filter(x, (2, 4)), expected, atol=1e-12, rtol=0)


def test_box_filter_float32_does_not_drift(rng):
    # a large offset plus small detail: float32 cumulative sums would lose the detail
    x64 = 1000.0 + rng.standard_normal((1, 1, 64, 96, 112))
    got = box_filter(torch.from_numpy(x64).float(), 3).double()
    expected = box_filter(torch.from_numpy(x64), 3)
    assert (got - expected).abs().max().item() < 1e-3  # float32 rounding of values ~1000 is 6e-5


def test_box_filter_variance_of_flat_region_is_tiny_in_float32():
    x = torch.zeros(1, 1, 160, 96, 112)
    x[..., 40:120, 20:80, 30:90] = 0.8  # an object on an empty background
    mean, mean_sq = box_filter(torch.cat([x, x * x], 1), 4).split(1, 1)
    var = mean_sq - mean * mean
    assert var[..., :30, :, :].abs().max().item() < 1e-7  # flat background far from the object


def test_box_filter_gradcheck(rng):
    x = torch.from_numpy(rng.standard_normal((1, 1, 4, 3, 5))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: box_filter(t, (1, 2, 3)), (x,))
    assert torch.autograd.gradgradcheck(lambda t: box_filter(t, 1), (x[..., :2, :2, :3],))


def test_per_axis_parameters_accept_arrays(rng):
    x = torch.from_numpy(rng.standard_normal((1, 1, 6, 5, 4)))
    torch.testing.assert_close(box_filter(x, np.array([1, 2, 0])), box_filter(x, (1, 2, 0)))
    torch.testing.assert_close(gaussian_smooth(x, [1.5]), gaussian_smooth(x, 1.5))


def test_box_filter_zero_radius_is_identity(rng):
    x = torch.from_numpy(rng.standard_normal((1, 1, 4, 5)))
    assert box_filter(x, 0) is x


# ---- spatial_gradient ---------------------------------------------------------------------------
def test_spatial_gradient_matches_numpy_gradient(rng):
    x = rng.standard_normal((2, 3, 6, 7, 5))
    spacing = (0.5, 2.0, 1.5)
    got = spatial_gradient(torch.from_numpy(x), spacing).numpy()
    assert got.shape == (2, 3, 3, 6, 7, 5)
    for axis in range(3):
        np.testing.assert_allclose(got[:, :, axis], np.gradient(x, spacing[axis], axis=axis + 2), atol=1e-12)


def test_spatial_gradient_of_linear_ramp_is_exact_everywhere():
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(5.0), indexing="ij")
    x = (3 * i - 2 * j)[None, None]
    g = spatial_gradient(x, (2.0, 0.5))
    torch.testing.assert_close(g[:, :, 0], torch.full_like(x, 1.5))
    torch.testing.assert_close(g[:, :, 1], torch.full_like(x, -4.0))


def test_spatial_gradient_length_one_axis_is_zero(rng):
    x = torch.from_numpy(rng.standard_normal((1, 1, 5, 1)))
    g = spatial_gradient(x)
    assert g.shape == (1, 1, 2, 5, 1) and not g[:, :, 1].any()


# ---- downsample ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, factor", [((17, 22), 2), ((15, 9, 20), (2, 1, 4)), ((7, 8, 9), 3)])
def test_downsample_shape_matches_grid(shape, factor):
    x = torch.full((2, 1, *shape), 2.5)
    y = downsample(x, factor)
    assert y.shape[2:] == Grid(shape).downsample(factor).shape
    torch.testing.assert_close(y, torch.full_like(y, 2.5))


def test_downsample_removes_aliasing(rng):
    # a checkerboard at the Nyquist frequency must not survive a shrink by 2
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    x = torch.from_numpy(((i + j) % 2).astype(np.float64))[None, None]
    y = downsample(x, 2)
    assert y.std().item() < 0.02 and abs(y.mean().item() - 0.5) < 0.01


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, word", [
    (lambda: gaussian_smooth(np.zeros((1, 1, 4, 4)), 1.0), "x"),
    (lambda: gaussian_smooth(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 1.0), "floating"),
    (lambda: gaussian_smooth(torch.zeros(4, 4), 1.0), "(B, C, *S)"),
    (lambda: gaussian_smooth(torch.zeros(1, 1, 4, 4), -1.0), "sigma"),
    (lambda: gaussian_smooth(torch.zeros(1, 1, 4, 4), (1.0, 1.0, 1.0)), "sigma"),
    (lambda: box_filter(torch.zeros(1, 1, 4, 4), -1), "radius"),
    (lambda: box_filter(torch.zeros(1, 1, 4, 4), 1.5), "radius"),
    (lambda: box_filter(torch.zeros(1, 1, 4, 4), "two"), "radius"),
    (lambda: spatial_gradient(torch.zeros(1, 1, 4, 4), (1.0, 0.0)), "spacing"),
    (lambda: downsample(torch.zeros(1, 1, 4, 4), 0.5), "factor"),
])
def test_bad_input_raises_input_error_naming_the_argument(call, word):
    with pytest.raises(InputError, match=word.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        call()


@pytest.mark.parametrize("radii", [(2, 1, 3), (0, 2, 0), (1, 0, 1), (2, 2, 2)])
def test_box_sum_into_itself_a_new_tensor_or_another_equals_scipy(rng, radii):
    """Zero-padded window sums (the LNCC kernel) written in place, to a new tensor or into ``out``,
    including an axis of one voxel."""
    from scipy.ndimage import correlate

    from torchalign.functional.filters import _box_sum

    x = rng.normal(size=(1, 2, 9, 7, 1))
    expected = correlate(x, np.ones((1, 1, *(2 * r + 1 for r in radii))), mode="constant", cval=0.0)
    t = torch.from_numpy(x.copy())
    np.testing.assert_allclose(_box_sum(t, radii).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(t.numpy(), x)  # the input is untouched
    other = torch.empty_like(t)
    assert _box_sum(t, radii, out=other) is other
    np.testing.assert_allclose(other.numpy(), expected, atol=1e-12)
    assert _box_sum(t, radii, out=t) is t
    np.testing.assert_allclose(t.numpy(), expected, atol=1e-12)
