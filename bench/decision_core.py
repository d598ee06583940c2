"""How long does the decision core take at city scale?

Generates a city (20,000 employees in 50 departments, 100,000 grants in 50 grant files, the
full demo catalog) in a temporary folder, loads it with `load_policy`, and times:

- one decision as the proxy makes it for a social-media request, directory answers cached
  (warm): `people_involved` + the cached Person records + `decide_request`, for a mix of
  allowed, path-scoped, out-of-scope, not-granted and not-social requests;
- the non-social fast path: normalizing a request's hosts and looking them up in the catalog;
- a catalog lookup per host, with the real catalog and one 100 times larger (the lookup walks the
  host's labels, so its time must not depend on the catalog's size);
- loading the configuration, reloading it (a second load while the first is in memory), and
  reloading it after one grant file changed (the others are not read again);
- the machine's own spread: a fixed computation as long as a typical decision, timed the same
  way, whose p99 / p50 no change to citygate can reduce; and the decision's own cost per
  request, the fastest of its runs in 5 passes over all requests, which leaves that spread out.

Each call is timed on its own (perf_counter_ns) with the garbage collector on, as in the proxy.

Reproduce:

    .venv/bin/python bench/decision_core.py          # or: make bench-core
    .venv/bin/python bench/decision_core.py --employees 20000 --grants 100000 --decisions 200000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from citygate.directory.model import Person
from citygate.proxy.catalog import Catalog, Site
from citygate.proxy.decision import Identity, decide_request, people_involved
from citygate.proxy.hosts import normalize_host
from citygate.proxy.policy import Policy, load_policy

REPO = Path(__file__).resolve().parents[1]
DEPARTMENTS = 50
TARGET_P99_US = 20.0
NOT_SOCIAL = ("www.example.org", "intranet.city.example", "cdn.jsdelivr.net", "10.1.2.3", "news.bbc.co.uk")


def write_city(folder: Path, employees: int, grants: int, seed: int) -> tuple[Path, dict[str, Person]]:
    """A config, a catalog (the demo's), grant files and the directory's answers for everyone."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data, not secrets
    catalog = yaml.safe_load((REPO / "config" / "sites.yaml").read_text())
    site_ids = [site["id"] for site in catalog["sites"]]
    today = date.today()
    people: dict[str, Person] = {}
    for d in range(DEPARTMENTS):
        uid = f"dir{d:02d}"
        people[uid] = Person(uid, f"Director {d}", f"dept{d:02d}", groups=frozenset({"directors"}))
    for n in range(employees):
        uid = f"emp{n:05d}"
        people[uid] = Person(uid, f"Employee {n}", f"dept{n % DEPARTMENTS:02d}")
    by_department: dict[int, list[dict[str, Any]]] = {d: [] for d in range(DEPARTMENTS)}
    for g in range(grants):
        n = g % employees  # every employee gets grants/employees grants, for different sites
        department = n % DEPARTMENTS
        grant: dict[str, Any] = {
            "id": f"g{g:06d}",
            "employee": f"emp{n:05d}",
            "sites": [site_ids[(g // employees + n) % len(site_ids)]],
            "purpose": "Benchmark grant",
            "approved_by": f"dir{department:02d}",
            "approved_on": (today - timedelta(days=rng.randrange(1, 60))).isoformat(),
            "expires": (today + timedelta(days=rng.randrange(30, 300))).isoformat(),
        }
        if rng.random() < 0.2:
            grant["paths"] = {grant["sites"][0]: [f"/CityPage{department}"]}
        by_department[department].append(grant)
    (folder / "grants").mkdir(parents=True)
    for department, entries in by_department.items():
        (folder / "grants" / f"dept{department:02d}.yaml").write_text(
            yaml.dump(
                {"department": f"dept{department:02d}", "grants": entries},
                Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),  # libyaml: seconds, not a minute
                sort_keys=False,
            )
        )
    (folder / "sites.yaml").write_text((REPO / "config" / "sites.yaml").read_text())
    config = {
        "city": "Benchmark City",
        "timezone": "America/Los_Angeles",
        "catalog": "sites.yaml",
        "grants": "grants",
        "approval": {"director_groups": ["directors"], "executive_groups": ["city-managers"]},
        "directory": {"backend": "static", "ldif": str(REPO / "directory" / "demo.ldif")},
    }
    path = folder / "citygate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, people


def request_mix(
    policy: Policy, people: dict[str, Person], count: int, seed: int
) -> list[tuple[str, list[str], str]]:
    """(user, hosts as the proxy collects them, path): granted, scoped, refused and ordinary."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data, not secrets
    users = [uid for uid in people if uid.startswith("emp")]
    hosts_of = {site.id: (site.domains or site.asset_domains)[0] for site in policy.catalog.sites.values()}
    granted_sites: dict[str, list[str]] = {}
    for grant in policy.grants:
        granted_sites.setdefault(grant.employee, []).extend(grant.sites)
    mix = []
    for _ in range(count):
        user = rng.choice(users)
        roll = rng.random()
        if roll < 0.25:  # ordinary site: the proxy's most common case
            host = rng.choice(NOT_SOCIAL)
        else:
            granted = granted_sites.get(user, []) if roll < 0.6 else []
            site = rng.choice(granted) if granted else rng.choice(list(hosts_of))
            host = f"www.{hosts_of[site]}"
        path = rng.choice(("/", "/CityPage3/posts", "/messages", "/CityPage7"))
        # CONNECT authority, Host header and SNI, as `requestheaders` collects them.
        mix.append((user, [f"{host}:443", host, host], path))
    return mix


def timed(calls: Sequence[Callable[[], object]]) -> list[float]:
    """Microseconds per call, each timed on its own."""
    clock = time.perf_counter_ns
    times = []
    for call in calls:
        start = clock()
        call()
        times.append((clock() - start) / 1000)
    return times


def fastest_of(calls: Sequence[Callable[[], object]], passes: int) -> list[float]:
    """Microseconds per call: the fastest of its runs in `passes` passes over all the calls.

    The code's own cost for each request, without what the machine adds now and then (other
    tenants of the VM, interrupts, which can slow it down for milliseconds at a time): the
    reading timeit's documentation recommends. The passes are seconds apart, so a slow spell
    rarely hits all runs of one request, and each run follows other requests, as in the proxy
    (no cache kept warm by repeating one request). Requests still differ (a path-scoped grant
    costs more than no grant): the spread that remains is the code's.
    """
    best = timed(calls)
    for _ in range(passes - 1):
        best = [min(a, b) for a, b in zip(best, timed(calls), strict=True)]
    return best


def percentile_of(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def summary(times: list[float]) -> str:
    return (
        f"p50 {percentile_of(times, 50):6.2f} us   p99 {percentile_of(times, 99):6.2f} us   "
        f"p99.9 {percentile_of(times, 99.9):7.2f} us   mean {statistics.fmean(times):6.2f} us"
    )


def machine_jitter(p50_us: float, count: int) -> list[float]:
    """Times of a fixed computation as long as a typical decision, timed the same way.

    Its p99 / p50 is the machine's own spread (other tenants, interrupts, caches): what part of
    a decision's p99 no code change can remove.
    """
    size = 100
    while statistics.median(timed([lambda size=size: sum(range(size))] * 2_000)) < p50_us:
        size = int(size * 1.2)
    return timed([lambda size=size: sum(range(size))] * count)


def big_catalog(catalog: Catalog, factor: int) -> Catalog:
    """The catalog plus (factor - 1) times as many made-up sites with as many domains."""
    sites = list(catalog.sites.values())
    domains = sum(len(site.domains) + len(site.asset_domains) for site in sites)
    extra = [
        Site(f"filler-{n}", f"Filler {n}", tuple(f"site{n}-{k}.example" for k in range(10)))
        for n in range(domains * (factor - 1) // 10)
    ]
    return Catalog(sites + extra)


def lookup_times(catalog: Catalog, hosts: Sequence[str], rounds: int) -> list[float]:
    normalized = [normalize_host(host) for host in hosts]
    # `lookup` walks the labels every time; `match` remembers recent hosts, which would hide the walk.
    calls = [lambda h=h: catalog.lookup(h) for h in normalized if h is not None] * rounds
    return timed(calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--employees", type=int, default=20_000)
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    print(f"Reproduce: {Path(sys.executable).name} bench/decision_core.py {' '.join(sys.argv[1:])}".rstrip())

    with tempfile.TemporaryDirectory() as temp:
        started = time.perf_counter()
        config, people = write_city(Path(temp), args.employees, args.grants, args.seed)
        print(
            f"generated {args.employees:,} employees, {args.grants:,} grants in {time.perf_counter() - started:.1f} s"
        )

        started = time.perf_counter()
        policy = load_policy(config)
        load = time.perf_counter() - started
        started = time.perf_counter()
        reloaded = load_policy(config)
        reload = time.perf_counter() - started
        assert len(reloaded.grants) == len(policy.grants) == args.grants, (
            len(policy.grants),
            policy.warnings[:3],
        )
        del reloaded
        # A director edits one department's file: the reload reads that file only.
        edited = Path(temp) / "grants" / "dept07.yaml"
        edited.write_text(edited.read_text().replace("Benchmark grant", "Benchmark grant, renewed", 1))
        started = time.perf_counter()
        after_edit = load_policy(config, previous=policy)
        edit_reload = time.perf_counter() - started
        assert len(after_edit.grants) == args.grants
        policy = after_edit
        catalog_domains = sum(len(s.domains) + len(s.asset_domains) for s in policy.catalog.sites.values())
        print(
            f"config: {len(policy.catalog.sites)} sites ({catalog_domains} domains), {len(policy.grants):,} grants "
            f"in {len(policy.sources) - 2} files: load {load:.2f} s, reload {reload:.2f} s, "
            f"reload after one file changed {edit_reload:.2f} s"
        )

        at = datetime.now(policy.timezone)
        mix = request_mix(policy, people, args.decisions, args.seed)

        def one_decision(user: str, hosts: list[str], path: str) -> object:
            # What the gate does per request once the directory answers are cached.
            uids = people_involved(policy, user, hosts)
            known = {uid: people.get(uid) for uid in uids}
            return decide_request(Identity(user, "basic"), hosts, path, at, policy, known)

        def fast_path(hosts: list[str]) -> bool:
            return any(policy.catalog.match(h) for host in hosts if (h := normalize_host(host)))

        social = [(u, h, p) for u, h, p in mix if fast_path(h)]
        ordinary = [(u, h, p) for u, h, p in mix if not fast_path(h)]
        outcomes: dict[str, int] = {}
        for user, hosts, path in social[:20_000]:
            decision = one_decision(user, hosts, path)
            outcomes[decision.reason.value] = outcomes.get(decision.reason.value, 0) + 1  # type: ignore[attr-defined]
        print(
            "social-media requests by reason (first 20,000):",
            ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
        )

        for _ in range(2):  # warm: the second pass is the one reported
            decisions = timed([lambda u=u, h=h, p=p: one_decision(u, h, p) for u, h, p in social])
            decide_only = timed(
                [
                    lambda u=u, h=h, p=p: decide_request(Identity(u, "basic"), h, p, at, policy, people)
                    for u, h, p in social
                ]
            )
            ordinary_times = timed([lambda h=h: fast_path(h) for _, h, _ in ordinary])
        own_cost = fastest_of([lambda u=u, h=h, p=p: one_decision(u, h, p) for u, h, p in social], 5)
        print(f"\nper social-media decision, as the gate makes it ({len(social):,} requests, 3 hosts each):")
        print(f"  people_involved + decide_request  {summary(decisions)}")
        print(f"  decide_request alone              {summary(decide_only)}")
        print(f"  the same, fastest of 5 passes     {summary(own_cost)}")
        print(f"per ordinary request (hosts normalized and looked up, {len(ordinary):,} requests):")
        print(f"  fast path                         {summary(ordinary_times)}")
        reference = machine_jitter(statistics.median(decisions), len(social))
        print(
            f"this machine's spread: a fixed piece of Python as long as a decision's p50   {summary(reference)}"
        )
        for label, times in (
            ("single calls", decisions),
            ("the code's own cost (fastest of 5 passes)", own_cost),
        ):
            p99 = percentile_of(times, 99)
            verdict = "met" if p99 <= TARGET_P99_US else "MISSED"
            print(f"target: p99 <= {TARGET_P99_US:g} us per decision, {label}: {verdict} ({p99:.2f} us)")

        hosts = [
            "www.facebook.com",
            "a.b.c.d.fbcdn.net",
            "www.example.org",
            "x.y.z.example.com",
            "reddit.com",
        ]
        print("\ncatalog lookup per host (normalized host -> site), by catalog size:")
        for factor in (1, 100):
            catalog = policy.catalog if factor == 1 else big_catalog(policy.catalog, factor)
            domains = sum(len(s.domains) + len(s.asset_domains) for s in catalog.sites.values())
            times = lookup_times(catalog, hosts, 20_000)
            print(f"  {len(catalog.sites):6,} sites, {domains:7,} domains   {summary(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
