"""The portal's sign-in rules (Kerberos anywhere, a password only over TLS or from this machine)
and its form tokens."""

from __future__ import annotations

import base64

from starlette.requests import Request

from citygate.proxy.portal.auth import NegotiateToken, NotSignedIn, Password, challenges, credentials
from citygate.proxy.portal.csrf import MAX_AGE_SECONDS, token_for, token_is_valid

BASIC = b"Basic " + base64.b64encode(b"jlee:jlee-pass")


def request(client: str, scheme: str = "http", authorization: bytes | None = BASIC) -> Request:
    headers = [(b"authorization", authorization)] if authorization else []
    return Request(
        {"type": "http", "scheme": scheme, "client": (client, 50000), "headers": headers, "path": "/"}
    )


def test_a_password_is_read_over_tls_or_from_this_machine_only():
    for negotiate in (False, True):
        assert credentials(request("127.0.0.1"), negotiate) == Password("jlee", "jlee-pass")
        assert credentials(request("::1"), negotiate) == Password("jlee", "jlee-pass")
        assert credentials(request("10.20.7.15", scheme="https"), negotiate) == Password("jlee", "jlee-pass")

    refused = credentials(request("10.20.7.15"), negotiate=False)

    assert isinstance(refused, NotSignedIn) and not refused.ask
    assert "only over HTTPS" in refused.why


def test_over_plain_http_from_another_machine_only_kerberos_is_asked_for():
    plain = request("10.20.7.15")

    refused = credentials(plain, negotiate=True)

    assert isinstance(refused, NotSignedIn) and refused.ask  # a 401 that asks for a ticket
    assert challenges(plain, negotiate=True) == ["Negotiate"]  # never a password in the clear
    assert challenges(request("127.0.0.1", authorization=None), negotiate=True) == [
        "Negotiate",
        'Basic realm="citygate requests", charset="UTF-8"',
    ]
    assert challenges(request("127.0.0.1", authorization=None), negotiate=False) == [
        'Basic realm="citygate requests", charset="UTF-8"'
    ]


def test_a_negotiate_token_is_taken_only_where_kerberos_is_set_up():
    header = b"Negotiate YIIC"
    assert credentials(request("10.20.7.15", authorization=header), negotiate=True) == NegotiateToken("YIIC")

    without = credentials(request("127.0.0.1", authorization=header), negotiate=False)

    assert isinstance(without, NotSignedIn) and without.ask


def test_missing_or_unreadable_credentials_ask_again():
    for authorization in (None, b"Basic !!!", b"Bearer abc", b"Basic " + base64.b64encode(b"jlee")):
        answer = credentials(request("127.0.0.1", authorization=authorization), negotiate=False)
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
