"""Host normalization and catalog matching: every spelling of a host must reach the same entry."""

import ipaddress
from pathlib import Path

import pytest

from citygate.directory.problems import Problems
from citygate.proxy.catalog import Catalog, load_catalog
from citygate.proxy.hosts import Host, domain_suffixes, normalize_host, strip_port

REAL_SITES = Path(__file__).resolve().parents[2] / "config" / "sites.yaml"

# 157.240.1.35 (a Meta address) written the way old resolvers accept it.
META_V4 = ipaddress.IPv4Address("157.240.1.35")
META_DECIMAL = str(int(META_V4))
META_HEX = hex(int(META_V4))


def fullwidth(text: str) -> str:
    """ASCII letters and digits as their FULLWIDTH forms (U+FF01..U+FF5E); dots are kept."""
    return "".join(c if c == "." else chr(ord(c) + 0xFEE0) for c in text)


META_OCTAL = ".".join(f"0{int(octet):o}" for octet in str(META_V4).split("."))


@pytest.fixture(scope="module")
def real_catalog() -> Catalog:
    problems = Problems()
    catalog = load_catalog(REAL_SITES, problems)
    assert problems == []
    return catalog


def tiny_catalog(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "sites.yaml"
    path.write_text(text, encoding="utf-8")
    problems = Problems()
    catalog = load_catalog(path, problems)
    assert [str(p) for p in problems] == []
    return catalog


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("facebook.com:443", "facebook.com", id="host-port"),
        pytest.param("[2a03:2880::1]:443", "2a03:2880::1", id="bracketed-v6-port"),
        pytest.param("[::1]", "::1", id="bracketed-v6"),
        pytest.param("::1", "::1", id="bare-v6-left-whole"),
        pytest.param("  facebook.com  ", "facebook.com", id="whitespace"),
        pytest.param("[::1", "::1", id="unclosed-bracket"),
    ],
)
def test_strip_port(raw, expected):
    assert strip_port(raw) == expected


@pytest.mark.parametrize(
    ("raw", "name", "ip"),
    [
        pytest.param("FaceBook.COM.", "facebook.com", None, id="case-and-trailing-dot"),
        pytest.param("m.facebook.com:443", "m.facebook.com", None, id="port"),
        pytest.param("facebook。com", "facebook.com", None, id="ideographic-full-stop"),
        pytest.param("facebook\uff0ecom", "facebook.com", None, id="fullwidth-full-stop"),
        pytest.param("facebook｡com", "facebook.com", None, id="halfwidth-ideographic-stop"),
        pytest.param(fullwidth("facebook") + ".com", "facebook.com", None, id="fullwidth-letters"),
        pytest.param("bücher.example", "xn--bcher-kva.example", None, id="unicode-to-punycode"),
        pytest.param("BÜCHER.example", "xn--bcher-kva.example", None, id="unicode-upper"),
        pytest.param("XN--BCHER-KVA.example", "xn--bcher-kva.example", None, id="punycode-upper"),
        pytest.param("127.0.0.1", "127.0.0.1", "127.0.0.1", id="v4"),
        pytest.param("[::1]:8080", "::1", "::1", id="v6-port"),
        pytest.param("[2A03:2880:0::1]", "2a03:2880::1", "2a03:2880::1", id="v6-compressed"),
        pytest.param("[::ffff:127.0.0.1]", "127.0.0.1", "127.0.0.1", id="v4-mapped-v6"),
        pytest.param("fe80::1%eth0", "fe80::1", "fe80::1", id="v6-zone-id"),
        pytest.param("2130706433", "127.0.0.1", "127.0.0.1", id="legacy-decimal"),
        pytest.param("0x7f.1", "127.0.0.1", "127.0.0.1", id="legacy-hex-short"),
        pytest.param("0177.0.0.1", "127.0.0.1", "127.0.0.1", id="legacy-octal"),
        pytest.param("127.0.0.1.", "127.0.0.1", "127.0.0.1", id="v4-trailing-dot"),
    ],
)
def test_normalize_host(raw, name, ip):
    host = normalize_host(raw)
    assert host == Host(name, None if ip is None else ipaddress.ip_address(ip))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dots"),
        pytest.param("a..b", id="empty-label"),
        pytest.param(".facebook.com", id="leading-dot"),
        pytest.param("[]", id="empty-brackets"),
        pytest.param(":443", id="port-only"),
        pytest.param("face😀book.com", id="emoji-not-idna"),
    ],
)
def test_normalize_host_rejects_non_hosts(raw):
    assert normalize_host(raw) is None


def test_domain_suffixes_longest_first():
    assert domain_suffixes(Host("a.b.example.com")) == [
        "a.b.example.com",
        "b.example.com",
        "example.com",
        "com",
    ]


