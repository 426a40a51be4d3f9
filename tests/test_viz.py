"""QC figures: display geometry in world space, figure content and bad input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.viz import (checkerboard, difference, grid_lines, image_slices, jacobian_map, label_contours, landmarks,
                            loss_curves, overlay, save_png, to_png, views)
from torchalign.viz.figures import normalised

SHAPE = (12, 14, 10)


def _image(data: np.ndarray, grid: Grid) -> Image:
    return Image(torch.as_tensor(np.ascontiguousarray(data), dtype=torch.float32)[None], grid)


def _pixel_of(view, point: np.ndarray, plane_shape: tuple[int, int]) -> tuple[int, int]:
    """(row, col) of the displayed plane that contains the screen position of a world point."""
    sx, sy = view.screen(point)
    left, right, bottom, top = view.extent
    col = int((sx - left) / (right - left) * plane_shape[1])
    row = int((sy - bottom) / (top - bottom) * plane_shape[0])
    return row, col


def test_views_follow_the_radiological_convention_on_a_ras_grid() -> None:
    grid = Grid.from_geometry(SHAPE, spacing=(1.0, 2.0, 1.5), origin=(-5.0, 3.0, 7.0))
    axial, coronal, sagittal = views(grid)
    assert (axial.name, coronal.name, sagittal.name) == ("axial", "coronal", "sagittal")
    assert axial.letters() == ("R", "L", "P", "A")
    assert coronal.letters() == ("R", "L", "I", "S")
    assert sagittal.letters() == ("A", "P", "I", "S")
    assert axial.index == SHAPE[2] // 2 and sagittal.index == SHAPE[0] // 2
    vol = np.zeros(SHAPE)
    vol[0, SHAPE[1] - 1, SHAPE[2] // 2] = 1.0  # smallest x (the patient's left), largest y (anterior)
    plane = axial.plane(vol)
    assert plane.shape == (SHAPE[1], SHAPE[0])
    row, col = np.argwhere(plane == 1)[0]
    assert row == SHAPE[1] - 1  # anterior at the top (origin="lower")
    assert col == SHAPE[0] - 1  # the patient's left on the right of the screen
    extent = axial.extent
    assert extent[1] - extent[0] == pytest.approx(SHAPE[0] * 1.0)
    assert extent[3] - extent[2] == pytest.approx(SHAPE[1] * 2.0)


@pytest.mark.parametrize("view_index", [0, 1, 2])
def test_screen_coordinates_land_on_the_voxel_shown_in_the_plane(view_index: int) -> None:
    rotation = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=np.float64)  # a permuted, flipped grid
    grid = Grid.from_geometry(SHAPE, spacing=(1.2, 0.8, 2.0), origin=(10.0, -4.0, 6.0), direction=rotation)
    view = views(grid)[view_index]
    rng = np.random.default_rng(view_index)
    for _ in range(5):
        voxel = [int(rng.integers(0, n)) for n in SHAPE]
        voxel[view.slice_axis] = view.index
        vol = np.zeros(SHAPE)
        vol[tuple(voxel)] = 1.0
        plane = view.plane(vol)
        world = grid.voxel_to_world(torch.tensor(voxel, dtype=torch.float64)).numpy()
        assert tuple(np.argwhere(plane == 1)[0]) == _pixel_of(view, world, plane.shape)


def test_the_same_world_content_on_ras_and_las_grids_looks_the_same() -> None:
    rng = np.random.default_rng(3)
    vol = rng.random(SHAPE)
    ras = Grid.from_geometry(SHAPE, origin=(0.0, 0.0, 0.0))
    las = Grid.from_geometry(SHAPE, origin=(SHAPE[0] - 1.0, 0.0, 0.0), direction=np.diag([-1.0, 1.0, 1.0]))
    centre = np.array(SHAPE) // 2
    las_centre = (SHAPE[0] - 1 - centre[0], centre[1], centre[2])  # the same world point
    for a, b in zip(views(ras, centre), views(las, las_centre)):
        np.testing.assert_array_equal(a.plane(vol), b.plane(vol[::-1]))
        np.testing.assert_allclose(a.extent, b.extent)


def test_a_2d_image_read_like_a_png_is_shown_upright_and_unmirrored() -> None:
    picture = np.arange(6 * 8, dtype=float).reshape(6, 8)  # rows, cols as in a picture viewer
    grid = Grid((8, 6), np.diag([-1.0, -1.0, 1.0]))  # what SimpleITK's LPS identity becomes in RAS
    (view,) = views(grid)
    plane = view.plane(picture.T)  # torchalign arrays of a PNG are (x = col, y = row)
    np.testing.assert_array_equal(plane[::-1], picture)  # origin="lower": the last plane row is the top


def test_views_reject_an_index_outside_the_grid() -> None:
    with pytest.raises(InputError, match="outside the grid"):
        views(Grid(SHAPE), index=(0, 0, SHAPE[2]))


def test_image_figures_render_to_png(rng) -> None:
    grid = Grid.from_geometry(SHAPE, spacing=(1.0, 1.0, 2.0))
    a, b = _image(rng.random(SHAPE), grid), _image(rng.random(SHAPE), grid)
    figs = (image_slices(a, title="t"), checkerboard(a, b), overlay(a, b), difference(a, {"before": b, "after": a}))
    for fig in figs:
        png = to_png(fig, dpi=50)
        assert PILImage.open(io.BytesIO(png)).size[0] > 50


def test_checkerboard_alternates_fixed_and_warped_tiles(rng) -> None:
    grid = Grid((16, 16))
    fixed, warped = _image(rng.random((16, 16)), grid), _image(rng.random((16, 16)), grid)
    shown = np.asarray(checkerboard(fixed, warped, tiles=4).axes[0].images[0].get_array())
    (view,) = views(grid)
    a, b = view.plane(normalised(fixed)), view.plane(normalised(warped))
    tile = (np.arange(16)[:, None] // 4 + np.arange(16)[None, :] // 4) % 2 == 0
    np.testing.assert_array_equal(shown, np.where(tile, a, b))
    assert tile.mean() == 0.5


def test_overlay_puts_fixed_in_magenta_and_warped_in_green(rng) -> None:
    grid = Grid((10, 9))
    fixed = rng.random((10, 9))
    fig = overlay(_image(fixed, grid), _image(np.zeros((10, 9)), grid))
    rgb = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[..., 0].max() == pytest.approx(1.0) and rgb[..., 1].max() == 0


def test_comparisons_refuse_images_on_different_grids(rng) -> None:
    a = _image(rng.random(SHAPE), Grid(SHAPE))
    b = _image(rng.random(SHAPE), Grid.from_geometry(SHAPE, spacing=(2.0, 1.0, 1.0)))
    for call in (lambda: overlay(a, b), lambda: checkerboard(a, b), lambda: difference(a, {"after": b})):
        with pytest.raises(InputError, match="same grid"):
            call()


def test_grid_lines_move_with_a_translation_field() -> None:
    grid = Grid.from_geometry((10, 12), spacing=(1.0, 2.0))
    t = torch.tensor([1.5, -0.5])
    field = t.view(1, 2, 1, 1).expand(1, 2, 10, 12).contiguous()
    still = grid_lines(torch.zeros_like(field), grid, lines=5).axes[0].lines
    moved = grid_lines(field, grid, lines=5).axes[0].lines
    (view,) = views(grid)
    assert len(still) == len(moved) > 4
    for a, b in zip(still, moved):
        np.testing.assert_allclose(b.get_xdata() - a.get_xdata(), view.sign_h * float(t[view.world_h]))
        np.testing.assert_allclose(b.get_ydata() - a.get_ydata(), view.sign_v * float(t[view.world_v]))
    with pytest.raises(InputError, match="displacement field"):
        grid_lines(field[:, :1], grid)


def test_jacobian_map_is_centred_at_one_and_marks_folds() -> None:
    grid = Grid((20, 20))
    det = torch.linspace(-0.5, 3.0, 400).reshape(20, 20)
    fig = jacobian_map(det, grid)
    im, folds = fig.axes[0].images[:2]
    assert im.norm(1.0) == pytest.approx(0.5)
    assert (im.norm.vmin, im.norm.vmax) == (0.0, pytest.approx(1 + np.percentile(np.abs(det.numpy() - 1), 99.5)))
    shown_folds = np.ma.getmaskarray(folds.get_array())
    assert (~shown_folds).sum() == int((det <= 0).sum())
    assert "folded" in fig._suptitle.get_text()
    with pytest.raises(InputError, match="does not match"):
        jacobian_map(det[:5], grid)


def test_loss_curves_draw_one_line_per_level_with_losses() -> None:
    stages = [{"transform": "affine", "metric": "mi",
               "levels": [{"shrink": 4, "sigma": 2, "losses": [3.0, 2.0, 1.0]},
                          {"shrink": 1, "sigma": 0, "losses": [1.0]}]},
              {"name": "deformable", "metric": "lncc", "levels": [{"shrink": 2, "sigma": 1, "losses": []}]}]
    fig = loss_curves(stages)
    first = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("shrink")]
    assert len(first) == 2 and list(first[1].get_xdata()) == [3]
    assert fig.axes[1].get_title() == "deformable (lncc)"
    with pytest.raises(InputError, match="no stages"):
        loss_curves([])


def test_landmark_arrows_and_bad_point_sets(rng) -> None:
    grid = Grid(SHAPE)
    p = rng.uniform(1, 9, (7, 3))
    q = p + 1.0
    fig = landmarks(p, q, grid, mapped_points=q + 0.1, background=_image(rng.random(SHAPE), grid))
    quivers = [c for c in fig.axes[0].collections if type(c).__name__ == "Quiver"]
    assert len(quivers) == 2 and quivers[0].N == 7
    with pytest.raises(InputError, match="equal shape"):
        landmarks(p, q[:5], grid)


def test_label_contours_draw_fixed_and_warped_boundaries() -> None:
    grid = Grid((12, 12))
    fixed = np.zeros((12, 12), np.int32)
    fixed[3:8, 3:8] = 2
    warped = np.roll(fixed, 2, axis=0)
    fig = label_contours(_image(np.ones((12, 12)), grid), _image(fixed, grid), _image(warped, grid))
    rgba = np.asarray(fig.axes[0].images[1].get_array())
    colours = {tuple(c) for c in rgba.reshape(-1, 4) if c[3] > 0}
    assert colours == {(1.0, 0.83, 0.0, 1.0), (0.0, 0.85, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0)}
    assert (rgba[..., 3] > 0).sum() == 16 + 16 - 6  # two 5x5 rings sharing two sides of three pixels


def test_save_png_writes_a_png(tmp_path, rng) -> None:
    grid = Grid((8, 8))
    path = save_png(image_slices(_image(rng.random((8, 8)), grid)), tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(path.parent.iterdir()) == [path]
