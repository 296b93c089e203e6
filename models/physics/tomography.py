"""2-D CT projectors (parallel and flat-detector fan beam) as sparse system matrices.

Geometry follows docs/conventions.md to the sign. The system matrix uses Joseph's method: each
ray steps one pixel at a time along its dominant image axis and linearly interpolates between
the two nearest pixel centres on the other axis, each step weighted by its length in mm, so the
sinogram holds line integrals in mm times the image unit. The matrix is built vectorised in
torch (on the device where it is used), stored as CSR with int32 indices, and its explicit CSR
transpose serves the adjoint: ``adjoint`` is the exact transpose of ``forward`` and both are
one sparse-times-dense product over the whole batch.

Big geometries (HTC2022: 721 views x 560 detectors on 512 x 512) do not fit in memory as one
matrix; the matrix is then cut into blocks of views, as many blocks as ``max_cached_nnz``
allows are kept, and the rest are rebuilt on every call (slower, bounded memory).
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from inversa.models.physics.base import LinearOperator

KINDS = ("parallel", "fan")

# Default budgets for cached matrix entries (A and A^T each store them once). 16 bytes per
# entry in float32: 128 M entries = 2 GiB of host memory, 512 M = 8 GiB of GPU memory.
DEFAULT_MAX_CACHED_NNZ = {"cpu": 128_000_000, "cuda": 512_000_000}
DEFAULT_BLOCK_NNZ = 16_000_000  # entries per rebuilt block when the matrix is not cached
_STEPS_PER_CHUNK = 4_000_000  # ray steps generated at once (bounds temporaries while building)

_build_lock = threading.Lock()


# ============================================================================ geometry
@dataclass(frozen=True, eq=False)
class CTGeometry:
    """One 2-D CT acquisition plus the reconstruction grid, in mm and radians.

    ``image_size`` and ``pixel_size`` default to the grid of docs/conventions.md (``n_det``
    pixels of the detector spacing, demagnified to the isocentre for fan beam). For fan beam
    the ray is the whole line from the source through ``P_k`` across the image, so the source
    must lie outside the image; ``origin_detector`` only sets the magnification.
    """

    kind: str
    angles: np.ndarray
    n_det: int
    det_spacing: float
    det_offset: float = 0.0
    source_origin: float | None = None
    origin_detector: float | None = None
    image_size: int | None = None
    pixel_size: float | None = None

    def __post_init__(self) -> None:
        angles = np.array(self.angles, dtype=np.float64, copy=True)
        angles.setflags(write=False)
        object.__setattr__(self, "angles", angles)
        if self.image_size is None:
            object.__setattr__(self, "image_size", self.n_det)
        if self.pixel_size is None and self.det_spacing is not None:
            pixel = float(self.det_spacing)
            if self.kind == "fan" and self.source_origin is not None and self.origin_detector is not None:
                total = float(self.source_origin) + float(self.origin_detector)
                if total > 0:
                    pixel *= float(self.source_origin) / total
            object.__setattr__(self, "pixel_size", pixel)
        self.validate()

    # -------------------------------------------------------------- constructors
    @classmethod
    def parallel(cls, angles: Sequence[float] | np.ndarray, n_det: int, det_spacing: float = 1.0,
                 det_offset: float = 0.0, image_size: int | None = None,
                 pixel_size: float | None = None) -> "CTGeometry":
        return cls("parallel", np.asarray(angles), n_det, det_spacing, det_offset,
                   image_size=image_size, pixel_size=pixel_size)

    @classmethod
    def fan(cls, angles: Sequence[float] | np.ndarray, n_det: int, det_spacing: float,
            source_origin: float, origin_detector: float, det_offset: float = 0.0,
            image_size: int | None = None, pixel_size: float | None = None) -> "CTGeometry":
        return cls("fan", np.asarray(angles), n_det, det_spacing, det_offset, source_origin,
                   origin_detector, image_size, pixel_size)

    @classmethod
    def from_attrs(cls, angles: Sequence[float] | np.ndarray, n_det: int, attrs: Mapping[str, Any],
                   image_size: int | None = None, pixel_size: float | None = None) -> "CTGeometry":
        """From the measurement attributes of docs/conventions.md (``detector_spacing_mm`` ...).

        Explicit ``image_size``/``pixel_size`` win over the attrs' suggested grid.
        """
        missing = [k for k in ("geometry", "detector_spacing_mm") if k not in attrs]
        fan = attrs.get("geometry") == "fan"
        if fan:
            missing += [k for k in ("source_origin_mm", "origin_detector_mm") if k not in attrs]
        if missing:
            raise ValueError(f"CTGeometry.from_attrs: sinogram attrs lack {missing}; have {sorted(attrs)}")
        if image_size is None and attrs.get("image_size") is not None:
            image_size = int(attrs["image_size"])
        if pixel_size is None and attrs.get("pixel_size_mm") is not None:
            pixel_size = float(attrs["pixel_size_mm"])
        return cls(
            kind=str(attrs["geometry"]), angles=np.asarray(angles), n_det=int(n_det),
            det_spacing=float(attrs["detector_spacing_mm"]),
            det_offset=float(attrs.get("detector_offset_mm", 0.0) or 0.0),
            source_origin=float(attrs["source_origin_mm"]) if fan else None,
            origin_detector=float(attrs["origin_detector_mm"]) if fan else None,
            image_size=image_size, pixel_size=pixel_size,
        )

    def subset(self, views: slice | Sequence[int] | np.ndarray) -> "CTGeometry":
        """The same scanner with only some views (e.g. a limited-angle wedge)."""
        return replace(self, angles=self.angles[views])

    # -------------------------------------------------------------- checks
    def validate(self) -> "CTGeometry":
        """Raise ``ValueError`` naming the field and what was expected; return self if fine."""
        def bad(name: str, expected: str) -> ValueError:
            value = getattr(self, name)
            value = value.item() if isinstance(value, np.generic) else value  # 0.5, not np.float64(0.5)
            return ValueError(f"CTGeometry.{name}: expected {expected}, got {value!r}")

        if self.kind not in KINDS:
            raise bad("kind", "'parallel' or 'fan'")
        if self.angles.ndim != 1 or self.angles.size == 0 or not np.all(np.isfinite(self.angles)):
            raise ValueError(f"CTGeometry.angles: expected a non-empty 1-D array of finite radians, "
                             f"got shape {self.angles.shape}")
        if isinstance(self.n_det, bool) or int(self.n_det) != self.n_det or self.n_det < 1:
            raise bad("n_det", "a positive integer")
        if not _positive(self.det_spacing):
            raise bad("det_spacing", "a positive finite number (mm)")
        if not _finite(self.det_offset):
            raise bad("det_offset", "a finite number (mm)")
        if isinstance(self.image_size, bool) or int(self.image_size) != self.image_size or self.image_size < 2:
            raise bad("image_size", "an integer >= 2 (pixels per side)")
        if not _positive(self.pixel_size):
            raise bad("pixel_size", "a positive finite number (mm)")
        if self.kind == "parallel":
            for name in ("source_origin", "origin_detector"):
                if getattr(self, name) is not None:
                    raise bad(name, "None for a parallel-beam geometry")
        else:
            if not _positive(self.source_origin):
                raise bad("source_origin", "a positive finite distance (mm) for fan beam")
            if not _finite(self.origin_detector) or self.source_origin + self.origin_detector <= 0:
                raise bad("origin_detector", "a finite distance (mm) with source_origin + origin_detector > 0")
            radius = self.image_size * self.pixel_size / math.sqrt(2.0)
            if self.source_origin <= radius:
                raise ValueError(
                    f"CTGeometry.source_origin: the source ({self.source_origin} mm from the centre) must lie "
                    f"outside the image, whose corners are {radius:.3f} mm from the centre"
                )
        return self

    # -------------------------------------------------------------- identity
    @property
    def n_angles(self) -> int:
        return int(self.angles.size)

    def key(self) -> tuple:
        return (self.kind, self.angles.tobytes(), int(self.n_det), float(self.det_spacing),
                float(self.det_offset), self.source_origin, self.origin_detector,
                int(self.image_size), float(self.pixel_size))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CTGeometry) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _finite(v) and v > 0


# ============================================================================ rays
def _rays(g: CTGeometry, v0: int, v1: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A point on every ray and its unit direction, ``(R, 2)`` each as (x, y) in mm, view-major."""
    theta = torch.tensor(np.array(g.angles[v0:v1]), dtype=torch.float64, device=device)
    s = (torch.arange(g.n_det, dtype=torch.float64, device=device) - (g.n_det - 1) / 2.0) * g.det_spacing
    s = s + g.det_offset
    u = torch.stack([torch.cos(theta), torch.sin(theta)], -1)[:, None, :]  # detector axis
    r = torch.stack([-torch.sin(theta), torch.cos(theta)], -1)[:, None, :]  # source -> detector
    s = s[None, :, None]
    if g.kind == "parallel":
        points = s * u
        directions = r.expand_as(points)
    else:
        points = (-g.source_origin * r).expand(-1, g.n_det, -1)
        towards = (g.source_origin + g.origin_detector) * r + s * u  # P_k - S
        directions = towards / torch.linalg.vector_norm(towards, dim=-1, keepdim=True)
    return points.reshape(-1, 2), directions.reshape(-1, 2)


