"""A vector field modelled by one independent scalar solver per component (PIV u and v by two GPs).

The GP solvers are scalar (``componentwise`` is True); ``Componentwise`` holds one copy per
component and answers the ``FieldSolver`` interface for the vector field, so the pipeline
handles it like a natively vector solver (the incompressible PINN): ``y`` (n, C) in,
``(m, C)`` predictions out, one ``SolverState``. The members run one after another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import FieldSolver, SolverState, check_n, check_state
from .inputs import fail

STATE_FORMAT = "inversa.componentwise/1"
"""Tag in ``state()`` metadata; ``restore`` refuses anything else."""


class Componentwise(FieldSolver):
    """A vector field modelled by one independent solver per component (PIV u and v by two GPs).

    ``solvers`` are fresh scalar solvers (``components`` None), one per name in ``components``,
    all with the same ``input_dim`` and noise handling (usually copies of one method:
    ``Componentwise([method.build() for _ in names], names)``). ``fit``/``restore`` split ``y``
    (n, C) by column (and ``y_noise_std`` or explicit boundary values given per component,
    (n, C) / (m, C)); ``state()`` nests the members' states (meta ``{"components": [...],
    "members": [...]}``, arrays prefixed ``"c{i}."``); ``predict`` stacks to (m, C);
    ``noise_variance`` is an array (C,); ``estimated_memory_bytes`` is the largest member's.
    ``accepts_noise_std`` and ``learns_noise`` are the members' (set per instance).
    """

    name = "componentwise"
    componentwise = False

    def __init__(self, solvers: Sequence[FieldSolver], components: tuple[str, ...]):
        where = "Componentwise"
        solvers = list(solvers)
        try:
            names = tuple(components)
        except TypeError:
            fail(where, "components", "a sequence of component names", type(components).__name__)
        if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
            fail(where, "components", "distinct non-empty names, e.g. ('u', 'v')", repr(components))
        if len(solvers) != len(names):
            fail(where, "solvers", f"one solver per component ({len(names)})", f"{len(solvers)} solvers")
        for i, s in enumerate(solvers):
            if not isinstance(s, FieldSolver):
                fail(where, f"solvers[{i}]", "a FieldSolver", type(s).__name__)
            if s.components is not None:
                fail(where, f"solvers[{i}]", "a scalar solver (components None)", f"components {s.components}")
            if any(s is t for t in solvers[:i]):
                fail(where, f"solvers[{i}]", "a separate solver per component (a fit replaces the last)",
                      "the same object twice")
        first = solvers[0]
        for attr in ("input_dim", "accepts_noise_std", "learns_noise"):
            values = {getattr(s, attr) for s in solvers}
            if len(values) != 1:
                fail(where, "solvers", f"members with one {attr}", sorted(values))
        self.solvers = solvers
        self._components = names
        self.accepts_noise_std = first.accepts_noise_std
        self.learns_noise = first.learns_noise
        self.info: dict = {}

    @property
    def input_dim(self) -> int:
        return self.solvers[0].input_dim

    @property
    def components(self) -> tuple[str, ...]:
        return self._components

    @property
    def uses_source(self) -> bool:
        return any(s.uses_source for s in self.solvers)

    def check_problem(self, components: tuple[str, ...] | None, has_time: bool) -> None:
        """The field must have this solver's number of components; each member must model a
        scalar field with (or without) a time axis."""
        super().check_problem(components, has_time)
        for s in self.solvers:
            s.check_problem(None, has_time)

    def _require_fit(self, what: str) -> None:
        for s in self.solvers:
            s._require_fit(what)

    # ------------------------------------------------------------------ per-component arguments
    def _columns(self, where: str, name: str, value, rows: int | None):
        """``value`` split per component: a (rows, C) array by column, anything else as is."""
        C = len(self._components)
        if value is None or callable(value) or np.ndim(value) < 2:
            return [value] * C
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != C or (rows is not None and arr.shape[0] != rows):
            fail(where, name, f"one column per component {self._components}"
                 + ("" if rows is None else f", shape ({rows}, {C})"), arr.shape)
        return [arr[:, c] for c in range(C)]

    def _split(self, where: str, x, y, y_noise_std, boundary):
        C = len(self._components)
        try:
            yy = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            fail(where, "y", f"a numeric (n, {C}) array", type(y).__name__)
        if yy.ndim != 2 or yy.shape[1] != C:
            fail(where, "y", f"shape (n, {C}), one column per component {self._components}", yy.shape)
        ys = [yy[:, c] for c in range(C)]
        noises = self._columns(where, "y_noise_std", y_noise_std, yy.shape[0])
        if isinstance(boundary, (tuple, list)) and len(boundary) == 2 and np.ndim(boundary[1]) == 2:
            points = boundary[0]
            values = self._columns(where, "boundary[1]", boundary[1], None)
            boundaries = [(points, v) for v in values]
        else:
            boundaries = [boundary] * C
        return ys, noises, boundaries

    # ------------------------------------------------------------------ fitting and saving
    def fit(self, x, y, y_noise_std=None, *, domain=None, boundary=None, source=None, **options) -> "Componentwise":
        """Fit member c on column c of ``y`` (n, C); ``options`` (e.g. ``optimise``, ``initial``)
        go to every member's ``fit``."""
        ys, noises, boundaries = self._split("Componentwise.fit", x, y, y_noise_std, boundary)
        for s, yc, nc, bc in zip(self.solvers, ys, noises, boundaries):
            s.fit(x, yc, nc, domain=domain, boundary=bc, source=source, **options)
        self._set_info()
        return self

    def restore(self, state: SolverState, x, y, y_noise_std=None, *, domain=None, boundary=None,
                source=None) -> "Componentwise":
        """Restore member c from its nested state, on column c of ``y``."""
        where = "Componentwise.restore"
        meta = check_state(where, state, STATE_FORMAT).meta
        saved = meta.get("components")
        if saved != list(self._components) or not isinstance(meta.get("members"), list) \
                or len(meta["members"]) != len(self.solvers):
            fail(where, "state", f"a state of components {list(self._components)}", f"components {saved}")
        ys, noises, boundaries = self._split(where, x, y, y_noise_std, boundary)
        for i, (s, yc, nc, bc) in enumerate(zip(self.solvers, ys, noises, boundaries)):
            prefix = f"c{i}."
            member = SolverState(meta["members"][i],
                                 {k[len(prefix):]: v for k, v in state.arrays.items() if k.startswith(prefix)})
            s.restore(member, x, yc, nc, domain=domain, boundary=bc, source=source)
        self._set_info()
        return self

    def state(self) -> SolverState:
        """The members' states nested: meta ``{"format", "components", "members": [meta, ...]}``,
        member i's arrays under ``"c{i}."``."""
        self._require_fit("state")
        states = [s.state() for s in self.solvers]
        arrays = {f"c{i}.{k}": v for i, st in enumerate(states) for k, v in st.arrays.items()}
        meta = {"format": STATE_FORMAT, "components": list(self._components), "members": [st.meta for st in states]}
        return SolverState(meta, arrays)

    def _set_info(self) -> None:
        self.info = {"components": list(self._components), "solvers": [s.info for s in self.solvers]}

    # ------------------------------------------------------------------ prediction
    def predict(self, xq, **options) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and std (m, C), component c from member c; ``options`` go to every member."""
        self._require_fit("predict")
        pairs = [s.predict(xq, **options) for s in self.solvers]
        mean = np.stack([m for m, _ in pairs], axis=-1)
        if any(sd is None for _, sd in pairs):
            return mean, None
        return mean, np.stack([sd for _, sd in pairs], axis=-1)

    def noise_variance(self) -> np.ndarray:
        """Per-component observation-noise variances, (C,)."""
        self._require_fit("noise_variance")
        return np.array([float(s.noise_variance()) for s in self.solvers])

    def estimated_memory_bytes(self, n_observations: int) -> int:
        """The largest member's estimate: the members fit and predict one after another."""
        n = check_n("Componentwise.estimated_memory_bytes", n_observations)
        return max(int(s.estimated_memory_bytes(n)) for s in self.solvers)
