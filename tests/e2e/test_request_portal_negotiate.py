"""The request portal signs people in with Kerberos, as the proxy does, against a real MIT KDC.

The portal has its own principal (`HTTP/requests.test.lan`), whose key is in the proxy's keytab;
clients hold real tickets (kinit) and send `Authorization: Negotiate <token>` made by GSSAPI, as
a browser on a domain PC does. Nobody types a password, and nothing typed decides who they are.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import gssapi
import pytest
import yaml
from demo_config import requests_city
from kdc import PORTAL_HOST, PORTAL_SERVICE, PROXY_HOST, SERVICE
from portal_server import form_value, request_id_of, running_portal

from citygate.directory.problems import ConfigError
from citygate.proxy.policy import load_policy

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
PASSWORDS = {"mnguyen": "mnguyen-krb", "ahernandez": "ahernandez-krb", "nobody": "nobody-krb"}


@pytest.fixture(scope="module")
def keytab(kdc, tmp_path_factory) -> Path:
    """One keytab holding the proxy's key and the portal's, as IT exports it for one host."""
    path = tmp_path_factory.mktemp("keytab") / "citygate.keytab"
    kdc.service_keytab(SERVICE, path)
    return kdc.service_keytab(PORTAL_SERVICE, path)


@pytest.fixture
def config(tmp_path, keytab) -> Path:
    config = requests_city(tmp_path, kerberos_principal=PORTAL_SERVICE)
    document = yaml.safe_load(config.read_text())
    document.setdefault("identity", {})["kerberos"] = {"keytab": str(keytab), "principal": SERVICE}
    config.write_text(yaml.safe_dump(document))
    return config


@pytest.fixture
def portal(config):
    with running_portal(config) as portal:
        yield portal


@pytest.fixture
def ticket(kdc, tmp_path):
    """ticket(user) -> a function making a fresh Negotiate header for the portal from `user`'s ticket."""

    def get(user: str, *, host: str = PORTAL_HOST, principal: str | None = None):
        env = kdc.kinit(principal or user, PASSWORDS.get(user, "other-jlee-krb"), tmp_path / f"{user}.ccache")
        credentials = gssapi.Credentials(usage="initiate", store={"ccache": env["KRB5CCNAME"]})
        target = gssapi.Name(f"HTTP@{host}", gssapi.NameType.hostbased_service)

        def header() -> str:
            context = gssapi.SecurityContext(name=target, creds=credentials, usage="initiate", mech=SPNEGO)
            return "Negotiate " + base64.b64encode(context.step()).decode()

        return header

    return get


def test_the_portal_asks_for_kerberos_first_and_a_password_as_the_fallback(portal):
    status, headers, _ = portal.call(None, "GET", "/request")

    assert status == 401
    assert headers["www-authenticate"] == 'Negotiate, Basic realm="citygate requests", charset="UTF-8"'


def test_an_employee_asks_and_the_director_approves_without_typing_a_password(portal, ticket):
    employee, director = ticket("mnguyen"), ticket("ahernandez")
    form_page = portal.call(None, "GET", "/request?site=www.instagram.com", authorization=employee())[2]
    assert "Minh Nguyen (mnguyen)" in form_page and "Signed in as mnguyen with Kerberos" in form_page
    form = {
        "csrf": form_value(form_page, "csrf"),
        "sites": ["instagram"],
        "purpose": "Post the summer camp schedule",
        "pages": "",
        "until": form_value(form_page, "until"),
    }

    status, headers, _ = portal.call(None, "POST", "/request", form, authorization=employee())

    assert status == 303, headers
    request_id = request_id_of(headers["location"])
    assert request_id in portal.call(None, "GET", "/approvals", authorization=director())[2]
    page = portal.call(None, "GET", f"/approvals/{request_id}", authorization=director())[2]
    decision = {"csrf": form_value(page, "csrf"), "decision": "approve", "reason": ""}
    assert portal.call(None, "POST", f"/approvals/{request_id}", decision, authorization=director())[0] == 303

    grant = {g.request_id: g for g in load_policy(portal.config).grants}[request_id]
    assert (grant.employee, grant.approved_by) == ("mnguyen", "ahernandez")
    evidence = next((portal.config.parent.parent / "log").glob("requests-portal-*")) / "citygate-audit.jsonl"
    records = [json.loads(line) for line in evidence.read_text().splitlines() if line.startswith("{")]
    approval = next(r for r in records if r.get("event.action") == "access-request-approved")
    assert (approval["user.name"], approval["citygate.request.method"]) == ("ahernandez", "negotiate")


def test_a_replayed_token_signs_nobody_in(portal, ticket):
    header = ticket("mnguyen")()
    assert portal.call(None, "GET", "/requests/mine", authorization=header)[0] == 200

    status, headers, page = portal.call(None, "GET", "/requests/mine", authorization=header)

    assert status == 401 and "replayed" in page and headers["www-authenticate"].startswith("Negotiate")


def test_a_ticket_for_another_service_is_refused(portal, ticket):
    # A ticket for the proxy is not one for the portal: each checks its own principal.
    status, _, page = portal.call(
        None, "GET", "/requests/mine", authorization=ticket("mnguyen", host=PROXY_HOST)()
    )

    assert status == 401 and "Kerberos sign-in refused" in page


def test_a_ticket_of_another_realm_is_refused(portal, ticket):
    header = ticket("jlee-other", principal="jlee@OTHER.LAN")()

    status, _, page = portal.call(None, "GET", "/requests/mine", authorization=header)

    assert status == 401 and "realm OTHER.LAN" in page


def test_a_ticket_of_someone_the_directory_does_not_know_is_refused(portal, ticket):
    status, headers, page = portal.call(None, "GET", "/requests/mine", authorization=ticket("nobody")())

    assert status == 403 and "not in the City" in page and "www-authenticate" not in headers


def test_the_portal_s_principal_needs_the_proxy_s_kerberos_settings(tmp_path):
    config = requests_city(tmp_path, kerberos_principal=PORTAL_SERVICE)

    with pytest.raises(
        ConfigError, match=r"requests\.kerberos_principal is set, but identity\.kerberos is not"
    ):
        load_policy(config)
