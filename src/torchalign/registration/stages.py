"""What a stage is made of, built from its validated settings: similarity, regularisers, optimiser.

:func:`check_stage` builds every part of a stage once on a tiny grid, so a bad name or option is
reported when the configuration loads, before any image is read.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import Stage
from ..errors import InputError
from ..factories import accepted_options, construct
from ..grid import Grid
from ..losses import REGULARISERS, SIMILARITY, make_similarity
from ..transforms.linear import LinearTransform
from .deformable import build


def similarity_options(metric: str) -> set[str]:
    """Keyword options the similarity registered as ``metric`` accepts (``reduction`` excluded)."""
    if metric not in SIMILARITY:
        raise InputError(f"unknown similarity {metric!r}; expected one of: {', '.join(SIMILARITY)}")
    return set(accepted_options(SIMILARITY[metric]) or ()) - {"reduction"}


def make_regularisers(specs: list[Any]) -> list[nn.Module]:
    """Regulariser modules (per-pair values) from config entries ``{name, weight, options}``."""
    out = []
    for spec in specs:
        if spec.name not in REGULARISERS:
            raise InputError(f"unknown regulariser {spec.name!r}; expected one of {', '.join(REGULARISERS)}")
        out.append(construct(REGULARISERS[spec.name], f"regulariser {spec.name!r}", weight=spec.weight,
                             reduction="none", **spec.options))
    return out


def make_optimizer(stage: Stage, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """The stage's ``torch.optim`` class by name (LBFGS gets a strong-Wolfe line search)."""
    opt_cls = getattr(torch.optim, stage.optimizer, None)
    if not (isinstance(opt_cls, type) and issubclass(opt_cls, torch.optim.Optimizer)) or opt_cls is torch.optim.Optimizer:
        raise InputError(f"unknown optimizer {stage.optimizer!r}; use a torch.optim class name (Adam, SGD, LBFGS, ...)")
    options = dict(stage.optimizer_options)
    if stage.optimizer == "LBFGS":
        options.setdefault("line_search_fn", "strong_wolfe")
        options.setdefault("max_iter", 1)
    return construct(opt_cls, f"optimizer {stage.optimizer!r}", params, lr=lr, **options)


def check_stage(stage: Stage, where: str) -> None:
    """Build every part of ``stage`` on a tiny grid; InputError naming ``where`` for the first bad one."""
    try:
        if "reduction" in stage.metric_options:
            raise InputError("metric_options cannot set 'reduction' (the engine scores each pair)")
        make_similarity(stage.metric, **stage.metric_options)
        make_regularisers(stage.regularisers)
        probe = Grid((8, 8, 8), np.eye(4))
        if stage.is_linear:
            if stage.transform_options:
                raise InputError(f"linear transforms take no transform_options, got {sorted(stage.transform_options)}")
            model: nn.Module = LinearTransform(3, stage.transform, freeze=stage.freeze)
            if not any(p.requires_grad for p in model.parameters()):
                raise InputError(f"freeze {stage.freeze} leaves nothing of {stage.transform!r} to optimise")
        else:
            if stage.freeze:
                raise InputError("freeze applies to linear stages only")
            model = build(stage.transform, probe, dict(stage.transform_options), None)
        make_optimizer(stage, [p for p in model.parameters() if p.requires_grad], stage.lr)
    except (InputError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None
