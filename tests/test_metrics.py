"""Evaluation metrics: analytic values, brute-force and MONAI oracles, bad input."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from conftest import data_file
from torchalign.errors import InputError
from torchalign.functional.jacobian import jacobian_det
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image
from torchalign.metrics import (curl_magnitude, dice, evaluate, field_rmse, inverse_consistency, jaccard,
                                jacobian_stats, label_array, label_metrics, map_points, mutual_information, ncc,
                                surface, surface_distances, surface_metrics, tre, tre_summary)
from torchalign.metrics.evaluate import label_table_csv, parse_labels, read_labels_file

BRAIN_LABELS = (4, 10, 11, 12, 17, 18)  # ventricle (cut by the crop: array-edge surfaces), thalamus ... amygdala
BRAIN_CROP = (slice(78, 122), slice(62, 132), slice(78, 160))


# ---- overlap ----------------------------------------------------------------------------------
def test_dice_and_jaccard_of_two_boxes() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 voxels
    b[2:6, 0:5] = True  # 20 voxels, 10 shared
    assert dice(a, b) == pytest.approx(2 * 10 / 40)
    assert jaccard(a, b) == pytest.approx(10 / 30)
    assert dice(a, a) == 1.0 and jaccard(a, a) == 1.0
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) is None


def test_label_array_accepts_integer_floats_and_rejects_fractions() -> None:
    assert label_array(np.array([[0.0, 2.0], [3.0, 2.0]], np.float32), "x").dtype == np.int64
    with pytest.raises(InputError, match=r"seg\.nii\.gz: a label map must hold integers.*non-integer"):
        label_array(np.array([0.0, 2.5]), "seg.nii.gz")
    with pytest.raises(InputError, match="NaN"):
        label_array(np.array([0.0, np.nan]), "seg")


def test_missing_labels_are_reported_with_a_status_and_a_lost_label_scores_zero() -> None:
    """A label lost (or invented) by the warp has Dice 0 and counts in the mean Dice; its distances are
    missing. Catches a mean Dice that skips a label the warp erased (scoring a destroyed structure
    higher than a damaged one)."""
    fixed = np.zeros((12, 12, 12), np.int64)
    warped = np.zeros_like(fixed)
    fixed[2:6, 2:6, 2:6] = 1
    warped[3:7, 2:6, 2:6] = 1
    fixed[8:10, 8:10, 8:10] = 2  # only in fixed
    warped[8:10, 1:3, 8:10] = 3  # only in warped
    out = label_metrics(fixed, warped, (1.0, 1.0, 1.0), labels=[1, 2, 3, 7])
    assert out["1"]["status"] == "ok" and out["1"]["dice"] == pytest.approx(0.75)
    for label, status in (("2", "missing in warped"), ("3", "missing in fixed"), ("7", "missing in both")):
        assert out[label]["status"] == status
        assert all(out[label][k] is None for k in ("hd", "hd95", "assd"))
    assert out["2"]["dice"] == out["3"]["dice"] == 0.0 and out["2"]["jaccard"] == 0.0
    assert out["7"]["dice"] is None and out["7"]["jaccard"] is None
    doc = evaluate(Image(torch.from_numpy(fixed)[None], Grid(fixed.shape)),
                   Image(torch.from_numpy(warped)[None], Grid(fixed.shape)), labels=[1, 2, 3, 7])
    assert doc["mean"]["n"] == 3 and doc["mean"]["n_missing"] == 3
    assert doc["mean"]["dice"] == pytest.approx(0.75 / 3)
    assert doc["mean"]["hd"] == out["1"]["hd"]  # distances: over the labels present on both sides
    csv_text = label_table_csv(doc)
    assert "2,missing in warped,0,0,,,,8,0" in csv_text and csv_text.splitlines()[-1].startswith("mean,n=3,0.25")


def test_default_labels_are_all_nonzero_labels_of_either_map() -> None:
    fixed = np.array([[0, 1], [2, 2]])
    warped = np.array([[0, 1], [5, 2]])
    assert list(label_metrics(fixed, warped, (1.0, 1.0))) == ["1", "2", "5"]


def test_label_ids_from_text_and_file(tmp_path) -> None:
    assert parse_labels("2,3 4, 2") == [2, 3, 4]
    with pytest.raises(InputError, match="--labels: expected integer label ids"):
        parse_labels("2,x")
    f = tmp_path / "labels.txt"
    f.write_text("# aseg\n2\n3, 4  # comment\n\n41\n")
    assert read_labels_file(f) == [2, 3, 4, 41]


# ---- surface distances --------------------------------------------------------------------------
def test_surface_is_the_eroded_boundary_including_the_array_edge() -> None:
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    expected = m.copy()
    expected[2, 2] = False
    assert np.array_equal(surface(m), expected)
    full = np.ones((4, 4), bool)
    assert surface(full).sum() == 12  # the edge ring of the array


def test_surface_distances_match_brute_force_with_anisotropic_spacing(rng) -> None:
    spacing = np.array([0.7, 1.3, 2.1])
    a = np.zeros((14, 12, 10), bool)
    b = np.zeros_like(a)
    a[3:9, 2:8, 2:6] = True
    b[5:12, 4:10, 3:8] = True
    a &= rng.random(a.shape) > 0.15  # ragged surfaces
    sa, sb = surface(a), surface(b)
    pa, pb = np.argwhere(sa) * spacing, np.argwhere(sb) * spacing
    d = cdist(pa, pb)
    d_ab, d_ba = d.min(1), d.min(0)
    ours_ab, ours_ba = surface_distances(a, b, spacing)
    np.testing.assert_allclose(np.sort(ours_ab), np.sort(d_ab), atol=1e-9)
    np.testing.assert_allclose(np.sort(ours_ba), np.sort(d_ba), atol=1e-9)
    m = surface_metrics(a, b, spacing)
    assert m["hd"] == pytest.approx(max(d_ab.max(), d_ba.max()))
    assert m["hd95"] == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    assert m["assd"] == pytest.approx(np.concatenate([d_ab, d_ba]).mean())


def test_shifted_box_has_hausdorff_equal_to_the_shift_in_mm() -> None:
    a = np.zeros((30, 20, 20), bool)
    a[8:18, 5:15, 5:15] = True
    b = np.roll(a, 2, axis=0)
    assert surface_metrics(a, b, (1.5, 1.0, 1.0))["hd"] == pytest.approx(3.0)


def test_surface_distance_bad_input() -> None:
    a = np.ones((4, 4), bool)
    with pytest.raises(InputError, match="non-empty"):
        surface_distances(a, np.zeros_like(a), (1, 1))
    with pytest.raises(InputError, match="spacing must hold 2 positive"):
        surface_distances(a, a, (1, 0))
    with pytest.raises(InputError, match="differ in shape"):
        surface_distances(a, np.ones((4, 5), bool), (1, 1))


@pytest.fixture(scope="module")
def brain_labels() -> tuple[np.ndarray, np.ndarray]:
    a = read_image(data_file("brain3d/subject_a_aseg.nii.gz")).data[0, 0].numpy()
    b = read_image(data_file("brain3d/subject_b_aseg.nii.gz")).data[0, 0].numpy()
    return a[BRAIN_CROP], b[BRAIN_CROP]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.5, 2.0)])
def test_brain_labels_agree_with_monai(brain_labels, spacing) -> None:
    """Dice, HD, HD95 and ASSD against MONAI on real FreeSurfer labels (a crop), via evaluate() on a
    grid relabelled to ``spacing`` so that the spacing comes from the geometry."""
    metrics = pytest.importorskip("monai.metrics")
    a, b = brain_labels
    grid = Grid.from_geometry(a.shape, spacing=spacing, origin=(-40.0, 12.0, 3.0))
    doc = evaluate(Image(torch.from_numpy(a)[None], grid), Image(torch.from_numpy(b)[None], grid),
                   labels=list(BRAIN_LABELS))
    one_hot = lambda x: torch.from_numpy(np.stack([x == k for k in BRAIN_LABELS]))[None].float()  # noqa: E731
    pred, ref = one_hot(b), one_hot(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m_dice = metrics.compute_dice(pred, ref, include_background=True)[0]
        m_hd = metrics.compute_hausdorff_distance(pred, ref, include_background=True, spacing=spacing)[0]
        m_hd95 = metrics.compute_hausdorff_distance(pred, ref, include_background=True, percentile=95,
                                                    spacing=spacing)[0]
        m_assd = metrics.compute_average_surface_distance(pred, ref, include_background=True, symmetric=True,
                                                          spacing=spacing)[0]
    diagonal = float(np.linalg.norm(spacing))
    for i, label in enumerate(BRAIN_LABELS):
        ours = doc["labels"][str(label)]
        assert ours["status"] == "ok"
        assert abs(ours["dice"] - float(m_dice[i])) < 1e-6
        for key, ref_value in (("hd", m_hd), ("hd95", m_hd95), ("assd", m_assd)):
            # Both are exact voxel-centre Euclidean distances; MONAI works in float32.
            assert abs(ours[key] - float(ref_value[i])) < 1e-4 * max(1.0, float(ref_value[i])) < diagonal


# ---- points ------------------------------------------------------------------------------------
def test_tre_summary_of_known_distances() -> None:
    target = np.zeros((4, 3))
    mapped = np.array([[3.0, 4.0, 0.0], [0, 0, 1.0], [0, 2.0, 0], [0, 0, 0]])
    d = tre(mapped, target)
    np.testing.assert_allclose(d, [5, 1, 2, 0])
    s = tre_summary(d)
    assert s == {"tre_mean": 2.0, "tre_median": 1.5, "tre_max": 5.0, "tre_std": pytest.approx(np.std([5, 1, 2, 0])),
                 "n": 4}


def test_map_points_through_a_translation_field_and_bad_points() -> None:
    grid = Grid.from_geometry((10, 12, 8), spacing=(2.0, 1.0, 1.5), origin=(-5.0, 3.0, 0.0))
    t = torch.tensor([1.5, -2.0, 0.25])
    field = t.view(1, 3, 1, 1, 1).expand(1, 3, *grid.shape).contiguous()
    pts = torch.tensor([[0.0, 5.0, 1.0], [10.0, 12.0, 9.0]], dtype=torch.float64)
    np.testing.assert_allclose(map_points(pts, field, grid).numpy(), (pts + t.double()).numpy(), atol=1e-6)
    with pytest.raises(InputError, match=r"lm\.csv: 1 of 2 points lie outside .*indices 1\)"):
        map_points(torch.tensor([[0.0, 5.0, 1.0], [100.0, 5.0, 1.0]]), field, grid, "lm.csv")
    with pytest.raises(InputError, match="2 fixed points vs 3 moving points"):
        tre(np.zeros((2, 3)), np.zeros((3, 3)))


def test_point_section_reports_initial_and_final_tre() -> None:
    grid = Grid((8, 8, 8))
    t = torch.tensor([1.0, 2.0, 2.0])
    field = t.view(1, 3, 1, 1, 1).expand(1, 3, 8, 8, 8).contiguous()
    fixed = torch.tensor([[1.0, 1.0, 1.0], [4.0, 3.0, 2.0]])
    moving = fixed + t
    doc = evaluate(warp=(field, grid), fixed_points=fixed, moving_points=moving)
    assert doc["points"]["tre_max"] == pytest.approx(0.0, abs=1e-5)
    assert doc["points"]["initial"]["tre_mean"] == pytest.approx(3.0)
    assert doc["jacobian"]["fold_percent"] == 0.0 and doc["jacobian"]["min"] == pytest.approx(1.0)


# ---- fields ------------------------------------------------------------------------------------
def test_jacobian_stats_of_a_known_determinant_map() -> None:
    det = torch.tensor([-1.0, 0.0, 1.0, math.e, 1 / math.e])
    s = jacobian_stats(det)
    assert s["fold_percent"] == pytest.approx(40.0)
    assert s["sdlogj"] == pytest.approx(np.std([0.0, 1.0, -1.0]))
    assert (s["min"], s["max"], s["n"], s["n_folded"]) == (-1.0, pytest.approx(math.e), 5, 2)
    assert jacobian_stats(-torch.ones(3))["sdlogj"] is None
    with pytest.raises(InputError, match="mask is empty"):
        jacobian_stats(det, mask=torch.zeros(5, dtype=torch.bool))


def test_jacobian_stats_of_a_linear_field_equal_det_of_identity_plus_a() -> None:
    grid = Grid.from_geometry((9, 10, 11), spacing=(1.0, 1.5, 2.0), origin=(3.0, -7.0, 2.0))
    a = torch.tensor([[0.1, 0.05, -0.02], [0.0, -0.2, 0.1], [0.03, 0.0, 0.15]], dtype=torch.float64)
    x = grid.points(torch.float64)
    u = (x @ a.T).movedim(-1, 0)[None]
    s = jacobian_stats(jacobian_det(u, grid))
    expected = float(torch.linalg.det(torch.eye(3, dtype=torch.float64) + a))
    assert s["min"] == pytest.approx(expected, rel=1e-9) and s["max"] == pytest.approx(expected, rel=1e-9)
    assert s["sdlogj"] == pytest.approx(0.0, abs=1e-9) and s["fold_percent"] == 0.0


def test_jacobian_stats_of_a_quadratic_field_match_the_closed_form() -> None:
    """u = (c x^2, 0, 0): det J = 1 + 2 c x, folding where x <= -1 / (2c). Central differences are
    exact for a quadratic, so interior voxels must match the closed form."""
    grid = Grid.from_geometry((40, 6, 5), spacing=(0.5, 1.0, 1.0), origin=(-12.0, 0.0, 0.0))
    c = 0.1
    x = grid.points(torch.float64)
    u = torch.stack([c * x[..., 0] ** 2, torch.zeros_like(x[..., 0]), torch.zeros_like(x[..., 0])])[None]
    det = jacobian_det(u, grid)
    interior = torch.zeros(grid.shape, dtype=torch.bool)
    interior[1:-1, 1:-1, 1:-1] = True
    s = jacobian_stats(det, interior[None])
    closed = (1 + 2 * c * x[..., 0])[interior].numpy()
    assert s["fold_percent"] == pytest.approx(100 * np.mean(closed <= 0))
    assert 0 < s["fold_percent"] < 100
    assert s["sdlogj"] == pytest.approx(np.log(closed[closed > 0]).std(), rel=1e-9)
    assert (s["min"], s["max"]) == (pytest.approx(closed.min()), pytest.approx(closed.max()))


def test_curl_of_a_rotation_field_is_twice_the_sine_of_the_angle() -> None:
    theta = 0.05
    grid = Grid.from_geometry((8, 9, 7), spacing=(1.0, 2.0, 1.5))
    r = torch.tensor([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]],
                     dtype=torch.float64)
    x = grid.points(torch.float64)
    u = (x @ (r - torch.eye(3, dtype=torch.float64)).T).movedim(-1, 0)[None]
    np.testing.assert_allclose(curl_magnitude(u, grid).numpy(), 2 * math.sin(theta), rtol=1e-9)
    grid2 = Grid((6, 7))
    x2 = grid2.points(torch.float64)
    u2 = (x2 @ (r[:2, :2] - torch.eye(2, dtype=torch.float64)).T).movedim(-1, 0)[None]
    np.testing.assert_allclose(curl_magnitude(u2, grid2).numpy(), 2 * math.sin(theta), rtol=1e-9)


def test_inverse_consistency_of_an_affine_pair_and_a_biased_pair() -> None:
    grid = Grid.from_geometry((10, 10, 10), spacing=(1.0, 1.0, 2.0), origin=(-5.0, -5.0, -10.0))
    a = torch.tensor([[0.05, 0.02, 0.0], [-0.01, 0.04, 0.0], [0.0, 0.0, -0.03]], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    x = grid.points(torch.float64)
    forward = (x @ a.T).movedim(-1, 0)[None]
    inverse = (x @ (torch.linalg.inv(eye + a) - eye).T).movedim(-1, 0)[None]
    error, inside = inverse_consistency(forward, grid, inverse, grid)
    assert inside.float().mean() > 0.4
    assert float(error[inside].max()) < 1e-9  # linear interpolation of a linear field is exact
    shift = torch.tensor([0.3, 0.0, 0.4], dtype=torch.float64).view(1, 3, 1, 1, 1)
    error, inside = inverse_consistency(forward, grid, inverse + shift, grid)
    np.testing.assert_allclose(error[inside].numpy(), 0.5, atol=1e-9)


def test_field_rmse_of_a_constant_difference() -> None:
    a = torch.randn(1, 3, 5, 6, 7)
    b = a + torch.tensor([1.0, 2.0, 2.0]).view(1, 3, 1, 1, 1)
    assert field_rmse(a, b) == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(InputError, match="same"):
        field_rmse(a, b[..., :5])


# ---- similarity --------------------------------------------------------------------------------
def test_ncc_and_mutual_information(rng) -> None:
    a = rng.normal(size=(20, 20, 10))
    assert ncc(a, 2 * a + 3) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert ncc(a, np.ones_like(a)) is None
    levels = rng.integers(0, 4, size=(40, 50))
    assert mutual_information(levels, levels, bins=4) == pytest.approx(mutual_information(levels, levels, bins=4))
    p = np.bincount(levels.ravel()) / levels.size
    assert mutual_information(levels, levels, bins=4) == pytest.approx(-(p * np.log(p)).sum())  # MI(A, A) = H(A)
    assert mutual_information(levels, 7 - levels, bins=4, normalized=True) == pytest.approx(2.0)
    independent = mutual_information(rng.integers(0, 4, 200000), rng.integers(0, 4, 200000), bins=4)
    assert 0 <= independent < 1e-3


# ---- evaluate() ---------------------------------------------------------------------------------
def test_evaluate_refuses_label_maps_on_different_grids_unless_asked_to_resample() -> None:
    data = torch.zeros(1, 10, 10, 10, dtype=torch.int16)
    data[0, 2:7, 2:7, 2:7] = 3
    fixed = Image(data, Grid((10, 10, 10)), {"source": "f.nii.gz"})
    coarse = Grid.from_geometry((5, 5, 5), spacing=(2.0, 2.0, 2.0), origin=(0.5, 0.5, 0.5))
    small = torch.zeros(1, 5, 5, 5, dtype=torch.int16)
    small[0, 1:3, 1:3, 1:3] = 3
    warped = Image(small, coarse, {"source": "w.nii.gz"})
    with pytest.raises(InputError, match=r"w\.nii\.gz lies on Grid.* f\.nii\.gz on .*--resample"):
        evaluate(fixed, warped)
    doc = evaluate(fixed, warped, resample_labels=True)
    assert doc["labels"]["3"]["status"] == "ok" and doc["labels"]["3"]["dice"] > 0.5
    with pytest.raises(InputError, match="both the fixed and the warped"):
        evaluate(fixed_labels=fixed)


def test_mean_dice_is_one_definition_lost_labels_zero_absent_labels_left_out() -> None:
    """``metrics.mean_dice`` (the benchmarks' mean) equals ``evaluate``'s mean (the CLI's and batch's):
    a lost label counts 0, a label absent from both maps is left out. Catches two means drifting
    apart, or an erased structure being skipped."""
    from torchalign.metrics import mean_dice

    fixed = np.array([[1, 1, 2, 0, 3]])
    warped = np.array([[1, 0, 2, 2, 0]])
    expected = (2 / 3 + 2 / 3 + 0.0) / 3  # label 3 lost by the warp, label 9 absent from both
    assert mean_dice(fixed, warped, [1, 2, 3, 9]) == pytest.approx(expected)
    doc = evaluate(Image(torch.from_numpy(fixed)[None], Grid(fixed.shape)),
                   Image(torch.from_numpy(warped)[None], Grid(fixed.shape)), labels=[1, 2, 3, 9])
    assert doc["mean"]["dice"] == pytest.approx(expected) and doc["mean"]["n"] == 3
    assert mean_dice(fixed, warped, [9]) is None
