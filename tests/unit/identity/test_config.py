"""The `identity:` section: SSO issuers and the source-address map, with file:line:fix errors."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from sso import Signer

from citygate.proxy.identity.config import IdentitySettings
from citygate.proxy.identity.tokens import DEFAULT_ALGORITHMS
from citygate.proxy.policy import load_policy

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "config" / "citygate.yaml"
FIRST_LINE = 12  # MINI_CONFIG has 11 lines; the identity section starts after it


@pytest.fixture(scope="module")
def rsa_signer() -> Signer:
    return Signer("rsa", kid="rsa-2026")


@pytest.fixture(scope="module")
def ec_signer() -> Signer:
    return Signer("ec", kid="ec-2026")


def identity(policy_files, section: str) -> IdentitySettings:
    policy = policy_files.load(config=policy_files.mini_config + section)
    return policy.features.identity


def problems(policy_files, section: str) -> list[str]:
    return [str(p) for p in policy_files.problems(config=policy_files.mini_config + section)]


def test_without_the_section_only_basic_is_accepted(policy_files):
    settings = identity(policy_files, "")
    assert settings == IdentitySettings()
    assert not settings.bearer_enabled
    assert settings.source_for("127.0.0.1") is None
    assert load_policy(DEMO_CONFIG).features.identity == IdentitySettings()


def test_the_commented_example_in_the_demo_config_is_valid(policy_files, tmp_path):
    """The example network admins copy from config/citygate.yaml must load when uncommented."""
    text = DEMO_CONFIG.read_text()
    match = re.search(r"^# identity:\n(?:#.*\n)+", text, re.MULTILINE)
    assert match, "config/citygate.yaml should carry a commented-out identity: example"
    block = "".join(line.removeprefix("#").removeprefix(" ") + "\n" for line in match.group(0).splitlines())
    # Its PEM key file and the CA file are the admin's own: stand-ins for loading.
    (policy_files.root / "keys").mkdir(parents=True)
    (policy_files.root / "keys" / "adfs-signing.pem").write_bytes(Signer("rsa").public_pem())
    settings = identity(policy_files, block)
    assert settings.bearer_enabled
    assert settings.issuers[0].issuer == "https://sso.example.gov/realms/city"
    assert settings.sources, "the example should show the source-address map"


def test_a_full_issuer_entry(policy_files, rsa_signer, ec_signer):
    keys = policy_files.root / "keys"
    keys.mkdir(parents=True)
    (keys / "rsa.pem").write_bytes(rsa_signer.public_pem())
    (keys / "ec.pem").write_bytes(ec_signer.public_pem())
    settings = identity(
        policy_files,
        """\
