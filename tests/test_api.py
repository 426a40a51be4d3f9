"""The top-level API (``import torchalign as ta``): every call the docs show, on known answers.

The pairs are smooth random blob images moved by a known translation, so each call has an exact
expected outcome; the code blocks of docs/index.md and of torchalign.api's docstring are executed
as written, on files with the names they use.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import torchalign as ta
from torchalign import api
from torchalign.config import Level, RegistrationConfig, Stage
from torchalign.errors import InputError
from torchalign.io import write_image
from torchalign.metrics import evaluate as metrics_evaluate

REPO = Path(__file__).resolve().parents[1]
SHIFT = np.array([3.0, -2.0])  # voxels: moving(p) = fixed(p - SHIFT)


def _blobs(shape: tuple[int, ...], shift: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Smooth random blobs in [0, 1], optionally moved by ``shift`` voxels (content at p goes to p + shift)."""
    g = np.random.default_rng(seed)
    shift = np.zeros(len(shape)) if shift is None else np.asarray(shift, dtype=float)
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    img = np.zeros(shape)
    for _ in range(6):
        c = g.uniform(0.3, 0.7, len(shape)) * np.array(shape)
        s = g.uniform(0.08, 0.18, len(shape)) * np.array(shape)
        img += g.uniform(0.5, 1.0) * np.exp(-sum(((a - sh - ci) / si) ** 2
                                                 for a, sh, ci, si in zip(grids, shift, c, s)))
    return img / img.max()


def _quick(transform: str = "rigid", metric: str = "mse") -> RegistrationConfig:
    """A small two-level linear config (fast on 64x64 images)."""
    return RegistrationConfig(init="none", stages=[Stage(transform=transform, metric=metric, lr=0.2, levels=[
        Level(shrink=2, sigma=1, iterations=80), Level(shrink=1, sigma=0, iterations=60)])])


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """f.png and m.png: the moving PNG is the fixed one moved by SHIFT pixels (rows, columns)."""
    folder = tmp_path_factory.mktemp("pngs")
    for name, shift in (("f.png", None), ("m.png", SHIFT)):
        PILImage.fromarray((255 * _blobs((64, 64), shift)).astype(np.uint8)).save(folder / name)
    return folder


def test_import_is_light() -> None:
    """Catches an eager import in torchalign/__init__.py: the CLI's --help must not load torch."""
    code = "import sys, torchalign as ta; assert 'torch' not in sys.modules, 'torch imported'; print(ta.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr


def test_lazy_names_resolve_and_unknown_names_fail() -> None:
    """Catches a lazy name pointing at a wrong module, or __getattr__ swallowing typos."""
    from torchalign.grid import Grid
    from torchalign.image import Image
    from torchalign.io import read_image

    assert (ta.Grid, ta.Image, ta.read_image, ta.register, ta.Registration) == (
        Grid, Image, read_image, api.register, api.Registration)
    assert set(ta.__all__) <= set(dir(ta))
    with pytest.raises(AttributeError, match="no attribute 'regster'"):
        ta.regster  # noqa: B018


def test_issue_command_on_two_png_files(pngs: Path) -> None:
    """The documented one-liner runs in a fresh interpreter on two image files (exit code 0)."""
    code = "import torchalign as ta; r = ta.register('f.png', 'm.png', preset='affine')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=pngs, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_register_paths_recovers_the_shift_in_world_coordinates(pngs: Path) -> None:
    """PNG arrays are read (column, row) as SimpleITK reads them, and pixel (column j, row i) lies at
    world (-j, -i) (LPS identity, docs/conventions.md); content moved by SHIFT = (rows, columns) pixels
    is the world map T(x) = x - SHIFT[::-1]. Catches a lost axis flip or sign in the face."""
    r = ta.register(pngs / "f.png", pngs / "m.png", config=_quick())
    x = torch.tensor([[-20.0, -30.0], [-40.0, -25.0]], dtype=torch.float64)
    expected = x - torch.from_numpy(SHIFT[::-1].copy())
    assert torch.allclose(r.warp_points(x), expected, atol=0.25), r.warp_points(x)
    assert r.matrix.shape == (3, 3)
    warped = r.warp()
    assert warped.grid.same_as(r.fixed.grid)
    fixed = r.fixed.data.float().mean(1)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    before = (r.moving.data.float().mean(1) - fixed)[inner].abs().mean()
    after = (warped.data.float().mean(1) - fixed)[inner].abs().mean()
    assert after < 0.2 * before, (before, after)


