"""The `identity:` config section: sign-in schemes, Kerberos, SSO token issuers, the source-address map.

`sign_in` lists the schemes a 407 offers (Negotiate, Basic). Without this section, social-media
requests are signed in with directory passwords (Basic) only, except under the
`active-directory` directory preset, whose default is Negotiate then Basic and which therefore
needs `kerberos:` (the proxy's keytab and service principal). Issuers and source addresses are
optional and off by default. The section is parsed when the config loads (and by
`citygate check`); every mistake names the file, the line and the fix. PEM key files and shared
secrets are read here too, so a bad key stops the proxy from starting instead of failing on the
first token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from citygate.directory.problems import Problems
from citygate.proxy.hosts import normalize_host
from citygate.proxy.identity.sign_in_page import DEFAULT_SIGN_IN_HOST
from citygate.proxy.identity.tokens import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_ALGORITHMS,
    MIN_RSA_BITS,
    MIN_SECRET_BYTES,
    SUPPORTED_ALGORITHMS,
    SYMMETRIC_ALGORITHMS,
    PublicKey,
    VerificationKey,
    describe_key,
)
from citygate.proxy.yamlfile import Items, Node

SECTION = "identity"
DEFAULT_MAX_TOKEN_BYTES = 16384
DEFAULT_CLAIMS = ("preferred_username",)
DEFAULT_LEEWAY_SECONDS = 60
MAX_LEEWAY_SECONDS = 300
DEFAULT_JWKS_REFRESH_SECONDS = 60
DEFAULT_JWKS_MAX_AGE_SECONDS = 3600
DEFAULT_JWKS_TIMEOUT_SECONDS = 5

SECTION_KEYS = ("sign_in", "kerberos", "issuers", "source_addresses", "max_token_bytes", "sign_in_host")
NEGOTIATE, BASIC = "negotiate", "basic"
SIGN_IN_SCHEMES = (NEGOTIATE, BASIC)
DEFAULT_SIGN_IN = (BASIC,)
ACTIVE_DIRECTORY_SIGN_IN = (NEGOTIATE, BASIC)
KERBEROS_KEYS = ("keytab", "principal", "realms")
_SIGN_IN_FIX = "use sign_in: [negotiate], [negotiate, basic] or [basic]"
_KERBEROS_FIX = "add identity.kerberos.keytab and principal, or set identity.sign_in: [basic]"
ISSUER_KEYS = (
    "issuer",
    "audience",
    "jwks_url",
    "keys",
    "secret_file",
    "algorithms",
    "claim",
    "strip_domain",
    "required_claims",
    "leeway_seconds",
    "jwks_refresh_seconds",
    "jwks_max_age_seconds",
    "jwks_timeout_seconds",
    "ca_file",
)
SOURCE_KEYS = ("address", "employee", "role", "note")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

_ISSUER_FIX = "see README, Single sign-on tokens: e.g. issuers: [{issuer: https://sso.example.gov/realms/city, audience: citygate, jwks_url: https://sso.example.gov/realms/city/protocol/openid-connect/certs}]"


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    """One identity provider whose tokens name employees."""

    issuer: str  # compared exactly with the token's "iss"
    audiences: tuple[str, ...]  # the token's "aud" must name one of these
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwks_url: str | None = None
    keys: tuple[VerificationKey, ...] = ()  # from PEM files, or the shared secret
    claims: tuple[str, ...] = DEFAULT_CLAIMS  # the first one present names the employee
    strip_domains: tuple[str, ...] = ()  # lower-case, without "@"
    required_claims: tuple[str, ...] = ()
    leeway: float = DEFAULT_LEEWAY_SECONDS
    jwks_refresh: float = DEFAULT_JWKS_REFRESH_SECONDS
    jwks_max_age: float = DEFAULT_JWKS_MAX_AGE_SECONDS
    jwks_timeout: float = DEFAULT_JWKS_TIMEOUT_SECONDS
    ca_file: Path | None = None
    location: str = ""  # file:line of the entry, for log messages


@dataclass(frozen=True, slots=True)
class SourceRule:
    """Client addresses that stand for one employee, or for a shared role with no grants."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    employee: str | None = None
    role: str | None = None


