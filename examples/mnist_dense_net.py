"""Train a diffeomorphic (stationary velocity) registration U-Net on one MNIST digit class, on the CPU.

    python examples/mnist_dense_net.py -o out/mnist_dense [--steps 500] [--digit 5]

Unsupervised: MSE between the fixed and the warped moving image plus a diffusion regulariser on
the displacement. Prints and writes ``metrics.json`` (test MSE after / before registration,
folding fraction) and ``figure.png``.
"""
from __future__ import annotations

import sys
from typing import Any

from mnist_common import arguments, run

CONFIG = {
    "model": {"ndim": 2, "head": "dense", "features": [16, 32, 32, 32], "field": "velocity", "steps": 7,
              "normalize": "minmax"},
    "loss": {"similarity": "mse", "regularisers": [{"name": "diffusion", "weight": 0.01}]},
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__.splitlines()[0], steps=500, lr=1e-3).parse_args(argv)
    return run(args, CONFIG)


if __name__ == "__main__":
    main(sys.argv[1:])
