"""The HTML QC report: built from a synthetic registration output folder, checked in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import write_image
from torchalign.io.transforms import write_displacement
from torchalign.metrics import evaluate, write_metrics
from torchalign.report import build_report
from torchalign.resample import resample

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHAPE = (36, 40, 30)
SHIFT = torch.tensor([3.0, -2.0, 1.5], dtype=torch.float64)


def _phantom(grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """A head-like intensity image and a 3-label map, ``(1, *S)`` each."""
    x = grid.points(torch.float64)
    c = torch.tensor(grid.center())
    r = ((x - c) / torch.tensor([22.0, 26.0, 24.0], dtype=torch.float64)).norm(dim=-1)
    image = torch.clamp(1.2 - r, 0, 1) * 0.7
    labels = torch.zeros(grid.shape, dtype=torch.int16)
    labels[r < 0.75] = 1
    for k, offset in ((2, (-7.0, 4.0, 0.0)), (3, (8.0, -3.0, 5.0))):
        blob = (x - c - torch.tensor(offset, dtype=torch.float64)).norm(dim=-1) < 6.0
        image = image + 0.5 * blob
        labels[blob] = k
    return image[None].float(), labels[None]


def make_outdir(root: Path, full: bool) -> Path:
    """A registration output folder as ``torchalign register`` writes it (translation ground truth)."""
    grid = Grid.from_geometry(SHAPE, spacing=(1.5, 1.2, 2.0), origin=(-27.0, -24.0, -30.0))
    fixed_data, fixed_labels = _phantom(grid)
    moved_grid = Grid.from_geometry((34, 38, 30), spacing=(1.6, 1.3, 2.0), origin=(-25.0, -27.0, -28.0))
    shift = lambda p: p + SHIFT.to(p.dtype)  # noqa: E731  fixed -> moving
    fixed = Image(fixed_data, grid)
    moving = resample(fixed, moved_grid, lambda p: p - SHIFT.to(p.dtype))  # moving(p + t) = fixed(p)
    inputs, out = root / "in", root / "out"
    write_image(fixed, inputs / "fixed.nii.gz")
    write_image(moving, inputs / "moving.nii.gz")
    write_image(resample(moving, grid, shift), out / "warped.nii.gz")
    doc = {"fixed": str(inputs / "fixed.nii.gz"), "moving": "../in/moving.nii.gz", "preset": "affine",
           "settings": {"preset": "affine", "device": "cpu", "stages": [{"transform": "affine", "metric": "mse"}]},
           "stages": [{"transform": "affine", "metric": "mse",
                       "levels": [{"shrink": 4, "sigma": 2.0, "iterations": 30, "seconds": 0.4,
                                   "losses": list(np.exp(-np.arange(30) / 8.0))},
                                  {"shrink": 2, "sigma": 1.0, "iterations": 20, "seconds": 0.9,
                                   "losses": list(0.3 * np.exp(-np.arange(20) / 6.0))}]}],
           "init_matrix": [[1, 0, 0, 2.5], [0, 1, 0, -1.0], [0, 0, 1, 1.0], [0, 0, 0, 1]],
           "matrix": [[1, 0, 0, 3.0], [0, 1, 0, -2.0], [0, 0, 1, 1.5], [0, 0, 0, 1]],
           "timings": {"registration": 1.3, "writing": 0.2}, "versions": {"torchalign": "test"}}
    if full:
        x = grid.points(torch.float64)
        wobble = 1.5 * torch.sin(x[..., 0] / 6.0) * torch.cos(x[..., 1] / 9.0)  # det J = 1 + du_x/dx varies
        field = (SHIFT.view(3, 1, 1, 1) + torch.stack([wobble, 0 * wobble, 0 * wobble]))[None].float()
        write_displacement(field, grid, out / "warp.nii.gz")
        moving_labels = resample(Image(fixed_labels, grid), moved_grid, lambda p: p - SHIFT.to(p.dtype),
                                 interp="nearest")
        write_image(moving_labels, inputs / "moving_labels.nii.gz")
        warped_labels = resample(moving_labels, grid, shift, interp="nearest")
        write_image(Image(fixed_labels, grid), inputs / "fixed_labels.nii.gz")
        write_image(warped_labels, out / "warped_labels.nii.gz")
        doc["labels"] = {"fixed_labels": str(inputs / "fixed_labels.nii.gz"), "warped_labels": "warped_labels.nii.gz"}
        metrics = evaluate(Image(fixed_labels, grid), warped_labels, warp=(field, grid),
                           fixed_points=torch.tensor([[0.0, 0.0, 0.0], [5.0, -4.0, 6.0]]),
                           moving_points=torch.tensor([[3.0, -2.0, 1.5], [8.0, -6.0, 7.5]]))
        write_metrics(metrics, out / "metrics.json")
    (out / "result.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def minimal(tmp_path_factory) -> Path:
    """An output folder with only result.json and warped.nii.gz (inputs next door), report built."""
    out = make_outdir(tmp_path_factory.mktemp("minimal"), full=False)
    build_report(out)
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """An output folder with a warp, label maps and metrics.json as well, report built."""
    out = make_outdir(tmp_path_factory.mktemp("full"), full=True)
    build_report(out)
    return out


def _copy(out: Path, tmp_path: Path) -> Path:
    """A private copy of a fixture folder (with its inputs, which result.json names relatively)."""
    shutil.copytree(out.parent, tmp_path / "copy")
    return tmp_path / "copy" / out.name


def test_minimal_folder_gives_the_core_sections_only(minimal: Path) -> None:
    text = (minimal / "report.html").read_text()
    for title in ("Summary", "Alignment", "Inputs", "Optimisation", "Transform and timings", "Settings"):
        assert f"<h2>{title}</h2>" in text
    assert "<h2>Deformation</h2>" not in text and "<h2>Evaluation</h2>" not in text
    assert "data-compare" in text and "moving.nii.gz" in text
    assert "Initialisation (RAS" in text and "-2.00000" in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=\"(https?:)?//", text)


def test_full_folder_adds_deformation_and_evaluation(full: Path) -> None:
    text = (full / "report.html").read_text()
    assert "<h2>Deformation</h2>" in text and "<h2>Evaluation</h2>" in text
    assert "Landmarks" in text and "SDlogJ" in text
    metrics = json.loads((full / "metrics.json").read_text())
    assert f"{metrics['labels']['2']['dice']:.4g}" in text


def test_labels_are_evaluated_when_metrics_json_is_absent(full: Path, tmp_path: Path) -> None:
    out = _copy(full, tmp_path)
    (out / "metrics.json").unlink()
    text = build_report(out).read_text()
    assert "mean (n = 3)" in text and "Label boundaries" in text


def test_report_bad_folders_raise_clear_errors(minimal: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="result.json: not found"):
        build_report(tmp_path)
    out = _copy(minimal, tmp_path)
    doc = json.loads((out / "result.json").read_text())
    (out / "result.json").write_text(json.dumps({**doc, "fixed": "nowhere.nii.gz"}))
    with pytest.raises(InputError, match="fixed file nowhere.nii.gz not found"):
        build_report(out)
    (out / "result.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        build_report(out)
    (out / "result.json").write_text(json.dumps(doc))
    (out / "warped.nii.gz").unlink()
    with pytest.raises(InputError, match="warped.nii.gz: not found"):
        build_report(out)


def test_report_in_headless_chromium(full: Path) -> None:
    """Opens the report offline: no console errors, no request other than data:/file:, every image
    decoded, and the before/after slider and the flicker button change what is displayed."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is not installed (make system-deps installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    report = full / "report.html"
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r) -> None:
                url = r.request.url
                if url.startswith(("data:", "file:")):
                    r.continue_()
                else:
                    requests.append(url)
                    r.abort()

            page.route("**/*", route)
            page.on("request", lambda req: None if req.url.startswith(("data:", "file:")) else requests.append(req.url))
            page.goto(report.as_uri(), wait_until="load")
            sizes = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            assert len(sizes) >= 8 and all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes

            widget = page.locator("[data-compare]").first
            stack = widget.locator(".stack")
            slider = widget.locator("input[type=range]")
            after = stack.screenshot()
            slider.evaluate("el => { el.value = 0; el.dispatchEvent(new Event('input')); }")
            before = stack.screenshot()
            assert before != after
            assert widget.locator(".state").inner_text() == "showing before"
            assert widget.locator("img.top").evaluate("el => getComputedStyle(el).opacity") == "0"
            widget.locator("button").click()  # flicker: the slider jumps between the two ends
            page.wait_for_function("el => el.value === '100'", arg=slider.element_handle(), timeout=3000)
            page.wait_for_function("el => el.value === '0'", arg=slider.element_handle(), timeout=3000)
            widget.locator("button").click()
            assert widget.locator("button").inner_text() == "Flicker"
            slider.evaluate("el => { el.value = 100; el.dispatchEvent(new Event('input')); }")

            artifacts = REPO / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert requests == []
