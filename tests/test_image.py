"""Image container and intensity normalisation (percentiles against numpy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image, normalize_intensity


def test_normalize_matches_numpy_percentiles_per_image_and_channel(rng: np.random.Generator) -> None:
    data = torch.tensor(rng.gamma(2.0, size=(2, 3, 9, 8, 7)) * np.array([1, 10, 1000])[None, :, None, None, None])
    out = normalize_intensity(data, lower=5, upper=95)
    assert out.shape == data.shape and out.dtype == torch.float64
    for b in range(2):
        for c in range(3):
            x = data[b, c].numpy()
            lo, hi = np.percentile(x, [5, 95])
            np.testing.assert_allclose(out[b, c].numpy(), np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-12)
    assert out.min() == 0 and out.max() == 1


def test_normalize_uses_the_mask_only(rng: np.random.Generator) -> None:
    data = torch.tensor(rng.normal(size=(2, 1, 10, 12)), dtype=torch.float32)
    mask = torch.zeros(1, 1, 10, 12)
    mask[..., 2:8, 3:9] = 1
    spoiled = data.clone()
    spoiled[..., 0, :] = 1e6  # outside the mask: must not move the percentiles
    out = normalize_intensity(spoiled, lower=1, upper=99, mask=mask)
    inside = mask[0, 0].bool()
    for b in range(2):
        lo, hi = np.percentile(data[b, 0][inside].numpy(), [1, 99])
        np.testing.assert_allclose(out[b, 0][inside].numpy(), np.clip((data[b, 0][inside].numpy() - lo) / (hi - lo), 0, 1),
                                   atol=1e-5)
        assert (out[b, 0, 0] == 1).all()  # clipped


def test_normalize_falls_back_to_min_max_for_sparse_images() -> None:
    data = torch.zeros(1, 1, 20, 20)
    data[0, 0, 3, 4] = 5.0  # 99.5th percentile is still 0: use the full range instead
    out = normalize_intensity(data)
    assert out[0, 0, 3, 4] == 1 and out.sum() == 1


def test_normalize_integer_data_gives_float32() -> None:
    out = normalize_intensity(torch.arange(100, dtype=torch.int16).reshape(1, 1, 10, 10), lower=0, upper=100)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.ravel(), torch.arange(100) / 99.0)


@pytest.mark.parametrize("kwargs,message", [
    ({"data": torch.full((1, 1, 5, 5), 3.0)}, "constant image"),
    ({"data": torch.ones(1, 1, 5, 5) * torch.arange(5.0), "mask": torch.zeros(1, 1, 5, 5)}, "mask is empty"),
    ({"data": torch.ones(1, 1, 5, 5) * torch.arange(5.0), "mask": torch.ones(1, 1, 5, 4)}, "does not fit"),
    ({"data": torch.ones(1, 1, 5, 5) * torch.arange(5.0), "lower": 60, "upper": 40}, "percentiles"),
])
def test_normalize_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalize_intensity(**kwargs)


def test_image_shapes_and_finiteness() -> None:
    grid = Grid((4, 5))
    assert Image(torch.zeros(4, 5)[None], grid).data.shape == (1, 1, 4, 5)
    with pytest.raises(InputError, match="data spatial shape"):
        Image(torch.zeros(1, 1, 5, 4), grid)
    with pytest.raises(InputError, match=r"must be \(C, \*S\) or \(B, C, \*S\)"):
        Image(torch.zeros(4, 5), grid)
    bad = torch.zeros(1, 1, 4, 5)
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(InputError, match="moving contains 1 NaN/Inf"):
        Image(bad, grid).check_finite("moving")