@dataclass(frozen=True, slots=True)
class KerberosSettings:
    """The proxy's Kerberos service identity, for Negotiate sign-in."""

    keytab: Path
    principal: str  # e.g. HTTP/proxy.city.example@CITY.EXAMPLE
    realms: tuple[str, ...]  # the realms whose users may sign in (default: the principal's)
    location: str = ""  # file:line of the section, for `citygate check`

    @property
    def realm(self) -> str:
        return self.principal.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    issuers: tuple[IssuerSettings, ...] = ()
    # Most specific (longest prefix) first, so the first match is the one that applies.
    sources: tuple[SourceRule, ...] = ()
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    # The schemes a 407 offers and the proxy accepts, in the order clients should prefer them.
    sign_in: tuple[str, ...] = DEFAULT_SIGN_IN
    kerberos: KerberosSettings | None = None
    # Where the proxy answers a browser's sign-in itself (proxy/identity/sign_in_page.py).
    sign_in_host: str = DEFAULT_SIGN_IN_HOST
    _by_issuer: dict[str, IssuerSettings] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_issuer.update((issuer.issuer, issuer) for issuer in self.issuers)

    @property
    def bearer_enabled(self) -> bool:
        return bool(self.issuers)

    @property
    def negotiate_enabled(self) -> bool:
        return NEGOTIATE in self.sign_in and self.kerberos is not None

    @property
    def basic_enabled(self) -> bool:
        return BASIC in self.sign_in

    def issuer(self, name: str | None) -> IssuerSettings | None:
        return self._by_issuer.get(name) if name is not None else None

    def source_for(self, address: str | None) -> SourceRule | None:
        """The rule for a client address, None when no rule covers it (or it is no address)."""
        if not address or not self.sources:
            return None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for rule in self.sources:
            if ip.version == rule.network.version and ip in rule.network:
                return rule
        return None


def parse_identity_section(
    config_path: Path,
    node: Node | None,
    line: int,
    problems: Problems,
    *,
    directory_preset: tuple[str, int | None] | None = None,
) -> IdentitySettings:
    """The `identity:` section's settings; defaults when the section is absent.

    `directory_preset` is the directory's preset and its line: `active-directory` makes the
    default sign-in Negotiate then Basic.
    """
    where = _Where(config_path, problems)
    active_directory = directory_preset is not None and directory_preset[0] == "active-directory"
    if node is None:
        if active_directory:
            assert directory_preset is not None
            where.error(
                directory_preset[1],
                "the active-directory preset signs employees in with Kerberos (Negotiate) by default, and identity.kerberos is missing",
                _KERBEROS_FIX,
            )
        return IdentitySettings()
    where.unknown_keys(node, SECTION_KEYS, 'setting "identity.{key}"')
    max_bytes = _number(
        where,
        node,
        "max_token_bytes",
        "identity.max_token_bytes",
        DEFAULT_MAX_TOKEN_BYTES,
        1024,
        65536,
        integer=True,
    )
    issuers = _unique(
        where,
        _entries(where, node, "issuers", "identity.issuers", _ISSUER_FIX),
        _issuer,
        key=lambda issuer: issuer.issuer,
        twice=lambda issuer: (
            "issuer",
            f'issuer "{issuer.issuer}" is configured twice',
            "keep one entry per issuer; list several audiences in one entry",
        ),
    )
    sources = _unique(
        where,
        _entries(
            where,
            node,
            "source_addresses",
            "identity.source_addresses",
            "e.g. source_addresses: [{address: 10.40.2.0/28, role: library-kiosk}]",
        ),
        _source,
        key=lambda rule: rule.network,
        twice=lambda rule: (
            "address",
            f"address {rule.network} is listed twice",
            "keep one entry per address or network",
        ),
    )
    # Fewest addresses first: a device's own entry wins over its network's.
    sources.sort(key=lambda rule: rule.network.num_addresses)
    sign_in = _sign_in(where, node, ACTIVE_DIRECTORY_SIGN_IN if active_directory else DEFAULT_SIGN_IN)
    kerberos = _kerberos(where, node, line) if "kerberos" in node else None
    if NEGOTIATE in sign_in and kerberos is None and "kerberos" not in node:
        explicit = "sign_in" in node
        where.error(
            node.line_of("sign_in") if explicit else line,
            "sign_in offers negotiate (Kerberos), and identity.kerberos is missing"
            if explicit
            else "the active-directory preset signs employees in with Kerberos (Negotiate) by default, and identity.kerberos is missing",
            _KERBEROS_FIX,
        )
    return IdentitySettings(
        sign_in=sign_in,
        sign_in_host=_sign_in_host(where, node),
        kerberos=kerberos,
        issuers=tuple(issuers),
        sources=tuple(sources),
        max_token_bytes=int(max_bytes),
    )


