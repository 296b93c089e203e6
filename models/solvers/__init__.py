"""Field solvers: reconstruct a physical field on a grid from scattered, noisy observations.

Every solver answers one interface, ``FieldSolver`` (base.py): ``fit``, ``predict``,
``predict_grid``, ``state``/``restore``, ``noise_variance``, ``estimated_memory_bytes`` and
``check_problem``, with what differs between them declared as attributes (``componentwise``,
``accepts_noise_std``, ``learns_noise``, ``input_dim``, ``components``, ``uses_source``), so the
pipeline treats them alike. ``SOLVERS`` maps a recipe's method name to the class whose
constructor keywords are the method's parameters (as ``models.samplers.REGISTRY`` does for the
imaging samplers); ``Componentwise`` models a vector field with one scalar solver per
component. Each solver returns a ``FieldPosterior`` (mean and std over the grid), the same
summary the imaging samplers produce, so the pipeline stores and displays both alike.
"""

from .base import FieldSolver, SolverState
from .componentwise import Componentwise
from .gp import ExactGPSolver
from .gp_physics import PhysicsGPSolver
from .gp_scalable import SparseGPSolver
from .pinn import PINNEnsembleSolver
from .summary import FieldPosterior

SOLVERS: dict[str, type[FieldSolver]] = {
    ExactGPSolver.name: ExactGPSolver,
    SparseGPSolver.name: SparseGPSolver,
    PhysicsGPSolver.name: PhysicsGPSolver,
    PINNEnsembleSolver.name: PINNEnsembleSolver,
}

__all__ = [
    "SOLVERS", "FieldSolver", "SolverState", "Componentwise", "ExactGPSolver", "FieldPosterior",
    "PhysicsGPSolver", "PINNEnsembleSolver", "SparseGPSolver",
]
