"""Every solver in ``SOLVERS`` honours the ``FieldSolver`` contract (models/solvers/base.py), and
``Componentwise`` of two GPs is two separate GPs.

One smooth scalar field, u = sin(pi x) sin(pi y) on the unit square (zero on its edges, and
-laplace u = 2 pi^2 u, so the physics GP's and the Poisson PINN's source is known), observed at
80 points with noise std 0.02. Each solver is called as the pipeline calls it, with the same
arguments for all (noise only where ``accepts_noise_std``): what a solver does not use it
ignores. Settings are tiny; the solvers' own tests check accuracy.
"""

from __future__ import annotations

import inspect
import json
import math
import typing

import numpy as np
import pytest
import torch

from inversa.models.solvers import (
    SOLVERS, Componentwise, ExactGPSolver, FieldPosterior, FieldSolver, PINNEnsembleSolver, SolverState,
    SparseGPSolver,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: threads only contend

NOISE = 0.02
DOMAIN = [[0.0, 1.0], [0.0, 1.0]]


def sine_source(z):
    """f = 2 pi^2 sin(pi x) sin(pi y) for numpy arrays (GPs) and torch tensors (PINN) alike."""
    lib = torch if isinstance(z, torch.Tensor) else np
    return 2 * math.pi ** 2 * lib.sin(math.pi * z[:, 0]) * lib.sin(math.pi * z[:, 1])


SETTINGS = {
    "gp": dict(max_iter=15),
    "sparse-gp": dict(inducing=16, min_steps=20, epochs=1, batch_size=64),
    "gp-physics": dict(n_collocation=32, n_boundary=24, max_iter=10),
    "pinn": dict(pde="poisson", members=3, width=12, depth=2, steps=50, n_collocation=32, seed=1),
}


def field(n: int = 80, seed: int = 0, components: int | None = None):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, 2))
    u = np.sin(math.pi * x[:, 0]) * np.sin(math.pi * x[:, 1])
    if components is not None:
        u = np.column_stack([u, np.cos(2.0 * x[:, 0]) * x[:, 1]])
    return x, u + NOISE * rng.standard_normal(u.shape)


def arguments(solver: FieldSolver) -> dict:
    """What the pipeline passes: the same problem for every solver, noise where it is accepted."""
    return dict(y_noise_std=NOISE if solver.accepts_noise_std else None, domain=DOMAIN, boundary=0.0,
                source=sine_source)


XQ = np.random.default_rng(9).uniform(0.0, 1.0, (25, 2))


@pytest.fixture(scope="module")
def fitted():
    x, y = field()
    out = {}
    for name, cls in SOLVERS.items():
        solver = cls(**SETTINGS[name])
        out[name] = (solver.fit(x, y, **arguments(solver)), x, y)
    return out


