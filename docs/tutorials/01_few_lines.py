"""
# Registration in a few lines

Two brain slices (the classic ANTs 2-D examples `r16` and `r64`) are aligned by an affine
transform twice: first with nothing but PyTorch autograd, then with torchalign, which adds world
coordinates, a multi-resolution pyramid, a robust similarity and the files other tools read.
"""

# %%
# ## Affine registration with plain autograd
#
# An affine map is six numbers `theta` in the normalised `[-1, 1]` coordinates that
# `torch.nn.functional.grid_sample` reads. We warp the moving image with it, compare with the fixed
# image by mean squared error, and let Adam lower the error.
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

DATA = Path(os.environ.get("TORCHALIGN_DATA", "../shared/data"))
fixed_path, moving_path = DATA / "slices2d/r16slice.jpg", DATA / "slices2d/r64slice.jpg"


def load(path):
    return torch.from_numpy(np.asarray(PILImage.open(path).convert("L"), dtype=np.float32) / 255)[None, None]


fixed, moving = load(fixed_path), load(moving_path)  # (1, 1, H, W)

theta = torch.eye(2, 3, requires_grad=True)  # identity to start
optimiser = torch.optim.Adam([theta], lr=1e-2)
for step in range(200):
    grid = F.affine_grid(theta[None], fixed.shape, align_corners=False)
    warped = F.grid_sample(moving, grid, align_corners=False)
    loss = (warped - fixed).square().mean()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
print(f"MSE before {float((moving - fixed).square().mean()):.4f}, after {loss.item():.4f}")
print("theta =", theta.detach().numpy().round(3))

# %%
# That is all of it: a differentiable warp, a loss and an optimiser. What it lacks shows on real
# data: `theta` lives in the normalised coordinates of *this* array (not in millimetres, so no other
# tool can use it), a single full-resolution level gets stuck when the images start far apart, and
# mean squared error needs the two images to have the same contrast.
#
# ## The same with torchalign
#
# `ta.register` reads the files (with their geometry), runs the `affine` preset (a rigid then an
# affine stage, each coarse to fine, with mutual information), and returns a result that warps
# images and points and writes files.
import torchalign as ta

r = ta.register(fixed_path, moving_path, preset="affine")
print(f"registered in {r.result.seconds:.1f} s")
print("world matrix (moving_from_fixed, RAS mm):\n", r.matrix.round(3))
warped_ta = r.warp()  # the moving image resampled onto the fixed grid

# %%
# A deformable registration is the same call with another preset. `syn` is an affine stage
# followed by a symmetric diffeomorphic (SyN-like) stage.
r_syn = ta.register(fixed_path, moving_path, preset="syn")
print(f"syn registered in {r_syn.result.seconds:.1f} s")

# %%
# Side by side: the outline of the fixed slice (red) over each result. The images are shown as the
# JPEG files store them; torchalign's arrays are `(x, y)` = (column, row), hence the transposes.
f = fixed[0, 0].numpy()
panels = [("moving", moving[0, 0].numpy()), ("plain autograd (affine)", warped[0, 0].detach().numpy()),
          ("ta.register, affine", warped_ta.data[0, 0].numpy().T),
          ("ta.register, syn", r_syn.warp().data[0, 0].numpy().T)]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
axes[0].imshow(f, cmap="gray")
axes[0].set_title("fixed")
for ax, (title, img) in zip(axes[1:], panels):
    ax.imshow(img, cmap="gray")
    ax.contour(f, levels=[0.25], colors="r", linewidths=0.6)
    ax.set_title(title)
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %%
# Writing the result gives what `torchalign register` writes: the warped image, the transform as an
# ITK file that ANTs and SimpleITK read, and `result.json` with the settings and the loss history
# (see [the outputs page](../../outputs.md)).
import tempfile

out = Path(tempfile.mkdtemp())
print(sorted(p.name for p in r_syn.save(out).values()))
