"""What `inversa batch` INPUTS mean: files, directories and globs, turned into named datasets.

- A file (or a zarr directory) is one dataset.
- A directory is every measurement inside it, not recursive: files ending in one of the recipe's
  kind's `input_suffixes` (CT files; field CSVs, NetCDF, PIV frames) and zarr directories, except
  hidden ones and inversa result stores (so `--output` may sit inside a watched directory). The
  readers themselves decide the format from the content; the suffix only decides what a
  directory listing picks up.
- A pattern with `*`, `?` or `[` is expanded here (`**` recurses), so it works quoted or not and
  on every shell; a pattern that matches nothing is reported as a failed input.

References pair by name, the convention of `data.synthetic.write_study`: `<stem>_truth<suffix>`
next to `<stem><suffix>` is that dataset's reference (for metrics) and not a dataset itself; the
truth may also have another suffix (`scan.h5` with `scan_truth.nc`, as MRI studies are written).
Each dataset is named after its file without the suffix; names that collide get the suffix
(`scan-nc`, `scan-h5`), then a counter.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from inversa.data.readers.sniff import is_zarr_directory
from inversa.data.store import META_DIR, MARKER_FILE
from inversa.tasks.core.inputs import dataset_name

REFERENCE_TAG = "_truth"
REFERENCE_SUFFIXES = (".nc", ".h5", ".npy", ".npz", ".zarr")
GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class BatchInput:
    """One dataset of a batch; `problem` says why it cannot run (then `path` is what was given)."""

    dataset: str
    path: str
    reference: str | None = None
    problem: str | None = None


def expand_inputs(inputs: list[str], suffixes: tuple[str, ...]) -> list[BatchInput]:
    """The datasets named by `inputs`, in the order given (directories and globs sorted);
    `suffixes`: the file names a directory or glob contributes (the kind's input suffixes)."""
    found: list[Path] = []
    problems: list[BatchInput] = []
    for given in inputs:
        text = str(given)
        if GLOB_CHARACTERS & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            matches = [m for m in matches if _is_measurement(m, suffixes)]
            found.extend(matches)  # matching nothing yet is not a failure (a watched pattern): see empty_inputs
        elif Path(text).is_dir() and not is_zarr_directory(Path(text)):
            found.extend(sorted(p for p in Path(text).iterdir() if _is_measurement(p, suffixes)))
        elif not Path(text).exists():
            problems.append(BatchInput(_name_of(text), text, problem=f"{text}: no such file or directory"))
        else:
            found.append(Path(text))

    seen: set[Path] = set()
    unique = []
    for path in found:  # the same file through two inputs is one dataset
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    measurements = [p for p in unique if not _is_paired_reference(p)]
    names = _unique_names(measurements)
    datasets = [
        BatchInput(name, str(path), reference=_reference_of(path)) for name, path in zip(names, measurements)
    ]
    taken = {d.dataset for d in datasets}
    for problem in problems:  # a failed input still needs a name of its own in the table
        name, n = problem.dataset, 2
        while name in taken:
            name, n = f"{problem.dataset}-{n}", n + 1
        taken.add(name)
        datasets.append(BatchInput(name, problem.path, problem=problem.problem))
    return datasets


def empty_inputs(inputs: list[str], suffixes: tuple[str, ...]) -> list[str]:
    """Directories and globs among `inputs` that name no measurement file (yet), for a warning.

    A watched directory is empty until the first scan arrives, so this is nothing to do, not a
    failure; a path that does not exist at all is a failed dataset instead (see expand_inputs).
    """
    empty = []
    for given in map(str, inputs):
        if GLOB_CHARACTERS & set(given):
            if not any(_is_measurement(Path(m), suffixes) for m in glob.glob(given, recursive=True)):
                empty.append(f"{given}: no measurement file matches")
        elif Path(given).is_dir() and not is_zarr_directory(Path(given)):
            if not any(_is_measurement(p, suffixes) for p in Path(given).iterdir()):
                empty.append(f"{given}: no measurement files in this directory (expected names ending in "
                             f"{', '.join(suffixes)})")
    return empty


def _is_measurement(path: Path, suffixes: tuple[str, ...]) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return is_zarr_directory(path) and not (path / META_DIR / MARKER_FILE).exists()
    return path.is_file() and path.name.lower().endswith(tuple(suffixes))


def _reference_of(path: Path) -> str | None:
    """``<stem>_truth`` with the measurement's own suffix, else with one of ``REFERENCE_SUFFIXES``
    (an MRI study's k-space is HDF5, its magnitude truth NetCDF)."""
    for suffix in dict.fromkeys((path.suffix, *REFERENCE_SUFFIXES)):
        partner = path.with_name(f"{_stem(path)}{REFERENCE_TAG}{suffix}")
        if partner != path and partner.exists():
            return str(partner)
    return None


def _is_paired_reference(path: Path) -> bool:
    stem = _stem(path)
    if not stem.endswith(REFERENCE_TAG) or stem == REFERENCE_TAG:
        return False
    base = stem[: -len(REFERENCE_TAG)]
    return any(sibling != path and _reference_of(sibling) == str(path)
               for sibling in path.parent.glob(f"{glob.escape(base)}.*"))


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _name_of(text: str) -> str:
    return dataset_name(text.rstrip("/")) or "input"


def _unique_names(paths: list[Path]) -> list[str]:
    names = [dataset_name(str(p)) for p in paths]
    out = []
    for path, name in zip(paths, names):
        if names.count(name) > 1 and path.suffix:
            name = f"{name}-{path.suffix.lstrip('.').lower()}"
        out.append(name)
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        if name in seen:
            seen[name] += 1
            out[i] = f"{name}-{seen[name]}"
        else:
            seen[name] = 1
    return out
