"""One entry point for MRI k-space files: :func:`read_mri` picks the reader from the content.

Every reader ends in ``data.mri.validate_mri``, so what comes back is the schema of
docs/conventions.md ("MRI") whatever the file was; ``format=`` overrides the guess.
"""

from __future__ import annotations

from pathlib import Path

from inversa.data.errors import UnknownFormat
from inversa.data.readers.mri_sniff import MRI_FORMATS, mri_format

_OPTIONS = {
    "fastmri": ("remove_oversampling", "slices"),
    "ismrmrd": ("dataset", "remove_oversampling"),
    "bart": ("mask", "field_of_view_mm", "noise_sigma", "units"),
    "matlab": ("variable", "axes", "mask", "field_of_view_mm", "noise_sigma", "units"),
    "numpy": ("axes", "mask", "field_of_view_mm", "noise_sigma", "units", "readout_oversampling"),
}


def read_mri(path, format: str | None = None, **options):
    """Read an MRI k-space file as a validated ``xr.Dataset`` (see data/mri.py).

    ``format``: one of ``fastmri``, ``ismrmrd``, ``bart``, ``matlab``, ``numpy``; by default
    judged from content (:func:`mri_format`). Options by format: ``remove_oversampling``,
    ``slices`` (fastmri); ``dataset``, ``remove_oversampling`` (ismrmrd); ``mask`` (bart,
    matlab, numpy); ``variable``, ``axes`` (matlab); ``axes`` (numpy); and the schema attrs a
    file cannot carry, ``field_of_view_mm``, ``noise_sigma``, ``units`` (bart, matlab, numpy).
    """
    fmt = format if format is not None else mri_format(path)
    if fmt not in MRI_FORMATS:
        raise UnknownFormat(path, "(file)", f"MRI k-space in one of the formats {MRI_FORMATS}",
                            "no MRI k-space found" if fmt is None else f"format {fmt!r}")
    unknown = set(options) - set(_OPTIONS[fmt])
    if unknown:
        raise TypeError(f"{fmt} files take the reader options {_OPTIONS[fmt]}, got {sorted(unknown)}")
    if fmt == "fastmri":
        from inversa.data.readers.mri_fastmri import read_fastmri

        return read_fastmri(path, **options)
    if fmt == "ismrmrd":
        from inversa.data.readers.mri_ismrmrd import read_ismrmrd

        return read_ismrmrd(path, **options)
    if fmt == "bart":
        from inversa.data.readers.bart import read_bart

        return read_bart(Path(path), **options)
    if fmt == "matlab":
        from inversa.data.readers.mri_matlab import read_matlab

        return read_matlab(path, **options)
    from inversa.data.readers.mri_numpy import read_mri_numpy

    return read_mri_numpy(path, **options)
