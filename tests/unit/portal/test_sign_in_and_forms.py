"""The portal's sign-in rule (a password only over TLS or from this machine) and its form tokens."""

from __future__ import annotations

import base64

from starlette.requests import Request

from citygate.proxy.portal.auth import NotSignedIn, credentials
from citygate.proxy.portal.csrf import MAX_AGE_SECONDS, token_for, token_is_valid

BASIC = b"Basic " + base64.b64encode(b"jlee:jlee-pass")


def request(client: str, scheme: str = "http", authorization: bytes | None = BASIC) -> Request:
    headers = [(b"authorization", authorization)] if authorization else []
    return Request(
        {"type": "http", "scheme": scheme, "client": (client, 50000), "headers": headers, "path": "/"}
    )


def test_a_password_is_read_over_tls_or_from_this_machine_only():
    assert credentials(request("127.0.0.1")) == ("jlee", "jlee-pass")
    assert credentials(request("::1")) == ("jlee", "jlee-pass")
    assert credentials(request("10.20.7.15", scheme="https")) == ("jlee", "jlee-pass")

    refused = credentials(request("10.20.7.15"))

    assert isinstance(refused, NotSignedIn) and not refused.ask
    assert "only over HTTPS" in refused.why


def test_missing_or_unreadable_credentials_ask_again():
    for authorization in (None, b"Basic !!!", b"Bearer abc", b"Basic " + base64.b64encode(b"jlee")):
        answer = credentials(request("127.0.0.1", authorization=authorization))
        assert isinstance(answer, NotSignedIn) and answer.ask, authorization


def test_a_form_token_is_for_one_person_and_a_working_day():
    secret, now = b"s" * 32, 1_800_000_000.0
    token = token_for(secret, "ahernandez", now)

    assert token_is_valid(secret, "AHernandez", token, now + 60)
    assert not token_is_valid(secret, "mnguyen", token, now + 60)  # someone else's form
    assert not token_is_valid(secret, "ahernandez", token, now + MAX_AGE_SECONDS + 1)  # too old
    assert not token_is_valid(b"t" * 32, "ahernandez", token, now + 60)  # another portal's secret
    issued, mac = token.split(".")
    assert not token_is_valid(secret, "ahernandez", f"{int(issued) + 1}.{mac}", now + 60)  # tampered
    assert not token_is_valid(secret, "ahernandez", "", now)
