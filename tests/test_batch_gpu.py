"""Batched registration: equal-size pairs stacked on the batch dimension give each pair the result it
gets alone; the gpu-batch runner groups by size, writes the per-pair outputs and reports failures per pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_batch_data import corrupt, fast_settings, make_pairs, matrices

from torchalign.batch import Execution, read_pairs, run_batch
from torchalign.batch import gpu as gpu_module
from torchalign.batch.driver import check_batchable, register_batch
from torchalign.batch.marker import MARKER
from torchalign.batch.run import read_inputs, torch_threads
from torchalign.config import RegistrationConfig, resolve_config
from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.registration import prepare_pair, register


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpu")
    make_pairs(folder, 6)
    return folder


def _config(iterations: int = 25, **stage: object) -> RegistrationConfig:
    return RegistrationConfig.model_validate({"init": "com", "stages": [
        {"transform": "rigid", "metric": "mse", "levels": [{"shrink": 2, "sigma": 1, "iterations": iterations}],
         **stage},
        {"transform": "affine", "metric": "ncc", "lr": 0.1, "levels": [{"shrink": 2, "sigma": 0, "iterations": 10}]}]})


def test_batch_equals_each_pair_alone(study: Path) -> None:
    """Different headers, per-pair plateaus (early stops) and two stages: matrices and histories as alone."""
    settings = fast_settings(study)
    data = [read_inputs(p, settings) for p in read_pairs(study / "pairs.csv")]
    config = _config(iterations=60)
    mask = Image((data[2].fixed.data > 0.1).float(), data[2].fixed.grid)
    with torch_threads(1):
        alone = [register(d.fixed, d.moving, config, fixed_mask=mask if i == 2 else None) for i, d in enumerate(data)]
        together = register_batch([prepare_pair(d.fixed, d.moving, config, mask if i == 2 else None)
                                   for i, d in enumerate(data)], config)
    stops = set()
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.linear.numpy(), a.linear.numpy(), atol=1e-6)
        np.testing.assert_array_equal(b.init, a.init)
        for sa, sb in zip(a.stages, b.stages):
            assert [lv.iterations for lv in sa.levels] == [lv.iterations for lv in sb.levels]
            np.testing.assert_allclose(sb.levels[0].losses, sa.levels[0].losses, rtol=1e-5)
        stops.add(a.stages[0].levels[0].iterations)
        assert torch.allclose(b.inverse.matrix(), torch.linalg.inv(b.linear))
    assert len(stops) > 1, "the test needs pairs that stop at different iterations"


def test_only_element_wise_configs_batch() -> None:
    check_batchable(resolve_config("affine"))
    check_batchable(resolve_config("syn"))
    with pytest.raises(InputError, match="LBFGS"):
        check_batchable(_config(optimizer="LBFGS"))


def test_pairs_of_different_sizes_are_batched_apart(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [Image(torch.tensor(rng.random((1, 1) + s), dtype=torch.float32), Grid(s)) for s in
              ((20, 24), (20, 24), (16, 24))]
    config = _config(iterations=3)
    prepared = [prepare_pair(i, i, config) for i in images]
    with pytest.raises(InputError, match="equal fixed and moving shapes"):
        register_batch(prepared, config)
    assert len(register_batch(prepared[:2], config)) == 2


def test_gpu_batch_runner_outputs_failures_and_rerun(study: Path, tmp_path: Path) -> None:
    pairs = read_pairs(study / "pairs.csv")
    settings = fast_settings(study)
    results = run_batch(pairs, tmp_path / "seq", settings)
    assert all(r.status == "ok" for r in results)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(Path(pairs[3].moving).read_bytes())
    corrupt(broken)
    pairs[3] = type(pairs[3])(**{**pairs[3].__dict__, "moving": str(broken)})
    out = tmp_path / "batched"
    batched = run_batch(pairs, out, settings, Execution("gpu-batch", batch_size=4))
    assert [r.status for r in batched] == ["ok"] * 3 + ["failed"] + ["ok"] * 2
    assert str(broken) in batched[3].error
    ids = [p.id for i, p in enumerate(pairs) if i != 3]
    np.testing.assert_allclose(matrices(out, ids), matrices(tmp_path / "seq", ids), atol=1e-6)
    assert sorted(p.name for p in (out / "p01").iterdir()) == sorted(p.name for p in (tmp_path / "seq" / "p01").iterdir())
    assert (out / "p00" / MARKER).is_file()
    again = run_batch(pairs, out, settings, Execution("gpu-batch"))
    assert [r.status for r in again] == ["skipped"] * 3 + ["failed"] + ["skipped"] * 2


def test_failed_batch_falls_back_or_reports(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = read_pairs(study / "pairs.csv")[:2]

    def diverges(*args: object) -> None:
        raise InputError("rigid L1/1 (40, 48) x2: the loss of pair 2 diverged")

    monkeypatch.setattr(gpu_module, "register_batch", diverges)
    results = run_batch(pairs, tmp_path / "fallback", fast_settings(study), Execution("gpu-batch"))
    assert [r.status for r in results] == ["ok", "ok"]  # registered one by one instead

    def bug(*args: object) -> None:
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(gpu_module, "register_batch", bug)
    results = run_batch(pairs, tmp_path / "bug", fast_settings(study), Execution("gpu-batch"))
    assert [(r.status, r.error) for r in results] == [("failed", "TypeError: unexpected keyword")] * 2


def test_batched_deformable_equals_each_pair_alone() -> None:
    """A syn-style stage on three pairs sharing a fixed grid, stacked on the batch dimension: each
    pair's map equals its registration alone (fails if the pairs' losses or plateaus were coupled)."""
    from torchalign.functional.filters import gaussian_smooth

    gen = torch.Generator().manual_seed(3)
    shape = (40, 36)
    grid = Grid(shape, np.diag([1.2, 1.0, 1.0]))
    base = gaussian_smooth(torch.rand((1, 1) + shape, generator=gen), 2.0)
    fixed = Image(base, grid)
    movings = [Image(torch.roll(base, shifts=(k, -k), dims=(2, 3)) + 0.01 * k, grid) for k in (1, 2, 3)]
    config = RegistrationConfig.model_validate({"init": "none", "stages": [
        {"transform": "syn", "metric": "lncc", "metric_options": {"radius": 2}, "lr": 0.25,
         "transform_options": {"stride": 2, "grad_sigma": 1.0, "exact_grad": False},
         "regularisers": [{"name": "diffusion", "weight": 0.3}],
         "levels": [{"shrink": 2, "sigma": 1, "iterations": 15}, {"shrink": 1, "sigma": 0, "iterations": 8}]}]})
    with torch_threads(1):
        alone = [register(fixed, m, config) for m in movings]
        together = register_batch([prepare_pair(fixed, m, config) for m in movings], config)
    for a, b in zip(alone, together):
        ua, ub = a.transform.displacement(grid), b.transform.displacement(grid)
        assert ua.abs().max() > 0.5  # the pairs really moved
        torch.testing.assert_close(ub, ua, atol=2e-3, rtol=0)
        for sa, sb in zip(a.stages, b.stages):
            assert [lv.iterations for lv in sa.levels] == [lv.iterations for lv in sb.levels]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; gpu-batch runs on the CPU above")
def test_batch_on_cuda_matches_cpu(study: Path) -> None:
    settings = fast_settings(study)
    data = [read_inputs(p, settings) for p in read_pairs(study / "pairs.csv")]
    config = _config()
    cpu = register_batch([prepare_pair(d.fixed, d.moving, config) for d in data], config)
    cuda = register_batch([prepare_pair(d.fixed, d.moving, config, device="cuda") for d in data], config)
    for a, b in zip(cpu, cuda):
        assert b.linear.device.type == "cuda"
        np.testing.assert_allclose(b.linear.cpu().numpy(), a.linear.numpy(), atol=1e-3)
