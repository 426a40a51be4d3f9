"""Loss modules (all minimised): image similarity and transform regularisers."""
from .regularisers import REGULARISERS, BendingEnergy, Curvature, Diffusion, JacobianFolding, LinearElasticity
from .similarity import LNCC, MI, MINDSSC, MSE, NCC, NGF, NMI, SAD, SIMILARITY, PairLoss, make_similarity

__all__ = [
    "LNCC", "MI", "MINDSSC", "MSE", "NCC", "NGF", "NMI", "SAD", "SIMILARITY", "PairLoss", "make_similarity",
    "REGULARISERS", "BendingEnergy", "Curvature", "Diffusion", "JacobianFolding", "LinearElasticity",
]
