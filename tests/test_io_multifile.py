"""Multi-file image formats (.hdr/.img, .mhd/.raw, .nhdr + data file) are written whole.

Catches: a header renamed into place while its data file stays behind under a temporary name (the
output cannot be read), a header pointing at a temporary data file name, and temporary files left
in the output folder. Read back by SimpleITK and nibabel, which nobody here wrote.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from torchalign.cli import main
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image, write_image


@pytest.fixture
def image() -> Image:
    data = torch.arange(6 * 5 * 4, dtype=torch.float32).reshape(1, 1, 6, 5, 4)
    return Image(data, Grid.from_geometry((6, 5, 4), spacing=(1.5, 2.0, 2.5), origin=(3.0, -4.0, 5.0)))


@pytest.mark.parametrize("name, companion", [("out.hdr", "out.img"), ("out.mhd", "out.raw"),
                                             ("out.nhdr", None)])
def test_every_file_gets_its_final_name(image: Image, tmp_path: Path, name: str, companion: str | None) -> None:
    """SimpleITK reads the written header and finds its data; only the final file names remain."""
    target = tmp_path / name
    write_image(image, target)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert not [f for f in files if f.startswith(".")], files  # no temporary leftovers
    assert len(files) == 2 and name in files, files
    if companion is not None:
        assert companion in files
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))  # (z, y, x)
    np.testing.assert_array_equal(np.transpose(back, (2, 1, 0)), image.data[0, 0].numpy())
    ours = read_image(target)
    np.testing.assert_allclose(ours.grid.world_from_voxel, image.grid.world_from_voxel, atol=1e-5)
    if name.endswith(".hdr"):
        loaded = nib.load(str(target))
        np.testing.assert_array_equal(np.asarray(loaded.dataobj), image.data[0, 0].numpy())


@pytest.mark.parametrize("suffix", [".hdr", ".mhd", ".nhdr"])
def test_resample_command_writes_a_readable_multi_file_output(image: Image, tmp_path: Path, suffix: str) -> None:
    """The issue's case: ``torchalign resample ... -o out.hdr`` (and .mhd) left the data file hidden."""
    src = tmp_path / "in.nii.gz"
    write_image(image, src)
    out = tmp_path / "res" / f"out{suffix}"
    main(["resample", str(src), "--like", str(src), "-o", str(out)])
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    np.testing.assert_allclose(np.transpose(back, (2, 1, 0)), image.data[0, 0].numpy(), atol=1e-4)


def test_a_companion_file_never_replaces_an_input(image: Image, tmp_path: Path) -> None:
    """Writing out.hdr must not replace an input called out.img (the pair's data file)."""
    src = tmp_path / "out.img"
    write_image(image, tmp_path / "other.hdr")
    (tmp_path / "other.img").rename(src)
    before = src.read_bytes()
    with pytest.raises(Exception, match="overwrite an input"):
        write_image(image, tmp_path / "out.hdr", inputs=[src])
    assert src.read_bytes() == before
