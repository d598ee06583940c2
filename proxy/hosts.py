"""Turning whatever a client wrote as a host into the one form the catalog is indexed by.

Clients can spell one host many ways (`FaceBook.COM.`, `m.facebook.com:443`,
`[2a03:2880::1]`, Unicode or punycode labels, ideographic full stops). If any spelling slipped
past normalization it would slip past the policy, so every host goes through `normalize_host`
before a lookup, and catalog domains go through the same function when they are loaded.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

import idna

# Dots that IDNA (UTS #46) maps to "." — a browser resolves "facebook。com" as facebook.com.
_DOT_LIKE = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})

# Legacy IPv4 spellings (`2130706433`, `0x7f.1`, `0177.0.0.1`) that resolvers and browsers accept.
_LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")


@dataclass(frozen=True, slots=True)
class Host:
    """A normalized host: either a DNS name (lower-case ASCII, no trailing dot) or an IP."""

    name: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @property
    def labels(self) -> list[str]:
        return self.name.split(".")


def strip_port(raw: str) -> str:
    """`host:port`, `[v6]:port`, `[v6]` → the host part; a bare IPv6 address is left whole."""
    raw = raw.strip()
    if raw.startswith("["):
        end = raw.find("]")
        return raw[1:end] if end != -1 else raw[1:]
    if raw.count(":") == 1:
        return raw.split(":", 1)[0]
    return raw


# Hosts repeat: every request names its host up to three times (CONNECT, SNI, Host header), and
# a city's traffic goes to a few thousand hosts. Normalizing costs ~10 us, a cache hit ~0.1 us.
# Only host-sized strings are cached (a DNS name has at most 253 characters), so a client cannot
# fill the cache with large headers; Host is immutable, so answers can be shared.
_CACHED_LENGTH = 300
_CACHE_SIZE = 16_384


def normalize_host(raw: str) -> Host | None:
    """The canonical form of a host as a client wrote it, or None if it is not a host at all.

    None means the string cannot name anything a DNS resolver would reach (empty, bad IDNA,
    forbidden characters); callers treat it as "not in the catalog".
    """
    if len(raw) <= _CACHED_LENGTH:
        return _normalize_cached(raw)
    return _normalize(raw)


def _normalize(raw: str) -> Host | None:
    host = strip_port(raw).translate(_DOT_LIKE).rstrip(".").lower()
    if not host:
        return None
    ip = _parse_ip(host)
    if ip is not None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return Host(ip.compressed, ip)
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
        # UTS #46 maps fullwidth digits and dots to ASCII, so a Unicode host can be an IP address.
        ip = _parse_ip(host)
        if ip is not None:
            return Host(ip.compressed, ip)
    if any(not label for label in host.split(".")):
        return None
    return Host(host)


_normalize_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_normalize)


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Every IPv4 spelling (dotted, legacy, hex, octal) starts with a digit and every IPv6 address
    # has a colon; anything else is a name. ip_address() takes ~5 us to raise on a name.
    if not host[:1].isdigit() and ":" not in host:
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def domain_suffixes(host: Host) -> list[str]:
    """`a.b.example.com` → [`a.b.example.com`, `b.example.com`, `example.com`, `com`]."""
    labels = host.labels
    return [".".join(labels[i:]) for i in range(len(labels))]
