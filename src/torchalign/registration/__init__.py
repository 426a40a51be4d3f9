"""The registration engine, used by every entry point (``register``, ``batch``, the initial search,
``nn`` fine-tuning): problems (:mod:`.problem`), one objective (:mod:`.objective`), one batched loop
(:mod:`.optimise`), per-axis pyramids (:mod:`.pyramid`), stages (:mod:`.stages`, :mod:`.deformable`),
initialisation (:mod:`.initialise`) and the driver (:mod:`.driver`)."""
from .driver import LevelRecord, Result, StageRecord, linear_center_radius, prepare_pair, register, register_many
from .objective import objective
from .optimise import optimise, plateau
from .problem import Prepared, Problem, build_problem, prepare, stack_problems

__all__ = ["LevelRecord", "Prepared", "Problem", "Result", "StageRecord", "build_problem", "linear_center_radius",
           "objective", "optimise", "plateau", "prepare", "prepare_pair", "register", "register_many",
           "stack_problems"]