def test_registry_maps_method_names_to_solver_classes():
    assert set(SOLVERS) == {"gp", "sparse-gp", "gp-physics", "pinn"}
    for name, cls in SOLVERS.items():
        assert issubclass(cls, FieldSolver) and cls.name == name
        assert all(isinstance(getattr(cls, flag), bool)
                   for flag in ("componentwise", "accepts_noise_std", "learns_noise"))
    # The declared differences the pipeline relies on instead of method names.
    assert [SOLVERS[n].componentwise for n in ("gp", "sparse-gp", "gp-physics", "pinn")] == [True, True, True, False]
    assert SOLVERS["sparse-gp"].accepts_noise_std is False and SOLVERS["pinn"].learns_noise is False
    assert (ExactGPSolver().input_dim, PINNEnsembleSolver("heat").input_dim) == (2, 3)
    assert PINNEnsembleSolver("incompressible").components == ("u", "v")
    assert [SOLVERS[n](**SETTINGS[n]).uses_source for n in SOLVERS] == [False, False, True, True]
    assert PINNEnsembleSolver("heat").uses_source is False


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_constructor_parameters_are_annotated_for_recipe_validation(name):
    """Recipes coerce method parameters by the constructor's annotations (pydantic)."""
    from pydantic import TypeAdapter

    cls = SOLVERS[name]
    hints = typing.get_type_hints(cls.__init__)
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname == "self":
            continue
        assert pname in hints, f"{cls.__name__}({pname}) has no type annotation"
        adapter = TypeAdapter(hints[pname])
        if param.default is not inspect.Parameter.empty:
            assert adapter.validate_python(param.default) == param.default, (pname, param.default)
    # YAML values coerce to what the constructor takes, and the built solver accepts them.
    if name == "sparse-gp":
        inducing = TypeAdapter(hints["inducing"]).validate_python([[0, 0], [1, 0.5], [0.2, 1]])
        assert SparseGPSolver(inducing=inducing).inducing == 3
    if name == "pinn":
        assert PINNEnsembleSolver(dtype=TypeAdapter(hints["dtype"]).validate_python("float64")).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_fit_then_predict_shapes_and_positive_std(fitted, name):
    solver, _, _ = fitted[name]
    mean, std = solver.predict(XQ)
    assert mean.shape == std.shape == (25,)
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    post = solver.predict_grid(np.linspace(0, 1, 7), np.linspace(0, 1, 5))
    assert isinstance(post, FieldPosterior) and post.mean.shape == post.std.shape == (5, 7)
    assert post.components is None and isinstance(solver.info, dict) and solver.info
    with pytest.raises(ValueError, match="argument 'ts'"):
        solver.predict_grid(np.linspace(0, 1, 7), np.linspace(0, 1, 5), ts=[0.0])


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_state_through_npz_and_json_restores_the_same_posterior(fitted, name, tmp_path):
    solver, x, y = fitted[name]
    state = solver.state()
    assert isinstance(state, SolverState)
    # What the pipeline does: arrays to one .npz (no pickles), metadata to JSON.
    np.savez(tmp_path / "fit.npz", **state.arrays)
    text = json.dumps(state.meta)
    with np.load(tmp_path / "fit.npz", allow_pickle=False) as saved:
        loaded = SolverState(json.loads(text), {k: saved[k] for k in saved.files})
    fresh = SOLVERS[name](**SETTINGS[name])
    restored = fresh.restore(loaded, x, y, **arguments(fresh))
    assert restored is fresh
    (m1, s1), (m2, s2) = solver.predict(XQ), restored.predict(XQ)
    if name == "pinn":
        # The same weights in the same network: identical numbers.
        np.testing.assert_array_equal(m2, m1)
        np.testing.assert_array_equal(s2, s1)
    else:
        # The GPs re-condition on the same data with the saved parameters; the contract allows
        # float64 round-off (a variance is a difference of nearly equal numbers), relative 1e-10
        # of the field's scale is far below any statistical difference (the current
        # implementations reproduce the original bit for bit).
        scale = float(np.std(y))
        np.testing.assert_allclose(m2, m1, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-12 * scale)
        assert restored.hyperparameters() == solver.hyperparameters()
    assert restored.noise_variance() == pytest.approx(solver.noise_variance(), rel=1e-12)
    assert json.loads(json.dumps(restored.state().meta))["format"] == state.meta["format"]


@pytest.mark.parametrize("name", ["gp", "sparse-gp", "gp-physics"])
def test_gp_restore_refuses_other_observations_or_settings(fitted, name):
    solver, x, y = fitted[name]
    state = solver.state()
    fresh = SOLVERS[name](**SETTINGS[name])
    with pytest.raises(ValueError, match="the state was fitted on"):
        fresh.restore(state, x, y + 1e-3, **arguments(fresh))
    other = {"gp": {"kernel": "rbf"}, "sparse-gp": {"kernel": "rbf"}, "gp-physics": {"k": 2.0}}[name]
    changed = SOLVERS[name](**{**SETTINGS[name], **other})
    with pytest.raises(ValueError, match="argument 'state'.*settings"):
        changed.restore(state, x, y, **arguments(changed))
    with pytest.raises(ValueError, match="argument 'state'.*format"):
        fresh.restore(SolverState({"format": "something/1"}, {}), x, y, **arguments(fresh))


