"""An in-tree PEP 517 build backend with no requirements, so `pip wheel ./clients/python` and
`pip install ./clients/python` need no network: pip's isolated build environment gets nothing
to install. (The setuptools a Debian 12 venv has, 66.1.1, cannot build a wheel without the
`wheel` package, which neither the venv nor /usr/share/python-wheels has.)

It builds a pure-Python wheel of src/kioskd (py3-none-any), an sdist, and an editable wheel
(PEP 660, a .pth file pointing at src/). Metadata comes from pyproject.toml's [project] table.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "kioskd"
SOURCE = ROOT / "src" / PACKAGE
# Fixed file times (or SOURCE_DATE_EPOCH): the same tree gives the same wheel.
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
SDIST_PARTS = ["pyproject.toml", "README.md", "_build_backend", "src", "tests", "examples"]


def _project() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: no tomllib, and tomli may not be installed
        return _project_table(text)
    return tomllib.loads(text)["project"]


def _project_table(text: str) -> dict:
    """[project] of our own pyproject.toml on Python 3.10: `key = value` lines whose values
    are basic strings or arrays of them (JSON's syntax too), and `[project.x]` tables of them."""
    project: dict = {}
    table: dict | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #")[0].strip() if not pending else raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending and line.startswith("["):
            name = line.strip("[]").strip()
            table = project if name == "project" else (
                project.setdefault(name.split(".", 1)[1], {}) if name.startswith("project.") else None)
            continue
        if table is None:
            continue
        pending += " " + line
        key, _, value = pending.partition("=")
        if value.count("[") > value.count("]"):
            continue
        table[key.strip().strip('"')] = json.loads(value.strip().rstrip(",").replace(",]", "]").replace(", ]", "]"))
        pending = ""
    return project


def _dist_name(project: dict) -> str:
    return project["name"].replace("-", "_")


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project['requires-python']}",
    ]
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in requirements]
    readme = project.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        body = "\n" + (ROOT / readme).read_text()
    return "\n".join(lines) + "\n" + body


def _package_files() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed"))


class _Wheel:
    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.record: list[str] = []

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=time.gmtime(EPOCH)[:6])
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append(f"{name},sha256={digest},{len(data)}")

    def close(self, dist_info: str) -> None:
        record = f"{dist_info}/RECORD"
        text = "\n".join(self.record + [f"{record},,"]) + "\n"
        info = zipfile.ZipInfo(record, date_time=time.gmtime(EPOCH)[:6])
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, text.encode())
        self.zip.close()


def _build(wheel_directory: str, editable: bool) -> str:
    project = _project()
    name, version = _dist_name(project), project["version"]
    filename = f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    wheel = _Wheel(Path(wheel_directory) / filename)
    if editable:
        wheel.add(f"__editable__.{name}.pth", (str(ROOT / "src") + "\n").encode())
    else:
        for path in _package_files():
            wheel.add(path.relative_to(SOURCE.parent).as_posix(), path.read_bytes())
    wheel.add(f"{dist_info}/METADATA", _metadata(project).encode())
    wheel.add(f"{dist_info}/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: kioskd_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n").encode())
    wheel.add(f"{dist_info}/top_level.txt", f"{PACKAGE}\n".encode())
    wheel.close(dist_info)
    return filename


# PEP 517 -------------------------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings=None) -> list[str]:
    return []


def get_requires_for_build_editable(config_settings=None) -> list[str]:
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    return _build(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    return _build(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None) -> str:
    project = _project()
    base = f"{_dist_name(project)}-{project['version']}"
    filename = f"{base}.tar.gz"

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(part in info.name for part in ("__pycache__", ".pytest_cache", ".egg-info")):
            return None
        info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
        return info

    with tarfile.open(Path(sdist_directory) / filename, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for part in SDIST_PARTS:
            if (ROOT / part).exists():
                tar.add(ROOT / part, arcname=f"{base}/{part}", filter=clean)
        pkg_info = _metadata(project).encode()
        info = clean(tarfile.TarInfo(f"{base}/PKG-INFO"))
        info.size = len(pkg_info)
        tar.addfile(info, io.BytesIO(pkg_info))
    return filename