def _sign_in(where: _Where, node: Node, default: tuple[str, ...]) -> tuple[str, ...]:
    if "sign_in" not in node:
        return default
    value = node.get("sign_in")
    line = node.line_of("sign_in")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        where.error(line, "identity.sign_in must be a list of schemes", _SIGN_IN_FIX)
        return default
    schemes = [v.strip().casefold() for v in value]
    unknown = [v for v in schemes if v not in SIGN_IN_SCHEMES]
    if unknown:
        where.error(line, f"identity.sign_in: unknown scheme {unknown[0]!r}", _SIGN_IN_FIX)
        return default
    if len(set(schemes)) != len(schemes):
        where.error(line, "identity.sign_in lists a scheme twice", _SIGN_IN_FIX)
        return default
    if schemes == [BASIC, NEGOTIATE]:
        # Clients pick the first scheme they can answer: Basic first would make every
        # browser ask for a password instead of signing in silently.
        where.error(line, "identity.sign_in offers basic before negotiate", "use sign_in: [negotiate, basic]")
        return default
    return tuple(schemes)


def _sign_in_host(where: _Where, node: Node) -> str:
    if "sign_in_host" not in node:
        return DEFAULT_SIGN_IN_HOST
    value = node.get("sign_in_host")
    host = normalize_host(value) if isinstance(value, str) and ":" not in value else None
    if host is None or host.ip is not None or "." not in host.name:
        where.error(
            node.line_of("sign_in_host"),
            f"identity.sign_in_host {value!r} is not a host name with a dot",
            "name a host that browsers send through the proxy (not in pac.direct_domains), e.g. "
            f"sign_in_host: sign-in.city.example, or leave it out for {DEFAULT_SIGN_IN_HOST}",
        )
        return DEFAULT_SIGN_IN_HOST
    return host.name


