"""The engine off the comfortable path: device discipline, stage chains, thin axes and slabs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from torchalign.config import RegistrationConfig, resolve_config
from torchalign.functional.filters import gaussian_smooth
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.losses import make_similarity
from torchalign.registration import build_problem, objective, prepare, register
from torchalign.registration.pyramid import MIN_VOXELS, pyramid_grid, shrink_factors

PRESETS = ["rigid", "similarity", "affine", "syn", "svf", "ffd", "dense"]


def _pair(shape: tuple[int, ...], spacing: tuple[float, ...], shift: tuple[int, ...], seed: int = 0
          ) -> tuple[Image, Image]:
    gen = torch.Generator().manual_seed(seed)
    base = gaussian_smooth(torch.rand((1, 1) + shape, generator=gen), [2.0] * len(shape))
    base = base + 0.5 * gaussian_smooth(torch.rand((1, 1) + shape, generator=gen), [1.0] * len(shape))
    grid = Grid(shape, np.diag([*spacing, 1.0]))
    return Image(base, grid), Image(torch.roll(base, shift, tuple(range(2, 2 + len(shape)))), grid)


def _similarity(fixed: Image, moving: Image, result, metric: str = "ncc") -> float:
    """The metric between the fixed image and the moving image pulled through ``result`` (full grid)."""
    f, m = prepare(fixed, "fixed", True), prepare(moving, "moving", True)
    problem = build_problem(f, m, None, None, 1.0, 0.0, "vox")
    return float(objective(problem, result.transform, make_similarity(metric, reduction="none")))


@pytest.mark.parametrize("preset, init", [("rigid", "search"), ("affine", "moments"), ("syn", "com"),
                                          ("svf", "geometry"), ("ffd", "moments"), ("dense", "none")])
def test_no_tensor_is_created_off_the_inputs_device(preset: str, init: str) -> None:
    """With torch's default device set to ``meta``, any tensor the engine creates without following
    its inputs' device lands on ``meta`` and fails when mixed with the CPU inputs (this caught
    MatrixTransform moving its matrix to the default device, the CUDA crash of gpu runs)."""
    fixed, moving = _pair((40, 36), (1.2, 1.0), (2, -1))
    config = resolve_config(preset, None, {"init": init})
    torch.set_default_device("meta")
    try:
        result = register(fixed, moving, config)
    finally:
        torch.set_default_device("cpu")
    assert result.transform.displacement(fixed.grid).device.type == "cpu"


def test_pyramid_shrinks_each_axis_by_its_own_spacing_and_keeps_a_floor() -> None:
    """A 17 mm slice axis is not shrunk while the 1 mm axes are; no axis drops below MIN_VOXELS
    (before, every axis shrank by the same factor and a 5-slice volume became 1 slice)."""
    grid = Grid((160, 192, 5), np.diag([1.0, 1.0, 17.0, 1.0]))
    np.testing.assert_allclose(shrink_factors(grid, 8.0), [8.0, 8.0, 1.0])
    assert pyramid_grid(grid, 8.0).shape == (20, 24, 5)
    assert pyramid_grid(grid, 64.0).shape == (MIN_VOXELS, MIN_VOXELS, 5)
    slab = Grid((64, 64, 3), np.eye(4))
    assert pyramid_grid(slab, 8.0).shape == (MIN_VOXELS, MIN_VOXELS, 3)


def _chain(*stages: dict) -> RegistrationConfig:
    return RegistrationConfig.model_validate({"init": "none", "stages": list(stages)})


RIGID = {"transform": "rigid", "metric": "ncc", "levels": [{"shrink": 2, "sigma": 1, "iterations": 40}]}
SYN = {"transform": "syn", "metric": "lncc", "metric_options": {"radius": 2}, "lr": 0.25,
       "transform_options": {"stride": 2, "grad_sigma": 1.0, "exact_grad": False},
       "regularisers": [{"name": "diffusion", "weight": 0.3}],
       "levels": [{"shrink": 2, "sigma": 1, "iterations": 20}, {"shrink": 1, "sigma": 0, "iterations": 10}]}
FFD = {"transform": "ffd", "metric": "lncc", "lr": 0.25, "transform_options": {"control_spacing": 6.0},
       "levels": [{"shrink": 1, "sigma": 0, "iterations": 20}]}


def test_linear_after_deformable_keeps_the_deformation() -> None:
    """rigid -> syn -> rigid: the last linear stage composes onto the deformation (before, it was
    silently dropped: no field, no warp written). The result equals the deformable result moved by
    the last stage's matrix: T(x) = T_syn(L(x))."""
    fixed, moving = _pair((48, 44), (1.0, 1.0), (3, -2))
    two = register(fixed, moving, _chain(RIGID, SYN))
    three = register(fixed, moving, _chain(RIGID, SYN, RIGID))
    assert three.transform.linear_matrix() is None  # a field is part of the result
    u2, u3 = (r.transform.displacement(fixed.grid) for r in (two, three))
    assert u3.abs().max() > 0.5
    rigid_only = _similarity(fixed, moving, register(fixed, moving, _chain(RIGID)))
    # the last rigid stage optimises its own (coarser, smoothed) level: allow a small change at full resolution
    three_similarity = _similarity(fixed, moving, three)
    assert three_similarity <= _similarity(fixed, moving, two) + 0.005
    assert three_similarity < rigid_only - 0.02  # the deformation is still there
    points = fixed.grid.points(torch.float64)[None]
    roundtrip = three.inverse(three.transform(points))
    inside = (slice(None), slice(6, -6), slice(6, -6))
    assert float((roundtrip - points)[inside].norm(dim=-1).median()) < 0.1


