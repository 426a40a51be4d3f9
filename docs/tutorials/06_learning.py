"""
# Learning-based registration

Instead of optimising a transform for every pair, a network can learn to *predict* it from the two
images, unsupervised: the loss is the same similarity plus regulariser that an optimiser would
minimise, averaged over many training pairs. This tutorial trains, on the CPU and for a few hundred
steps only:

1. an affine network (an encoder regressing the affine matrix, as AIRNet) on MNIST;
2. a VoxelMorph-style U-Net predicting a stationary velocity field, on MNIST;
3. the same U-Net on 2-D brain slices, then fine-tuned on one pair.

The networks, losses and training loop are `torchalign.nn`'s; `examples/mnist_affine_net.py` and
`examples/mnist_dense_net.py` train the MNIST models for longer.
"""

# %%
# ## The data: one digit class of MNIST
#
# Images of the digit 5 are split into training and test images; training pairs are random pairs
# of training images, redrawn every epoch; the test pairs are fixed.
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import torchalign as ta
from torchalign.nn.checkpoint import model_from_checkpoint
from torchalign.nn.config import AugmentConfig, TrainConfig
from torchalign.nn.data import PairDataset, Subject, collate
from torchalign.nn.evaluate import evaluate_model
from torchalign.nn.models import warp
from torchalign.nn.train import train

import mnist_affine_net  # examples/: the model and loss settings
import mnist_common
import mnist_dense_net

torch.manual_seed(0)
DATA = Path(os.environ.get("TORCHALIGN_DATA", "../shared/data"))
OUT = Path(tempfile.mkdtemp())
train_subjects, test_subjects = mnist_common.digit_subjects(DATA / "digits/mnist_t10k.npz", digit=5, n_train=700)
test_pairs = mnist_common.test_pairs(len(test_subjects), 200, seed=1)
print(f"{len(train_subjects)} training and {len(test_subjects)} test images")


def fit(settings: dict, name: str, steps: int) -> torch.nn.Module:
    """Train the network that ``settings`` describes for ``steps`` Adam steps; return it."""
    config = TrainConfig.model_validate({**settings, "output": str(OUT / name), "lr": 2e-3, "batch_size": 16,
                                         "max_steps": steps, "epochs": 10**6, "tensorboard": False})
    data = PairDataset(train_subjects, "random", config.model.normalize, seed=0)
    summary = train(config, data)
    model, _ = model_from_checkpoint(summary.checkpoint)
    test = PairDataset(test_subjects, test_pairs, config.model.normalize)
    metrics = evaluate_model(model, test)["summary"]
    print(f"{name}: {summary.steps} steps in {summary.seconds:.0f} s; test MSE {metrics['mse_before']:.4f} -> "
          f"{metrics['mse_after']:.4f} ({100 * metrics['mse_ratio']:.0f} %), folded {100 * metrics['folding']:.2f} %")
    return model


