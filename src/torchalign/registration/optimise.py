"""The one optimisation loop: ``B`` pairs at once, each stopping on its own plateau and ending with
its own lowest-loss parameters.

Every learnable parameter holds the pairs on its first dimension; the loop minimises the sum of the
per-pair losses ``(B,)``, so with an element-wise optimiser (Adam, SGD, ...) each pair follows the
path it would follow alone. LBFGS's line search couples the pairs; it runs one pair at a time.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import Stage
from ..errors import InputError
from ..progress import progress as progress_bar
from .stages import make_optimizer


def plateau(losses: list[float], window: int, tolerance: float) -> bool:
    """True when the loss improved less than ``tolerance`` (relative) over the last ``window`` steps."""
    if len(losses) < window:
        return False
    old, recent = losses[-window], min(losses[-window + 1:])
    return old - recent < tolerance * max(abs(old), 1e-12)


def optimise(model: nn.Module, stage: Stage, iterations: int, lr: float, objective: Callable[[], Tensor],
             progress: bool = False, desc: str = "") -> list[list[float]]:
    """Minimise ``objective() (B,)`` over ``model``'s parameters in place; per-pair loss histories.

    The learning rate is annealed (cosine, to 5 %) over ``iterations``. A pair whose loss reaches a
    plateau keeps its parameters from then on while the others go on; each pair ends with the
    parameters of its lowest loss seen.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    batch = params[0].shape[0] if params else 1
    histories: list[list[float]] = [[] for _ in range(batch)]
    if not params or iterations == 0:
        return histories
    if stage.optimizer == "LBFGS" and batch > 1:
        raise InputError("LBFGS's line search couples the pairs of a batch; use Adam (or another element-wise "
                         "optimizer) or register the pairs one by one")
    opt = make_optimizer(stage, params, lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.05 * lr)
    best_value = [math.inf] * batch
    best = [p.detach().clone() for p in params]
    kept = [p.detach().clone() for p in params]
    active = [True] * batch
    values: list[float] = []

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        per_pair = objective()
        values[:] = per_pair.detach().double().cpu().tolist()
        total = per_pair.sum()
        total.backward()
        return total

    bar = progress_bar(iterations, desc, progress)
    for _ in bar:
        before = [p.detach().clone() for p in params]
        opt.step(closure)
        schedule.step()
        with torch.no_grad():
            for i in range(batch):
                if not active[i]:
                    for p, k in zip(params, kept):
                        p[i] = k[i]
                    continue
                if not math.isfinite(values[i]):
                    pair = f" of pair {i + 1}" if batch > 1 else ""
                    raise InputError(f"{desc}: the loss{pair} diverged (became {values[i]}); lower the learning rate")
                if values[i] < best_value[i]:
                    best_value[i] = values[i]
                    for b, p0 in zip(best, before):
                        b[i] = p0[i]
                histories[i].append(values[i])
                if plateau(histories[i], stage.window, stage.tolerance):
                    active[i] = False
                    for k, p in zip(kept, params):
                        k[i] = p[i]
        bar.set_postfix(loss=f"{sum(values):.5g}")
        if not any(active):
            break
    with torch.no_grad():
        final = objective().double().cpu().tolist()
        for i in range(batch):
            if final[i] > best_value[i]:
                for p, b in zip(params, best):
                    p[i] = b[i]
    return histories
