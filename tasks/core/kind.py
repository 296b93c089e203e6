"""The problem-kind interface: what the generic pipeline asks of CT, fields, MRI, ...

The pipeline is one sequence for every kind: plan (validate the input, size the run), create
the store from a template, run a one-off preparation if the plan asks for one (CT calibration,
a field's shared fit), reconstruct the pending regions in work units, summarise and report. It
calls only the methods below; a kind implements them once, in its own package under
``inversa.tasks.kinds``, registered by name there. Nothing here imports Prefect: a kind is
plain application code that the thin Prefect tasks in ``inversa.tasks`` wrap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from inversa.data.store import ResultStore
from inversa.tasks.core.devices import uses_gpu
from inversa.tasks.core.recipe import RecipeBase

RegionProgress = Callable[[float], None]
"""``progress(fraction)``: how much (0..1) of the region being reconstructed is done."""


@dataclass(kw_only=True)
class Plan:
    """What a run will compute and how big it is, decided before anything is written.

    ``inversa check`` prints it (the kind's ``describe``) and the flow creates the store from it,
    so what ``check`` promises is what ``run`` does. ``prepare`` names the one-off step the kind
    runs before the regions (``"calibrate"``, ``"fit"``), or is None.
    """

    kind: str
    dataset: str
    input: str
    output: str | None
    n_slices: int  # the length of the region axis: slices, time steps or grid rows
    leading_dim: str  # that axis's name in the store ("slice", "time", "y")
    regions: list[tuple[int, int]]
    method: str
    method_params: dict[str, Any]
    samples: int
    estimated_memory_bytes: int
    estimated_storage_bytes: int
    prepare: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoreTemplate:
    """A kind's part of a new store: its layout, its own provenance entries, its attrs.

    ``layout`` holds the keywords of ``ResultStore.create`` other than the path, provenance and
    overwrite flag; ``attrs`` are what a reader should see without reading provenance (how the
    intervals were made, the values' units).
    """

    layout: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """One image of a preview, oriented as it should be drawn (row 0 at the top).

    The rest are drawing hints, so the generic drawing code (tasks/core/previews.py) never needs
    to know which kind made the panel: ``units`` labels the colour bar and the title, ``cmap`` is
    a matplotlib colormap name, ``vmin``/``vmax`` fix the colour limits (None: robust limits of
    the image itself), and ``ticks``/``tick_labels`` name the colour bar's values where they are
    categories (inside / outside the interval) rather than quantities.
    """

    image: np.ndarray
    label: str
    units: str = ""
    cmap: str = "gray"
    vmin: float | None = None
    vmax: float | None = None
    ticks: tuple[float, ...] | None = None
    tick_labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Preview:
    """What ``inversa show --png`` and the UI draw of a store: panels side by side and a caption.

    ``title`` heads every panel (the slice or time step and the method); ``extent`` is
    ``(left, right, bottom, top)`` of the drawn image in axis coordinates (cell edges, for a
    field on a physical grid; None draws bare pixels without axes), ``xlabel``/``ylabel`` name
    those axes with their units, and ``aspect`` is matplotlib's (``"equal"``: a unit is as long
    on both axes; a number: the height of a y unit over an x unit, as for degrees of latitude).
    """

    panels: list[Panel]
    caption: str
    title: str = ""
    extent: tuple[float, float, float, float] | None = None
    xlabel: str = ""
    ylabel: str = ""
    aspect: str | float = "equal"


@dataclass(frozen=True)
class Prepared:
    """The record of a kind's one-off preparation (kept in the store) and a line for the log."""

    record: dict[str, Any]
    message: str


class ProblemKind(ABC):
    """One problem kind: CT sinograms, sparse field observations, MRI k-space, ...

    Implementations are stateless singletons (``KIND`` in their package): every method gets the
    recipe, and the store where it needs one, so work can run in any thread or process.
    """

    name: ClassVar[str]
    recipe_model: ClassVar[type[RecipeBase]]
    input_suffixes: ClassVar[tuple[str, ...]] = ()
    """Files a batch takes from a directory listing (the readers decide the format by content)."""
    table_metrics: ClassVar[tuple[str, ...]] = ()
    """The run-level metrics a batch table shows, in order, where any dataset has them."""

    @abstractmethod
    def plan(self, recipe: RecipeBase) -> Plan:
        """Read and validate the input (and reference), decide regions and sizes; write nothing."""

    @abstractmethod
    def input_digest(self, recipe: RecipeBase) -> str:
        """The digest of what the recipe's input names: a store made from other data is not resumed."""

    @abstractmethod
    def store_template(self, recipe: RecipeBase, plan: Plan) -> StoreTemplate:
        """The layout, provenance and attrs of this run's store."""

    def prepare(self, store: ResultStore, recipe: RecipeBase) -> Prepared:
        """The one-off step ``plan.prepare`` names, before any region; a rerun reads its record."""
        raise NotImplementedError(f"problem kind {self.name!r} plans no preparation step")

    @abstractmethod
    def reconstruct_region(self, store: ResultStore, index: int, recipe: RecipeBase,
                           progress: RegionProgress | None = None) -> dict[str, Any]:
        """Reconstruct region ``index``, write it and record it done; returns its manifest record
        (``index``, ``start``, ``stop``, ``seconds`` and what else the kind reports)."""

    @abstractmethod
    def summarize(self, store: ResultStore) -> dict[str, Any]:
        """Run-level metrics of a store (``seconds``, ``regions``, ``regions_done`` at least)."""

    @abstractmethod
    def describe(self, recipe: RecipeBase, plan: Plan) -> list[str]:
        """The lines ``inversa check`` prints between the recipe line and the memory line."""

    @abstractmethod
    def preview(self, store: ResultStore, index: int = 0) -> Preview:
        """Panels of one region-axis index (a slice, a time step; the whole field when static)."""

    def uses_gpu(self, recipe: RecipeBase) -> bool:
        """Whether region work runs on a CUDA device (it then carries the ``gpu`` tag)."""
        return uses_gpu(recipe.device)