def show(model: torch.nn.Module, title: str, n: int = 6) -> None:
    """Fixed, moving and warped test digits, and the fixed grid carried into the moving image."""
    test = PairDataset(test_subjects, test_pairs, "minmax")
    batch = collate([test[i] for i in range(n)])
    with torch.no_grad():
        transform = model(batch.fixed, batch.moving, batch.grid)
        disp = transform.displacement(batch.grid)
        warped = warp(batch.moving, batch.grid, transform, disp)
    pts = batch.grid.points().numpy() + disp.movedim(1, -1).numpy()
    fig, axes = plt.subplots(4, n, figsize=(1.5 * n, 6.2))
    for j in range(n):
        for i, img in enumerate((batch.fixed[j, 0], batch.moving[j, 0], warped[j, 0])):
            axes[i, j].imshow(img, cmap="gray", vmin=0, vmax=1)
        for k in range(0, 28, 3):
            axes[3, j].plot(pts[j, k, :, 1], pts[j, k, :, 0], "b-", lw=0.5)
            axes[3, j].plot(pts[j, :, k, 1], pts[j, :, k, 0], "b-", lw=0.5)
        axes[3, j].set_xlim(-0.5, 27.5)
        axes[3, j].set_ylim(27.5, -0.5)
        axes[3, j].set_aspect("equal")
    for i, name in enumerate(("fixed", "moving", "warped", "grid")):
        axes[i, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()


# %%
# ## 1. An unsupervised affine network
#
# A convolutional encoder reads the pair `(fixed, moving)` and regresses the six parameters of a
# 2-D affine transform (initialised to the identity). The warped moving image is compared with the
# fixed image by mean squared error, and the gradient flows through the sampler (a spatial
# transformer) into the encoder.
print(mnist_affine_net.CONFIG)
affine_net = fit(mnist_affine_net.CONFIG, "affine", steps=100)
show(affine_net, "affine network")

# %%
# ## 2. A VoxelMorph-style U-Net
#
# A U-Net outputs a velocity field at every pixel; integrating it by scaling and squaring gives a
# diffeomorphic transform, and a diffusion regulariser keeps the field smooth. This is VoxelMorph's
# diffeomorphic variant, in world millimetres.
print(mnist_dense_net.CONFIG)
dense_net = fit(mnist_dense_net.CONFIG, "dense", steps=120)
show(dense_net, "U-Net, stationary velocity field")

# %%
# An affine map can only rotate, scale and shear a whole digit; the dense network bends strokes and
# lowers the test error further. Both predict a pair in milliseconds, where an optimiser would
# iterate.
#
# ## 3. Brain slices, and fine-tuning per pair
#
# Three 2-D brain slices with labels (two subjects and an atlas, already affinely aligned) are far
# too few to train a general network, but enough to show the workflow: we train the U-Net on the
# atlas-subject pairs (with random rotations, scaling and shifts) and test it on the two subjects,
# a pair it never saw. Then `predict_pair(..., finetune_steps=...)` continues optimising the
# network's prediction on that one pair (the training loss, on this pair only), which is how
# learned registration is often used: a good start in one pass, refined in a few steps.
from torchalign.nn.inference import predict_pair
from torchalign.resample import resample

pair = np.load(DATA / "brain2d/brain2d_slice_z100_pairs.npz")
grid = ta.Grid(pair["atlas2d_vol"].shape)
subjects = [Subject(ta.Image(torch.from_numpy(pair[f"{k}_vol"])[None], grid),
                    ta.Image(torch.from_numpy(pair[f"{k}_seg"].astype(np.int64))[None], grid))
            for k in ("vxm_test", "l2r_subj1", "atlas2d")]
brain_config = TrainConfig.model_validate({
    "model": {"ndim": 2, "head": "dense", "features": [8, 16, 16, 16], "field": "velocity", "normalize": "minmax"},
    "loss": {"similarity": "lncc", "similarity_options": {"radius": 2},
             "regularisers": [{"name": "diffusion", "weight": 1.0}]},
    "output": str(OUT / "brain"), "lr": 3e-3, "batch_size": 2, "max_steps": 80, "epochs": 10**6,
    "tensorboard": False})
brain_data = PairDataset(subjects, [(2, 0), (0, 2), (2, 1), (1, 2)], "minmax",
                         augment=AugmentConfig(rotate=10, scale=0.1, translate=5), seed=0)
summary = train(brain_config, brain_data)
brain_net, _ = model_from_checkpoint(summary.checkpoint)
print(f"trained {summary.steps} steps in {summary.seconds:.0f} s")

fixed, moving = subjects[0].image, subjects[1].image
fixed_seg, moving_seg = subjects[0].labels, subjects[1].labels
common = sorted(set(np.unique(pair["vxm_test_seg"])) & set(np.unique(pair["l2r_subj1_seg"])) - {0})


def dice(transform) -> float:
    """Mean Dice over the labels of both slices after warping the moving labels by ``transform``."""
    warped = resample(moving_seg, grid, transform, interp="label")
    return ta.evaluate(fixed_seg, warped, labels=common)["mean"]["dice"]


predicted = predict_pair(brain_net, brain_config, fixed, moving)
tuned = predict_pair(brain_net, brain_config, fixed, moving, finetune_steps=40)
classical = ta.register(fixed, moving, preset="syn", init="none")
before = ta.evaluate(fixed_seg, moving_seg, labels=common)["mean"]["dice"]
print(f"mean Dice over {len(common)} labels: before {before:.3f}, "
      f"network {dice(predicted.transform):.3f} ({1000 * predicted.seconds['predict']:.0f} ms), "
      f"fine-tuned {dice(tuned.transform):.3f} (+{tuned.seconds['finetune']:.1f} s), "
      f"syn preset {dice(classical.transform):.3f} ({classical.result.seconds:.1f} s)")

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
panels = [("fixed", fixed.data), ("moving", moving.data),
          ("network", resample(moving, grid, predicted.transform).data),
          ("network + fine-tuning", resample(moving, grid, tuned.transform).data)]
for ax, (title, data) in zip(axes, panels):
    ax.imshow(data[0, 0], cmap="gray")
    ax.contour(fixed.data[0, 0], levels=[0.3], colors="r", linewidths=0.5)
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

# %%
# Eighty steps on four pairs teach the network little, and the numbers above say so: its
# prediction alone barely moves the labels, fine-tuning on the pair does most of the work, and the
# classical `syn` optimisation, built for one pair at a time, is still well ahead. A network earns
# its keep with a real training set (hundreds of subjects, `torchalign train config.yaml`), where it
# predicts a good deformation in one pass and fine-tuning costs a fraction of a full optimisation.
