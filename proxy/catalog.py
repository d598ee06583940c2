"""The social-media site catalog: which hosts belong to which site.

Indexed once at load time into one dictionary keyed by domain, so a lookup is a walk over the
host's own labels (a handful of dictionary probes) whatever the size of the catalog. IP
literals match only the explicit `networks` a site lists, through one dictionary per prefix
length, so an address never matches a site by accident.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from citygate.directory.problems import Problems
from citygate.proxy.hosts import Host, normalize_host
from citygate.proxy.yamlfile import Items, Node, read_yaml

SITE_ID = re.compile(r"[a-z0-9][a-z0-9-]*")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# How many hosts `Catalog.match` remembers: the hosts a city's employees visit in a while.
_RECENT_HOSTS = 16_384
_UNKNOWN = object()


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    domains: tuple[str, ...]
    asset_domains: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    # An allowed tunnel to this site is passed through undecrypted instead of being looked into:
    # cheaper, but a request inside it can name any host the site's front end serves (another
    # brand on a shared CDN), and that host is never decided. Off unless an admin accepts that.
    pass_through_when_granted: bool = False


@dataclass(frozen=True, slots=True)
class SiteMatch:
    """A host found in the catalog.

    `matched` is the catalog entry that matched (the host itself or a parent domain);
    `is_asset` is True for CDN/API/short-link domains, where path scopes do not apply.
    """

    site: Site
    matched: str
    is_asset: bool


class Catalog:
    def __init__(self, sites: list[Site]) -> None:
        self.sites: dict[str, Site] = {site.id: site for site in sites}
        self._by_domain: dict[str, SiteMatch] = {}
        self._by_network: dict[int, dict[IPNetwork, SiteMatch]] = {}
        for site in sites:
            for domain in site.domains:
                self._by_domain[domain] = SiteMatch(site, domain, is_asset=False)
            for domain in site.asset_domains:
                self._by_domain[domain] = SiteMatch(site, domain, is_asset=True)
            for network in site.networks:
                per_length = self._by_network.setdefault(network.prefixlen, {})
                per_length[network] = SiteMatch(site, str(network), is_asset=False)
        self._recent: dict[str, SiteMatch | None] = {}
        # Longest prefixes first, so the most specific network wins.
        self._prefix_lengths = sorted(self._by_network, reverse=True)
        # (IP version, prefix length, network bits) -> site: an address is looked up by its own
        # leading bits, one dictionary probe per prefix length.
        self._by_prefix: dict[tuple[int, int, int], SiteMatch] = {
            (network.version, length, int(network.network_address) >> (network.max_prefixlen - length)): found
            for length, networks in self._by_network.items()
            for network, found in networks.items()
        }

    def closest(self, text: str) -> Site | None:
        """The site `text` most likely meant (a misspelled id, name or domain), if any is close."""
        spellings: dict[str, Site] = {}
        for site in self.sites.values():
            for spelling in (site.id, site.name.casefold(), *site.domains):
                spellings.setdefault(spelling, site)
        close = difflib.get_close_matches(text.strip().casefold(), list(spellings), n=1, cutoff=0.75)
        return spellings[close[0]] if close else None

    def match(self, host: Host) -> SiteMatch | None:
        """The catalog entry `host` belongs to, or None; remembered for the hosts seen recently.

        The proxy asks up to three times per request for the same few hosts (the CONNECT line,
        the SNI, the Host header; the gate, then the decision): one dictionary probe instead of
        a walk. The memory is bounded by emptying it when full.
        """
        found = self._recent.get(host.name, _UNKNOWN)
        if found is _UNKNOWN:
            found = self.lookup(host)
            if len(self._recent) >= _RECENT_HOSTS:
                self._recent.clear()
            self._recent[host.name] = found
        return found  # type: ignore[return-value]

    def lookup(self, host: Host) -> SiteMatch | None:
        """The catalog entry `host` belongs to, or None, found by walking the host's labels."""
        if host.ip is not None:
            return self._match_ip(host.ip)
        # The host itself, then each parent domain (as domain_suffixes lists them), without
        # building the list: this runs for every host of every request.
        name, by_domain = host.name, self._by_domain
        while True:
            found = by_domain.get(name)
            if found is not None:
                return found
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]

    def _match_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> SiteMatch | None:
        # Compared as integers: building an ip_network per prefix length cost ~3 us each.
        address, bits = int(ip), ip.max_prefixlen
        for length in self._prefix_lengths:
            if length > bits:
                continue
            found = self._by_prefix.get((ip.version, length, address >> (bits - length)))
            if found is not None:
                return found
        return None


