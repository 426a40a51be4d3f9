"""
# World coordinates, and other tools' files

A registration's answer is only useful if every tool agrees on where each voxel is. This tutorial
reads two NIfTI volumes whose voxel grids differ (2 mm and 4 mm, rotated axes), registers them in
world coordinates, exports the transform for ANTs and ITK, applies it to an image, a label map and
points, and checks each round trip with ANTsPy and SimpleITK on this page.
"""

# %%
# ## Where the voxels are: the NIfTI affine
#
# `anatomical.nii` (33 x 41 x 25 voxels of 2 mm) and `reoriented_anat_moved.nii` (21 x 26 x 22
# voxels of 4 mm) hold the same head; the second was moved by a known rigid transform (rotations
# 0.1, 0.2, 0.3 rad and a translation of (3, 4, 5) mm; nibabel's test data) and resliced. Each file's
# affine places its voxels in world space, RAS+ millimetres (x to the Right, y Anterior, z Superior).
# torchalign keeps it as the grid's `world_from_voxel` matrix and never transposes arrays.
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat

import torchalign as ta
from torchalign.io.lps import flip_matrix, flip_points
from torchalign.resample import resample

DATA = Path(os.environ.get("TORCHALIGN_DATA", "../shared/data")) / "known_rigid"
fixed_path, moving_path = DATA / "anatomical.nii", DATA / "reoriented_anat_moved.nii"
fixed, moving = ta.read_image(fixed_path), ta.read_image(moving_path)
for name, image in (("fixed", fixed), ("moving", moving)):
    print(f"{name}: {image.grid}\nworld_from_voxel =\n{image.grid.world_from_voxel.round(2)}")
truth = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])  # moving_from_fixed, world mm

