"""Packaging promises: what ships at run time, the licence, the pins the image installs."""

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_PACKAGES = ("store", "service")


def _runtime() -> dict[str, Requirement]:
    reqs = (Requirement(r) for r in PYPROJECT["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


# What ``pip install .`` builds: (its directory, the packages and files it copies, the wheel).
WHEELS = {
    "rankd": (ROOT, ("store", "service"), ("pyproject.toml", "README.md", "LICENSE"), "rankd-"),
    "rankd-client": (ROOT / "client", ("rankd_client",), ("pyproject.toml", "README.md"),
                     "rankd_client-"),
}  # fmt: skip


@pytest.mark.parametrize("project", sorted(WHEELS))
def test_the_wheel_a_new_user_installs_ships_every_module_and_data_file(
    tmp_path: Path, project: str
) -> None:
    """README's ``pip install .`` (not an editable install, as every other test uses): the
    built wheel holds every file that runs -- modules, the page, the Lua scripts, ``py.typed``
    (not the READMEs beside them). A package missing from pyproject's hand-written list once
    made ``rankd`` fail at import (``service.hub``)."""
    here, packages, files, prefix = WHEELS[project]
    # From a clean copy: setuptools reuses a build/ directory, whose stale files would ship.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in packages:
        shutil.copytree(here / name, src / name, ignore=skip)
    for name in files:
        shutil.copy(here / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob(f"{prefix}*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(src).as_posix()
        for package in packages
        for path in (src / package).rglob("*")
        if path.is_file() and (path.suffix in (".py", ".lua", ".typed") or "static" in path.parts)
    }
    assert wanted and wanted - shipped == set()


def test_sortedcontainers_is_a_test_dependency_only() -> None:
    assert "sortedcontainers" not in _runtime()
    dev = [
        canonicalize_name(Requirement(r).name)
        for r in PYPROJECT["project"]["optional-dependencies"]["dev"]
    ]
    assert "sortedcontainers" in dev
    for package in (*RUNTIME_PACKAGES, "client/rankd_client"):
        assert "sortedcontainers" not in _imports(package), package


def test_the_licence_file_is_the_declared_mit_licence() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert "LICENSE" in PYPROJECT["project"]["license-files"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    for name, req in _runtime().items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {req}"
    assert "setuptools" in pins  # the build backend too: the image's build is pinned end to end


def test_the_changelog_describes_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"^## (\S+)", text, flags=re.MULTILINE)
    assert first is not None and first.group(1) == PYPROJECT["project"]["version"]
