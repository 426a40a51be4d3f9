"""``torchalign predict --model CKPT|NAME FIXED MOVING -o OUTDIR [--finetune N]``."""
from __future__ import annotations

import resource
import sys
import time

import click
import torch

from ..io import read_image
from .options import device_option, nan_to_option, overwrite_option, quiet_option


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA allocation on a CUDA device), MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"process_rss": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if device.type == "cuda":
        out["cuda_allocated"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


@click.command("predict")
@click.option("--model", "model_name", required=True,
              help="Checkpoint written by `train`, or the name of a bundled model (synth2d).")
@click.argument("fixed", type=click.Path())
@click.argument("moving", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(), help="Output folder.")
@click.option("--finetune", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Optimise the predicted transform on this pair for N steps (instance optimisation).")
@click.option("--metric", default=None,
              help="Fine-tuning similarity (mse, ncc, lncc, mi ...; default: the model's training similarity). "
                   "Use mi for images of different contrasts.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fine-tuning learning rate in mm (default: half the mean voxel size).")
@click.option("--grad-sigma", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Fine-tuning: Gaussian smoothing of dense-field gradients, in voxels (0 = none).")
@device_option()
@click.option("--write-inverse", is_flag=True, help="Dense models: also write inverse_warp.nii.gz.")
@click.option("--write-jacobian", is_flag=True, help="Dense models: also write jacobian.nii.gz (det J).")
@overwrite_option
@quiet_option
@nan_to_option
def predict_cmd(model_name: str, fixed: str, moving: str, outdir: str, finetune: int, metric: str | None,
                lr: float | None, grad_sigma: float, device: str, write_inverse: bool, write_jacobian: bool,
                overwrite: bool, quiet: bool, nan_to: float | None) -> None:
    """Register MOVING to FIXED with a trained network; write the outputs of `torchalign register`
    (warped.nii.gz, transform.txt, result.json and, for dense models, warp.nii.gz; the inverse warp
    and Jacobian on request) to OUTDIR, replaced whole as by `register`."""
    from ..io.folders import check_output_folder, staged_folder
    from ..losses import make_similarity
    from ..nn.inference import default_lr, load_model, predict_pair, resolve_model, write_prediction
    from ..outputs import WRITTEN

    start = time.perf_counter()
    dev = torch.device(device)
    path = resolve_model(model_name)
    check_output_folder(outdir, overwrite, [fixed, moving, str(path)], replaceable=WRITTEN)
    if metric is not None:
        make_similarity(metric)  # an unknown name fails here, before any work
    model, config = load_model(path, dev)
    f = read_image(fixed, nan_to=nan_to)
    m = read_image(moving, nan_to=nan_to)
    loaded = time.perf_counter() - start
    prediction = predict_pair(model, config, f, m, finetune, lr, grad_sigma, metric)
    prediction.seconds = {"load": loaded, **prediction.seconds, "total": time.perf_counter() - start}
    extra = {"model": model_name,
             "finetune": {"steps": finetune, "metric": metric or config.loss.similarity,
                          "lr": default_lr(f.grid) if lr is None else lr, "grad_sigma": grad_sigma},
             "peak_memory_mb": peak_memory_mb(dev)}
    optional = [name for name, wanted in (("inverse_warp", write_inverse), ("jacobian", write_jacobian)) if wanted]
    with staged_folder(outdir) as staging:
        paths = write_prediction(staging, f, m, prediction, config, [fixed, moving, str(path)], extra, metric,
                                 optional)
    if not quiet:
        click.echo(f"predicted in {prediction.seconds['predict']:.2f} s"
                   + (f", fine-tuned in {prediction.seconds['finetune']:.1f} s" if finetune else "")
                   + f"; peak memory {extra['peak_memory_mb']['process_rss']:.0f} MiB; wrote "
                   + ", ".join(p.name for p in paths.values()) + f" to {outdir}")
