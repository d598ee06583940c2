"""The performance work of issue 8 changes speed only: each fast path against the slow one.

bench/decision_core.py measures the speed; these tests pin the answers: libyaml and PyYAML
read the same documents with the same lines, the host cache and the IP fast path give what
normalizing gives, the catalog's integer IP lookup agrees with a brute-force longest match,
deciding once per normalized host equals deciding every spelling, and the addon group and
MemoryGuard keep mitmproxy's behaviour.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from mitmproxy import exceptions, hooks, http
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook
from mitmproxy.test import taddons, tflow

from citygate.addons.chain import (
    AddonGroup,
    HookSkippingAddonManager,
    skip_entries_without_hooks,
    trigger_where_handled,
)
from citygate.addons.memory import MemoryGuard
from citygate.directory.model import Person
from citygate.directory.problems import Problems
from citygate.proxy import hosts as hosts_module
from citygate.proxy import yamlfile
from citygate.proxy.catalog import Catalog, Site
from citygate.proxy.decision import Identity, _strictness, decide, decide_request
from citygate.proxy.grants import normalize_path
from citygate.proxy.hosts import domain_suffixes, normalize_host
from citygate.proxy.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "config" / "citygate.yaml"

TRICKY_YAML = """\
department: Parks
defaults: &defaults
  sites: [facebook]
  purpose: "Post: closures"
grants:
  - id: a
    <<: *defaults
    employee: JLee
    approved_on: 2026-01-12
    expires: 2026-02-30
    expires: 2027-01-01
    paths:
      facebook:
        - /CityOfExampleParks
        - "/Caf\\u00e9"
  - id: 12345
    employee: yes
    purpose: |
      two
      lines
    approved_on: 2026-01-12T08:00:00
    note: ~
    empty: []