def test_pinn_restore_ignores_data_and_refuses_another_architecture(fitted):
    solver, _, _ = fitted["pinn"]
    restored = PINNEnsembleSolver(**SETTINGS["pinn"]).restore(solver.state(), None, None)
    np.testing.assert_array_equal(restored.predict(XQ)[0], solver.predict(XQ)[0])
    with pytest.raises(ValueError, match="argument 'state'.*width"):
        PINNEnsembleSolver(**{**SETTINGS["pinn"], "width": 8}).restore(solver.state(), None, None)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_noise_variance(fitted, name):
    solver, _, _ = fitted[name]
    v = solver.noise_variance()
    assert isinstance(v, float) and v >= 0
    if not solver.learns_noise:
        assert v == pytest.approx(NOISE ** 2, rel=1e-12)  # the given noise variance
    elif solver.accepts_noise_std:
        assert v >= NOISE ** 2 - 1e-15  # given plus a learned extra noise
        assert v == pytest.approx(solver.hyperparameters()["noise"] + NOISE ** 2, rel=1e-12)
    else:
        assert v == pytest.approx(solver.hyperparameters()["noise"], rel=1e-12)


def test_exact_gp_noise_variance_equals_the_given_one_without_extra_noise():
    x, y = field()
    sd = np.full(len(y), NOISE)
    s = ExactGPSolver(max_iter=5).fit(x, y, sd, learn_extra_noise=False)
    assert s.noise_variance() == pytest.approx(NOISE ** 2, rel=1e-12)
    assert ExactGPSolver(max_iter=5).fit(x, y).noise_variance() == pytest.approx(
        ExactGPSolver(max_iter=5).fit(x, y).hyperparameters()["noise"], rel=1e-12)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_memory_estimate_grows_with_n_and_needs_no_fit(name):
    solver = SOLVERS[name](**SETTINGS[name])
    sizes = [solver.estimated_memory_bytes(n) for n in (100, 1_000, 10_000, 100_000)]
    assert all(isinstance(b, int) and b > 0 for b in sizes)
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


