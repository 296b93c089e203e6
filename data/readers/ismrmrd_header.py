"""The ISMRMRD XML header: the parts a 2-D Cartesian reader needs, read with the standard library.

fastMRI files carry this header as the string dataset ``ismrmrd_header``; ISMRMRD files as
``dataset/xml``. Only the first ``<encoding>`` is used: the encoded matrix (what k-space holds,
readout oversampling included), the recon matrix (what the scanner shows), their fields of view
and the encoding limits (which line is the k-space centre). Namespaces are ignored, so headers
with and without the ISMRMRD namespace read the same. ISMRMRD's ``x`` is the readout, ``y`` the
phase encode, ``z`` the partition.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from inversa.data.errors import CorruptFile, MissingGeometry

NAMESPACE = "http://www.ismrm.org/ISMRMRD"


@dataclass(frozen=True)
class Encoding:
    """One ``<encoding>``: matrices as ``(x, y, z)`` ints, fields of view in mm or None."""

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int] | None
    encoded_fov_mm: tuple[float, float, float] | None
    recon_fov_mm: tuple[float, float, float] | None
    step1_center: int | None  # kspace_encoding_step_1 centre line
    step1_maximum: int | None
    slice_maximum: int | None
    trajectory: str | None

    @property
    def readout_oversampling(self) -> float:
        """Encoded readout samples over recon ones (2.0 for fastMRI's 640 vs 320)."""
        if self.recon_matrix is None:
            return 1.0
        return self.encoded_matrix[0] / self.recon_matrix[0]


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node, name: str):
    if node is None:
        return None
    for child in node:
        if _strip(child.tag) == name:
            return child
    return None


def _find(node, path: str):
    for name in path.split("/"):
        node = _child(node, name)
    return node


def _number(node, path: str, source, variable: str, kind=float, required: bool = False):
    found = _find(node, path)
    if found is None or found.text is None or not found.text.strip():
        if required:
            raise MissingGeometry(source, f"{variable}: {path}", "this element in the ISMRMRD header", "none")
        return None
    try:
        value = kind(float(found.text.strip())) if kind is int else kind(found.text.strip())
    except ValueError:
        raise CorruptFile(source, f"{variable}: {path}", "a number", repr(found.text)) from None
    if kind is float and not math.isfinite(value):
        raise CorruptFile(source, f"{variable}: {path}", "a finite number", repr(found.text))
    return value


def _triple(node, path: str, source, variable: str, kind, required: bool):
    values = [_number(node, f"{path}/{axis}", source, variable, kind, required) for axis in "xyz"]
    if any(v is None for v in values):
        if required:
            missing = "xyz"[[v is None for v in values].index(True)]
            raise MissingGeometry(source, f"{variable}: {path}/{missing}", "this element in the ISMRMRD header", "none")
        return None
    if any(v <= 0 for v in values):
        raise CorruptFile(source, f"{variable}: {path}", "positive sizes", repr(values))
    return tuple(values)


def parse_header(xml_text, source=None, variable: str = "ismrmrd_header") -> Encoding:
    """Parse the first encoding of an ISMRMRD header (bytes or str).

    Required: ``encoding/encodedSpace/matrixSize`` (x, y, z); everything else is optional.
    """
    if isinstance(xml_text, bytes):
        xml_text = xml_text.decode("utf-8", errors="replace")
    try:
        root = ET.fromstring(str(xml_text).strip())
    except ET.ParseError as err:
        raise CorruptFile(source, variable, "a well-formed ISMRMRD XML header", f"{err}") from None
    encoding = _child(root, "encoding")
    if encoding is None:
        raise MissingGeometry(source, f"{variable}: encoding", "an <encoding> element in the ISMRMRD header", "none")
    encoded = _triple(encoding, "encodedSpace/matrixSize", source, variable, int, required=True)
    recon = _triple(encoding, "reconSpace/matrixSize", source, variable, int, required=False)
    return Encoding(
        encoded_matrix=encoded,
        recon_matrix=recon,
        encoded_fov_mm=_triple(encoding, "encodedSpace/fieldOfView_mm", source, variable, float, required=False),
        recon_fov_mm=_triple(encoding, "reconSpace/fieldOfView_mm", source, variable, float, required=False),
        step1_center=_number(encoding, "encodingLimits/kspace_encoding_step_1/center", source, variable, int),
        step1_maximum=_number(encoding, "encodingLimits/kspace_encoding_step_1/maximum", source, variable, int),
        slice_maximum=_number(encoding, "encodingLimits/slice/maximum", source, variable, int),
        trajectory=(_find(encoding, "trajectory").text.strip() if _find(encoding, "trajectory") is not None
                    and _find(encoding, "trajectory").text else None),
    )


def _add(parent, name: str, text=None):
    node = ET.SubElement(parent, name)
    if text is not None:
        node.text = str(text)
    return node


def _space(parent, name: str, matrix, fov):
    space = _add(parent, name)
    size = _add(space, "matrixSize")
    for axis, value in zip("xyz", matrix):
        _add(size, axis, int(value))
    view = _add(space, "fieldOfView_mm")
    for axis, value in zip("xyz", fov):
        _add(view, axis, f"{float(value):.6g}")


def make_header(matrix, field_of_view_mm=None, *, recon_matrix=None, recon_field_of_view_mm=None,
                n_slices: int = 1, n_coils: int | None = None, slice_thickness_mm: float = 1.0,
                larmor_hz: int = 123_200_000) -> str:
    """An ISMRMRD header (valid against the ISMRMRD schema) for 2-D Cartesian k-space.

    ``matrix`` ``(ny, nx)`` is the encoded k-space grid (``nx`` the readout, oversampling
    included), ``field_of_view_mm`` ``(fov_y, fov_x)`` its field of view (default 1 mm pixels);
    the recon space defaults to the same.
    """
    ny, nx = (int(n) for n in matrix)
    fov_y, fov_x = (float(f) for f in (field_of_view_mm if field_of_view_mm is not None else (ny, nx)))
    rny, rnx = (int(n) for n in (recon_matrix if recon_matrix is not None else (ny, nx)))
    rfy, rfx = (float(f) for f in (recon_field_of_view_mm if recon_field_of_view_mm is not None
                                   else (fov_y, fov_x * rnx / nx)))
    root = ET.Element("ismrmrdHeader", {"xmlns": NAMESPACE})
    if n_coils is not None:
        system = _add(root, "acquisitionSystemInformation")
        _add(system, "receiverChannels", int(n_coils))
    _add(_add(root, "experimentalConditions"), "H1resonanceFrequency_Hz", int(larmor_hz))
    encoding = _add(root, "encoding")
    _space(encoding, "encodedSpace", (nx, ny, 1), (fov_x, fov_y, slice_thickness_mm))
    _space(encoding, "reconSpace", (rnx, rny, 1), (rfx, rfy, slice_thickness_mm))
    limits = _add(encoding, "encodingLimits")
    for name, maximum, center in (("kspace_encoding_step_1", ny - 1, ny // 2), ("kspace_encoding_step_2", 0, 0),
                                  ("slice", int(n_slices) - 1, 0)):
        limit = _add(limits, name)
        _add(limit, "minimum", 0)
        _add(limit, "maximum", maximum)
        _add(limit, "center", center)
    _add(encoding, "trajectory", "cartesian")
    return ET.tostring(root, encoding="unicode")