# %%
# Resampling the moving image onto the fixed grid *through world space* (no transform yet) shows
# what is left to do: only the rigid motion, not the different voxel sizes or axes.
def middle(image: ta.Image) -> np.ndarray:
    """The middle axial slice, shown with x to the right and y up."""
    return image.data[0, 0, :, :, image.grid.shape[2] // 2].numpy().T


fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, (title, image) in zip(axes, [("fixed (2 mm)", fixed), ("moving array (4 mm)", moving),
                                     ("moving on the fixed grid", resample(moving, fixed.grid))]):
    ax.imshow(middle(image), cmap="gray", origin="lower")
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

# %%
# ## Register, compare with the truth
#
# The `rigid` preset finds `T`, which maps fixed world points to moving world points. Both images
# have the same contrast, so we override the preset's similarity with normalised cross-correlation,
# and we start from the two grids' centres (`init="geometry"`). Then we measure the distance to the
# known transform over every fixed voxel centre.
r = ta.register(fixed_path, moving_path, preset="rigid", init="geometry", metric="ncc")
points = fixed.grid.points(torch.float64).reshape(-1, 3)
true_points = torch.from_numpy(points.numpy() @ truth[:3, :3].T + truth[:3, 3])
residual = (r.warp_points(points) - true_points).norm(dim=-1)
print(f"rigid in {r.result.seconds:.1f} s; distance to the true map: mean {residual.mean():.2f} mm, "
      f"max {residual.max():.2f} mm (voxels are 2 and 4 mm)")

# %%
# ## Export: what ANTs and ITK read
#
# `save` writes the files of `torchalign register`: `transform.txt` is an ITK
# `AffineTransform_double_3_3` in **LPS** coordinates (ITK's convention; x and y negated), centred at
# the fixed grid's centre. The conversion happens there, at the file boundary, and nowhere else.
out = Path(tempfile.mkdtemp())
paths = r.save(out)
print(paths["transform"].read_text())
print("the same matrix in LPS:\n", flip_matrix(r.matrix).round(4))

# %%
# ## Round trip 1: ANTsPy applies our file to the image
#
# `ants.apply_transforms` with `transform.txt` should reproduce torchalign's `warped.nii.gz`.
import ants

a_fixed, a_moving = ants.image_read(str(fixed_path)), ants.image_read(str(moving_path))
a_warped = ants.apply_transforms(a_fixed, a_moving, [str(paths["transform"])]).numpy()
ours = ta.read_image(paths["warped"]).data[0, 0].numpy()
inside = ours > 0.05 * ours.max()
print(f"ANTs vs torchalign warped image: correlation {np.corrcoef(a_warped[inside], ours[inside])[0, 1]:.5f}, "
      f"median |difference| {np.median(np.abs(a_warped - ours)[inside]) / ours.max():.1e} of the range")

# %%
# ## Round trip 2: SimpleITK maps points with our file
#
# Points are world coordinates too. `r.warp_points` takes RAS points in the fixed space; SimpleITK
# takes LPS points, so we flip them on the way in and out.
import SimpleITK as sitk

itk_transform = sitk.ReadTransform(str(paths["transform"]))
fixed_points = np.array([[10.0, -20.0, 5.0], [-30.0, 15.0, 40.0], [0.0, 0.0, 0.0]])  # RAS mm
ours = r.warp_points(fixed_points).numpy()
theirs = flip_points(np.array([itk_transform.TransformPoint(p.tolist()) for p in flip_points(fixed_points)]))
print("torchalign:\n", ours.round(3), "\nSimpleITK:\n", theirs.round(3))
print(f"largest difference {np.abs(ours - theirs).max():.1e} mm")

# %%
# ANTs' `apply_transforms_to_points` reads the same file and maps points the same way (fixed to
# moving; ANTs notes that points go "the opposite direction of image mapping", which is this: an
# image is warped by *pulling* moving intensities to fixed points). `r.inverse.warp_points` carries
# the moving points back.
import pandas as pd

lps = pd.DataFrame(flip_points(fixed_points), columns=["x", "y", "z"])
ants_points = flip_points(ants.apply_transforms_to_points(3, lps, [str(paths["transform"])]).to_numpy())
back = r.inverse.warp_points(ours).numpy()
print(f"fixed -> moving, ANTs vs torchalign: largest difference {np.abs(ants_points - ours).max():.1e} mm; "
      f"moving -> fixed round trip error {np.abs(back - fixed_points).max():.1e} mm")

# %%
# ## Labels
#
# Label maps must not be interpolated linearly (label 2 halfway between 1 and 3 is wrong).
# `interp="label"` interpolates each label's indicator linearly and takes the most likely label,
# as ANTs' `genericLabel`. Here three intensity classes of the moving image stand in for a
# segmentation.
levels = np.quantile(moving.data[moving.data > 0.05 * moving.data.max()].numpy(), [1 / 3, 2 / 3])
labels = torch.bucketize(moving.data, torch.tensor(levels, dtype=moving.data.dtype)).to(torch.int16)
labels[moving.data <= 0.05 * moving.data.max()] = 0
label_path = out / "moving_labels.nii.gz"
ta.write_image(moving.with_data(labels), label_path)
warped_labels = r.warp(label_path, interp="label").data[0, 0].numpy()
a_labels = ants.apply_transforms(a_fixed, ants.image_read(str(label_path)), [str(paths["transform"])],
                                 interpolator="genericLabel").numpy()
print(f"labels: torchalign and ANTs genericLabel agree on {100 * np.mean(warped_labels == a_labels):.2f} % "
      "of the voxels")

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, (title, image) in zip(axes, [("fixed", middle(fixed)),
                                     ("warped labels, torchalign", warped_labels[:, :, 12].T),
                                     ("warped labels, ANTs", a_labels[:, :, 12].T)]):
    ax.imshow(image, cmap="gray" if title == "fixed" else "viridis", origin="lower", interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

# %%
# Image, points and labels agree with ANTs and SimpleITK to rounding error. Note the fixed image's
# orientation code `LAS`: its first voxel axis runs to the *left* (a negative x step in the
# affine), which torchalign keeps in the grid rather than flipping the array. The
# [conventions page](../../conventions.md) lists every rule that keeps torchalign, nibabel, ITK and
# ANTs in agreement.