CANNOT = {
    "gp": [(("u", "u"), False), ((), False)],
    "sparse-gp": [(("u", "u"), True)],
    "gp-physics": [((), True)],
    "pinn": [(("u", "v"), False), (("u", "v"), True)],
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_check_problem_accepts_what_it_models_and_names_what_it_cannot(name):
    solver = SOLVERS[name](**SETTINGS[name])
    solver.check_problem(None, False)
    solver.check_problem(None, True)  # a time axis: fitted one time step at a time
    if solver.componentwise:
        solver.check_problem(("u", "v"), False)
        solver.check_problem(("a", "b", "c"), True)
    for components, has_time in CANNOT[name]:
        with pytest.raises(ValueError):
            solver.check_problem(components, has_time)


@pytest.mark.parametrize("settings, components, has_time, message", [
    (dict(pde="heat"), None, False, "pde=heat.*time axis"),
    (dict(pde="poisson"), ("u", "v"), False, r"a vector field \(u, v\) needs pde=incompressible"),
    (dict(pde="incompressible"), None, False, "pde=incompressible needs a 2-component"),
    (dict(pde="incompressible"), ("u", "v", "w"), False, "pde=incompressible needs a 2-component"),
    (dict(pde="incompressible"), ("u", "u"), False, "distinct"),
])
def test_pinn_check_problem_names_the_parameter(settings, components, has_time, message):
    with pytest.raises(ValueError, match=message):
        PINNEnsembleSolver(**settings).check_problem(components, has_time)
    PINNEnsembleSolver("heat").check_problem(None, True)
    PINNEnsembleSolver("incompressible").check_problem(("vx", "vy"), True)


def test_noise_rules_and_ignored_arguments():
    x, y = field()
    with pytest.raises(ValueError, match=r"SparseGPSolver.fit: argument 'y_noise_std'"):
        SparseGPSolver(**SETTINGS["sparse-gp"]).fit(x, y, NOISE)
    with pytest.raises(ValueError, match=r"PINNEnsembleSolver.fit: argument 'y_noise_std'"):
        PINNEnsembleSolver(**SETTINGS["pinn"]).fit(x, y, source=sine_source)
    # A solver that does not use the source, boundary or domain ignores them.
    plain = ExactGPSolver(max_iter=10).fit(x, y, NOISE)
    given = ExactGPSolver(max_iter=10).fit(x, y, NOISE, domain=DOMAIN, boundary=0.0, source=sine_source)
    for a, b in zip(plain.predict(XQ), given.predict(XQ)):
        np.testing.assert_array_equal(a, b)
    # The PINN takes a constant source as a number (here 0: the same as Laplace's equation).
    pinn = PINNEnsembleSolver(**SETTINGS["pinn"]).fit(x, y, NOISE, source=0.0, domain=DOMAIN)
    assert np.all(np.isfinite(pinn.predict(XQ)[0]))


# ---------------------------------------------------------------- Componentwise

def test_componentwise_of_two_exact_gps_equals_two_separate_gps(tmp_path):
    x, y = field(components=2)
    sd = np.column_stack([np.full(len(y), NOISE), np.full(len(y), 2 * NOISE)])  # per component
    pair = Componentwise([ExactGPSolver(max_iter=15), ExactGPSolver(max_iter=15)], ("u", "v"))
    assert pair.components == ("u", "v") and pair.input_dim == 2 and not pair.componentwise
    assert pair.accepts_noise_std and pair.learns_noise and not pair.uses_source
    pair.fit(x, y, sd)
    alone = [ExactGPSolver(max_iter=15).fit(x, y[:, c], sd[:, c]) for c in range(2)]

    mean, std = pair.predict(XQ)
    assert mean.shape == std.shape == (25, 2)
    for c, solver in enumerate(alone):
        m, s = solver.predict(XQ)
        np.testing.assert_array_equal(mean[:, c], m)
        np.testing.assert_array_equal(std[:, c], s)
    post = pair.predict_grid(np.linspace(0, 1, 6), np.linspace(0, 1, 4))
    assert post.components == ("u", "v") and post.mean.shape == (4, 6, 2)
    np.testing.assert_array_equal(post.std[..., 1], alone[1].predict_grid(np.linspace(0, 1, 6), np.linspace(0, 1, 4)).std)
    np.testing.assert_allclose(pair.noise_variance(), [s.noise_variance() for s in alone], rtol=0)
    assert pair.noise_variance().shape == (2,)
    assert pair.estimated_memory_bytes(5000) == alone[0].estimated_memory_bytes(5000)

    state = pair.state()
    assert state.meta["components"] == ["u", "v"]
    assert state.arrays and all(k.startswith(("c0.", "c1.")) for k in state.arrays)
    np.savez(tmp_path / "fit.npz", **state.arrays)
    with np.load(tmp_path / "fit.npz", allow_pickle=False) as saved:
        loaded = SolverState(json.loads(json.dumps(state.meta)), {k: saved[k] for k in saved.files})
    again = Componentwise([ExactGPSolver(max_iter=15), ExactGPSolver(max_iter=15)], ("u", "v")).restore(loaded, x, y, sd)
    for a, b in zip(again.predict(XQ), (mean, std)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)

    pair.check_problem(("u", "v"), True)
    with pytest.raises(ValueError, match="2 components"):
        pair.check_problem(("u", "v", "w"), False)
    with pytest.raises(ValueError, match=r"argument 'y'.*shape \(n, 2\)"):
        pair.fit(x, y[:, 0])
    with pytest.raises(ValueError, match="argument 'solvers'"):
        Componentwise([ExactGPSolver()], ("u", "v"))
    with pytest.raises(ValueError, match=r"argument 'solvers\[1\]'"):
        shared = ExactGPSolver()
        Componentwise([shared, shared], ("u", "v"))