def _kerberos(where: _Where, node: Node, line: int) -> KerberosSettings | None:
    """The `kerberos:` entry; None when it has any problem (every one reported)."""
    section = node.get("kerberos")
    section_line = node.line_of("kerberos") or line
    example = (
        "e.g. kerberos: {keytab: /etc/citygate/proxy.keytab, principal: HTTP/proxy.city.example@CITY.EXAMPLE}"
    )
    if not isinstance(section, Node):
        where.error(section_line, "identity.kerberos must be a mapping of settings", example)
        return None
    errors_before = len(where.problems.errors)
    where.unknown_keys(section, KERBEROS_KEYS, 'setting "identity.kerberos.{key}"')
    keytab = section.get("keytab")
    if not isinstance(keytab, str) or not keytab.strip():
        where.error(
            section.line_of("keytab") or section_line,
            "identity.kerberos.keytab is missing"
            if keytab is None
            else "identity.kerberos.keytab must be a file name",
            "keytab: the proxy's keytab file (exported with ktpass or kadmin), relative to the config file",
        )
    principal = section.get("principal")
    if not isinstance(principal, str) or not _service_principal(principal.strip()):
        where.error(
            section.line_of("principal") or section_line,
            "identity.kerberos.principal is missing"
            if principal is None
            else f"identity.kerberos.principal {principal!r} is not a service principal with a realm",
            "principal: HTTP/<the proxy's host name as browsers know it>@<REALM>, e.g. HTTP/proxy.city.example@CITY.EXAMPLE",
        )
    if isinstance(keytab, str) and keytab.strip() and not where.file(keytab.strip()).is_file():
        # Found now rather than at the first sign-in, like the issuers' key files.
        where.error(
            section.line_of("keytab"),
            f"identity.kerberos.keytab {where.file(keytab.strip())} is not a file",
            "export the proxy's keytab there (AD: ktpass, MIT Kerberos: kadmin ktadd), relative to the config file; citygate check then checks its keys",
        )
    realms: tuple[str, ...] = ()
    if "realms" in section:
        realms = (
            _strings(where, section, "realms", "identity.kerberos.realms", "e.g. realms: [CITY.EXAMPLE]")
            or ()
        )
    if len(where.problems.errors) > errors_before:
        return None
    assert isinstance(keytab, str) and isinstance(principal, str)
    principal = principal.strip()
    return KerberosSettings(
        keytab=where.file(keytab.strip()),
        principal=principal,
        realms=realms or (principal.rpartition("@")[2],),
        location=f"{where.path}:{section_line}",
    )


def _service_principal(name: str) -> bool:
    service, at, realm = name.rpartition("@")
    return bool(
        at and realm and "/" in service and service.split("/", 1)[1] and not any(c.isspace() for c in name)
    )


# --- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Where:
    path: Path
    problems: Problems

    def error(self, line: int | None, message: str, fix: str) -> None:
        self.problems.error(self.path, line, message, fix)

    def unknown_keys(self, node: Node, known: tuple[str, ...], described: str) -> None:
        """An error for each key of `node` not in `known`; `described` names one, with `{key}` in it."""
        for key in sorted(set(node) - set(known)):
            self.error(
                node.line_of(key),
                f"unknown {described.format(key=key)}",
                f"known settings: {', '.join(known)}",
            )

    def file(self, value: str) -> Path:
        return self.path.parent / value


def _unique[T](
    where: _Where,
    entries: list[tuple[Node, int]],
    read: Callable[[_Where, Node, int], T | None],
    key: Callable[[T], object],
    twice: Callable[[T], tuple[str, str, str]],
) -> list[T]:
    """Each entry read; one whose `key` an earlier entry has is reported at its `twice` (setting,
    message, fix) and left out, so that a mistake never silently wins over the first entry."""
    found: list[T] = []
    seen: set[object] = set()
    for entry, entry_line in entries:
        value = read(where, entry, entry_line)
        if value is None:
            continue
        if key(value) in seen:
            setting, message, fix = twice(value)
            where.error(entry.line_of(setting), message, fix)
            continue
        seen.add(key(value))
        found.append(value)
    return found


def _entries(where: _Where, node: Node, key: str, name: str, fix: str) -> list[tuple[Node, int]]:
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        where.error(node.line_of(key), f"{name} must be a list of entries", fix)
        return []
    lines = value.item_lines if isinstance(value, Items) else [node.line_of(key)] * len(value)
    entries = []
    for item, item_line in zip(value, lines, strict=True):
        if not isinstance(item, Node):
            where.error(item_line, f"each entry of {name} must be a mapping of settings", fix)
            continue
        entries.append((item, item.line))
    return entries


def _strings(where: _Where, entry: Node, key: str, name: str, fix: str) -> tuple[str, ...] | None:
    """A string or a list of strings, stripped; None (after an error) when it is neither."""
    value = entry.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        where.error(entry.line_of(key), f"{name} must be a name or a list of names", fix)
        return None
    return tuple(dict.fromkeys(v.strip() for v in value))


