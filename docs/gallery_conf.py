"""mkdocs-gallery set-up, run once before the tutorials execute (each runs in docs/tutorials/).

The tutorials reuse the runnable scripts of examples/ (import them, do not copy them) and find the
real images through TORCHALIGN_DATA, as the tests do (default: ../shared/data beside the repository).
"""
import os
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
os.environ.setdefault("TORCHALIGN_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

# matplotlib asks torch tensors for copy-free arrays with a keyword torch's __array__ lacks: harmless
# noise under every figure of a tensor, kept off the pages.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword")

conf = {}
