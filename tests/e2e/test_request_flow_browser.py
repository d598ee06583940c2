"""The Social Media Request Form from the block page to a working grant, as people use it.

Everything is real: headless Chromium (Debian's), signed in to the proxy and to the portal with
Kerberos tickets from the session's MIT KDC, as on a domain PC; the directory is a real OpenLDAP
slapd; the portal is `citygate portal` in its own process; the mail goes over SMTP with STARTTLS
to aiosmtpd; the proxy reloads its grant files as in production (the ConfigWatcher).

The employee is blocked on Instagram, follows "Request access", submits the form; the Director
of Parks gets the email, opens its link, approves; within the reload interval the employee's
next visit passes under the new grant; the employee gets the decision email; `citygate audit
verify` passes over the proxy's and the portal's records, the approval among them.

With CITYGATE_SCREENSHOTS=<folder>, the pages are also saved there at 1280 and 390 px wide
(the README's screenshots: `make screenshots`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from browser import Browser, spki_of
from demo_config import demo_config
from harness import RedirectToUpstream
from kdc import PORTAL_HOST, PORTAL_SERVICE, PROXY_HOST, SERVICE
from portal_server import CITYGATE, running_portal
from slapd import directory_options, free_port
from smtp import SmtpServer, email_settings

from citygate.addons.audit import AuditLog
from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate
from citygate.addons.reload import ConfigWatcher
from citygate.proxy.identity.sign_in_page import DEFAULT_SIGN_IN_HOST, sign_in_location

PASSWORDS = {"mnguyen": "mnguyen-krb", "ahernandez": "ahernandez-krb"}
BLOCKED = "https://www.instagram.com/CityOfExampleParks"
RELOAD_MS = 200
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def keytab(kdc, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keytab") / "citygate.keytab"
    kdc.service_keytab(SERVICE, path)
    return kdc.service_keytab(PORTAL_SERVICE, path)


@pytest.fixture
def smtp_server(tmp_path):
    with SmtpServer(tmp_path / "smtp") as server:
        yield server


def mail_to(server: SmtpServer, address: str, timeout: float = 10.0):
    """The mail `address` received, once there is some (the portal sends as soon as it can)."""
    deadline = time.monotonic() + timeout
    while not server.to(address) and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.to(address)


@pytest.fixture
def city(tmp_path, keytab, fresh_slapd, smtp_server):
    """The demo city on slapd, with Kerberos sign-in, access requests, mail, and the portal's port."""
    portal_port = free_port()
    config = demo_config(
        tmp_path,
        directory={"backend": "ldap", **directory_options(fresh_slapd, tmp_path / "ldap", "openldap")},
        identity={"sign_in": ["negotiate"], "kerberos": {"keytab": str(keytab), "principal": SERVICE}},
        audit={"directory": str(tmp_path / "log")},
        requests={
            "enabled": True,
            "database": str(tmp_path / "requests.sqlite"),
            "portal_url": f"http://{PORTAL_HOST}:{portal_port}",
            "kerberos_principal": PORTAL_SERVICE,
            "email": email_settings(smtp_server, tmp_path),
        },
    )
    return config, portal_port


def screenshots(tab, name: str) -> None:
    folder = os.environ.get("CITYGATE_SCREENSHOTS")
    if not folder:
        return
    for width in WIDTHS:
        tab.resize(width, 900)
        tab.screenshot(Path(folder) / f"{name}-{width}.png")
    tab.resize(WIDTHS[0], 900)


@contextlib.contextmanager
def signed_in_browser(proxy, portal_port: int, kdc, tmp_path, user: str) -> Iterator[Browser]:
    """A Chromium holding `user`'s ticket, as on their domain PC; closed when the block ends."""
    env = kdc.kinit(user, PASSWORDS[user], tmp_path / f"{user}.ccache")
    with Browser(
        proxy=f"{PROXY_HOST}:{proxy.port}",
        host_resolver_rules=f"MAP {PROXY_HOST} 127.0.0.1, MAP {PORTAL_HOST} 127.0.0.1",
        trusted_spki=[spki_of(proxy.ca_pem)],
        negotiate_policy=True,
        # The portal is on the city's network, reached directly (in a city: pac.direct_domains).
        extra_args=[f"--proxy-bypass-list={PORTAL_HOST}"],
        env=env,
    ) as browser:
        _warm_up(browser, portal_port)
        yield browser


def _warm_up(browser: Browser, portal_port: int) -> None:
    # Chromium creates no Negotiate handler for the first challenge of its session (see
    # test_browser_negotiate.py): the browser signs in once, as one in use would have.
    # Once it has, it signs in to the proxy and the portal without a prompt.
    for _ in range(4):
        if browser.open(f"http://{PORTAL_HOST}:{portal_port}/requests/mine").status == 200:
            break
    for _ in range(4):
        if browser.open(sign_in_location(DEFAULT_SIGN_IN_HOST, BLOCKED)).status == 403:  # the block page
            break
    browser.auth_challenges.clear()


