"""ISMRMRD raw data (HDF5, read through the ``ismrmrd`` package), 2-D Cartesian.

Each imaging acquisition is one readout of all coils; it is placed by its encoding counters:
row ``kspace_encode_step_1 - centre + ny // 2`` (``centre`` from the header's encoding limits,
else ``ny // 2``), slice ``idx.slice``, and along the readout so that ``center_sample`` lands on
``nx // 2`` (``discard_pre``/``discard_post`` samples dropped, reversed readouts flipped).
Repeated lines (averages) are averaged. The mask is the set of acquired lines, whole lines, as
fastMRI's masks are (a partial echo's zero-filled part counts as sampled).

Skipped by their flags: noise measurements, navigators, phase-correction lines, real-time and
high-pass feedback, dummy scans, phase stabilisation, surface-coil correction scans, and
parallel-imaging calibration lines acquired apart from the imaging data (those flagged
``ACQ_IS_PARALLEL_CALIBRATION`` without ``..._AND_IMAGING``: a separate reference scan may have
another contrast). Refused: non-Cartesian trajectories, 3-D encoding (``kspace_encode_step_2``
or encoded ``z`` > 1) and more than one contrast, phase, repetition or set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inversa.data.readers.hdf5_access import hdf5_locked
from inversa.data.errors import CorruptFile, InvalidMeasurement, ShapeMismatch
from inversa.data.mri import KSPACE, MASK, build_mri
from inversa.data.readers.ismrmrd_header import make_header, parse_header
from inversa.data.readers.mri_common import cartesian_attrs_and_crop
from inversa.data.readers.mri_sniff import ismrmrd_group
from inversa.data.readers.sniff import require_exists

_SKIP_FLAGS = ("ACQ_IS_NOISE_MEASUREMENT", "ACQ_IS_NAVIGATION_DATA", "ACQ_IS_PHASECORR_DATA",
               "ACQ_IS_RTFEEDBACK_DATA", "ACQ_IS_HPFEEDBACK_DATA", "ACQ_IS_DUMMYSCAN_DATA",
               "ACQ_IS_PHASE_STABILIZATION", "ACQ_IS_PHASE_STABILIZATION_REFERENCE",
               "ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA")
_SINGLE_COUNTERS = ("contrast", "phase", "repetition", "set")


def _skipped(acq, ismrmrd) -> bool:
    if any(acq.is_flag_set(getattr(ismrmrd, flag)) for flag in _SKIP_FLAGS if hasattr(ismrmrd, flag)):
        return True
    return (acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            and not acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING))


def _open(path, group: str | None):
    import h5py
    import ismrmrd

    try:
        with h5py.File(path, "r") as f:
            group = group if group is not None else (ismrmrd_group(f) or "dataset")
            if group not in f or "xml" not in f[group]:
                raise InvalidMeasurement(path, f"{group}/xml", "an ISMRMRD dataset group with an XML header",
                                         f"entries {sorted(f.keys())}")
            if "data" not in f[group]:
                raise InvalidMeasurement(path, f"{group}/data", "ISMRMRD acquisitions", "none")
        return group, ismrmrd.Dataset(str(path), group, create_if_needed=False, mode="r")
    except OSError as err:
        raise CorruptFile(path, "(HDF5 file)", "a readable ISMRMRD HDF5 file", f"{err}") from None


def read_ismrmrd(path, dataset: str | None = None, remove_oversampling: bool = True):
    """Read 2-D Cartesian ISMRMRD raw data as a validated MRI measurement (see the module docstring).

    ``dataset``: the ISMRMRD group in the file (default ``"dataset"``, else the only group
    holding ``xml`` and ``data``).
    """
    import ismrmrd

    path = require_exists(path)
    with hdf5_locked():  # the ismrmrd package reads through h5py
        return _read_locked(path, dataset, remove_oversampling, ismrmrd)


def _read_locked(path, dataset, remove_oversampling: bool, ismrmrd):
    dataset, dset = _open(path, dataset)
    try:
        encoding = parse_header(dset.read_xml_header(), path, f"{dataset}/xml")
        if encoding.trajectory not in (None, "cartesian"):
            raise InvalidMeasurement(path, f"{dataset}/xml: encoding/trajectory", "a cartesian trajectory",
                                     repr(encoding.trajectory))
        nx, ny, nz = encoding.encoded_matrix
        if nz != 1:
            raise InvalidMeasurement(path, f"{dataset}/xml: encodedSpace/matrixSize/z", "2-D encoding (z = 1)",
                                     f"z = {nz}")
        centre = encoding.step1_center if encoding.step1_center is not None else ny // 2
        lines: dict[tuple[int, int], list[np.ndarray]] = {}
        n_coils = None
        counters = {name: set() for name in _SINGLE_COUNTERS}
        total = dset.number_of_acquisitions()
        for number in range(total):
            acq = dset.read_acquisition(number)
            if _skipped(acq, ismrmrd):
                continue
            where = f"{dataset}/data[{number}]"
            if acq.idx.kspace_encode_step_2 != 0:
                raise InvalidMeasurement(path, where, "2-D k-space (kspace_encode_step_2 = 0)",
                                         f"kspace_encode_step_2 = {acq.idx.kspace_encode_step_2}")
            for name in _SINGLE_COUNTERS:
                counters[name].add(int(getattr(acq.idx, name)))
            data = np.asarray(acq.data, dtype=np.complex64)
            if n_coils is None:
                n_coils = data.shape[0]
            elif data.shape[0] != n_coils:
                raise ShapeMismatch(path, where, f"{n_coils} active channels (as the first acquisition)",
                                    f"{data.shape[0]}")
            pre, post = int(acq.discard_pre), int(acq.discard_post)
            data = data[:, pre:data.shape[1] - post]
            if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
                data = data[:, ::-1]
            start = nx // 2 - (int(acq.center_sample) - pre) if data.shape[1] != nx else 0
            row = int(acq.idx.kspace_encode_step_1) - centre + ny // 2
            if not (0 <= row < ny and 0 <= start and start + data.shape[1] <= nx):
                raise ShapeMismatch(path, where, f"a readout inside the encoded {ny} x {nx} matrix",
                                    f"line {acq.idx.kspace_encode_step_1} (row {row}), samples {start}.."
                                    f"{start + data.shape[1] - 1}")
            line = np.zeros((n_coils, nx), dtype=np.complex64)
            line[:, start:start + data.shape[1]] = data
            lines.setdefault((int(acq.idx.slice), row), []).append(line)
    finally:
        dset.close()
    if not lines:
        raise InvalidMeasurement(path, f"{dataset}/data", "at least one imaging acquisition",
                                 f"{total} acquisitions, none of them imaging data")
    for name, seen in counters.items():
        if len(seen) > 1:
            raise InvalidMeasurement(path, f"{dataset}/data: idx.{name}", f"a single {name} (one 2-D image per "
                                     "slice)", f"{len(seen)} values {sorted(seen)[:5]}")
    n_slices = max(s for s, _ in lines) + 1
    if encoding.slice_maximum is not None:
        n_slices = max(n_slices, encoding.slice_maximum + 1)
    kspace = np.zeros((n_slices, n_coils, ny, nx), dtype=np.complex64)
    sampled = np.zeros((n_slices, ny), dtype=bool)
    for (s, row), readouts in lines.items():
        kspace[s, :, row] = np.mean(readouts, axis=0)
        sampled[s, row] = True
    if not sampled.any(axis=1).all():
        raise InvalidMeasurement(path, f"{dataset}/data", f"imaging acquisitions for each of the {n_slices} slices",
                                 f"none for slice(s) {np.flatnonzero(~sampled.any(axis=1))[:5].tolist()}")
    mask = np.broadcast_to(sampled[:, :, None], (n_slices, ny, nx))
    mask = np.ascontiguousarray(mask[0] if (mask == mask[:1]).all() else mask)
    kspace, mask, geometry = cartesian_attrs_and_crop(kspace, mask, encoding, path, remove_oversampling,
                                                      f"{dataset}/data")
    attrs = {**geometry, "format": "ismrmrd",
             "averaged_lines": int(sum(len(r) > 1 for r in lines.values()))}
    return build_mri(kspace, mask, attrs=attrs, source=path, kspace_name=f"{dataset}/data")


def write_ismrmrd(path, ds, dataset: str = "dataset", noise_readouts: int = 0, seed: int = 0,
                  recon_width: int | None = None) -> Path:
    """Write a validated MRI measurement as ISMRMRD acquisitions (one per sampled line and slice).

    Only lines sampled in the mask are written (the whole line: masks that vary along ``kx``
    are not representable line by line and are refused). ``noise_readouts``: prepend that many
    noise-measurement acquisitions (flagged, with random data) so readers' flag handling can be
    tested. ``recon_width``: a recon matrix narrower than the readout, which declares the data's
    readout oversampled by ``nx / recon_width`` (a reader then crops it).
    """
    import ismrmrd

    path = Path(path)
    k = np.asarray(ds[KSPACE].values, dtype=np.complex64)
    n_slices, n_coils, ny, nx = k.shape
    mask = np.asarray(ds[MASK].values, dtype=bool)
    mask = np.broadcast_to(mask if mask.ndim == 3 else mask[None], (n_slices, ny, nx))
    if not (mask == mask[..., :1]).all():
        raise InvalidMeasurement(path, MASK, "a line mask (whole ky lines) to write as ISMRMRD readouts",
                                 "a mask that varies along kx")
    fov = ds.attrs.get("field_of_view_mm")
    recon = None if recon_width is None else (ny, int(recon_width))
    header = make_header((ny, nx), fov, recon_matrix=recon, n_slices=n_slices, n_coils=n_coils)
    if path.exists():
        path.unlink()
    out = ismrmrd.Dataset(str(path), dataset, create_if_needed=True)
    try:
        out.write_xml_header(header.encode())
        rng = np.random.default_rng(seed)
        for _ in range(int(noise_readouts)):
            acq = ismrmrd.Acquisition.from_array(
                (rng.standard_normal((n_coils, nx)) + 1j * rng.standard_normal((n_coils, nx))).astype(np.complex64))
            acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            out.append_acquisition(acq)
        for s in range(n_slices):
            for row in np.flatnonzero(mask[s, :, 0]):
                acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(k[s, :, row]))
                acq.idx.kspace_encode_step_1 = int(row)
                acq.idx.slice = int(s)
                acq.center_sample = nx // 2
                out.append_acquisition(acq)
    finally:
        out.close()
    return path