def _number(
    where: _Where,
    entry: Node,
    key: str,
    name: str,
    default: float,
    low: float,
    high: float | None = None,
    *,
    integer: bool = False,
) -> float:
    value = entry.get(key, default)
    kinds: tuple[type[int] | type[float], ...] = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
        where.error(
            entry.line_of(key), f"{name} {value!r} is not a number {bounds}", f"e.g. {key}: {default:g}"
        )
        return default
    return value


def _placeholder(value: str) -> bool:
    return "<" in value or ">" in value


# The timing settings of an issuer: key -> (default, lowest, highest or None for no limit).
_ISSUER_SECONDS: dict[str, tuple[float, float, float | None]] = {
    "leeway_seconds": (DEFAULT_LEEWAY_SECONDS, 0, MAX_LEEWAY_SECONDS),
    "jwks_refresh_seconds": (DEFAULT_JWKS_REFRESH_SECONDS, 1, None),
    "jwks_max_age_seconds": (DEFAULT_JWKS_MAX_AGE_SECONDS, 60, None),
    "jwks_timeout_seconds": (DEFAULT_JWKS_TIMEOUT_SECONDS, 0.1, 60),
}

_CLAIM_FIX = "e.g. claim: preferred_username, or claim: [upn, preferred_username]"
_STRIP_DOMAIN_FIX = "e.g. strip_domain: city.example"
_REQUIRED_CLAIMS_FIX = "e.g. required_claims: [exp, iat, tid]"


def _issuer(where: _Where, entry: Node, line: int) -> IssuerSettings | None:
    """One `issuers:` entry; None when it has any problem (every one of them reported)."""
    errors_before = len(where.problems.errors)
    where.unknown_keys(entry, ISSUER_KEYS, 'issuer setting "{key}"')
    name = _issuer_name(where, entry, line)
    if name is None:
        return None
    label = f'issuer "{name}"'
    audiences = _audiences(where, entry, line, label)
    algorithms = (_algorithms(where, entry, label) if "algorithms" in entry else None) or DEFAULT_ALGORITHMS
    jwks_url, keys = _signature_keys(where, entry, line, label, algorithms)
    claims = _optional_names(where, entry, "claim", label, _CLAIM_FIX) or DEFAULT_CLAIMS
    strip = _strip_domains(where, entry, label)
    required = _optional_names(where, entry, "required_claims", label, _REQUIRED_CLAIMS_FIX) or ()
    seconds = {
        key: _number(where, entry, key, f"{label}: {key}", default, low, high)
        for key, (default, low, high) in _ISSUER_SECONDS.items()
    }
    ca_file = _ca_file(where, entry, label)
    if len(where.problems.errors) > errors_before:
        return None
    return IssuerSettings(
        issuer=name,
        audiences=audiences,
        algorithms=algorithms,
        jwks_url=jwks_url,
        keys=tuple(keys),
        claims=claims,
        strip_domains=strip,
        required_claims=required,
        leeway=seconds["leeway_seconds"],
        jwks_refresh=seconds["jwks_refresh_seconds"],
        jwks_max_age=seconds["jwks_max_age_seconds"],
        jwks_timeout=seconds["jwks_timeout_seconds"],
        ca_file=ca_file,
        location=f"{where.path}:{line}",
    )


def _issuer_name(where: _Where, entry: Node, line: int) -> str | None:
    """The exact `iss` its tokens carry; None (after an error) when the entry has none."""
    name = entry.get("issuer")
    if not isinstance(name, str) or not name.strip():
        where.error(
            line,
            "an issuer entry needs issuer: the exact iss claim of its tokens",
            "e.g. issuer: https://login.microsoftonline.com/<your tenant id>/v2.0",
        )
        return None
    name = name.strip()
    if _placeholder(name):
        where.error(
            entry.line_of("issuer"),
            f'issuer "{name}" still holds a placeholder',
            "put your tenant or realm in place of <...>",
        )
    return name