def test_tensors_with_spacing_give_millimetres() -> None:
    """Arrays are placed on a grid of ``spacing`` mm; catches a face that ignores spacing."""
    f = torch.from_numpy(_blobs((64, 64))).float()
    m = torch.from_numpy(_blobs((64, 64), SHIFT)).float()
    r = ta.register(f, m, config=_quick(), spacing=(2.0, 2.0))
    assert np.allclose(r.fixed.grid.spacing, 2.0)
    x = torch.tensor([[60.0, 50.0]], dtype=torch.float64)
    assert torch.allclose(r.warp_points(x), x + 2 * torch.from_numpy(SHIFT), atol=0.5)
    # (B, N, D) points keep their batch dimension
    assert r.warp_points(x[None]).shape == (1, 1, 2)


def test_preset_overrides_and_config_objects() -> None:
    """Overrides reach the config as on the command line; a config object excludes them."""
    f = torch.from_numpy(_blobs((32, 32))).float()
    cfg = RegistrationConfig(init="none", stages=[Stage(transform="translation", metric="mse",
                                                        levels=[Level(shrink=1, iterations=2)])])
    r = ta.register(f, f, config=cfg)
    assert r.config is cfg
    r = ta.register(f, f, preset="affine", metric="ncc", init="geometry", stages=cfg.model_dump()["stages"])
    assert r.config.init == "geometry" and r.config.preset == "affine"
    assert [s.metric for s in r.config.stages] == ["ncc"]
    with pytest.raises(InputError, match="either a RegistrationConfig"):
        ta.register(f, f, config=cfg, metric="mi")
    with pytest.raises(InputError, match="unknown preset"):
        ta.register(f, f, preset="sin")


def test_default_preset_is_syn() -> None:
    """``ta.register(f, m)`` runs the syn preset (as the issue states), resolved before any work."""
    calls = []
    original = api.resolve_config
    try:
        api.resolve_config = lambda preset, config, overrides: calls.append(preset) or original(  # type: ignore
            preset, config, {**overrides, "init": "none", "stages": [
                {"transform": "translation", "metric": "mse", "levels": [{"shrink": 1, "iterations": 1}]}]})
        ta.register(torch.rand(16, 16), torch.rand(16, 16))
    finally:
        api.resolve_config = original
    assert calls == ["syn"]


def test_bad_inputs_name_the_argument(tmp_path: Path) -> None:
    """One-line InputErrors naming the file or argument, raised before any work."""
    with pytest.raises(InputError, match="missing.png"):
        ta.register(tmp_path / "missing.png", tmp_path / "missing.png", preset="affine")
    with pytest.raises(InputError, match="moving: an array must be"):
        ta.register(torch.rand(8, 8), torch.rand(8), preset="affine")
    with pytest.raises(InputError, match="fixed: expected a path"):
        ta.register(3, torch.rand(8, 8), preset="affine")


@pytest.fixture(scope="module")
def deformable() -> api.Registration:
    """A small deformable registration (translation, then svf) of a blob image to its shifted copy."""
    f = torch.from_numpy(_blobs((48, 48))).float()
    m = torch.from_numpy(_blobs((48, 48), SHIFT)).float()
    cfg = _quick("translation")
    cfg.stages.append(Stage(transform="svf", metric="mse", lr=0.2, tolerance=0.0, transform_options={"grad_sigma": 1.0},
                            levels=[Level(shrink=1, sigma=0, iterations=20)]))
    return ta.register(f, m, config=cfg)


def _labels(shift: np.ndarray | None) -> torch.Tensor:
    img = _blobs((48, 48), shift)
    return torch.from_numpy(np.digitize(img, [0.2, 0.5]).astype(np.int64))


def test_warp_labels_and_arrays_on_the_moving_grid(deformable: api.Registration) -> None:
    """``interp='label'`` keeps integer label values; a bare array is taken to lie on the moving grid."""
    labels = deformable.warp(_labels(SHIFT), interp="label")
    assert labels.data.dtype == torch.int64 and set(labels.data.unique().tolist()) <= {0, 1, 2}
    assert torch.equal(deformable.warp(deformable.moving.data).data, deformable.warp().data)


def test_inverse_reads_the_registration_the_other_way(deformable: api.Registration) -> None:
    """``inverse`` swaps the images and maps: round trips return, and warps land on the moving grid."""
    inv = deformable.inverse
    assert inv.fixed is deformable.moving and inv.moving is deformable.fixed
    x = torch.tensor([[20.0, 25.0], [30.0, 18.0]], dtype=torch.float64)
    assert torch.allclose(inv.warp_points(deformable.warp_points(x)), x, atol=0.05)
    assert torch.allclose(deformable.warp_points(x), x + torch.from_numpy(SHIFT), atol=0.5)
    assert inv.warp().grid.same_as(deformable.moving.grid)
    assert np.allclose(inv.matrix @ deformable.matrix, np.eye(3))


