"""Landmark files: formats, spaces (RAS/LPS/voxel), real data sets, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_file

from torchalign.errors import InputError
from torchalign.functional.sampling import sample_world
from torchalign.grid import Grid
from torchalign.io.images import read_image
from torchalign.io.points import read_points, write_points


@pytest.fixture
def grid3() -> Grid:
    return Grid.from_geometry((40, 50, 30), spacing=(1.5, 2.0, 3.0), origin=(10.0, -20.0, 5.0),
                              direction=np.diag([-1.0, 1.0, 1.0]))


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
@pytest.mark.parametrize("space", ["ras", "lps", "voxel"])
@pytest.mark.parametrize("d", [2, 3])
def test_round_trip(tmp_path, rng, grid3, suffix, space, d):
    grid = grid3 if d == 3 else Grid.from_geometry((40, 50), spacing=(0.5, 2.0), origin=(3.0, 4.0))
    points = rng.uniform(-50, 50, (7, d))
    path = write_points(points, tmp_path / f"p{suffix}", space=space, grid=grid)
    assert np.allclose(read_points(path, space=space, grid=grid), points, atol=1e-9)
    if space != "ras":  # these layouts declare their space, so it need not be given
        assert np.allclose(read_points(path, grid=grid), points, atol=1e-9)


def test_spaces_convert_at_the_boundary(tmp_path, grid3):
    (tmp_path / "p.txt").write_text("1 2 3\n-4 5.5 6\n")
    values = np.array([[1, 2, 3], [-4, 5.5, 6]], dtype=float)
    assert np.array_equal(read_points(tmp_path / "p.txt", space="ras"), values)
    assert np.array_equal(read_points(tmp_path / "p.txt", space="lps"), values * [-1, -1, 1])
    expected = values @ grid3.world_from_voxel[:3, :3].T + grid3.origin
    assert np.allclose(read_points(tmp_path / "p.txt", space="voxel", grid=grid3), expected)
    write_points(values, tmp_path / "lps.txt", space="lps")
    assert (tmp_path / "lps.txt").read_text().splitlines()[:3] == ["point", "2", "-1.0 -2.0 3.0"]


def test_ants_csv_columns(tmp_path):
    (tmp_path / "ants.csv").write_text("x,y,z,t,label,comment\n1,2,3,0,1,apex\n4,5,6,0,2,base of the heart\n")
    assert np.array_equal(read_points(tmp_path / "ants.csv"), [[-1, -2, 3], [-4, -5, 6]])  # LPS by default
    assert np.array_equal(read_points(tmp_path / "ants.csv", space="ras"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "mixed.csv").write_text("label, Z ,Y,X\na,3,2,1\n")
    assert np.array_equal(read_points(tmp_path / "mixed.csv", space="ras"), [[1, 2, 3]])


def test_anhir_landmarks_are_pixel_indices():
    path = data_file("landmarks/histology_rat_kidney/Rat-Kidney_HE.csv")
    png_grid = Grid((1000, 1000), np.diag([-1.0, -1.0, 1.0]))  # a PNG read through SimpleITK (LPS origin 0)
    points = read_points(path, grid=png_grid)
    assert points.shape == (71, 2)
    assert np.array_equal(points[0], [-63, -309])
    pixels = png_grid.world_to_voxel(torch.from_numpy(points)).numpy()
    assert np.array_equal(pixels[:2], [[63, 309], [77, 441]])
    with pytest.raises(InputError, match="pass grid="):
        read_points(path)


def test_lung_landmarks_are_lps_mm_inside_the_lung():
    """The elastix 'point' landmarks, read as LPS, fall in the baseline lung mask; read as RAS they do not."""
    mask = read_image(data_file("landmarks/lung_ct_partial/3DCT_lung_baseline_mask.mha"))
    path = data_file("landmarks/lung_ct_partial/3DCT_lung_baseline_landmarks.txt")
    points = read_points(path)
    assert points.shape == (100, 3)
    raw = np.loadtxt(path, skiprows=2)
    assert np.array_equal(points, raw * [-1, -1, 1])

    def in_lung(p: np.ndarray) -> tuple[int, int]:
        voxels = mask.grid.world_to_voxel(torch.from_numpy(p))
        inside = ((voxels > -0.5) & (voxels < torch.tensor(mask.grid.shape) - 0.5)).all(-1)
        values = sample_world(mask.data.float(), mask.grid, torch.from_numpy(p)[None], interp="nearest")[0, 0]
        return int(inside.sum()), int((values[inside] > 0).sum())

    n_fov, n_lung = in_lung(points)  # 51 of 100 in the field of view, all of them in the lung
    assert n_fov >= 40 and n_lung == n_fov
    wrong_fov, wrong_lung = in_lung(raw)  # the lungs are nearly symmetric: x/y-flipped, 42 of 45
    assert wrong_lung < wrong_fov
    with pytest.raises(InputError, match="holds LPS world mm"):
        read_points(path, space="ras")


def test_bad_files(tmp_path, grid3):
    cases = {
        "empty.csv": ("", "empty landmark file"),
        "noxy.csv": ("a,b\n1,2\n", "must name columns x and y"),
        "header_only.csv": ("x,y,z\n", "header but no points"),
        "short_row.csv": ("x,y,z\n1,2,3\n4,5\n", "line 3: 2 fields, the header has 3"),
        "text.csv": ("x,y\n1,two\n", "'two' is not a number"),
        "nan.csv": ("x,y\n1,nan\n", "NaN or Inf"),
        "ragged.txt": ("1 2 3\n4 5\n", "line 2: 2 values where earlier lines have 3"),
        "four.txt": ("1 2 3 4\n", "2 or 3 coordinates"),
        "count.txt": ("point\n3\n1 2 3\n", "header says 3 points, the file has 1"),
        "nocount.txt": ("point\n1 2 3\n", "line 2 must be the number of points"),
        "plain.txt": ("1 2 3\n", "pass space="),
        "points.json": ("[]", "unknown landmark extension"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            read_points(tmp_path / name)
    (tmp_path / "index.txt").write_text("index\n1\n1 2 3\n")
    with pytest.raises(InputError, match="pass grid="):
        read_points(tmp_path / "index.txt")
    with pytest.raises(InputError, match="2-D points cannot be indices of a 3-D grid"):
        (tmp_path / "index2.txt").write_text("index\n1\n1 2\n")
        read_points(tmp_path / "index2.txt", grid=grid3)
    with pytest.raises(InputError, match="no such landmark file"):
        read_points(tmp_path / "missing.csv", space="ras")
    with pytest.raises(InputError, match="space must be one of"):
        read_points(tmp_path / "plain.txt", space="mm")
    with pytest.raises(InputError, match=r"\(N, 2\) or \(N, 3\)"):
        write_points(np.zeros((3, 4)), tmp_path / "out.csv")
    with pytest.raises(InputError, match="needs the 3-D grid"):
        write_points(np.zeros((3, 3)), tmp_path / "out.csv", space="voxel")
    written = write_points(np.zeros((3, 3)), tmp_path / "in.csv")
    with pytest.raises(InputError, match="overwrite an input"):
        write_points(np.ones((3, 3)), written, inputs=[written])