def visit(browser: Browser, tab, url: str):
    """Open `url` in `tab`: Chromium may fail a new tab's first Negotiate challenge as it fails a
    session's first (a 401 or 407 page, or ERR_PROXY_AUTH_UNSUPPORTED, with the password dialog
    it falls back to); a person would reload, and the reload signs in without one."""
    for _ in range(3):
        load = tab.goto(url)
        if load.status not in (None, 401, 407):
            break
        browser.auth_challenges.clear()
    return load


def test_blocked_request_approve_and_reach_the_site(
    city, kdc, tmp_path, proxy_runner_factory, page_server, tls_upstream, smtp_server
):
    config, portal_port = city
    log = tmp_path / "log"
    proxy = proxy_runner_factory(
        [
            CityGate(),
            AuditLog(),
            DecisionLog(),
            ConfigWatcher(),
            RedirectToUpstream(page_server, tls_upstream.address),
        ],
        {
            "citygate_config": str(config),
            "citygate_audit_directory": str(log),
            "citygate_reload_interval_ms": RELOAD_MS,
        },
    )
    with (
        running_portal(config, portal_port),
        signed_in_browser(proxy, portal_port, kdc, tmp_path, "mnguyen") as employee,
        signed_in_browser(proxy, portal_port, kdc, tmp_path, "ahernandez") as director,
        employee.tab() as tab,
    ):
        # Blocked, with the way to ask on the block page.
        blocked = visit(employee, tab, BLOCKED)
        assert blocked.status == 403 and "Request access" in blocked.text, blocked.text
        screenshots(tab, "block-page")

        # The form, filled in from the directory by who the ticket says the employee is.
        form = tab.act("document.querySelector('a.request').click()")
        assert form.status == 200, form.text
        assert "Minh Nguyen (mnguyen)" in form.text and "Recreation Specialist" in form.text
        assert tab.evaluate("document.querySelector('input[value=instagram]').checked") == "True"
        tab.fill(
            {"purpose": "Post the summer camp schedule on the Parks account", "pages": "/CityOfExampleParks"}
        )
        screenshots(tab, "request-form")
        mine = tab.act("document.querySelector('form button[type=submit]').click()")
        assert mine.status == 200 and "pending" in mine.text, mine.text
        request_id = re.search(r"req-\d{4}-\d{4}", mine.text).group(0)
        assert employee.auth_challenges == [] and employee.dialogs == []  # no password was asked for

        # The Director of Parks (and nobody else) is told, with a link to the request.
        [to_director] = mail_to(smtp_server, "ahernandez@city.example")
        assert request_id in to_director.message["Subject"] and to_director.encrypted
        assert {r.recipients for r in smtp_server.received} == {("ahernandez@city.example",)}
        link = re.search(r"https?://\S+/approvals/req-\S+", to_director.body).group(0)
        with director.tab() as approvals:
            listed = visit(director, approvals, f"http://{PORTAL_HOST}:{portal_port}/approvals")
            assert request_id in listed.text, listed.text
            screenshots(approvals, "approvals")
            page = approvals.goto(link)
            assert page.status == 200 and "Post the summer camp schedule" in page.text, page.text
            screenshots(approvals, "approval-page")
            decided = approvals.act("document.querySelector('button[value=approve]').click()")
            assert decided.status == 200 and "approved by ahernandez" in decided.text, decided.text
        assert director.auth_challenges == [] and director.dialogs == []

        # Within the reload interval, the employee's next visit passes under the new grant.
        deadline = time.monotonic() + 10
        while (status := visit(employee, tab, BLOCKED).status) != 200 and time.monotonic() < deadline:
            time.sleep(RELOAD_MS / 1000)
        assert status == 200
        [decision] = mail_to(smtp_server, "mnguyen@city.example")
        assert "approved" in decision.message["Subject"].lower() and request_id in decision.body

    grant_id = "grant-" + request_id.removeprefix("req-")
    granted = [
        json.loads(line)
        for path in log.rglob("citygate-audit.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert any(r.get("rule.id") == grant_id and r.get("user.name") == "mnguyen" for r in granted), granted
    verified = subprocess.run(
        [CITYGATE, "audit", "verify", str(log)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    actions = [r.get("event.action") for r in granted if r.get("citygate.request.id") == request_id]
    assert "access-request-approved" in actions, actions
    assert yaml.safe_load((config.parent / "grants" / "parks.yaml").read_text())
