"""
# Evaluation and quality control

How good is a registration? Nothing measures it directly, so we look from several sides:
overlap of labels (Dice, HD95), distances between landmarks (TRE), the regularity of the
transform (Jacobian determinant, folding, SDlogJ, curl), its consistency with its inverse, the
error against a known field (RMSE), and a look at the images (the QC report).

The pair: two subjects' brain slices with 19 shared labels. To have a ground truth as well, a
second pair is made by warping the fixed slice with a known smooth deformation.
"""

# %%
# ## Register, then measure overlap
import os
import re
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import torchalign as ta
from torchalign.functional.jacobian import jacobian_det
from torchalign.metrics import curl_magnitude, field_rmse, inverse_consistency
from torchalign.resample import resample
from torchalign.transforms.velocity import StationaryVelocity

DATA = Path(os.environ.get("TORCHALIGN_DATA", "../shared/data"))
pair = np.load(DATA / "brain2d/brain2d_slice_z100_pairs.npz")
grid = ta.Grid(pair["vxm_test_vol"].shape)  # 1 mm pixels
fixed = ta.Image(torch.from_numpy(pair["vxm_test_vol"])[None], grid)
moving = ta.Image(torch.from_numpy(pair["l2r_subj1_vol"])[None], grid)
fixed_seg = ta.Image(torch.from_numpy(pair["vxm_test_seg"].astype(np.int64))[None], grid)
moving_seg = ta.Image(torch.from_numpy(pair["l2r_subj1_seg"].astype(np.int64))[None], grid)
labels = sorted(set(np.unique(pair["vxm_test_seg"])) & set(np.unique(pair["l2r_subj1_seg"])) - {0})

r = ta.register(fixed, moving, preset="syn", init="none")
before = ta.evaluate(fixed_seg, moving_seg, labels=labels)
after = r.evaluate(fixed_labels=fixed_seg, moving_labels=moving_seg, labels=labels)
for key in ("dice", "hd95", "assd"):
    print(f"mean {key:5s}: before {before['mean'][key]:.3f}, after {after['mean'][key]:.3f}")

fig, ax = plt.subplots(figsize=(9, 3))
x = np.arange(len(labels))
ax.bar(x - 0.2, [before["labels"][str(k)]["dice"] for k in labels], 0.4, label="before")
ax.bar(x + 0.2, [after["labels"][str(k)]["dice"] for k in labels], 0.4, label="after syn")
ax.set_xticks(x, [str(k) for k in labels], fontsize=8)
ax.set_xlabel("label")
ax.set_ylabel("Dice")
ax.legend()
fig.tight_layout()

# %%
# **Dice** `2|A∩B| / (|A|+|B|)` rewards overlap but is forgiving for large structures and harsh
# for small ones. **HD95** (95th percentile of the symmetric surface distance, mm) and **ASSD**
# (average symmetric surface distance) measure how far boundaries are apart. Good overlap is
# necessary but not sufficient: a transform can match labels with an implausible deformation.
#
# ## Regularity: Jacobian determinant, folding, SDlogJ, curl
#
# `det J` of the transform says how it changes local area: 1 keeps it, 2 doubles it, and `<= 0`
# means the map folds (no longer invertible). SDlogJ, the standard deviation of `log det J`, sums up
# how unevenly it stretches; curl measures local rotation. `r.evaluate` reports all of them
# (`jacobian` and `field` sections):
print({k: round(v, 4) if isinstance(v, float) else v for k, v in after["jacobian"].items()})
print({k: round(v, 4) for k, v in after["field"].items()})

