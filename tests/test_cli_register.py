"""`torchalign register`: bad input gives one clear line, exit code 2, and no partial output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from torchalign.cli import main
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import write_image


def _blob(shape: tuple[int, ...]) -> torch.Tensor:
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return torch.as_tensor(np.exp(-sum((a / 0.4) ** 2 for a in axes)) + 0.1 * axes[0], dtype=torch.float32)[None]


@pytest.fixture
def images(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name, data, grid in [
        ("img2d", _blob((24, 20)), Grid((24, 20))),
        ("img2d_b", _blob((24, 20)) * 2 + 1, Grid((24, 20))),
        ("img3d", _blob((12, 12, 10)), Grid((12, 12, 10))),
        ("flat2d", torch.ones(1, 24, 20), Grid((24, 20))),
        ("zeros2d", torch.zeros(1, 24, 20), Grid((24, 20))),
    ]:
        path = tmp_path / f"{name}.nii.gz"
        write_image(Image(data, grid), path)
        paths[name] = str(path)
    return paths


def _fails(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as err:
        main(args)
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("case", ["dimensions", "empty_mask", "constant", "preset_typo", "unknown_key", "missing",
                                  "negative_weight"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, images: dict[str, str], capsys, case: str) -> None:
    out = tmp_path / "out"
    base = ["register", images["img2d"], images["img2d_b"], "-o", str(out), "--no-progress"]
    config = tmp_path / "cfg.yaml"
    config.write_text("preset: rigid\nstages:\n  - transform: rigid\n    lerning_rate: 1\n")
    negative = tmp_path / "negative.yaml"
    negative.write_text("preset: syn\nstages:\n  - transform: syn\n    regularisers:\n"
                        "      - {name: diffusion, weight: -0.5}\n")
    args, expected = {
        "dimensions": (["register", images["img2d"], images["img3d"], "-o", str(out)], "2-D"),
        "empty_mask": (base + ["--fixed-mask", images["zeros2d"]], "fixed mask is empty"),
        "constant": (["register", images["img2d"], images["flat2d"], "-o", str(out)], "variance"),
        "preset_typo": (base + ["--preset", "rigdi"], "valid presets"),
        "unknown_key": (base + ["--config", str(config)], "lerning_rate"),
        "missing": (["register", images["img2d"], str(tmp_path / "nope.nii.gz"), "-o", str(out)], "nope.nii.gz"),
        "negative_weight": (base + ["--config", str(negative)], "weight"),
    }[case]
    message = _fails(args, capsys)
    assert expected in message
    assert not out.exists() or not any(out.iterdir())


def test_register_refuses_to_overwrite_inputs(tmp_path: Path, images: dict[str, str], capsys) -> None:
    out = Path(images["img2d"]).parent
    (out / "warped.nii.gz").symlink_to(images["img2d_b"])
    message = _fails(["register", images["img2d"], images["img2d_b"], "-o", str(out), "--preset", "rigid",
                      "--no-progress"], capsys)
    assert "overwrite" in message


def test_register_then_apply_reproduces_warped(tmp_path: Path, images: dict[str, str]) -> None:
    out = tmp_path / "out"
    main(["register", images["img2d"], images["img2d_b"], "-o", str(out), "--preset", "rigid", "--no-progress"])
    assert {p.name for p in out.iterdir()} == {"warped.nii.gz", "transform.txt", "result.json"}
    applied = tmp_path / "applied.nii.gz"
    main(["apply", str(out / "transform.txt"), "--moving", images["img2d_b"], "--fixed", images["img2d"],
          "-o", str(applied)])
    import nibabel as nib

    a, b = nib.load(out / "warped.nii.gz").get_fdata(), nib.load(applied).get_fdata()
    assert np.allclose(a, b, atol=1e-4 * np.ptp(a))


def test_apply_refuses_a_warp_made_for_another_fixed_grid(tmp_path: Path, images: dict[str, str], capsys) -> None:
    from torchalign.io.transforms import write_displacement

    elsewhere = Grid.from_geometry((24, 20), spacing=(1.0, 1.0), origin=(200.0, 0.0))  # no overlap
    warp = write_displacement(torch.zeros(1, 2, 24, 20), elsewhere, tmp_path / "warp.nii.gz")
    out = tmp_path / "applied.nii.gz"
    message = _fails(["apply", str(warp), "--moving", images["img2d_b"], "--fixed", images["img2d"], "-o", str(out)],
                     capsys)
    assert "warp.nii.gz" in message and "covers only 0 %" in message
    assert not out.exists()
    same = write_displacement(torch.zeros(1, 2, 24, 20), Grid((24, 20)), tmp_path / "same.nii.gz")
    main(["apply", str(same), "--moving", images["img2d_b"], "--fixed", images["img2d"], "-o", str(out)])
    assert out.exists()
