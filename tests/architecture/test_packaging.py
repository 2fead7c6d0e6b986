"""Every package folder is listed in pyproject.toml, so a wheel (the images install one) has it."""

from __future__ import annotations

import tomllib

from tests.architecture.test_imports import REPO, modules, package_dirs


def test_every_package_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed packages without a folder"
    assert set(package_dirs()) <= found