def _audiences(where: _Where, entry: Node, line: int, label: str) -> tuple[str, ...]:
    if "audience" not in entry:
        where.error(
            line,
            f"{label} has no audience",
            "add audience: the value of the aud claim citygate's tokens carry (Entra ID: the app id URI)",
        )
        return ()
    return _strings(where, entry, "audience", f"{label}: audience", "e.g. audience: api://citygate") or ()


def _optional_names(where: _Where, entry: Node, key: str, label: str, fix: str) -> tuple[str, ...] | None:
    """The names under `key`; None when the entry leaves it out or it is not names (reported)."""
    if key not in entry:
        return None
    return _strings(where, entry, key, f"{label}: {key}", fix)


def _signature_keys(
    where: _Where, entry: Node, line: int, label: str, algorithms: tuple[str, ...]
) -> tuple[str | None, list[VerificationKey]]:
    """The JWKS address and the keys (PEM files, then the shared secret) to check signatures with."""
    symmetric = [alg for alg in algorithms if alg in SYMMETRIC_ALGORITHMS]
    asymmetric = [alg for alg in algorithms if alg in ASYMMETRIC_ALGORITHMS]
    jwks_url = entry.get("jwks_url")
    if jwks_url is not None:
        jwks_url = _jwks_url(where, entry, label, jwks_url)
    keys = _pem_keys(where, entry, label, asymmetric) if "keys" in entry else []
    secret = _secret(where, entry, label, symmetric) if "secret_file" in entry else None
    _check_one_kind_of_key(where, entry, line, label, symmetric, asymmetric)
    if secret is not None:
        keys.append(VerificationKey(secret))
    return jwks_url, keys


def _check_one_kind_of_key(
    where: _Where, entry: Node, line: int, label: str, symmetric: list[str], asymmetric: list[str]
) -> None:
    """An issuer's tokens are checked with a shared secret or with public keys, never both.

    Accepting both is how algorithm-confusion forgeries work: a token signed with HS256 using
    the provider's public key (which anyone has) as the secret.
    """
    has_public = "jwks_url" in entry or "keys" in entry
    if symmetric and asymmetric:
        where.error(
            entry.line_of("algorithms"),
            f"{label} mixes shared-secret ({', '.join(symmetric)}) and public-key ({', '.join(asymmetric)}) algorithms",
            "use one kind per issuer: mixing them is how algorithm-confusion forgeries work",
        )
    elif symmetric:
        if has_public:
            where.error(
                entry.line_of("jwks_url" if "jwks_url" in entry else "keys"),
                f"{label} lists {', '.join(symmetric)}, which are checked with secret_file only",
                "remove jwks_url and keys: a public key is never used as a shared secret",
            )
        if "secret_file" not in entry:
            where.error(
                entry.line_of("algorithms"),
                f"{label} lists {', '.join(symmetric)} but has no secret_file",
                "add secret_file: a file holding the shared secret, or use RS256, ES256 or EdDSA",
            )
    else:
        if "secret_file" in entry:
            where.error(
                entry.line_of("secret_file"),
                f"{label} has secret_file but its algorithms are all public-key ones",
                "remove secret_file, or list HS256 in algorithms (and only shared-secret algorithms)",
            )
        if not has_public:
            where.error(
                line,
                f"{label} has no keys to check signatures with",
                "add jwks_url: the provider's JWKS address, or keys: [PEM files of its public keys]",
            )


def _strip_domains(where: _Where, entry: Node, label: str) -> tuple[str, ...]:
    """The domains cut off a claim's value (jlee@city.example -> jlee): lower-case, without "@"."""
    found = _optional_names(where, entry, "strip_domain", label, _STRIP_DOMAIN_FIX) or ()
    strip = tuple(domain.removeprefix("@").casefold() for domain in found)
    for domain in strip:
        if not domain or "@" in domain or " " in domain:
            where.error(
                entry.line_of("strip_domain"),
                f'{label}: strip_domain "{domain}" is not a domain',
                _STRIP_DOMAIN_FIX,
            )
    return strip