def test_evaluate_matches_the_metrics_module(deformable: api.Registration) -> None:
    """``r.evaluate`` is metrics.evaluate on the label-warped moving labels and the complete field;
    fixed points carried by the transform itself give TRE 0. Catches a face computing its own numbers."""
    fixed_labels, moving_labels = _labels(None), _labels(SHIFT)
    doc = deformable.evaluate(fixed_labels=fixed_labels, moving_labels=moving_labels, labels=[1, 2])
    warped = deformable.warp(moving_labels, interp="label")
    with torch.no_grad():
        field = deformable.transform.displacement(deformable.fixed.grid)
    expected = metrics_evaluate(ta.Image(fixed_labels[None, None], deformable.fixed.grid), warped, labels=[1, 2],
                                warp=(field, deformable.fixed.grid))
    assert doc == expected
    before = ta.evaluate(fixed_labels, moving_labels, labels=[1, 2])
    assert doc["mean"]["dice"] > before["mean"]["dice"] + 0.2
    assert {"fold_percent", "sdlogj"} <= set(doc["jacobian"]) and "curl_mean" in doc["field"]
    points = torch.tensor([[20.0, 25.0], [30.0, 18.0]], dtype=torch.float64)
    tre = deformable.evaluate(fixed_points=points, moving_points=deformable.warp_points(points))
    assert tre["points"]["tre_max"] < 1e-3 and tre["points"]["initial"]["tre_mean"] > 3


def test_save_writes_the_register_outputs_and_a_report(deformable: api.Registration, tmp_path: Path) -> None:
    """In-memory images are written beside the outputs so result.json names real files and the report
    builds; catches a save that leaves the report without its inputs."""
    paths = deformable.save(tmp_path / "out", fixed_labels=_labels(None), moving_labels=_labels(SHIFT),
                            labels=[1, 2], write_inverse=True, write_jacobian=True, report=True)
    names = {p.name for p in paths.values()}
    assert {"fixed.nii.gz", "moving.nii.gz", "warped.nii.gz", "transform.txt", "result.json", "warp.nii.gz",
            "inverse_warp.nii.gz", "jacobian.nii.gz", "warped_labels.nii.gz", "metrics.json", "report.html"} <= names
    doc = json.loads(paths["result"].read_text())
    assert Path(doc["fixed"]) == paths["fixed"] and Path(doc["moving"]) == paths["moving"]
    assert json.loads(paths["metrics"].read_text())["mean"]["n"] == 2


def test_evaluate_reads_paths(tmp_path: Path) -> None:
    """``ta.evaluate`` takes label files: identical maps give Dice 1 and HD95 0."""
    labels = ta.Image(_labels(None)[None, None], ta.Grid((48, 48)))
    write_image(labels, tmp_path / "a.nii.gz")
    doc = ta.evaluate(tmp_path / "a.nii.gz", tmp_path / "a.nii.gz")
    assert doc["mean"]["dice"] == 1.0 and doc["mean"]["hd95"] == 0.0


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("source", ["README.md", "docs/index.md", "src/torchalign/api.py"])
def test_documented_snippets_run(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of the README, the start page and the API docstring runs as written, on
    small 3-D files with the names it uses; catches a documented call that the API does not support."""
    shape = (28, 26, 24)  # the syn preset's coarsest velocity grid (shrink 4, stride 2) needs >= 3 voxels
    grid = ta.Grid.from_geometry(shape, spacing=(2.0, 2.0, 2.0))
    for name, shift in (("fixed", None), ("moving", np.array([1.0, -1.0, 0.0]))):
        img = _blobs(shape, shift)
        write_image(ta.Image(torch.from_numpy(img).float()[None, None], grid), tmp_path / f"{name}.nii.gz")
        seg = torch.from_numpy(np.digitize(img, [0.2, 0.5]).astype(np.int16))
        write_image(ta.Image(seg[None, None], grid), tmp_path / f"{name}_seg.nii.gz")
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks((REPO / source).read_text())
    assert blocks, f"no python block in {source}"
    for block in blocks:
        exec(compile(block, source, "exec"), {})  # noqa: S102
    assert (tmp_path / "out" / "warped.nii.gz").is_file()