def load_catalog(path: Path, problems: Problems) -> Catalog:
    """The catalog in `path`; every problem found is appended to `problems`."""
    document = read_yaml(path, problems, 'list the social-media sites under "sites:" (see config/sites.yaml)')
    if document is None:
        return Catalog([])
    entries = document.get("sites") if isinstance(document, Node) else None
    if not isinstance(entries, Items):
        problems.error(
            path,
            getattr(document, "line", 1),
            'the catalog must have a "sites:" list',
            'start the file with "sites:" followed by "- id: ..." entries',
        )
        return Catalog([])

    sites: list[Site] = []
    owner: dict[str, tuple[str, int]] = {}
    network_owner: dict[IPNetwork, tuple[str, int]] = {}
    for entry, line in zip(entries, entries.item_lines, strict=True):
        site = _parse_site(path, entry, line, problems)
        if site is None:
            continue
        if site.id in {s.id for s in sites}:
            problems.error(path, line, f'site id "{site.id}" is used twice', "give each site its own id")
            continue
        for domain in site.domains + site.asset_domains:
            if domain in owner:
                other, other_line = owner[domain]
                problems.error(
                    path,
                    line,
                    f'domain "{domain}" is already listed under "{other}" (line {other_line})',
                    "list each domain under one site only",
                )
            owner[domain] = (site.id, line)
        for network in site.networks:
            for known, (other, other_line) in network_owner.items():
                if network.version == known.version and network.overlaps(known):
                    problems.error(
                        path,
                        line,
                        f'network {network} overlaps {known} of "{other}" (line {other_line})',
                        "give each address range to one site only",
                    )
            network_owner[network] = (site.id, line)
        sites.append(site)
    if not sites and not problems.errors:
        problems.error(
            path,
            entries.line,
            "the catalog lists no sites, so no social-media site would be blocked",
            "list the sites to block (see config/sites.yaml)",
        )
    return Catalog(sites)


def _parse_site(path: Path, entry: object, line: int, problems: Problems) -> Site | None:
    if not isinstance(entry, Node):
        problems.error(
            path,
            line,
            "a site must be a mapping",
            'write "- id: ...", "name: ...", "domains: [...]"',
        )
        return None
    unknown = set(entry) - {"id", "name", "domains", "asset_domains", "networks", "pass_through_when_granted"}
    for key in sorted(unknown):
        problems.error(
            path,
            entry.line_of(key),
            f'unknown key "{key}" in a site',
            "use id, name, domains, asset_domains, networks or pass_through_when_granted",
        )
    site_id = entry.get("id")
    if not isinstance(site_id, str) or not SITE_ID.fullmatch(site_id):
        problems.error(
            path,
            entry.line_of("id"),
            f"site id {site_id!r} is missing or invalid",
            'use lower-case letters, digits and "-", e.g. "id: facebook"',
        )
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.error(
            path,
            entry.line_of("name"),
            f'site "{site_id}" has no name',
            'add e.g. "name: Facebook"',
        )
        name = site_id
    domains = _parse_domains(path, entry, "domains", problems)
    assets = _parse_domains(path, entry, "asset_domains", problems)
    if not domains and not assets:
        problems.error(
            path,
            entry.line_of("domains"),
            f'site "{site_id}" lists no domains',
            'add e.g. "domains: [facebook.com]"',
        )
    networks = _parse_networks(path, entry, problems)
    pass_through = _pass_through(path, entry, site_id, problems)
    return Site(site_id, name.strip(), tuple(domains), tuple(assets), tuple(networks), pass_through)


def _pass_through(path: Path, entry: Node, site_id: str, problems: Problems) -> bool:
    value = entry.get("pass_through_when_granted", False)
    line = entry.line_of("pass_through_when_granted")
    if not isinstance(value, bool):
        problems.error(
            path,
            line,
            f'pass_through_when_granted of site "{site_id}" must be true or false, not {value!r}',
            "write pass_through_when_granted: true, or leave it out (the default, false, is safer)",
        )
        return False
    if value:
        problems.warning(
            path,
            line,
            f'allowed tunnels to "{site_id}" are passed through undecrypted: a request inside one '
            "can name any other site its front end serves (domain fronting), and that site is not decided",
            "remove pass_through_when_granted unless the fronting risk is accepted in writing",
        )
    return value


def _parse_domains(path: Path, entry: Node, key: str, problems: Problems) -> list[str]:
    values = entry.get(key, [])
    if not isinstance(values, list):
        problems.error(path, entry.line_of(key), f"{key} must be a list", f"write {key}: [example.com]")
        return []
    domains: list[str] = []
    for value, line in _with_lines(entry, key, values):
        host = normalize_host(value) if isinstance(value, str) else None
        bad_form = isinstance(value, str) and (
            "/" in value or "*" in value or value.startswith(".") or ":" in value
        )
        if host is None or host.ip is not None or bad_form:
            problems.error(
                path,
                line,
                f"{value!r} in {key} is not a domain name",
                'write a bare domain such as "facebook.com" (it covers every subdomain); '
                "put IP ranges under networks",
            )
            continue
        domains.append(host.name)
    return domains


def _parse_networks(path: Path, entry: Node, problems: Problems) -> list[IPNetwork]:
    values = entry.get("networks", [])
    if not isinstance(values, list):
        problems.error(
            path,
            entry.line_of("networks"),
            "networks must be a list",
            "write networks: [192.0.2.0/24]",
        )
        return []
    networks: list[IPNetwork] = []
    for value, line in _with_lines(entry, "networks", values):
        try:
            networks.append(ipaddress.ip_network(str(value)))
        except ValueError as exc:
            problems.error(
                path,
                line,
                f"{value!r} in networks is not an IP network ({exc})",
                'write a CIDR range with host bits zero, e.g. "157.240.0.0/16"',
            )
    return networks


def _with_lines(entry: Node, key: str, values: list[object]) -> list[tuple[object, int]]:
    """Each list item with its own line (a flow list `[a, b]` shares the key's line)."""
    lines = values.item_lines if isinstance(values, Items) else [entry.line_of(key)] * len(values)
    return list(zip(values, lines, strict=True))