def test_second_deformable_stage_refines_the_first() -> None:
    """syn -> ffd: the second stage starts from the first's deformation (before, it restarted from
    the linear matrix and the first stage's work was lost): its result is at least as similar."""
    fixed, moving = _pair((48, 44), (1.0, 1.0), (3, -2), seed=1)
    one = register(fixed, moving, _chain(SYN))
    two = register(fixed, moving, _chain(SYN, FFD))
    assert _similarity(fixed, moving, two) <= _similarity(fixed, moving, one) + 1e-4
    u1, u2 = (r.transform.displacement(fixed.grid) for r in (one, two))
    assert float((u2 - u1).abs().max()) > 1e-3  # it did refine
    assert float((u2 - u1).abs().mean()) < float(u1.abs().mean())  # and did not start again


def test_a_chain_that_cannot_run_is_refused_when_it_loads(tmp_path) -> None:
    """A stage with nothing to optimise is refused at load time, naming the stage."""
    from torchalign.errors import InputError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("stages:\n  - {transform: syn}\n  - {transform: rigid, freeze: [translation, rotation]}\n")
    with pytest.raises(InputError, match=r"stages\.1 \(rigid\).*nothing"):
        resolve_config(None, cfg)


@pytest.mark.parametrize("preset", [p if p == "syn" else pytest.param(p, marks=pytest.mark.slow) for p in PRESETS])
@pytest.mark.parametrize("shape, spacing", [((64, 64, 3), (1.0, 1.0, 1.0)), ((40, 40, 5), (1.0, 1.0, 17.0))],
                         ids=["slab", "thick"])
def test_every_preset_runs_on_slabs_and_thick_slices(preset: str, shape, spacing) -> None:
    """64x64x3 slabs and 40x40x5 volumes with 17 mm slices: every preset runs (before, syn stopped with
    'regularisers need at least 3 voxels per axis, got grid shape (5, 5, 1)'; then an MI stage lost
    all overlap once the rigid stage tilted the slab), its map is finite and no deformable stage leaves
    its own similarity worse than it found it."""
    fixed, moving = _pair(shape, spacing, (2, -2, 0))
    result = register(fixed, moving, resolve_config(preset))
    assert torch.isfinite(result.transform.displacement(fixed.grid)).all()
    for stage in result.stages:
        if stage.similarity_before is not None:  # improved, or undone (the result is then the previous one)
            assert stage.kept_previous or stage.similarity_after <= stage.similarity_before


METRICS = ["mse", "sad", "ncc", "lncc", "mi", "nmi", "ngf", "mind"]


def _quick(config: RegistrationConfig, iterations: int = 3) -> RegistrationConfig:
    """``config`` with at most ``iterations`` per level (the test is about running, not converging)."""
    data = config.model_dump()
    for stage in data["stages"]:
        for level in stage["levels"]:
            level["iterations"] = min(level["iterations"], iterations)
    return RegistrationConfig.model_validate(data)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("ndim", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_every_metric_runs_with_every_preset(ndim: int, preset: str, metric: str) -> None:
    """``--metric M`` with any preset (as the CLI resolves it): before, 12 of 24 metric x preset
    combinations failed after the linear stages (LNCC's radius passed to MI, MIND on small images)."""
    shape, spacing = ((48, 44), (1.0, 1.2)) if ndim == 2 else ((24, 26, 20), (1.5, 1.5, 2.0))
    fixed, moving = _pair(shape, spacing, (2, -1) + (0,) * (ndim - 2))
    result = register(fixed, moving, _quick(resolve_config(preset, None, {"metric": metric})))
    assert torch.isfinite(result.transform.displacement(fixed.grid)).all()
    assert all(stage.metric == metric for stage in result.stages)


def _thick_slices(path) -> Image:
    """A real 1 mm volume resliced (linear, after smoothing) to 5 slices of 17 mm and 2 mm in-plane."""
    from torchalign.io import read_image
    from torchalign.registration.pyramid import smooth_and_shrink

    image = read_image(path)
    center = image.grid.center()
    shape, spacing = np.array([80, 96, 5]), np.array([2.0, 2.0, 17.0])
    matrix = np.diag([*spacing, 1.0])
    matrix[:3, 3] = center - spacing * (shape - 1) / 2
    return smooth_and_shrink(image, Grid(tuple(int(s) for s in shape), matrix), [1.0, 1.0, 7.0])


@pytest.mark.parametrize("preset", [p if p == "syn" else pytest.param(p, marks=pytest.mark.slow) for p in PRESETS])
def test_every_preset_runs_on_a_real_volume_resliced_to_five_thick_slices(preset: str) -> None:
    """Two brains resliced to 5 slices of 17 mm (a clinical thick-slice MRI): every preset runs, its map
    is finite, and the result is at least as similar as the images were (before, syn stopped on the
    pyramid's 1-slice levels)."""
    from conftest import data_file

    fixed = _thick_slices(data_file("brain3d/subject_a_t1.nii.gz"))
    moving = _thick_slices(data_file("brain3d/subject_b_t1.nii.gz"))
    result = register(fixed, moving, resolve_config(preset))
    assert torch.isfinite(result.transform.displacement(fixed.grid)).all()
    identity = register(fixed, moving, _chain({"transform": "translation", "levels": [{"iterations": 0}]}))
    assert _similarity(fixed, moving, result) < _similarity(fixed, moving, identity)
