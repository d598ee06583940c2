"""The `directory` fixture: every Directory backend, loaded with directory/demo.ldif.

To run the contract against a new backend, add one line to BACKENDS. A factory gets the
pytest request, so it can pull in other fixtures (e.g. a running slapd) with
`request.getfixturevalue(...)`.
"""

from collections.abc import Callable
from pathlib import Path

import pytest
from slapd import directory_options

from citygate.directory.backends import open_directory
from citygate.directory.model import Directory
from citygate.directory.settings import DirectorySettings
from citygate.directory.static import StaticDirectory

DEMO_LDIF = Path(__file__).resolve().parents[2] / "directory" / "demo.ldif"


def make_static(request: pytest.FixtureRequest) -> Directory:
    return StaticDirectory.from_ldif(DEMO_LDIF)


def make_ldap(preset: str, **overrides: object) -> Callable[[pytest.FixtureRequest], Directory]:
    """The LDAP backend, opened from a config section like citygate's, on the session slapd."""

    def make(request: pytest.FixtureRequest) -> Directory:
        server = request.getfixturevalue("slapd")
        folder = request.getfixturevalue("tmp_path_factory").mktemp("ldap-contract")
        options = directory_options(server, folder, preset, **overrides)
        return open_directory(DirectorySettings("ldap", options, folder), str(folder / "citygate.yaml"))

    return make


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Directory]] = {
    "static": make_static,
    "ldap": make_ldap("openldap"),
    "ldap-ad": make_ldap("active-directory"),
    # Where memberOf is absent: groups found by searching the groups' member attribute.
    "ldap-group-search": make_ldap("openldap", groups="search"),
}


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def directory(request: pytest.FixtureRequest) -> Directory:
    return BACKENDS[request.param](request)
