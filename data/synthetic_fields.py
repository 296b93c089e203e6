"""Simulated PDE field studies with known truth: sparse noisy sensors plus the exact field.

Field solvers (GP, PINN) need studies where the answer is known, so that a reconstruction error
is a number and not an impression. Two classic problems on the unit square ``[0, 1] x [0, 1]``
(coordinates in metres; field values are nondimensional, ``units: "1"``), both with ``u = 0`` on
the boundary:

Darcy flow (``simulate_darcy_study``)
    ``-div(k grad u) = f`` with a log-normal random coefficient ``k`` (a Gaussian random field by
    spectral synthesis, seeded) or a constant. Discretised by the conservative 5-point
    finite-volume scheme on the nodes ``x_i = i h``, ``h = 1/(n-1)``, with the harmonic mean of
    ``k`` on each face (the flux-continuous choice for a jumping coefficient), solved with
    ``scipy.sparse.linalg.spsolve``.

Heat equation (``simulate_heat_study``)
    ``u_t = kappa laplace(u)`` from a Gaussian bump or ``sin(pi x) sin(pi y)``, Crank-Nicolson in
    time (second order) with the sparse matrix factorised once by ``splu``.

Sensors are uniform random interior points; their values are the bilinear interpolation of the
grid solution plus Gaussian noise. Randomness comes from independent streams spawned from
``seed`` (field, sensor positions, noise), so the coefficient field does not depend on
``n_sensors`` and the first ``m`` sensors of a study (positions and noise) are the same for any
``n_sensors >= m``. Observations pass ``data.fields.validate_field_observations``; the truth
passes ``validate_gridded_field``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import xarray as xr

from inversa.data.errors import InvalidMeasurement
from inversa.data.pde_sources import SOURCES, source_values

COEFFICIENTS = ("lognormal", "constant")
INITIALS = ("gaussian-bump", "sine")
BOUNDARY = "dirichlet u=0 on the boundary of the unit square [0, 1] x [0, 1] m"
FIELD_UNITS = "1"


# ---------------------------------------------------------------- argument checks

def _int_at_least(value, name: str, minimum: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidMeasurement(where, name, f"an integer >= {minimum}", repr(value))
    return int(value)


def _number(value, name: str, where: str, positive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0 or (positive and number == 0):
        expected = "a positive finite number" if positive else "a non-negative finite number"
        raise InvalidMeasurement(where, name, expected, repr(value))
    return number


def _choice(value, name: str, choices, where: str) -> str:
    if value not in choices:
        raise InvalidMeasurement(where, name, f"one of {choices}", repr(value))
    return value


# ---------------------------------------------------------------- grid, random field, solvers

def grid_nodes(n: int) -> np.ndarray:
    """The ``n`` node coordinates ``0, h, ..., 1`` (boundary nodes included), ``h = 1/(n-1)``."""
    return np.linspace(0.0, 1.0, n)


def gaussian_random_field(n: int, correlation_length: float, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-variance stationary Gaussian field on the ``n x n`` nodes.

    Spectral synthesis: white noise filtered in Fourier space by the square root of the
    squared-exponential spectrum ``exp(-2 pi^2 l^2 |nu|^2)`` (covariance ``exp(-r^2 / (2 l^2))``).
    The field is synthesised on a periodic grid twice as large and cropped, so that the
    wrap-around of the FFT does not correlate opposite edges. The filter is scaled so that the
    process variance is exactly 1 (Parseval: var = mean of the squared filter).
    """
    h = 1.0 / (n - 1)
    m = 2 * n
    nu = np.fft.fftfreq(m, d=h)
    nu2 = nu[:, None] ** 2 + nu[None, :] ** 2
    amplitude = np.exp(-(math.pi ** 2) * correlation_length ** 2 * nu2)  # sqrt of the spectrum
    amplitude /= math.sqrt(np.mean(amplitude ** 2))
    noise = rng.standard_normal((m, m))
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * amplitude))
    return field[:n, :n]


def _harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 2.0 * a * b / (a + b)