def _steps_per_ray(g: CTGeometry, points: torch.Tensor, directions: torch.Tensor):
    """Joseph's parametrisation of each ray in pixel-index units.

    Returns ``x_major`` (steps run over columns), ``base`` and ``slope`` (the minor index at
    major index ``m`` is ``base + m * slope``) and ``step_length`` (mm per step).
    """
    n, p = g.image_size, g.pixel_size
    centre = (n - 1) / 2.0
    ox, oy = points[:, 0] / p + centre, points[:, 1] / p + centre
    dx, dy = directions[:, 0], directions[:, 1]
    x_major = dx.abs() >= dy.abs()
    o_major, o_minor = torch.where(x_major, ox, oy), torch.where(x_major, oy, ox)
    d_major, d_minor = torch.where(x_major, dx, dy), torch.where(x_major, dy, dx)
    slope = d_minor / d_major
    base = o_minor - o_major * slope
    return x_major, base, slope, p / d_major.abs()


def _count_steps(base: torch.Tensor, slope: torch.Tensor, n: int) -> torch.Tensor:
    """How many major indices ``m`` in ``[0, n)`` put the minor index inside ``(-1, n)``."""
    m = torch.arange(n, dtype=base.dtype, device=base.device)
    counts = torch.zeros_like(base, dtype=torch.int64)
    chunk = max(1, _STEPS_PER_CHUNK // n)
    for i in range(0, base.numel(), chunk):
        f = base[i:i + chunk, None] + m * slope[i:i + chunk, None]
        counts[i:i + chunk] = ((f > -1) & (f < n)).sum(1)
    return counts


def _joseph_entries(g: CTGeometry, v0: int, v1: int, dtype: torch.dtype, device: torch.device):
    """Entries of the rows of views ``[v0, v1)``: (row, column, weight), grouped by row.

    Every step contributes exactly two entries (the pixels below and above the ray). Where one
    of them falls outside the image its weight is zero and its column is moved to a pixel of
    the same step that no other entry of the row uses; that keeps two entries per step, so no
    compaction pass is needed, at the price of about two explicit zeros per ray.
    """
    n = g.image_size
    points, directions = _rays(g, v0, v1, device)
    x_major, base, slope, step_length = _steps_per_ray(g, points, directions)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    m_all = torch.arange(n, dtype=work, device=device)
    rows_out, cols_out, vals_out = [], [], []
    chunk = max(1, _STEPS_PER_CHUNK // n)
    for r0 in range(0, base.numel(), chunk):
        r1 = min(base.numel(), r0 + chunk)
        f = base[r0:r1, None].to(work) + m_all * slope[r0:r1, None].to(work)
        ray, m = ((f > -1) & (f < n)).nonzero(as_tuple=True)
        fv = f[ray, m]
        lower = torch.floor(fv)
        w_upper = (fv - lower).to(dtype) * step_length[r0:r1].to(dtype)[ray]
        w_lower = step_length[r0:r1].to(dtype)[ray] - w_upper
        q = lower.to(torch.int32)
        below = q < 0  # the lower pixel is off the image (then q == -1)
        above = q >= n - 1  # the upper pixel is off the image (then q == n - 1)
        q_lower = torch.where(below, 1, q)
        q_upper = torch.where(above, n - 2, q + 1)
        w_lower = torch.where(below, 0, w_lower)
        w_upper = torch.where(above, 0, w_upper)
        m = m.to(torch.int32)
        xm = x_major[r0:r1][ray]
        col_lower = torch.where(xm, q_lower * n + m, m * n + q_lower)
        col_upper = torch.where(xm, q_upper * n + m, m * n + q_upper)
        rows_out.append((ray.to(torch.int32) + r0).repeat_interleave(2))
        cols_out.append(torch.stack([col_lower, col_upper], 1).reshape(-1))
        vals_out.append(torch.stack([w_lower, w_upper], 1).reshape(-1))
    return torch.cat(rows_out), torch.cat(cols_out), torch.cat(vals_out)


def _csr(crow_source: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    counts = torch.bincount(crow_source, minlength=shape[0])
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=cols.device)
    torch.cumsum(counts, 0, out=crow[1:])
    if crow[-1] >= 2**31:
        raise ValueError(f"CT system matrix block has {int(crow[-1])} entries; blocks must stay below 2**31")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow.to(torch.int32), cols, vals, size=shape)


@dataclass
class _Block:
    """Rows of views ``[v0, v1)``: ``A`` (rows x pixels) and its transpose, both CSR."""

    v0: int
    v1: int
    forward: torch.Tensor
    transpose: torch.Tensor
    nnz: int = field(init=False)

    def __post_init__(self) -> None:
        self.nnz = int(self.forward.values().numel())


def _build_block(g: CTGeometry, v0: int, v1: int, dtype: torch.dtype, device: torch.device) -> _Block:
    rows, cols, vals = _joseph_entries(g, v0, v1, dtype, device)
    n_rows, n_pix = (v1 - v0) * g.n_det, g.image_size ** 2
    if device.type != "cpu":
        # cuSPARSE wants sorted column indices within each row; MKL on the CPU does not.
        order = torch.argsort(rows.to(torch.int64) * n_pix + cols.to(torch.int64))
        rows, cols, vals = rows[order], cols[order], vals[order]
    forward = _csr(rows, cols, vals, (n_rows, n_pix))
    # A stable sort by pixel keeps the rays of each pixel in ascending order: a valid CSR of A^T.
    sorted_cols, order = torch.sort(cols, stable=True)
    transpose = _csr(sorted_cols, rows[order], vals[order], (n_pix, n_rows))
    return _Block(v0, v1, forward, transpose)


# ============================================================================ operator
class _Plan:
    """Which view blocks a (dtype, device) uses and which of them are kept in memory."""

    def __init__(self, bounds: list[tuple[int, int]], cached: dict[int, _Block]):
        self.bounds = bounds
        self.cached = cached

    @property
    def cached_nnz(self) -> int:
        return sum(b.nnz for b in self.cached.values())


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, op: "Tomography2D") -> torch.Tensor:
        ctx.op = op
        return op._apply_matrix(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _Backproject.apply(grad, ctx.op), None


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, op: "Tomography2D") -> torch.Tensor:
        ctx.op = op
        return op._apply_transpose(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _Project.apply(grad, ctx.op), None


class Tomography2D(LinearOperator):
    """Images ``(B, H, W)`` -> sinograms ``(B, n_angles, n_det)`` of line integrals in mm.

    ``max_cached_nnz`` caps the matrix entries kept in memory (default by device, see
    ``DEFAULT_MAX_CACHED_NNZ``); ``block_nnz`` sizes the blocks rebuilt per call beyond it.
    The matrix is built lazily on first use, for the dtype and device of the input.
    """

    def __init__(self, geometry: CTGeometry, max_cached_nnz: int | None = None,
                 block_nnz: int = DEFAULT_BLOCK_NNZ):
        if not isinstance(geometry, CTGeometry):
            raise TypeError(f"{type(self).__name__}: expected a CTGeometry, got {type(geometry).__name__}")
        geometry.validate()
        n = geometry.image_size
        super().__init__((n, n), (geometry.n_angles, geometry.n_det))
        if max_cached_nnz is not None and max_cached_nnz < 0:
            raise ValueError(f"{type(self).__name__}.max_cached_nnz: expected >= 0, got {max_cached_nnz}")
        if block_nnz < 1:
            raise ValueError(f"{type(self).__name__}.block_nnz: expected >= 1, got {block_nnz}")
        self.geometry = geometry
        self.max_cached_nnz = max_cached_nnz
        self.block_nnz = int(block_nnz)
        self._plans: dict[tuple[torch.dtype, torch.device], _Plan] = {}
        self._view_nnz: np.ndarray | None = None

    def extra_repr(self) -> str:
        g = self.geometry
        return f"kind={g.kind}, image={g.image_size}x{g.image_size}, views={g.n_angles}, n_det={g.n_det}"

    # -------------------------------------------------------------- planning
    def nnz_per_view(self) -> np.ndarray:
        """Entries of the system matrix per view (exact, computed without building it)."""
        if self._view_nnz is None:
            g = self.geometry
            points, directions = _rays(g, 0, g.n_angles, torch.device("cpu"))
            _, base, slope, _ = _steps_per_ray(g, points, directions)
            steps = _count_steps(base, slope, g.image_size).reshape(g.n_angles, g.n_det).sum(1)
            self._view_nnz = (2 * steps).numpy()
        return self._view_nnz

    def matrix_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Memory of the whole matrix and its transpose if fully cached (for planning)."""
        value = torch.empty(0, dtype=dtype).element_size()
        g = self.geometry
        crow = 4 * (g.n_angles * g.n_det + g.image_size ** 2 + 2)
        return int(self.nnz_per_view().sum()) * 2 * (value + 4) + crow

    def _budget(self, device: torch.device) -> int:
        if self.max_cached_nnz is not None:
            return int(self.max_cached_nnz)
        return DEFAULT_MAX_CACHED_NNZ["cuda" if device.type == "cuda" else "cpu"]

    def _plan(self, dtype: torch.dtype, device: torch.device) -> _Plan:
        key = (dtype, device)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        with _build_lock:
            plan = self._plans.get(key)
            if plan is not None:
                return plan
            per_view = self.nnz_per_view()
            budget = self._budget(device)
            if per_view.sum() <= budget:
                bounds = [(0, len(per_view))]
            else:
                bounds = _split_views(per_view, self.block_nnz)
            cached: dict[int, _Block] = {}
            used = 0
            for i, (v0, v1) in enumerate(bounds):
                size = int(per_view[v0:v1].sum())
                if used + size > budget:
                    break
                cached[i] = _build_block(self.geometry, v0, v1, dtype, device)
                used += size
            plan = _Plan(bounds, cached)
            self._plans[key] = plan
            return plan

    def _blocks(self, dtype: torch.dtype, device: torch.device):
        plan = self._plan(dtype, device)
        for i, (v0, v1) in enumerate(plan.bounds):
            block = plan.cached.get(i)
            yield block if block is not None else _build_block(self.geometry, v0, v1, dtype, device)

    def cached_nnz(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> int:
        """Entries kept in memory for this dtype and device (builds the plan if needed)."""
        return self._plan(dtype, torch.device(device)).cached_nnz

    def _on_move(self, dtype: torch.dtype, device: torch.device) -> None:
        # Moving the operator frees the matrices built for other devices/dtypes.
        self._plans = {k: v for k, v in self._plans.items() if k == (dtype, device)}

    # -------------------------------------------------------------- products
    @staticmethod
    def _check_dtype(t: torch.Tensor, role: str) -> None:
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"Tomography2D.{role}: expected float32 or float64, got {t.dtype}")

    def _apply_matrix(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        g = self.geometry
        columns = x.detach().reshape(batch, -1).T.contiguous()  # (pixels, B)
        out = x.new_empty((batch, g.n_angles * g.n_det))
        for block in self._blocks(x.dtype, x.device):
            out[:, block.v0 * g.n_det:block.v1 * g.n_det] = (block.forward @ columns).T
        return out.reshape(batch, g.n_angles, g.n_det)

    def _apply_transpose(self, y: torch.Tensor) -> torch.Tensor:
        batch = y.shape[0]
        g = self.geometry
        columns = y.detach().reshape(batch, -1).T.contiguous()  # (rays, B)
        total = None
        for block in self._blocks(y.dtype, y.device):
            part = block.transpose @ columns[block.v0 * g.n_det:block.v1 * g.n_det]
            total = part if total is None else total.add_(part)
        return total.T.reshape(batch, g.image_size, g.image_size)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_dtype(x, "forward")
        return _Project.apply(x, self)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_dtype(y, "adjoint")
        return _Backproject.apply(y, self)


def _split_views(per_view: np.ndarray, block_nnz: int) -> list[tuple[int, int]]:
    """Contiguous view ranges of at most ``block_nnz`` entries each (at least one view)."""
    bounds, start, size = [], 0, 0
    for v, count in enumerate(per_view):
        if v > start and size + count > block_nnz:
            bounds.append((start, v))
            start, size = v, 0
        size += int(count)
    bounds.append((start, len(per_view)))
    return bounds


class ParallelBeam2D(Tomography2D):
    """Parallel-beam projector; see ``Tomography2D``."""

    def __init__(self, geometry: CTGeometry, **kwargs):
        if geometry.kind != "parallel":
            raise ValueError(f"ParallelBeam2D: geometry.kind is {geometry.kind!r}; expected 'parallel'")
        super().__init__(geometry, **kwargs)


class FanBeam2D(Tomography2D):
    """Flat-detector fan-beam projector; see ``Tomography2D``."""

    def __init__(self, geometry: CTGeometry, **kwargs):
        if geometry.kind != "fan":
            raise ValueError(f"FanBeam2D: geometry.kind is {geometry.kind!r}; expected 'fan'")
        super().__init__(geometry, **kwargs)


def ct_operator(geometry: CTGeometry, **kwargs) -> Tomography2D:
    """The projector for ``geometry.kind`` (keyword arguments go to ``Tomography2D``)."""
    if not isinstance(geometry, CTGeometry):
        raise TypeError(f"ct_operator: expected a CTGeometry, got {type(geometry).__name__}")
    return (ParallelBeam2D if geometry.kind == "parallel" else FanBeam2D)(geometry, **kwargs)
