"""The registration engine: one driver used by ``register``, ``batch``, the initial search and ``nn`` fine-tuning."""
from .driver import (
    LevelRecord,
    Prepared,
    Problem,
    Result,
    StageRecord,
    build_problem,
    evaluate,
    linear_center_radius,
    make_optimizer,
    plateau,
    prepare,
    prepare_pair,
    register,
)

__all__ = ["LevelRecord", "Prepared", "Problem", "Result", "StageRecord", "build_problem", "evaluate",
           "linear_center_radius", "make_optimizer", "plateau", "prepare", "prepare_pair", "register"]
