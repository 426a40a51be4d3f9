"""Train an affine registration network (AIRNet-style, unsupervised) on one MNIST digit class, on the CPU.

    python examples/mnist_affine_net.py -o out/mnist_affine [--steps 500] [--digit 5]

A convolutional encoder regresses the 6 parameters of a 2-D affine transform (initialised to the
identity) from the image pair; the loss is the MSE between the fixed and the warped moving image.
Prints and writes ``metrics.json`` (test MSE after / before registration) and ``figure.png``.
"""
from __future__ import annotations

import sys
from typing import Any

from mnist_common import arguments, run

CONFIG = {
    "model": {"ndim": 2, "head": "affine", "features": [16, 32, 64, 64], "linear": "affine", "pool": 4,
              "normalize": "minmax"},
    "loss": {"similarity": "mse"},
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__.splitlines()[0], steps=500, lr=1e-3).parse_args(argv)
    return run(args, CONFIG)


if __name__ == "__main__":
    main(sys.argv[1:])
