"""Fixtures for end-to-end tests: local upstream servers and an in-process mitmproxy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from embedded_page import page_server as _serve_page
from harness import PlainUpstream, ProxyRunner, RedirectToUpstream, TestPKI, TlsUpstream

from citygate.addons.fast_path import OPTION as FAST_PATH_OPTION
from citygate.addons.fast_path import FastPath
from citygate.addons.gate import CityGate

_E2E_DIR = Path(__file__).parent

StartProxy = Callable[..., ProxyRunner]

#: Every proxy with a CityGate runs with the fast path, as `citygate run` does by default;
#: `CITYGATE_FAST_PATH=0 pytest tests/e2e` runs them without it (mitmproxy takes every connection).
FAST_PATH_ENV = "CITYGATE_FAST_PATH"


def with_fast_path(
    addons: Sequence[object], options: Mapping[str, Any] | None
) -> tuple[list[object], dict[str, Any]]:
    """The addons and options of a proxy with the fast path on, as `citygate run` adds it:
    after the gate it takes its policy from, its tunnels sent where the redirect sends mitmproxy's."""
    gate = next((addon for addon in addons if isinstance(addon, CityGate)), None)
    if gate is None or any(isinstance(addon, FastPath) for addon in addons):
        return list(addons), dict(options or {})
    redirect = next((addon for addon in addons if isinstance(addon, RedirectToUpstream)), None)
    upstream = redirect.fast_path_target if redirect is not None else None
    return [*addons, FastPath(gate, upstream)], {**(options or {}), FAST_PATH_OPTION: True}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test in this directory starts real servers: mark it e2e even if its module forgot.
    for item in items:
        if _E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def _plain_upstream_server() -> Iterator[PlainUpstream]:
    with PlainUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def _tls_upstream_server(pki: TestPKI) -> Iterator[TlsUpstream]:
    with TlsUpstream(pki) as server:
        yield server


@pytest.fixture
def plain_upstream(_plain_upstream_server: PlainUpstream) -> PlainUpstream:
    """Session-wide HTTP echo server whose records start empty for each test."""
    _plain_upstream_server.reset()
    return _plain_upstream_server


@pytest.fixture
def tls_upstream(_tls_upstream_server: TlsUpstream) -> TlsUpstream:
    """Session-wide HTTPS echo server whose records start empty for each test."""
    _tls_upstream_server.reset()
    return _tls_upstream_server


@pytest.fixture
def redirect_addon(plain_upstream: PlainUpstream, tls_upstream: TlsUpstream) -> RedirectToUpstream:
    """A fresh RedirectToUpstream for the two upstream servers (add it last)."""
    return RedirectToUpstream(plain_upstream.address, tls_upstream.address)


@pytest.fixture(scope="session")
def _mitm_confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared so mitmproxy generates its CA (an RSA key) once per session, not once per test.
    return tmp_path_factory.mktemp("mitmproxy-confdir")


@pytest.fixture
def proxy_runner_factory(pki: TestPKI, _mitm_confdir: Path) -> Iterator[StartProxy]:
    """``start(addons, options=None, **runner_kwargs) -> ProxyRunner``: a started proxy that
    trusts the upstream test CA; stopped at teardown. Start-up errors raise from ``start``."""
    runners: list[ProxyRunner] = []

    def start(
        addons: Sequence[object] = (),
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ProxyRunner:
        if os.environ.get(FAST_PATH_ENV, "1") == "1":
            addons, options = with_fast_path(addons, options)
        kwargs.setdefault("upstream_ca", pki.ca_pem)
        kwargs.setdefault("confdir", _mitm_confdir)
        runner = ProxyRunner(addons, options, **kwargs)
        runners.append(runner)
        return runner.start()

    yield start
    errors = []
    for runner in reversed(runners):
        try:
            runner.stop()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def page_server() -> Iterator[tuple[str, int]]:
    """The city's own web server, with an ordinary page that embeds social content (embedded_page.py)."""
    with _serve_page() as address:
        yield address
