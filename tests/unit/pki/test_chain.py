"""The CA's chain up to the city's root (proxy/pki/chain.py): built from what the admin gives, and
checked for what browsers refuse, each refusal naming the certificate and the fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from city_pki import CityPKI, ca_certificate, name
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from citygate.proxy.pki.certfiles import PkiError
from citygate.proxy.pki.chain import build_chain, chain_findings, chain_links

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def two_tier(tmp_path_factory):
    return CityPKI(tmp_path_factory.mktemp("two-tier"), issuing=True)


def subordinate(city: CityPKI, **kwargs):
    key = ec.generate_private_key(ec.SECP256R1())
    return ca_certificate(name("citygate proxy CA"), key.public_key(), city.signer, city.signer_key, **kwargs)


def test_the_chain_is_found_whatever_the_order_given(two_tier):
    ca = subordinate(two_tier)

    chain = build_chain(ca, [two_tier.root, two_tier.signer], two_tier.root)

    assert chain == [ca, two_tier.signer, two_tier.root]
    assert chain_links(chain) is None
    assert chain_findings(chain, NOW).errors == []


def test_a_missing_issuing_ca_is_named_with_where_to_find_it(two_tier):
    with pytest.raises(PkiError) as raised:
        build_chain(subordinate(two_tier), [], two_tier.root)

    message = str(raised.value)
    assert "the certificate that issued CN=citygate proxy CA,O=City of Example" in message
    assert "(CN=City of Example Issuing CA 1,O=City of Example) is not among those given" in message
    assert "add it with --chain" in message and "certutil -ca.chain" in message


def test_a_chain_to_another_root_is_refused(two_tier, tmp_path):
    other = CityPKI(tmp_path)

    with pytest.raises(PkiError, match=r"ends at the root CN=City of Example Root CA.*not at the root given"):
        build_chain(subordinate(two_tier), [two_tier.signer, two_tier.root], other.root)


def test_a_root_that_is_not_self_signed_is_refused(two_tier):
    with pytest.raises(PkiError, match=r"the root given \(CN=City of Example Issuing CA 1.*\) is not a root"):
        build_chain(subordinate(two_tier), [], two_tier.signer)


def test_certificates_stored_out_of_order_are_named(two_tier):
    ca = subordinate(two_tier)

    problem = chain_links([ca, two_tier.root, two_tier.signer])

    assert problem is not None
    assert problem.startswith(
        "certificate 2 (CN=City of Example Root CA,O=City of Example) did not issue certificate 1"
    )


@pytest.mark.parametrize(
    ("wrong", "problem"),
    [
        ({"ca": False}, "is not a CA certificate (basicConstraints CA:TRUE is missing)"),
        ({"cert_sign": False}, "may not sign certificates (keyUsage lacks keyCertSign)"),
        ({"usages": [ExtendedKeyUsageOID.CLIENT_AUTH]}, "is limited to other uses than TLS servers"),
        ({"not_before": NOW + timedelta(days=2)}, "is not valid before"),
        (
            {"not_before": NOW - timedelta(days=40), "days": 39},
            "the proxy's CA certificate (CN=citygate proxy CA",
        ),
    ],
    ids=["leaf", "no-cert-sign", "client-auth", "not-yet-valid", "expired"],
)
def test_what_browsers_refuse_in_the_ca_is_an_error(two_tier, wrong, problem):
    chain = [subordinate(two_tier, **wrong), two_tier.signer, two_tier.root]

    found = chain_findings(chain, NOW)

    assert any(problem in error for error in found.errors), found.errors


def test_an_issuing_ca_that_allows_no_subordinate_is_an_error(tmp_path):
    city = CityPKI(tmp_path, issuing=True)
    key = ec.generate_private_key(ec.SECP256R1())
    city.signer = ca_certificate(
        name("Issuing CA"), key.public_key(), city.root, city.root_key, path_length=0
    )
    city.signer_key = key

    found = chain_findings([subordinate(city), city.signer, city.root], NOW)

    assert found.errors == [
        "CN=Issuing CA,O=City of Example allows 0 CA(s) below it (pathlen), but 1 are: browsers refuse "
        "the chain; the CA above citygate's must allow a subordinate CA"
    ]


def test_a_ca_expiring_within_30_days_is_a_warning(two_tier):
    ca = subordinate(two_tier, not_after=NOW + timedelta(days=10, hours=1))

    found = chain_findings([ca, two_tier.signer, two_tier.root], NOW)

    assert found.errors == []
    [warning] = found.warnings
    assert warning.startswith(
        "the proxy's CA certificate (CN=citygate proxy CA,O=City of Example) expires in 10 days"
    )
    assert "citygate ca request, then citygate ca install --replace" in warning


def test_a_root_expiring_before_the_ca_is_the_one_named(tmp_path):
    city = CityPKI(tmp_path, root_days=20)

    found = chain_findings([subordinate(city), city.root], NOW)

    [warning] = found.warnings
    assert warning.startswith(
        "CN=City of Example Root CA,O=City of Example, which issued the proxy's CA "
        "(CN=City of Example Root CA,O=City of Example) expires in 19 days"
    )


def test_name_constraints_are_a_warning_naming_what_is_allowed(two_tier):
    from cryptography import x509

    key = ec.generate_private_key(ec.SECP256R1())
    ca = ca_certificate(name("citygate proxy CA"), key.public_key(), two_tier.signer, two_tier.signer_key)
    constrained = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.issuer)
        .public_key(key.public_key())
        .serial_number(ca.serial_number)
        .not_valid_before(ca.not_valid_before_utc)
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName("facebook.com")], excluded_subtrees=None),
            critical=True,
        )
        .sign(two_tier.signer_key, ca.signature_hash_algorithm)
    )

    found = chain_findings([constrained, two_tier.signer, two_tier.root], NOW)

    assert found.errors == []
    assert found.warnings == [
        "CN=citygate proxy CA,O=City of Example has name constraints: citygate can show the HTTPS block "
        "page only for names under facebook.com"
    ]
