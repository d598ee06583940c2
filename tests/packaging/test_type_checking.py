"""citygate/: the links through which mypy, pyright and editors resolve citygate.* (README "Development")."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_citygate_holds_a_relative_link_to_each_installed_folder_and_nothing_else() -> None:
    # As installed, citygate is a namespace package (no __init__.py) of the mapped folders.
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    expected = {name.removeprefix("citygate."): f"../{folder}" for name, folder in package_dir.items()}

    found = {path.name: os.readlink(path) for path in (REPO / "citygate").iterdir()}

    assert found == expected
    assert all((REPO / "citygate" / name / "__init__.py").is_file() for name in found)


def test_every_module_the_mypy_overrides_name_exists() -> None:
    # A module renamed or moved would silently leave the strict checks.
    modules = [module for override in PYPROJECT["tool"]["mypy"]["overrides"] for module in override["module"]]

    def exists(module: str) -> bool:
        path = REPO / Path(*module.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    missing = [module for module in modules if not exists(module)]

    assert modules
    assert missing == []
