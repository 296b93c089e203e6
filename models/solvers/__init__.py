"""Field solvers: reconstruct a physical field on a grid from scattered, noisy observations.

Each solver returns a ``FieldPosterior`` (mean and std over the grid), the same summary the
imaging samplers produce, so the pipeline stores and displays both alike.
"""

from .gp import ExactGPSolver
from .gp_physics import PhysicsGPSolver
from .gp_scalable import SparseGPSolver
from .pinn import PINNEnsembleSolver
from .summary import FieldPosterior

__all__ = ["ExactGPSolver", "FieldPosterior", "PhysicsGPSolver", "PINNEnsembleSolver", "SparseGPSolver"]
