"""The `directory` fixture: every Directory backend, loaded with directory/demo.ldif.

To run the contract against a new backend, add one line to BACKENDS. A factory gets the
pytest request, so it can pull in other fixtures (e.g. a running slapd) with
`request.getfixturevalue(...)`.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from citygate.directory.model import Directory
from citygate.directory.static import StaticDirectory

DEMO_LDIF = Path(__file__).resolve().parents[2] / "directory" / "demo.ldif"


def make_static(request: pytest.FixtureRequest) -> Directory:
    return StaticDirectory.from_ldif(DEMO_LDIF)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Directory]] = {
    "static": make_static,
}


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def directory(request: pytest.FixtureRequest) -> Directory:
    return BACKENDS[request.param](request)
