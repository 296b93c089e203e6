"""Content digests of input files and stores, for provenance and for refusing mismatched reruns."""

from __future__ import annotations

import hashlib
from pathlib import Path

from inversa.data.errors import MissingFile

_BLOCK = 1 << 20


def _update_with_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)


def file_digest(path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, or of a directory's sorted relative paths and contents.

    For a directory (a zarr store) each file contributes its POSIX relative path, its size and its
    bytes, framed by lengths so that moving bytes between names changes the digest.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFile(path, "(file)", "an existing file or directory to digest", "nothing at that path")
    h = hashlib.sha256()
    if path.is_file():
        _update_with_file(h, path)
        return "sha256:" + h.hexdigest()
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    for p in files:
        name = p.relative_to(path).as_posix().encode()
        h.update(len(name).to_bytes(8, "little"))
        h.update(name)
        h.update(p.stat().st_size.to_bytes(8, "little"))
        _update_with_file(h, p)
    return "sha256:" + h.hexdigest()
