"""
# Many pairs: batch, process pool, Dask

Registering a study means many pairs with the same settings. `torchalign.batch` runs them one
after another, in a pool of processes, or as tasks on a Dask cluster (local or remote), writes each
pair's outputs into its own folder, and summarises them in `summary.csv` and `index.html`. A
rerun skips the pairs that are done (each folder holds a marker with the inputs' checksums and
the settings), so an interrupted batch resumes where it stopped.
"""

# %%
# ## The pairs
#
# Four classic ANTs brain slices registered to a fifth (`r16`). A CSV lists the pairs with the
# columns `id,fixed,moving` (optional: `fixed_labels`, `moving_labels`, masks and landmarks).
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from torchalign.batch import Execution, JobSettings, read_pairs, run_batch
from torchalign.config import Level, RegistrationConfig, Stage

DATA = Path(os.environ.get("TORCHALIGN_DATA", "../shared/data")).resolve() / "slices2d"
work = Path(tempfile.mkdtemp())
csv = work / "pairs.csv"
csv.write_text("id,fixed,moving\n" + "".join(
    f"{name},{DATA / 'r16slice.jpg'},{DATA / f'{name}slice.jpg'}\n" for name in ("r27", "r30", "r62", "r85")))
pairs = read_pairs(csv)
print(csv.read_text())

# %%
# Every pair shares one `JobSettings`: the registration config (here a quick rigid-then-affine
# run at a quarter and half resolution) and the evaluation and report options.
config = RegistrationConfig(init="com", stages=[
    Stage(transform="rigid", metric="mi", lr=0.2, levels=[Level(shrink=4, sigma=2, iterations=40)]),
    Stage(transform="affine", metric="mi", lr=0.1, levels=[Level(shrink=2, sigma=1, iterations=20)])])
settings = JobSettings(config=config)

# %%
# ## Sequential, process pool, Dask
#
# The same call with three execution modes. `pool` starts `workers` processes on this machine,
# each with its share of the cores as torch threads; `dask` submits each pair as a task to a Dask
# scheduler (`scheduler="tcp://host:8786"` for a cluster; without one, a local cluster of
# `workers` processes). A fourth mode, `gpu-batch`, stacks pairs of the same shape and optimises
# them together on one device.
#
# Worker processes start by importing the main script, as Python's `multiprocessing` does, so a
# script that starts them keeps its work under `if __name__ == "__main__":` (here, every cell
# from this one on).
if __name__ == "__main__":
    for mode in ("sequential", "pool", "dask"):
        start = time.perf_counter()
        results = run_batch(pairs, work / mode, settings, Execution(mode=mode, workers=2))
        done = sum(r.status == "done" for r in results)
        print(f"{mode:10s}: {done} pairs done in {time.perf_counter() - start:.1f} s")

# %%
# Each pair has its folder with the files of `torchalign register`, and the batch has a summary:
if __name__ == "__main__":
    print(sorted(p.name for p in (work / "pool" / "r27").iterdir()))
    summary = pd.read_csv(work / "pool" / "summary.csv")
    print(summary.drop(columns=["fixed", "moving"]).to_string(index=False))

# %%
# On two cores, the pool and Dask overlap the pairs' work (and pay a start-up cost for the
# processes); on a cluster, Dask spreads them over machines. A rerun finds the completion markers
# and skips the finished pairs:
if __name__ == "__main__":
    start = time.perf_counter()
    again = run_batch(pairs, work / "pool", settings, Execution(mode="pool", workers=2))
    print(f"rerun: {[r.status for r in again]} in {time.perf_counter() - start:.1f} s")

# %%
# The command line does the same:
#
# ```bash
# torchalign batch pairs.csv -o out/ --preset affine --mode pool --workers 4
# torchalign batch --fixed atlas.nii.gz --moving 'subjects/*.nii.gz' -o out/ --mode dask --scheduler tcp://host:8786
# ```
