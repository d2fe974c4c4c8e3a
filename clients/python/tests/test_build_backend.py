"""The in-tree build backend: the wheel holds the package and metadata pip accepts, and the
Python 3.10 reader of pyproject.toml agrees with tomllib. No daemon needed."""
from __future__ import annotations

import base64
import hashlib
import pathlib
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_build_backend"))
import kioskd_build  # noqa: E402


def test_the_310_reader_of_pyproject_agrees_with_tomllib() -> None:
    tomllib = pytest.importorskip("tomllib")
    text = (ROOT / "pyproject.toml").read_text()
    assert kioskd_build._project_table(text) == tomllib.loads(text)["project"]


def test_the_wheel_holds_the_package_with_a_valid_record(tmp_path: pathlib.Path) -> None:
    name = kioskd_build.build_wheel(str(tmp_path))
    assert name == "kioskd-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name) as wheel:
        names = set(wheel.namelist())
        expected = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "kioskd").iterdir()
                    if p.suffix in (".py", ".typed")}
        assert expected <= names and "kioskd/py.typed" in names
        metadata = wheel.read("kioskd-0.1.0.dist-info/METADATA").decode()
        assert "Requires-Dist: httpx>=0.25" in metadata and "Requires-Python: >=3.10" in metadata
        for line in wheel.read("kioskd-0.1.0.dist-info/RECORD").decode().splitlines():
            path, digest, size = line.split(",")
            if path.endswith("RECORD"):
                continue
            data = wheel.read(path)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
    (tmp_path / "again").mkdir()
    assert kioskd_build.build_wheel(str(tmp_path / "again")) == name
    assert (tmp_path / "again" / name).read_bytes() == (tmp_path / name).read_bytes(), "reproducible"


def test_the_sdist_builds_again(tmp_path: pathlib.Path) -> None:
    name = kioskd_build.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as sdist:
        names = sdist.getnames()
    assert "kioskd-0.1.0/PKG-INFO" in names and "kioskd-0.1.0/_build_backend/kioskd_build.py" in names
    assert not [n for n in names if "__pycache__" in n or ".egg-info" in n]
