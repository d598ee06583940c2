"""When the proxy's CA stops working (proxy/pki/expiry.py): the chain's first expiry, 30 days ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from city_pki import CityPKI, ca_certificate, name
from cryptography.hazmat.primitives.asymmetric import ec

from citygate.proxy.pki.expiry import expiry_warning, first_to_expire

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return CityPKI(tmp_path_factory.mktemp("city"))


def chain(city: CityPKI, left: timedelta):
    key = ec.generate_private_key(ec.SECP256R1())
    ca = ca_certificate(
        name("citygate proxy CA"),
        key.public_key(),
        city.root,
        city.root_key,
        not_before=NOW - timedelta(days=300),
        not_after=NOW + left,
    )
    return [ca, city.root]


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(days=31), None),
        (timedelta(days=30), None),
        (timedelta(days=29, hours=23), "expires in 29 days, on 2027-03-31 11:00 UTC"),
        (timedelta(days=1, hours=2), "expires in 1 day, on"),
        (timedelta(hours=3), "expires within a day, on 2027-03-01 15:00 UTC"),
        (timedelta(0), "expired on 2027-03-01 12:00 UTC"),
        (-timedelta(days=3), "expired on 2027-02-26 12:00 UTC"),
    ],
)
def test_the_warning_starts_30_days_before(city, left, expected):
    warning = expiry_warning(chain(city, left), NOW)

    if expected is None:
        assert warning is None
    else:
        assert warning is not None
        expired, message = warning
        assert expired is (left <= timedelta(0))
        assert expected in message
        assert "instead of every HTTPS block page" in message if expired else "will then show" in message


def test_mitmproxys_own_ca_is_told_how_to_be_replaced(city):
    key = ec.generate_private_key(ec.SECP256R1())
    own = ca_certificate(name("mitmproxy"), key.public_key(), None, key, not_after=NOW + timedelta(days=2))

    _, message = expiry_warning([own], NOW)

    assert first_to_expire([own]) is own
    assert "replace it with a CA from the city's PKI" in message
    assert "remove mitmproxy-ca*.pem from the confdir" in message
