"""Named right-hand sides ``f(x, y)`` of the PDE studies, defined once.

The simulators (data/synthetic_fields.py) make studies with these sources, and a field recipe
tells a physics-informed solver which ``f`` its data obeys by the same name
(``method.params.source: sine``), so the two can never disagree. ``source_values`` works on
NumPy arrays and, with ``xp=torch``, on torch tensors (a PINN evaluates ``f`` at collocation
points inside its autograd graph).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

SOURCES = {
    "constant": "f = 1",
    "sine": "f = 2 pi^2 sin(pi x) sin(pi y)",
}


def source_values(name: str, x: Any, y: Any, xp: ModuleType = np) -> Any:
    """``f`` at points ``(x, y)`` (arrays or tensors of one shape) for the named source."""
    if name == "constant":
        return xp.ones_like(x)
    if name == "sine":
        return 2 * math.pi ** 2 * xp.sin(math.pi * x) * xp.sin(math.pi * y)
    raise ValueError(f"source {name!r}: expected one of {', '.join(SOURCES)}")
