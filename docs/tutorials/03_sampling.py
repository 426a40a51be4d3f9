"""
# How sampling works

Every registration warps an image: for each output pixel it computes where to look in the moving
image and interpolates there. In PyTorch that is `torch.nn.functional.grid_sample`. This page
takes it apart: its normalised coordinates, the one axis flip it requires, the bilinear kernel and
its gradient (what the optimiser sees), and the spatial transformer that makes the warp a layer.
"""

# %%
# ## Normalised coordinates and the axis flip
#
# `grid_sample(input, grid)` reads `input` of shape `(B, C, H, W)` at `grid` of shape
# `(B, H_out, W_out, 2)` whose last dimension holds **(x, y) = (column, row)**: the coordinate of
# the *last* array axis comes first. The coordinates are normalised to `[-1, 1]`. With
# `align_corners=True` (torchalign's choice), -1 and +1 are the centres of the first and last
# pixels, so index `i` of an axis of `n` pixels is `2 i / (n - 1) - 1`.
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

image = torch.arange(12.0).reshape(1, 1, 3, 4)  # rows i = 0..2, columns j = 0..3
print(image[0, 0])

i, j = 2, 1  # the pixel in row 2, column 1 holds 9
normalized = torch.tensor([2 * i / (3 - 1) - 1, 2 * j / (4 - 1) - 1])  # array-axis order (i, j)
grid = normalized.flip(-1).reshape(1, 1, 1, 2)  # grid_sample wants (j, i): the flip
print("sampled:", float(F.grid_sample(image, grid, align_corners=True)))
print("without the flip:", float(F.grid_sample(image, normalized.reshape(1, 1, 1, 2), align_corners=True)))

# %%
# Forgetting the flip is the most common bug in hand-written registration code: on square images
# it transposes the deformation silently. torchalign confines it to one function,
# `torchalign.functional.sampling`, which maps **world millimetres** to these coordinates through the
# grid's `voxel_from_world` matrix. Everywhere else points are world coordinates in array-axis
# order. The same sample through torchalign:
from torchalign import Grid
from torchalign.functional.sampling import normalized_from_voxel, sample_world

grid_2mm = Grid.from_geometry((3, 4), spacing=(2.0, 2.0), origin=(10.0, -5.0))
world = grid_2mm.voxel_to_world(torch.tensor([[float(i), float(j)]]))  # voxel (2, 1) in mm
print("world point (mm):", world.tolist())
print("sample_world:", float(sample_world(image, grid_2mm, world[None])))
print("normalized_from_voxel:\n", normalized_from_voxel((3, 4)))

# %%
# ## The bilinear kernel and its gradient
#
# Between pixel centres, linear interpolation weights the two neighbours by the distance to each:
# the "hat" kernel. Sampling a single bright pixel along a line traces the kernel. Its derivative
# with respect to the sampling position, which is what a registration's gradient flows through,
# is piecewise constant and jumps at every pixel centre: this is why losses computed on sampled
# images are only piecewise smooth, and why registration smooths images and works coarse to fine.
delta = torch.zeros(1, 1, 1, 9)
delta[..., 4] = 1.0
positions = torch.linspace(1.0, 7.0, 241, requires_grad=True)  # column index, continuous
x_norm = 2 * positions / 8 - 1
grid_line = torch.stack([x_norm, torch.zeros_like(x_norm)], -1).reshape(1, 1, -1, 2)  # (x, y)
values = F.grid_sample(delta, grid_line, align_corners=True).flatten()
(gradient,) = torch.autograd.grad(values.sum(), positions)

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(positions.detach(), values.detach())
axes[0].set_title("bilinear kernel: value of a unit pixel at column 4")
axes[1].plot(positions.detach(), gradient)
axes[1].set_title("d value / d position (autograd)")
for ax in axes:
    ax.set_xlabel("sampling position (column index)")
fig.tight_layout()

# %%
# ## A spatial transformer
#
# A spatial transformer (Jaderberg et al., 2015) is a layer that warps its input by parameters
# that are themselves differentiable: `affine_grid` builds the sampling grid from a `(B, 2, 3)`
# matrix and `grid_sample` reads the image there. Both the image and the matrix receive gradients,
# so a network can learn to predict the matrix, as the
# [learning tutorial](06_learning.md) does. Here the layer recovers a rotation by gradient descent.
# First we check autograd's gradient against a central finite difference, at 0.2 rad and at 0: at
# exactly 0 every sample lies on a pixel centre, where the kernel's derivative jumps, so autograd
# returns one one-sided derivative and the finite difference averages the two.
import os
from pathlib import Path

DATA = Path(os.environ.get("TORCHALIGN_DATA", "../shared/data"))
digits = np.load(DATA / "digits/mnist_t10k.npz")
digit = torch.from_numpy(np.pad(digits["images"][0], 6).astype(np.float32) / 255)[None, None]


def rotation(angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    return torch.stack([torch.stack([c, -s, zero]), torch.stack([s, c, zero])])[None]  # (1, 2, 3)


def transformer(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(image, F.affine_grid(theta, image.shape, align_corners=True), align_corners=True)


target = transformer(digit, rotation(torch.tensor(0.5)))  # rotated by 0.5 rad


def loss_at(angle: torch.Tensor) -> torch.Tensor:
    return (transformer(digit, rotation(angle)) - target).square().mean()


for at in (0.2, 0.0):
    angle = torch.tensor(at, requires_grad=True)
    (grad,) = torch.autograd.grad(loss_at(angle), angle)
    eps = 1e-3
    numeric = (loss_at(torch.tensor(at + eps)) - loss_at(torch.tensor(at - eps))) / (2 * eps)
    print(f"at {at} rad, d loss / d angle: autograd {grad.item():.5f}, finite difference {numeric.item():.5f}")

angle = torch.tensor(0.0, requires_grad=True)

optimiser = torch.optim.Adam([angle], lr=0.02)
for _ in range(150):
    optimiser.zero_grad()
    loss_at(angle).backward()
    optimiser.step()
print(f"recovered angle {angle.item():.3f} rad (true 0.5)")

fig, axes = plt.subplots(1, 3, figsize=(7, 2.6))
for ax, (title, img) in zip(axes, [("input", digit), ("target", target),
                                   ("transformed", transformer(digit, rotation(angle)).detach())]):
    ax.imshow(img[0, 0], cmap="gray")
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

# %%
# torchalign's transforms are such layers too, in world coordinates: `T(points)` maps fixed-space
# points to moving space, and `sample_world(moving, grid, T(points))` samples there, so the same
# gradient reaches the parameters of a rigid, affine, B-spline or velocity model.