def solve_darcy(k: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Solve ``-div(k grad u) = f``, ``u = 0`` on the boundary, on the unit-square nodes.

    ``k``, ``f``: ``(n, n)`` arrays indexed ``[y, x]`` on the nodes of ``grid_nodes(n)``
    (boundary values of ``k`` enter through the boundary faces; those of ``f`` are unused).
    Returns ``u`` ``(n, n)`` with zero boundary. Face coefficients are harmonic means of the two
    adjacent nodes, so the discrete flux is continuous across a jump in ``k``.
    """
    n = k.shape[0]
    h = 1.0 / (n - 1)
    m = n - 2
    centre = k[1:-1, 1:-1]
    east = _harmonic(centre, k[1:-1, 2:])
    west = _harmonic(centre, k[1:-1, :-2])
    north = _harmonic(centre, k[2:, 1:-1])
    south = _harmonic(centre, k[:-2, 1:-1])
    index = np.arange(m * m).reshape(m, m)
    rows = [index.ravel()]
    cols = [index.ravel()]
    vals = [(east + west + north + south).ravel()]
    for coefficient, shift_rows, shift_cols in (
        (east[:, :-1], index[:, :-1], index[:, 1:]),
        (west[:, 1:], index[:, 1:], index[:, :-1]),
        (north[:-1, :], index[:-1, :], index[1:, :]),
        (south[1:, :], index[1:, :], index[:-1, :]),
    ):
        rows.append(shift_rows.ravel())
        cols.append(shift_cols.ravel())
        vals.append(-coefficient.ravel())
    matrix = sp.csc_matrix(
        (np.concatenate(vals) / h ** 2, (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
    )
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = spla.spsolve(matrix, f[1:-1, 1:-1].ravel()).reshape(m, m)
    return u


def _laplacian(n: int) -> sp.csc_matrix:
    """Negative 5-point Laplacian on the ``(n-2)^2`` interior nodes (Dirichlet zero), ``[y, x]`` order."""
    m = n - 2
    h = 1.0 / (n - 1)
    one_d = sp.diags([-np.ones(m - 1), 2.0 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1]) / h ** 2
    eye = sp.identity(m)
    return sp.csc_matrix(sp.kron(eye, one_d) + sp.kron(one_d, eye))


def solve_heat(u0: np.ndarray, kappa: float, times: np.ndarray, substeps: int) -> np.ndarray:
    """Crank-Nicolson for ``u_t = kappa laplace(u)``, ``u = 0`` on the boundary.

    ``u0`` ``(n, n)`` on the nodes; ``times`` equally spaced output times starting at 0; each
    output interval is split into ``substeps`` equal steps. The implicit matrix is factorised
    once. Returns ``(len(times), n, n)``.
    """
    n = u0.shape[0]
    m = n - 2
    dt = (times[1] - times[0]) / substeps if len(times) > 1 else 0.0
    a = _laplacian(n) * (kappa * dt / 2.0)
    eye = sp.identity(m * m, format="csc")
    implicit = spla.splu(sp.csc_matrix(eye + a))
    explicit = sp.csr_matrix(eye - a)
    out = np.zeros((len(times), n, n))
    state = u0[1:-1, 1:-1].ravel().copy()
    out[0, 1:-1, 1:-1] = state.reshape(m, m)
    for step in range(1, len(times)):
        for _ in range(substeps):
            state = implicit.solve(explicit @ state)
        out[step, 1:-1, 1:-1] = state.reshape(m, m)
    return out


def bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``field[..., y, x]`` on the unit-square nodes at points ``(x, y)``."""
    n = field.shape[-1]
    h = 1.0 / (n - 1)
    i = np.clip(np.floor(x / h).astype(int), 0, n - 2)
    j = np.clip(np.floor(y / h).astype(int), 0, n - 2)
    tx = x / h - i
    ty = y / h - j
    return ((1 - tx) * (1 - ty) * field[..., j, i] + tx * (1 - ty) * field[..., j, i + 1]
            + (1 - tx) * ty * field[..., j + 1, i] + tx * ty * field[..., j + 1, i + 1])


# ---------------------------------------------------------------- datasets

def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for (field, sensor positions, noise) from one seed."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))


def _sensors(rng: np.random.Generator, n_sensors: int) -> tuple[np.ndarray, np.ndarray]:
    # Row by row, so that the first m rows are the same for every n_sensors >= m.
    xy = rng.uniform(0.0, 1.0, size=(n_sensors, 2))
    return xy[:, 0], xy[:, 1]


def _xy_coords(values: np.ndarray, dim: str) -> tuple:
    return (dim, values, {"units": "m"})


def simulate_darcy_study(
    n: int = 64,
    seed: int = 0,
    n_sensors: int = 200,
    noise_sigma: float = 0.01,
    coefficient: str = "lognormal",
    k_value: float = 1.0,
    correlation_length: float = 0.1,
    log_k_sigma: float = 1.0,
    source: str = "constant",
) -> tuple[xr.Dataset, xr.Dataset]:
    """A Darcy-flow study: ``(observations, truth)``.

    ``coefficient="lognormal"``: ``k = k_value * exp(log_k_sigma * g)`` with ``g`` a unit-variance
    Gaussian random field of ``correlation_length`` (m) (so ``k_value`` is the geometric mean);
    ``"constant"``: ``k = k_value``. ``source="constant"``: ``f = 1``; ``"sine"``:
    ``f = 2 pi^2 sin(pi x) sin(pi y)``, for which a constant ``k`` gives ``u = sin sin / k``: that
    closed form is then the truth and the sensors' clean values (no discretisation error).
    ``n`` nodes per side (boundary included). Observations: ``value(sensor)`` at ``n_sensors``
    random points, noise standard deviation ``noise_sigma``. Truth: ``u``, ``k``, ``f`` ``(y, x)``.
    """
    where = "simulate_darcy_study"
    n = _int_at_least(n, "n", 4, where)
    seed = _int_at_least(seed, "seed", 0, where)
    n_sensors = _int_at_least(n_sensors, "n_sensors", 1, where)
    noise_sigma = _number(noise_sigma, "noise_sigma", where)
    coefficient = _choice(coefficient, "coefficient", COEFFICIENTS, where)
    k_value = _number(k_value, "k_value", where, positive=True)
    correlation_length = _number(correlation_length, "correlation_length", where, positive=True)
    log_k_sigma = _number(log_k_sigma, "log_k_sigma", where)
    source = _choice(source, "source", tuple(SOURCES), where)

    field_rng, sensor_rng, noise_rng = _streams(seed)
    nodes = grid_nodes(n)
    xx, yy = np.meshgrid(nodes, nodes)
    if coefficient == "lognormal":
        k = k_value * np.exp(log_k_sigma * gaussian_random_field(n, correlation_length, field_rng))
    else:
        k = np.full((n, n), k_value)
    f = source_values(source, xx, yy)
    sx, sy = _sensors(sensor_rng, n_sensors)
    closed_form = coefficient == "constant" and source == "sine"
    if closed_form:
        # The exact solution is known: use it, at the nodes and at the sensors, so that the
        # "truth" carries no discretisation error for a solver to be judged against.
        u = np.sin(math.pi * xx) * np.sin(math.pi * yy) / k_value
        clean = np.sin(math.pi * sx) * np.sin(math.pi * sy) / k_value
    else:
        u = solve_darcy(k, f)
        clean = bilinear(u, sx, sy)
    values = clean + noise_sigma * noise_rng.standard_normal(n_sensors)
    source_text = SOURCES[source]
    attrs = {"pde": "darcy", "equation": "-div(k grad u) = f", "source": source_text, "boundary": BOUNDARY,
             "units": FIELD_UNITS}
    observations = xr.Dataset(
        {"value": (("sensor",), values)},
        coords={"x": _xy_coords(sx, "sensor"), "y": _xy_coords(sy, "sensor")},
        attrs={**attrs, "noise_sigma": noise_sigma, "seed": seed},
    )
    truth = xr.Dataset(
        {"u": (("y", "x"), u), "k": (("y", "x"), k), "f": (("y", "x"), f)},
        coords={"x": _xy_coords(nodes, "x"), "y": _xy_coords(nodes, "y")},
        attrs={**attrs, "coefficient": coefficient, "k_value": k_value, "correlation_length": correlation_length,
               "log_k_sigma": log_k_sigma if coefficient == "lognormal" else 0.0, "seed": seed,
               "scheme": "closed form u = sin(pi x) sin(pi y) / k" if closed_form else
               "5-point finite volume, harmonic-mean face coefficients, spsolve"},
    )
    return observations, truth


def simulate_heat_study(
    n: int = 48,
    n_times: int = 21,
    t_end: float = 1.0,
    kappa: float = 0.05,
    seed: int = 0,
    n_sensors: int = 100,
    noise_sigma: float = 0.01,
    initial: str = "gaussian-bump",
    substeps: int = 4,
) -> tuple[xr.Dataset, xr.Dataset]:
    """A heat-equation study: ``(observations, truth)``.

    ``u_t = kappa laplace(u)`` (``kappa`` in m^2/s) from ``t = 0`` to ``t_end`` (s), reported at
    ``n_times`` equally spaced times (``t = 0`` included). ``initial="gaussian-bump"``:
    ``exp(-|r - (0.5, 0.5)|^2 / (2 * 0.1^2))`` set to 0 on the boundary; ``"sine"``:
    ``sin(pi x) sin(pi y)``, whose exact solution is ``exp(-2 kappa pi^2 t) sin sin``.
    Observations ``value(time, sensor)`` at fixed random sensors; truth ``u(time, y, x)``.
    """
    where = "simulate_heat_study"
    n = _int_at_least(n, "n", 4, where)
    n_times = _int_at_least(n_times, "n_times", 2, where)
    t_end = _number(t_end, "t_end", where, positive=True)
    kappa = _number(kappa, "kappa", where, positive=True)
    seed = _int_at_least(seed, "seed", 0, where)
    n_sensors = _int_at_least(n_sensors, "n_sensors", 1, where)
    noise_sigma = _number(noise_sigma, "noise_sigma", where)
    initial = _choice(initial, "initial", INITIALS, where)
    substeps = _int_at_least(substeps, "substeps", 1, where)

    _, sensor_rng, noise_rng = _streams(seed)
    nodes = grid_nodes(n)
    xx, yy = np.meshgrid(nodes, nodes)
    if initial == "sine":
        u0 = np.sin(math.pi * xx) * np.sin(math.pi * yy)
    else:
        u0 = np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / (2 * 0.1 ** 2))
    u0[0, :] = u0[-1, :] = u0[:, 0] = u0[:, -1] = 0.0
    times = np.linspace(0.0, t_end, n_times)
    u = solve_heat(u0, kappa, times, substeps)

    sx, sy = _sensors(sensor_rng, n_sensors)
    # Drawn (sensor, time) and transposed, so that sensor i's noise does not depend on n_sensors.
    noise = noise_rng.standard_normal((n_sensors, n_times)).T
    values = bilinear(u, sx, sy) + noise_sigma * noise
    attrs = {"pde": "heat", "equation": "u_t = kappa laplace(u)", "kappa": kappa, "boundary": BOUNDARY,
             "initial": initial, "units": FIELD_UNITS}
    time = ("time", times, {"units": "s"})
    observations = xr.Dataset(
        {"value": (("time", "sensor"), values)},
        coords={"x": _xy_coords(sx, "sensor"), "y": _xy_coords(sy, "sensor"), "time": time},
        attrs={**attrs, "noise_sigma": noise_sigma, "seed": seed},
    )
    truth = xr.Dataset(
        {"u": (("time", "y", "x"), u)},
        coords={"x": _xy_coords(nodes, "x"), "y": _xy_coords(nodes, "y"), "time": time},
        attrs={**attrs, "seed": seed, "substeps": substeps,
               "scheme": "5-point Laplacian, Crank-Nicolson, splu factorised once"},
    )
    return observations, truth