@pytest.mark.parametrize(
    ("raw", "site", "matched", "is_asset"),
    [
        pytest.param("FaceBook.COM.", "facebook", "facebook.com", False, id="case-trailing-dot"),
        pytest.param("m.facebook.com:443", "facebook", "facebook.com", False, id="subdomain-port"),
        pytest.param("www.facebook.com", "facebook", "facebook.com", False, id="www"),
        pytest.param(fullwidth("facebook") + ".com", "facebook", "facebook.com", False, id="fullwidth"),
        pytest.param("facebook。com", "facebook", "facebook.com", False, id="ideographic-dot"),
        pytest.param("face\u00adbook.com", "facebook", "facebook.com", False, id="soft-hyphen"),
        pytest.param("messenger.com", "facebook", "messenger.com", False, id="messenger"),
        pytest.param("157.240.1.35", "facebook", "157.240.0.0/16", False, id="meta-v4"),
        pytest.param("157.240.1.35:443", "facebook", "157.240.0.0/16", False, id="meta-v4-port"),
        pytest.param("157。240。1。35", "facebook", "157.240.0.0/16", False, id="meta-v4-ideo"),
        pytest.param("[2a03:2880::1]", "facebook", "2a03:2880::/32", False, id="meta-v6"),
        pytest.param("[2a03:2880::1]:443", "facebook", "2a03:2880::/32", False, id="meta-v6-port"),
        pytest.param(META_DECIMAL, "facebook", "157.240.0.0/16", False, id="meta-decimal"),
        pytest.param(META_HEX, "facebook", "157.240.0.0/16", False, id="meta-hex"),
        pytest.param(META_OCTAL, "facebook", "157.240.0.0/16", False, id="meta-octal"),
        pytest.param("[::ffff:157.240.1.35]", "facebook", "157.240.0.0/16", False, id="v4-mapped"),
        pytest.param("static.xx.fbcdn.net", "facebook", "fbcdn.net", True, id="fbcdn-asset"),
        pytest.param("connect.facebook.net", "facebook", "facebook.net", True, id="sdk-asset"),
        pytest.param("x.com", "x", "x.com", False, id="x"),
        pytest.param("t.co", "x", "t.co", True, id="x-short-link"),
        pytest.param("104.244.42.1", "x", "104.244.40.0/21", False, id="x-network"),
        pytest.param("youtubei.googleapis.com", "youtube", "youtubei.googleapis.com", True, id="yt-api"),
        pytest.param("br.pinterest.com", "pinterest", "pinterest.com", False, id="pinterest-lang"),
        pytest.param("t.umblr.com", "tumblr", "t.umblr.com", True, id="tumblr-redirector"),
    ],
)
def test_real_catalog_matches(real_catalog, raw, site, matched, is_asset):
    host = normalize_host(raw)
    assert host is not None
    found = real_catalog.match(host)
    assert found is not None, f"{raw!r} normalized to {host} matched nothing"
    assert (found.site.id, found.matched, found.is_asset) == (site, matched, is_asset)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("facebook.com.evil.example", id="site-as-prefix"),
        pytest.param("notfacebook.com", id="site-as-suffix-of-label"),
        pytest.param("facebook.co", id="other-tld"),
        pytest.param("facebook", id="single-label"),
        pytest.param("[::1]", id="v6-loopback-bracketed"),
        pytest.param("::1", id="v6-loopback"),
        pytest.param("127.0.0.1", id="v4-loopback"),
        pytest.param("10.0.0.1", id="private-v4"),
        pytest.param("157.241.0.1", id="next-to-meta-range"),
        pytest.param("www.googleapis.com", id="shared-google-api"),
        pytest.param("ggpht.com", id="shared-google-cdn"),
        pytest.param("snap.com", id="corporate-not-social"),
        pytest.param("example.org", id="ordinary"),
    ],
)
def test_real_catalog_does_not_match(real_catalog, raw):
    host = normalize_host(raw)
    assert host is not None
    assert real_catalog.match(host) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(fullwidth("157.240.1.35"), id="fullwidth-digits"),
        pytest.param(
            fullwidth("157.240.1.35").replace(".", "\u3002"), id="fullwidth-digits-ideographic-dots"
        ),
    ],
)
def test_real_catalog_matches_fullwidth_ip(real_catalog, raw):
    host = normalize_host(raw)
    assert host == Host("157.240.1.35", META_V4)
    assert real_catalog.match(host).site.id == "facebook"


TINY = """\
sites:
  - id: social
    name: Social
    domains: [social.example, bücher.example]
    asset_domains: [xn--caf-dma.example]
  - id: chat
    name: Chat
    domains: [chat.social.example]
    asset_domains: [cdn.chat.social.example]
"""


@pytest.mark.parametrize(
    ("raw", "site", "matched", "is_asset"),
    [
        pytest.param("social.example", "social", "social.example", False, id="exact"),
        pytest.param("www.social.example", "social", "social.example", False, id="subdomain"),
        pytest.param("chat.social.example", "chat", "chat.social.example", False, id="longer-wins"),
        pytest.param("a.chat.social.example", "chat", "chat.social.example", False, id="under-longer"),
        pytest.param("xchat.social.example", "social", "social.example", False, id="label-boundary"),
        pytest.param("cdn.chat.social.example", "chat", "cdn.chat.social.example", True, id="asset"),
        pytest.param("bücher.example", "social", "xn--bcher-kva.example", False, id="idn-unicode"),
        pytest.param("xn--bcher-kva.example", "social", "xn--bcher-kva.example", False, id="idn-puny"),
        pytest.param("www.BÜCHER.example", "social", "xn--bcher-kva.example", False, id="idn-upper"),
        pytest.param("café.example", "social", "xn--caf-dma.example", True, id="idn-asset-unicode"),
        pytest.param("XN--CAF-DMA.example", "social", "xn--caf-dma.example", True, id="idn-asset-puny"),
    ],
)
def test_tiny_catalog_matches(tmp_path, raw, site, matched, is_asset):
    found = tiny_catalog(tmp_path, TINY).match(normalize_host(raw))
    assert found is not None
    assert (found.site.id, found.matched, found.is_asset) == (site, matched, is_asset)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("example", id="tld-only"),
        pytest.param("social.example.net", id="prefix"),
        pytest.param("bucher.example", id="idn-without-umlaut"),
        pytest.param("157.240.1.35", id="no-networks-listed"),
    ],
)
def test_tiny_catalog_does_not_match(tmp_path, raw):
    assert tiny_catalog(tmp_path, TINY).match(normalize_host(raw)) is None