def _ca_file(where: _Where, entry: Node, label: str) -> Path | None:
    if "ca_file" not in entry:
        return None
    value = entry.get("ca_file")
    if not isinstance(value, str) or not where.file(value).is_file():
        where.error(
            entry.line_of("ca_file"),
            f"{label}: ca_file {value!r} is not a file",
            "give the PEM file of the CA that signed the JWKS server's certificate, relative to the config file",
        )
        return None
    return where.file(value)


def _algorithms(where: _Where, entry: Node, label: str) -> tuple[str, ...] | None:
    names = _strings(where, entry, "algorithms", f"{label}: algorithms", "e.g. algorithms: [RS256]")
    if names is None:
        return None
    line = entry.line_of("algorithms")
    good = []
    for name in names:
        if name.lower() == "none":
            where.error(
                line,
                f'{label}: algorithm "{name}" is never accepted',
                "remove it: an unsigned token proves nothing",
            )
        elif name in SUPPORTED_ALGORITHMS:
            good.append(name)
        else:
            close = [known for known in SUPPORTED_ALGORITHMS if known.lower() == name.lower()]
            hint = (
                f'did you mean "{close[0]}"?'
                if close
                else f"supported: {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
            where.error(line, f'{label}: unknown algorithm "{name}"', hint)
    return tuple(good) if len(good) == len(names) else None


def _jwks_url(where: _Where, entry: Node, label: str, value: Any) -> str | None:
    line = entry.line_of("jwks_url")
    if not isinstance(value, str) or not value.strip():
        where.error(
            line,
            f"{label}: jwks_url must be an address",
            "e.g. jwks_url: https://sso.example.gov/realms/city/protocol/openid-connect/certs",
        )
        return None
    url = value.strip()
    parts = urlsplit(url)
    if _placeholder(url):
        where.error(
            line, f"{label}: jwks_url still holds a placeholder", "put your tenant or realm in place of <...>"
        )
    elif parts.scheme == "https" and parts.hostname:
        return url
    elif parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return url  # a key server on this machine (tests, or a local relay): nothing on the wire
    else:
        where.error(
            line,
            f"{label}: jwks_url {url} is not an https:// address",
            "use the provider's https:// JWKS address: keys fetched over plain HTTP could be swapped on the way",
        )
    return None


def _pem_keys(where: _Where, entry: Node, label: str, algorithms: list[str]) -> list[VerificationKey]:
    value = entry.get("keys")
    line = entry.line_of("keys")
    fix = "e.g. keys: [keys/sso-2026.pem, {file: keys/sso-2027.pem, kid: 2027}] (public keys or certificates)"
    if not isinstance(value, list) or not value:
        where.error(line, f"{label}: keys must be a list of PEM files", fix)
        return []
    lines = value.item_lines if isinstance(value, Items) else [line] * len(value)
    keys = []
    for item, item_line in zip(value, lines, strict=True):
        kid = None
        if isinstance(item, Node):
            kid = item.get("kid")
            item = item.get("file")
            if kid is not None and not isinstance(kid, str | int):
                where.error(item_line, f"{label}: kid must be the key id its tokens name", fix)
                continue
            kid = str(kid) if kid is not None else None
        if not isinstance(item, str) or not item.strip():
            where.error(item_line, f"{label}: each key is a PEM file name, or {{file: ..., kid: ...}}", fix)
            continue
        path = where.file(item.strip())
        key = _load_public_key(path, _KeyProblems(where, item_line, f"{label}: {path}"))
        if key is None:
            continue
        verification = VerificationKey(key, kid)
        if not any(verification.fits(alg) for alg in algorithms):
            where.error(
                item_line,
                f"{label}: {path} is an {describe_key(key)} and no listed algorithm ({', '.join(algorithms)}) uses it",
                "list the algorithm the provider signs with in algorithms (RS256 for RSA keys, ES256 for P-256, EdDSA for Ed25519)",
            )
            continue
        keys.append(verification)
    return keys


@dataclass(frozen=True, slots=True)
class _KeyProblems:
    """Records a key file's problem at the line that names the file."""

    where: _Where
    line: int
    prefix: str

    def __call__(self, message: str, fix: str) -> None:
        self.where.error(self.line, f"{self.prefix}: {message}", fix)


def _load_public_key(path: Path, error: Callable[[str, str], None]) -> PublicKey | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        error(
            f"cannot read the key file ({exc.strerror or exc})", "check the path, relative to the config file"
        )
        return None
    if b"PRIVATE KEY" in data:
        error(
            "this is a private key",
            "give the provider's public key or certificate; the private key must stay with the provider",
        )
        return None
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        error("not a PEM public key or certificate", "export the key as PEM (-----BEGIN PUBLIC KEY-----)")
        return None
    if not isinstance(key, PublicKey):
        error(
            f"unsupported key type {type(key).__name__}",
            "use an RSA, EC (P-256, P-384, P-521) or Ed25519 key",
        )
        return None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        error(f"RSA key of {key.key_size} bits is too short", f"use a key of at least {MIN_RSA_BITS} bits")
        return None
    return key


def _secret(where: _Where, entry: Node, label: str, algorithms: list[str]) -> bytes | None:
    value = entry.get("secret_file")
    line = entry.line_of("secret_file")
    if not isinstance(value, str) or not value.strip():
        where.error(
            line, f"{label}: secret_file must be a file name", "e.g. secret_file: secrets/sso-hmac.key"
        )
        return None
    path = where.file(value.strip())
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        where.error(
            line,
            f"{label}: cannot read secret_file {path} ({exc.strerror or exc})",
            "check the path, relative to the config file",
        )
        return None
    try:
        jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).prepare_key(secret)
        if b"-----BEGIN" in secret:
            raise jwt.InvalidKeyError("PEM")
    except jwt.InvalidKeyError:
        where.error(
            line,
            f"{label}: secret_file {path} holds a public key or certificate, not a shared secret",
            "a public key is no secret: anyone could sign tokens with it; use the provider's public-key algorithms and jwks_url instead",
        )
        return None
    need = max((MIN_SECRET_BYTES[alg] for alg in algorithms), default=MIN_SECRET_BYTES["HS256"])
    if len(secret) < need:
        where.error(
            line,
            f"{label}: secret_file {path} holds {len(secret)} bytes; at least {need} are needed",
            "generate a longer random secret, e.g. openssl rand -base64 48",
        )
        return None
    return secret


