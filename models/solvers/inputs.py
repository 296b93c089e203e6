"""Checks of the arrays a field solver is given, shared by the GP and PINN solvers.

`models` cannot import `data.errors`, so a bad argument is a ValueError whose message names the
call, the argument and what was expected, in the style of models/uq.py.
"""

from __future__ import annotations

import numpy as np


def fail(where: str, argument: str, expected: str, got) -> None:
    raise ValueError(f"{where}: argument {argument!r}: expected {expected}, got {got}")


def query(where: str, xq, tile_size: int | None, default_tile: int) -> tuple[np.ndarray, int]:
    """Query points ``xq`` (m, 2) checked as ``points``, and the tile size (``None``: the default)."""
    xq = points(where, "xq", xq)
    tile = default_tile if tile_size is None else int(tile_size)
    if tile < 1:
        fail(where, "tile_size", ">= 1", tile)
    return xq, tile


def points(where: str, name: str, x, dim: int = 2) -> np.ndarray:
    """``(n, dim)`` finite float64 coordinates: ``(x, y)`` or, for dim 3, ``(x, y, t)``."""
    labels = "(x, y, t)" if dim == 3 else "(x, y)"
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        fail(where, name, f"a numeric (n, {dim}) array of {labels} points", type(x).__name__)
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0:
        fail(where, name, f"shape (n, {dim}) with n >= 1: one {labels} point per row", arr.shape)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr).all(axis=1)))
        fail(where, name, "finite coordinates", f"{bad} rows with NaN or infinity")
    return arr


def values(where: str, name: str, y, n: int) -> np.ndarray:
    """``(n,)`` finite float64 values, one per point."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        fail(where, name, "a numeric (n,) array", type(y).__name__)
    if arr.ndim != 1 or arr.shape[0] != n:
        fail(where, name, f"shape ({n},), one value per point", arr.shape)
    if not np.all(np.isfinite(arr)):
        fail(where, name, "finite values", f"{int(np.sum(~np.isfinite(arr)))} NaN or infinite values")
    return arr


def distinct(where: str, name: str, x: np.ndarray) -> None:
    """Reject repeated coordinates: a GP conditioned on two values at one point is ambiguous."""
    n = x.shape[0]
    n_unique = np.unique(x, axis=0).shape[0]
    if n_unique < n:
        fail(where, name, "distinct coordinates (average duplicates first)", f"{n - n_unique} duplicated rows")


def noise_stds(where: str, name: str, s, n: int) -> np.ndarray | None:
    """Known per-observation noise standard deviations: ``None``, or a positive scalar or ``(n,)``
    positive finite values, returned as ``(n,)``."""
    if s is None:
        return None
    if np.ndim(s) == 0:
        try:
            s = np.full(n, float(s))
        except (TypeError, ValueError):
            fail(where, name, "None, a positive number or (n,) positive numbers", type(s).__name__)
    arr = values(where, name, s, n)
    if np.any(arr <= 0):
        fail(where, name, "positive standard deviations", f"min {arr.min()}")
    return arr


def box(where: str, domain, dim: int) -> np.ndarray:
    """A domain as ``(dim, 2)`` float64 ``(low, high)`` pairs, one per coordinate, ``high > low``.

    ``[[xmin, xmax], [ymin, ymax]]`` (plus ``[tmin, tmax]`` for ``dim`` 3). A flat
    ``(xmin, xmax, ymin, ymax)`` is refused with the pair form spelled out, so an old call fails
    clearly instead of being read in the wrong order.
    """
    names = "xyt"[:dim]
    example = "[" + ", ".join(f"[{c}min, {c}max]" for c in names) + "]"
    try:
        arr = np.asarray(domain, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.shape == (2 * dim,):
        fail(where, "domain", f"{dim} (low, high) pairs {example}, not a flat list",
             f"{np.asarray(domain).tolist()!r}")
    if arr is None or arr.shape != (dim, 2) or not np.all(np.isfinite(arr)):
        fail(where, "domain", f"{dim} finite (low, high) pairs with low < high, {example}",
             repr(domain) if arr is None else arr.tolist())
    if np.any(arr[:, 1] <= arr[:, 0]):
        axes = " and ".join(f"{c}max > {c}min" for c in names)
        shape = "rectangle" if dim == 2 else "box"
        fail(where, "domain", f"a non-empty {shape}: {axes}", arr.tolist())
    return arr


def digest(*arrays) -> str:
    """sha256 over float64 arrays (``None`` entries marked as absent): what a fit was conditioned on."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"<none>")
            continue
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
