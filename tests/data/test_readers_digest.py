import pytest

from inversa.data.digest import file_digest
from inversa.data.errors import MissingFile


def test_file_digest_is_sha256_of_content(tmp_path):
    import hashlib

    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * (3 << 20) + b"tail")
    assert file_digest(f) == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()


def test_directory_digest_depends_on_names_and_contents_not_on_creation_order(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root, order in ((one, ("a", "sub/b")), (two, ("sub/b", "a"))):
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(name.encode())
    assert file_digest(one) == file_digest(two)
    (two / "sub" / "b").write_bytes(b"changed")
    assert file_digest(one) != file_digest(two)
    (two / "sub" / "b").write_bytes(b"sub/b")
    (two / "sub" / "b").rename(two / "sub" / "c")
    assert file_digest(one) != file_digest(two)


def test_missing_path(tmp_path):
    with pytest.raises(MissingFile, match="nothing.zarr"):
        file_digest(tmp_path / "nothing.zarr")