"""


def _shape(value: object) -> object:
    """A value with its line numbers, to compare two readings exactly."""
    if isinstance(value, yamlfile.Node):
        return ("node", value.line, dict(value.key_lines), {k: _shape(v) for k, v in value.items()})
    if isinstance(value, yamlfile.Items):
        return ("items", value.line, list(value.item_lines), [_shape(v) for v in value])
    return (type(value).__name__, value)


def _read_both(text: str) -> tuple[tuple[object, list[str]], tuple[object, list[str]]]:
    path = Path("x.yaml")
    readings = []
    for loader in (yamlfile._LineLoader, yamlfile._FastLineLoader):
        problems = Problems()
        reader = loader(text, path, problems)  # type: ignore[misc]
        try:
            document = reader.get_single_data()  # type: ignore[attr-defined]
        finally:
            reader.dispose()  # type: ignore[attr-defined]
        readings.append((_shape(document), [str(p) for p in problems]))
    return readings[0], readings[1]


needs_libyaml = pytest.mark.skipif(yamlfile._FastLineLoader is None, reason="PyYAML without libyaml")


@needs_libyaml
@pytest.mark.parametrize(
    "path",
    [DEMO_CONFIG, REPO / "config" / "sites.yaml", *sorted((REPO / "config" / "grants").glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_libyaml_reads_the_config_files_as_pyyaml_does(path: Path):
    pure, fast = _read_both(path.read_text(encoding="utf-8"))

    assert fast == pure


@needs_libyaml
def test_libyaml_reads_anchors_duplicates_dates_and_scalars_as_pyyaml_does():
    pure, fast = _read_both(TRICKY_YAML)

    assert fast == pure
    assert pure[1] == ['x.yaml:11: "expires" appears twice in one entry (first on line 10); keep one of them']


@needs_libyaml
def test_a_file_libyaml_rejects_is_reported_in_pyyamls_words(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("grants:\n  - id: a\n   employee: b\n")
    problems = Problems()

    assert yamlfile.read_yaml(path, problems, "fix") is None
    (problem,) = problems
    with pytest.raises(yaml.MarkedYAMLError) as raised:
        yaml.safe_load(path.read_text())
    assert problem.message == f"not valid YAML: {raised.value.problem or raised.value.context}"


HOSTS = [
    "www.facebook.com",
    "WWW.FaceBook.COM.:443",
    "[2a03:2880::1]:443",
    "2a03:2880::1",
    "::ffff:157.240.1.1",
    "157.240.1.1",
    "2130706433",
    "0x7f.1",
    "0177.0.0.1",
    "1.2.3",
    "9gag.com",
    "1password.com",
    "123.example",
    "facebook\u3002com",
    "\uff46\uff41\uff43\uff45\uff42\uff4f\uff4f\uff4b.com",  # fullwidth letters
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits
    "xn--caf-dma.example",
    "café.example",
    "",
    ":443",
    "a..b",
    "fe80::1%eth0",
    "not a host",
]


@pytest.mark.parametrize("raw", HOSTS)
def test_the_host_cache_and_the_name_fast_path_give_what_normalizing_gives(raw: str):
    uncached = hosts_module._normalize(raw)

    assert normalize_host(raw) == uncached
    assert normalize_host(raw) == uncached  # from the cache
    if uncached is not None and uncached.ip is None:
        assert hosts_module._parse_ip(uncached.name) is None


def test_long_strings_are_normalized_but_not_cached():
    raw = "a." * 200 + "facebook.com"
    before = hosts_module._normalize_cached.cache_info().currsize

    assert normalize_host(raw) == hosts_module._normalize(raw)
    assert hosts_module._normalize_cached.cache_info().currsize == before


def _reference_match_ip(networks: dict[str, list[str]], ip: str) -> str | None:
    address = ipaddress.ip_address(ip)
    best = None
    for site, ranges in networks.items():
        for text in ranges:
            network = ipaddress.ip_network(text)
            inside = address.version == network.version and address in network
            if inside and (best is None or network.prefixlen > best[1]):
                best = (site, network.prefixlen)
    return best[0] if best else None


def test_ip_lookup_agrees_with_a_brute_force_longest_prefix_match():
    networks = {
        "wide": ["10.0.0.0/8", "2001:db8::/32"],
        "narrow": ["10.1.0.0/16", "2001:db8:1::/48"],
        "host": ["10.1.2.3/32", "2001:db8:1::7/128"],
        "other": ["192.0.2.0/24", "157.240.0.0/16"],
    }
    catalog = Catalog(
        [
            Site(site, site, (f"{site}.example",), networks=tuple(map(ipaddress.ip_network, r)))
            for site, r in networks.items()
        ]
    )
    rng = random.Random(8)
    candidates = [
        "10.1.2.3",
        "10.1.2.4",
        "10.2.0.1",
        "11.0.0.1",
        "192.0.2.255",
        "2001:db8:1::7",
        "2001:db8:2::1",
    ]
    candidates += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(300)]
    candidates += [f"10.1.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(300)]
    candidates += [str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96))) for _ in range(300)]

    for ip in candidates:
        found = catalog.match(normalize_host(ip))  # type: ignore[arg-type]
        assert (found.site.id if found else None) == _reference_match_ip(networks, ip), ip


def test_name_lookup_agrees_with_walking_domain_suffixes():
    catalog = load_policy(DEMO_CONFIG).catalog
    for raw in [
        "www.facebook.com",
        "a.b.c.fbcdn.net",
        "facebook.com.evil.example",
        "com",
        "x.y.instagram.com",
    ]:
        host = normalize_host(raw)
        assert host is not None
        expected = next(
            (catalog._by_domain[s] for s in domain_suffixes(host) if s in catalog._by_domain), None
        )
        assert catalog.match(host) == expected


def test_remembered_matches_agree_with_walking_the_catalog_even_when_the_memory_fills(monkeypatch):
    from citygate.proxy import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "_RECENT_HOSTS", 8)
    catalog = load_policy(DEMO_CONFIG).catalog
    rng = random.Random(8)
    names = [
        "www.facebook.com",
        "fbcdn.net",
        "www.example.org",
        "t.co",
        "157.240.1.1",
        "10.0.0.1",
        "reddit.com",
    ]
    names += [f"h{n}.{rng.choice(['facebook.com', 'example.org', 'x.com'])}" for n in range(40)]
    for raw in rng.choices(names, k=500):
        host = normalize_host(raw)
        assert host is not None
        assert catalog.match(host) == catalog.lookup(host), raw
        assert len(catalog._recent) <= 8


def _reference_normalize_path(raw: str) -> str | None:
    """normalize_path without its fast path: decode, then resolve every segment."""
    import re
    from urllib.parse import unquote

    path = raw.split("#", 1)[0].split("?", 1)[0]
    if "\\" in path or re.search(r"%2[fF]|%5[cC]", path):
        return None
    decoded = unquote(path)
    if re.search(r"%[0-9A-Fa-f]{2}", decoded) or any(c < " " or c in "\x7f\\" for c in decoded):
        return None
    segments: list[str] = []
    for segment in decoded.split("/"):
        segment = segment.split(";", 1)[0]
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments) + ("/" if decoded.endswith("/") and segments else "")


def test_the_path_fast_path_gives_what_resolving_every_segment_gives():
    rng = random.Random(8)
    pieces = [
        "/",
        "/",
        "a",
        "Parks",
        ".",
        "..",
        "%2e",
        "%2F",
        "%",
        "?q=/..",
        "#/x",
        "//",
        "b.c",
        "~",
        ";",
        "%3b",
        "%25",
        "2e",
        "\\",
        "\x00",
    ]
    paths = ["", "/", "//", "/a/", "a/b", "/a/./b", "/a/../../b", "/.hidden"]
    paths += ["".join(rng.choices(pieces, k=rng.randint(1, 8))) for _ in range(3000)]
    for raw in paths:
        assert normalize_path(raw) == _reference_normalize_path(raw), raw


@pytest.mark.parametrize(
    "hosts",
    [
        ["www.facebook.com:443", "www.facebook.com", "www.facebook.com"],
        ["www.example.org:443", "WWW.FACEBOOK.COM.", "www.facebook.com"],
        ["www.facebook.com", "www.instagram.com", "www.facebook.com:443"],
        ["not a host", "also not", "www.facebook.com"],
        ["10.0.0.1", "157.240.1.1", "www.example.org"],
    ],
)
@pytest.mark.parametrize("user", [None, "jlee", "mnguyen", "nobody"])
@pytest.mark.parametrize("path", [None, "/CityOfExampleParks/x", "/messages"])
def test_deciding_once_per_normalized_host_equals_deciding_every_spelling(hosts, user, path):
    policy = load_policy(DEMO_CONFIG)
    people = {
        "jlee": Person("jlee", "J Lee", "Parks"),
        "mnguyen": Person("mnguyen", "M Nguyen", "Parks"),
        "ahernandez": Person("ahernandez", "A Hernandez", "Parks", groups=frozenset({"directors"})),
        "nobody": None,
    }
    identity = None if user is None else Identity(user, "basic")
    at = datetime(2026, 6, 15, 12, tzinfo=ZoneInfo("America/Los_Angeles"))
    every_spelling = min(
        (decide(identity, host, path, at, policy, people) for host in dict.fromkeys(hosts)), key=_strictness
    )

    assert decide_request(identity, hosts, path, at, policy, people) == every_spelling


class _Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)


def test_an_addon_group_runs_its_addons_in_order_and_keeps_their_names():
    calls: list[str] = []
    first, second = _Recorder("first", calls), _Recorder("second", calls)

    async def run() -> None:
        with taddons.context() as context:
            context.master.addons.add(AddonGroup(first, second))
            await context.master.addons.trigger_event(HttpRequestHeadersHook(tflow.tflow()))
            assert context.master.addons.get("first") is first
            assert context.master.addons.get("second") is second

    asyncio.run(run())

    assert calls == ["first", "second"]


def test_memory_guard_keeps_only_the_message_being_handled():
    flow = tflow.twebsocketflow()
    newest = flow.websocket.messages[-1]  # type: ignore[union-attr]
    assert len(flow.websocket.messages) > 1  # type: ignore[union-attr]

    MemoryGuard().websocket_message(flow)

    assert flow.websocket.messages == [newest]  # type: ignore[union-attr]
    tcp = tflow.ttcpflow()
    MemoryGuard().tcp_message(tcp)
    assert len(tcp.messages) == 1


@dataclass
class _NamedHook(hooks.Hook):
    note: str

    name = "_named"  # the method addons implement to take it


class _Takes:
    def __init__(self, name: str, calls: list[str], *, fail: bool = False, halt: bool = False) -> None:
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt

    def _named(self, hook: str) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError("a recorder failed")
        if self.halt:
            raise exceptions.AddonHalt


class _Ignores:
    def __init__(self, name: str) -> None:
        self.name = name


def test_announcing_reaches_the_same_addons_in_the_same_order_as_mitmproxy():
    async def run(trigger: str) -> list[str]:
        calls: list[str] = []
        with taddons.context() as context:
            manager = context.master.addons
            manager.add(_Takes("a", calls), _Ignores("b"))
            manager.add(AddonGroup(_Ignores("c"), _Takes("d", calls, fail=True), _Takes("e", calls)))
            manager.add(_Takes("f", calls, halt=True), _Takes("g", calls))
            event = _NamedHook("x")
            if trigger == "mitmproxy":
                await manager.trigger_event(event)
            elif trigger == "skipping manager":
                skip_entries_without_hooks(manager)
                await manager.handle_lifecycle(event)  # as mitmproxy's proxy server calls it
            else:
                await trigger_where_handled(manager, event)
        return calls

    async def each() -> list[list[str]]:
        return [await run(trigger) for trigger in ("citygate", "skipping manager", "mitmproxy")]

    citygate, skipping_manager, mitmproxy = asyncio.run(each())

    # A failing addon is logged and skips the rest of its own chain entry ("e"), as mitmproxy
    # does; AddonHalt ends the event ("g").
    assert citygate == skipping_manager == mitmproxy == ["a", "d", "f"]


def test_the_skipping_manager_keeps_every_addon_and_option_of_the_master():
    async def run() -> None:
        with taddons.context() as context:
            manager = context.master.addons
            before = (list(manager.chain), dict(manager.lookup))
            skip_entries_without_hooks(manager)
            assert isinstance(manager, HookSkippingAddonManager)
            assert (list(manager.chain), dict(manager.lookup)) == before
            calls: list[str] = []
            await manager.trigger_event(_NamedHook("x"))  # which entries take it is now known
            late = _Takes("late", calls)
            manager.add(late)  # added after the switch and after the event: still reached
            await manager.trigger_event(_NamedHook("x"))
            manager.remove(late)
            await manager.trigger_event(_NamedHook("x"))  # removed: no longer reached
            assert calls == ["late"]

    asyncio.run(run())