with torch.no_grad():
    field = r.transform.displacement(grid)  # (1, 2, *S) mm: T(x) = x + u(x)
    det = jacobian_det(field, grid)[0].numpy()
    curl = curl_magnitude(field, grid)[0].numpy()
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
axes[0].imshow(r.warp().data[0, 0], cmap="gray")
axes[0].set_title("warped moving")
im = axes[1].imshow(np.log2(np.clip(det, 1e-3, None)), cmap="RdBu_r", vmin=-1.5, vmax=1.5)
axes[1].set_title("log2 det J")
fig.colorbar(im, ax=axes[1], shrink=0.8)
im = axes[2].imshow(curl, cmap="magma")
axes[2].set_title("|curl u|")
fig.colorbar(im, ax=axes[2], shrink=0.8)
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %%
# ## Inverse consistency
#
# Registering A to B and B to A should give inverse maps. torchalign's `syn` result carries its
# inverse (`r.inverse`), exact in the model; the residual `|T^-1(T(x)) - x|` measures what the
# discrete integration and interpolation lose. `inverse_consistency` takes the two displacement
# fields, so it also checks a pair of maps from two separate registrations.
with torch.no_grad():
    inverse_field = r.result.inverse.displacement(moving.grid)
error, inside = inverse_consistency(field, grid, inverse_field, moving.grid)
brain = pair["vxm_test_seg"] > 0
print(f"inverse consistency in the brain: median {error[0][brain].median():.3f} mm, "
      f"95th percentile {error[0][brain].quantile(0.95):.3f} mm")

# %%
# ## Known answers: TRE and field RMSE
#
# Landmarks or a ground-truth field say how far each point is from where it should be. We make
# them: a smooth velocity field `w` (two slow waves, up to 3 mm) defines `S = exp(w)`; the moving
# image is the fixed image pulled through `S`, so the true registration is `S^-1 = exp(-w)`.
# Landmarks are 50 random brain pixels of the fixed image; their true partners are `S^-1(p)`.
x0, x1 = grid.points().unbind(-1)  # world mm
w = torch.stack([3.0 * torch.sin(2 * torch.pi * x1 / 96), 3.0 * torch.cos(2 * torch.pi * x0 / 80)])[None]
s = StationaryVelocity(grid, velocity=w)
truth = s.inverse()
synthetic = resample(fixed, grid, s)
rng = np.random.default_rng(0)
fixed_points = grid.points(torch.float64)[torch.from_numpy(brain)][rng.choice(int(brain.sum()), 50, replace=False)]
with torch.no_grad():
    moving_points = truth(fixed_points[None])[0]
    true_field = truth.displacement(grid)

r2 = ta.register(fixed, synthetic, preset="syn", init="none")
result = r2.evaluate(fixed_points=fixed_points, moving_points=moving_points)
with torch.no_grad():
    recovered = r2.transform.displacement(grid)
mask = torch.from_numpy(brain)[None]
print(f"TRE: before {result['points']['initial']['tre_mean']:.2f} mm, after {result['points']['tre_mean']:.2f} mm "
      f"(max {result['points']['tre_max']:.2f} mm)")
print(f"field RMSE in the brain: identity {field_rmse(torch.zeros_like(true_field), true_field, mask):.2f} mm, "
      f"recovered {field_rmse(recovered.float(), true_field, mask):.2f} mm")

# %%
# ## The QC report
#
# `save(..., report=True)` writes the files of `torchalign register` and a self-contained HTML
# report (`report.html`, figures embedded, no network): a summary with the metrics, before/after
# views with a slider and flicker, the loss curves, the deformation (det J, folding) and the label
# overlap. `torchalign report OUTDIR` rebuilds it from a folder. Its sections:
out = Path(tempfile.mkdtemp())
paths = r.save(out, fixed_labels=fixed_seg, moving_labels=moving_seg, labels=labels, report=True)
html = paths["report"].read_text()
print(f"{paths['report'].name}: {len(html) / 1e6:.1f} MB, sections:",
      [re.sub("<[^>]+>", "", h) for h in re.findall(r"<h2[^>]*>(.*?)</h2>", html)])

# %%
# ## What to report
#
# No single number suffices. A typical table gives Dice and HD95 over the labels (overlap), the
# fold percentage and SDlogJ (plausibility), and, where landmarks exist, TRE; the report's images
# catch what the numbers miss (a misregistered region the labels do not cover, intensity artefacts).
# From the command line, `torchalign evaluate` computes the same document from files.