identity:
  max_token_bytes: 8192
  issuers:
    - issuer: https://sso.example.gov/realms/city
      audience: citygate
      jwks_url: https://sso.example.gov/realms/city/protocol/openid-connect/certs
    - issuer: https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0
      audience: [api://citygate, 6e74172b-be56-4843-9ff4-e66a39bb12e3]
      keys: [keys/rsa.pem, {file: keys/ec.pem, kid: ec-2026}]
      algorithms: [RS256, ES256]
      claim: [preferred_username, upn]
      strip_domain: "@City.Example"
      required_claims: [tid]
      leeway_seconds: 30
      jwks_refresh_seconds: 120
""",
    )
    keycloak, entra = settings.issuers
    assert settings.max_token_bytes == 8192
    assert keycloak.audiences == ("citygate",)
    assert keycloak.algorithms == DEFAULT_ALGORITHMS == ("RS256", "ES256", "EdDSA")
    assert keycloak.claims == ("preferred_username",)
    assert keycloak.leeway == 60 and keycloak.jwks_refresh == 60 and keycloak.jwks_max_age == 3600
    assert keycloak.keys == ()
    assert entra.audiences == ("api://citygate", "6e74172b-be56-4843-9ff4-e66a39bb12e3")
    assert [(k.kid, k.fits("RS256"), k.fits("ES256")) for k in entra.keys] == [
        (None, True, False),
        ("ec-2026", False, True),
    ]
    assert entra.claims == ("preferred_username", "upn")
    assert entra.strip_domains == ("city.example",)
    assert entra.required_claims == ("tid",)
    assert (entra.leeway, entra.jwks_refresh) == (30, 120)
    assert entra.jwks_url is None
    assert settings.issuer(keycloak.issuer) is keycloak
    assert settings.issuer("https://evil.example/") is None


def test_a_jwks_url_on_this_machine_may_be_plain_http(policy_files):
    settings = identity(
        policy_files,
        "identity:\n  issuers:\n    - {issuer: x, audience: y, jwks_url: 'http://127.0.0.1:8081/certs'}\n",
    )
    assert settings.issuers[0].jwks_url == "http://127.0.0.1:8081/certs"


def test_a_shared_secret_issuer_must_be_explicit_and_long(policy_files):
    (policy_files.root).mkdir(parents=True)
    (policy_files.root / "hmac.key").write_text("k" * 48 + "\n")
    settings = identity(
        policy_files,
        "identity:\n  issuers:\n    - {issuer: x, audience: y, algorithms: [HS256], secret_file: hmac.key}\n",
    )
    (key,) = settings.issuers[0].keys
    assert key.key == b"k" * 48 and key.fits("HS256") and not key.fits("RS256")


@pytest.mark.parametrize(
    ("entry", "line", "message", "fix"),
    [
        pytest.param(
            "{issuer: x, jwks_url: 'https://a.example/k'}",
            2,
            'issuer "x" has no audience',
            "app id URI",
            id="no-audience",
        ),
        pytest.param(
            "{audience: y, jwks_url: 'https://a.example/k'}",
            2,
            "needs issuer",
            "e.g. issuer:",
            id="no-issuer",
        ),
        pytest.param(
            "{issuer: x, audience: y}", 2, "has no keys to check signatures with", "jwks_url", id="no-keys"
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', algorithms: [RS256, none]}",
            2,
            'algorithm "none" is never accepted',
            "unsigned token proves nothing",
            id="alg-none",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', algorithms: [rs256]}",
            2,
            'unknown algorithm "rs256"',
            'did you mean "RS256"?',
            id="alg-case",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', algorithms: [RS256, HS256]}",
            2,
            "mixes shared-secret (HS256) and public-key (RS256)",
            "algorithm-confusion",
            id="mixed-algorithms",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', algorithms: [HS256]}",
            2,
            "checked with secret_file only",
            "a public key is never used as a shared secret",
            id="hs256-with-jwks",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'http://sso.example.gov/k'}",
            2,
            "is not an https:// address",
            "swapped on the way",
            id="plain-http-jwks",
        ),
        pytest.param(
            "{issuer: 'https://login.microsoftonline.com/<tenant>/v2.0', audience: y, jwks_url: 'https://a.example/k'}",
            2,
            "still holds a placeholder",
            "<...>",
            id="placeholder",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', leeway_seconds: 3600}",
            2,
            "leeway_seconds 3600 is not a number from 0 to 300",
            "leeway_seconds: 60",
            id="leeway",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', jwks_refresh_seconds: 0}",
            2,
            "jwks_refresh_seconds 0 is not a number of at least 1",
            "jwks_refresh_seconds: 60",
            id="refresh-interval",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', audiences: z}",
            2,
            'unknown issuer setting "audiences"',
            "known settings: issuer, audience",
            id="typo",
        ),
        pytest.param(
            "{issuer: x, audience: y, jwks_url: 'https://a.example/k', strip_domain: 'a@b'}",
            2,
            'strip_domain "a@b" is not a domain',
            "strip_domain: city.example",
            id="strip-domain",
        ),
    ],
)
def test_issuer_mistakes_name_file_line_and_fix(policy_files, entry, line, message, fix):
    found = problems(policy_files, f"identity:\n  issuers:\n    - {entry}\n")
    config = policy_files.config
    matching = [p for p in found if message in p]
    assert matching, found
    assert matching[0].startswith(f"{config}:{FIRST_LINE + line}: "), matching
    assert fix in matching[0]


def test_duplicate_issuers_and_unknown_settings(policy_files):
    found = problems(
        policy_files,
        """\
identity:
  issuer:
    - {issuer: x, audience: y, jwks_url: 'https://a.example/k'}
  issuers:
    - {issuer: x, audience: y, jwks_url: 'https://a.example/k'}
    - {issuer: x, audience: z, jwks_url: 'https://a.example/k'}
""",
    )
    config = policy_files.config
    assert (
        f'{config}:{FIRST_LINE + 1}: unknown setting "identity.issuer"; known settings: sign_in, kerberos, issuers'
        in found[0]
    )
    assert any(p.startswith(f'{config}:{FIRST_LINE + 5}: issuer "x" is configured twice') for p in found)


def test_key_files_are_checked_when_the_config_loads(policy_files, ec_signer):
    keys = policy_files.root / "keys"
    keys.mkdir(parents=True)
    (keys / "ec.pem").write_bytes(ec_signer.public_pem())
    (keys / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    (keys / "junk.pem").write_text("hello\n")
    (keys / "short.key").write_text("too-short\n")
    (keys / "public-as-secret.key").write_bytes(ec_signer.public_pem())
    found = problems(
        policy_files,
        """\
identity:
  issuers:
    - issuer: a
      audience: y
      keys:
        - keys/ec.pem
        - keys/private.pem
        - keys/junk.pem
        - keys/missing.pem
    - {issuer: b, audience: y, algorithms: [HS256], secret_file: keys/short.key}
    - {issuer: c, audience: y, algorithms: [HS256], secret_file: keys/public-as-secret.key}
""",
    )
    config = policy_files.config
    text = "\n".join(found)
    # ES256 is allowed by default (RS256, ES256, EdDSA): the EC key is fine.
    assert f"{keys / 'ec.pem'}:" not in text
    assert f'{config}:{FIRST_LINE + 6}: issuer "a": {keys / "private.pem"}: this is a private key' in text
    assert f'{config}:{FIRST_LINE + 7}: issuer "a": {keys / "junk.pem"}: not a PEM public key' in text
    assert f'{config}:{FIRST_LINE + 8}: issuer "a": {keys / "missing.pem"}: cannot read the key file' in text
    assert f'{config}:{FIRST_LINE + 9}: issuer "b": secret_file {keys / "short.key"} holds 9 bytes' in text
    assert (
        f'{config}:{FIRST_LINE + 10}: issuer "c": secret_file {keys / "public-as-secret.key"} holds a public key'
        in text
    )


def test_a_key_no_listed_algorithm_uses_is_an_error(policy_files, ec_signer):
    (policy_files.root).mkdir(parents=True)
    (policy_files.root / "ec.pem").write_bytes(ec_signer.public_pem())
    found = problems(
        policy_files,
        "identity:\n  issuers:\n    - {issuer: a, audience: y, algorithms: [RS256], keys: [ec.pem]}\n",
    )
    assert any("is an EC P-256 key and no listed algorithm (RS256) uses it" in p for p in found), found


# --- source addresses ----------------------------------------------------------------------------


def test_source_addresses_most_specific_first(policy_files):
    settings = identity(
        policy_files,
        """\
identity:
  source_addresses:
    - {address: 10.40.2.0/24, role: library-kiosk}
    - {address: 10.40.2.17, employee: JLee, note: the Parks office signage PC}
    - {address: "2001:db8:40::/48", role: library-kiosk}
""",
    )
    assert [str(rule.network) for rule in settings.sources] == [
        "10.40.2.17/32",
        "10.40.2.0/24",
        "2001:db8:40::/48",
    ]
    assert settings.source_for("10.40.2.17").employee == "jlee"
    assert settings.source_for("10.40.2.18").role == "library-kiosk"
    assert settings.source_for("::ffff:10.40.2.17").employee == "jlee"  # dual-stack listener
    assert settings.source_for("2001:db8:40::9").role == "library-kiosk"
    assert settings.source_for("fe80::1%eth0") is None
    assert settings.source_for("10.40.3.1") is None
    assert settings.source_for("not an address") is None
    assert settings.source_for(None) is None
    assert settings.sources[0].network == ipaddress.ip_network("10.40.2.17/32")


@pytest.mark.parametrize(
    ("entry", "message", "fix"),
    [
        (
            "{address: 10.40.2.5/24, role: kiosk}",
            "10.40.2.5/24 has host bits set",
            "did you mean 10.40.2.0/24?",
        ),
        ("{address: 10.40.2.300, role: kiosk}", '"10.40.2.300" is not an IP address or network', "e.g."),
        (
            "{address: 10.40.2.5, role: kiosk, employee: jlee}",
            "needs exactly one of employee: or role:",
            "e.g.",
        ),
        ("{address: 10.40.2.5}", "needs exactly one of employee: or role:", "e.g."),
        ("{role: kiosk}", "needs address:", "e.g."),
        ("{address: 10.40.2.5, role: 'library kiosk'}", "role must be one name without spaces", "e.g."),
        ("{address: 10.40.2.5, user: jlee}", 'unknown source_addresses setting "user"', "known settings"),
    ],
)
def test_source_address_mistakes(policy_files, entry, message, fix):
    found = problems(policy_files, f"identity:\n  source_addresses:\n    - {entry}\n")
    matching = [p for p in found if message in p]
    assert matching, found
    assert matching[0].startswith(f"{policy_files.config}:{FIRST_LINE + 2}: ")
    assert fix in matching[0]


def test_a_source_address_listed_twice(policy_files):
    found = problems(
        policy_files,
        "identity:\n  source_addresses:\n    - {address: 10.0.0.1, role: a}\n    - {address: 10.0.0.1/32, employee: b}\n",
    )
    assert found == [
        f"{policy_files.config}:{FIRST_LINE + 3}: address 10.0.0.1/32 is listed twice; keep one entry per address or network"
    ]


def test_the_sign_in_page_host_defaults_to_a_reserved_name_and_can_be_named(policy_files):
    assert identity(policy_files, "").sign_in_host == "sign-in.citygate.invalid"
    named = identity(policy_files, "identity:\n  sign_in_host: Sign-In.City.Example.\n")
    assert named.sign_in_host == "sign-in.city.example"


@pytest.mark.parametrize("value", ["localhost", "10.1.2.3", "sign-in.city.example:8080", "[x]", "42"])
def test_a_sign_in_host_that_is_not_a_dotted_name_is_refused_with_the_fix(policy_files, value):
    found = problems(policy_files, f"identity:\n  sign_in_host: '{value}'\n")
    config = policy_files.config
    assert len(found) == 1, found
    assert found[0].startswith(f"{config}:{FIRST_LINE + 1}: identity.sign_in_host ")
    assert "is not a host name with a dot" in found[0]
    assert "not in pac.direct_domains" in found[0] and "sign-in.citygate.invalid" in found[0]


def test_a_sign_in_host_the_pac_file_sends_around_the_proxy_is_refused(policy_files):
    found = problems(
        policy_files,
        "identity:\n  sign_in_host: sign-in.city.example\npac:\n  direct_domains: ['.city.example']\n",
    )
    assert found == [
        f"{policy_files.config}:{FIRST_LINE + 1}: the sign-in page's host sign-in.city.example is in "
        "pac.direct_domains (.city.example), so browsers would not send it to the proxy; set "
        "identity.sign_in_host to a host outside pac.direct_domains, e.g. sign-in.citygate.invalid"
    ]
    assert problems(
        policy_files, "pac:\n  direct_domains: ['.city.example', 'sign-in.citygate.invalid']\n"
    ) == [
        f"{policy_files.config}:{FIRST_LINE + 1}: the sign-in page's host sign-in.citygate.invalid is in "
        "pac.direct_domains (sign-in.citygate.invalid), so browsers would not send it to the proxy; set "
        "identity.sign_in_host to a host outside pac.direct_domains, e.g. sign-in.citygate.invalid"
    ]
    # Only the name itself, or a dotted domain above it, sends it around the proxy.
    settings = policy_files.load(
        config=policy_files.mini_config + "pac:\n  direct_domains: [citygate.invalid]\n"
    )
    assert settings.features.identity.sign_in_host == "sign-in.citygate.invalid"