def _source(where: _Where, entry: Node, line: int) -> SourceRule | None:
    fix = "e.g. {address: 10.40.2.17, employee: jlee} or {address: 10.40.2.0/28, role: library-kiosk}"
    where.unknown_keys(entry, SOURCE_KEYS, 'source_addresses setting "{key}"')
    address = entry.get("address")
    if not isinstance(address, str) or not address.strip():
        where.error(line, "a source_addresses entry needs address: an IP address or network", fix)
        return None
    try:
        network = ipaddress.ip_network(address.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(address.strip(), strict=False)
        except ValueError:
            where.error(entry.line_of("address"), f'"{address}" is not an IP address or network', fix)
            return None
        where.error(entry.line_of("address"), f"{address} has host bits set", f"did you mean {loose}?")
        return None
    employee, role = entry.get("employee"), entry.get("role")
    if (employee is None) == (role is None):
        where.error(line, f"address {network} needs exactly one of employee: or role:", fix)
        return None
    name = employee if employee is not None else role
    if not isinstance(name, str) or not name.strip() or any(ch.isspace() for ch in name.strip()):
        key = "employee" if employee is not None else "role"
        where.error(entry.line_of(key), f"address {network}: {key} must be one name without spaces", fix)
        return None
    if employee is not None:
        return SourceRule(network, employee=name.strip().casefold())
    return SourceRule(network, role=name.strip())
