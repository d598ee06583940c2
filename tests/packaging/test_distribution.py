"""What the distribution carries: its license, its changelog, the exact versions it installs,
and its version on the command line; and nothing it should not carry."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CITYGATE = str(Path(sys.executable).parent / "citygate")


def test_the_license_file_is_the_apache_license_the_metadata_names():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # PEP 639's `license` string and `license-files` need setuptools 77.
    [backend] = PYPROJECT["build-system"]["requires"]
    assert re.fullmatch(r"setuptools>=(\d+)", backend) and int(backend.split(">=")[1]) >= 77


def test_the_changelog_has_a_section_for_the_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## [{PYPROJECT['project']['version']}]" in changelog and "## [Unreleased]" in changelog


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_pinned_in_the_constraints_every_install_uses():
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    project = PYPROJECT["project"]
    named = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    assert {_requirement_name(r) for r in named} - pins == set(), (
        "regenerate constraints.txt (see its header)"
    )
    assert "-c constraints.txt" in (REPO / "tools" / "make-venv").read_text()
    assert "install -c constraints.txt ." in (REPO / "Dockerfile").read_text()
    assert "constraints.txt" in (REPO / "Makefile").read_text()  # a changed pin rebuilds the venv


def test_no_large_or_binary_third_party_file_is_committed():
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    assert not [name for name in tracked if name.endswith((".whl", ".tar.gz", ".zip", ".egg"))]
    large = [
        name
        for name in tracked
        if name and (REPO / name).is_file() and (REPO / name).stat().st_size > 1 << 20
    ]
    assert large == []


def test_version_names_the_installed_release():
    result = subprocess.run([CITYGATE, "--version"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0
    assert result.stdout.startswith(f"citygate {PYPROJECT['project']['version']} (mitmproxy ")
