"""How many directory calls do 1,000 proxy requests from 50 users cost, with a warm cache?

Starts a private slapd (tests/slapd.py: the demo city plus 50 generated Parks employees,
each with a Facebook grant approved by the Parks Director), then drives citygate's
DirectoryGateway the way the proxy does for each request: verify the Basic credentials, fetch
the employee and the approvers the grants name, decide. It counts the backend calls the gateway
made and the binds and searches slapd logged. A last run sends the same traffic through several
gateways sharing their answers, as the workers of `citygate run --workers N` do.

Reproduce (needs slapd and ldap-utils: tools/system-deps installs them):

    .venv/bin/python bench/directory_calls.py
    .venv/bin/python bench/directory_calls.py --users 50 --requests 1000 --spread 300 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from slapd import PEOPLE_BASE, Slapd, directory_options  # noqa: E402

from citygate.directory.backends import open_directory  # noqa: E402
from citygate.directory.gateway import DirectoryGateway  # noqa: E402
from citygate.directory.model import BindOutcome  # noqa: E402
from citygate.directory.shared import FILE_NAME, SharedAnswers, scope_of  # noqa: E402
from citygate.proxy.decision import Identity, decide_request, people_involved  # noqa: E402
from citygate.proxy.policy import Policy, load_policy  # noqa: E402

HOSTS = ["www.facebook.com"]


class Clock:
    """The gateway's clock, so that minutes of traffic can be replayed in a second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def employees_ldif(count: int) -> str:
    return "\n".join(
        f"dn: uid=user{n:03d},{PEOPLE_BASE}\nobjectClass: inetOrgPerson\nuid: user{n:03d}\n"
        f"cn: User {n}\nsn: {n}\ndepartmentNumber: Parks\nuserPassword: user{n:03d}-pass\n"
        for n in range(1, count + 1)
    )


def write_config(folder: Path, server: Slapd, users: int) -> Path:
    today = datetime.now().date()
    grants = [
        {
            "id": f"parks-bench-{n:03d}",
            "employee": f"user{n:03d}",
            "sites": ["facebook"],
            "purpose": "Benchmark",
            "approved_by": "ahernandez",
            "approved_on": (today - timedelta(days=1)).isoformat(),
            "expires": (today + timedelta(days=30)).isoformat(),
        }
        for n in range(1, users + 1)
    ]
    (folder / "grants").mkdir(parents=True)
    (folder / "grants" / "parks.yaml").write_text(
        yaml.safe_dump({"department": "Parks", "grants": grants}, sort_keys=False), encoding="utf-8"
    )
    config = {
        "city": "City of Example",
        "timezone": "America/Los_Angeles",
        "catalog": str(REPO / "config" / "sites.yaml"),
        "grants": "grants",
        "approval": {"director_groups": ["directors"], "executive_groups": ["city-managers"]},
        "directory": {"backend": "ldap", **directory_options(server, folder)},
    }
    path = folder / "citygate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


async def one_request(gateway: DirectoryGateway, policy: Policy, user: str) -> bool:
    verification = await gateway.authenticate(user, f"{user}-pass")
    verified = verification.outcome is BindOutcome.OK
    identity = Identity(user, "basic", authenticated=verified)
    people = await gateway.people(people_involved(policy, user if verified else None, HOSTS))
    at = datetime.now(policy.timezone)
    return decide_request(identity, HOSTS, "/CityOfExampleParks", at, policy, people).allowed


async def replay(
    gateways: list[DirectoryGateway],
    policy: Policy,
    users: list[str],
    requests: int,
    spread: float,
    clock: Clock,
) -> int:
    """`requests` requests, users taking turns, in batches as concurrent browsers would send them.

    With several gateways (workers), each batch shifts which worker serves which user, as the
    kernel spreads an employee's connections over the workers.
    """
    allowed = 0
    batch = len(users)
    for start in range(0, requests, batch):
        clock.now += spread * min(batch, requests - start) / requests
        shift = start // batch
        results = await asyncio.gather(
            *(
                one_request(gateways[(shift + i) % len(gateways)], policy, users[(start + i) % len(users)])
                for i in range(min(batch, requests - start))
            )
        )
        allowed += sum(results)
    return allowed


def measure(
    server: Slapd, gateways: list[DirectoryGateway], run: Callable[[], Awaitable[int]]
) -> tuple[int, dict[str, int], int, int]:
    def calls() -> Counter[str]:
        return sum((Counter(gateway.calls) for gateway in gateways), Counter())

    before, binds, searches = calls(), server.binds(), server.searches()
    allowed = asyncio.run(run())
    after = {name: count - before.get(name, 0) for name, count in calls().items()}
    return allowed, after, server.binds() - binds, server.searches() - searches


def report(title: str, allowed: int, total: int, calls: dict[str, int], binds: int, searches: int) -> None:
    detail = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
    print(f"{title}\n  allowed {allowed}/{total}; directory calls: {sum(calls.values())} ({detail})")
    print(f"  seen by slapd: {binds} binds, {searches} searches")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--spread", type=float, default=300.0, help="seconds of (simulated) time the second run spans"
    )
    parser.add_argument("--workers", type=int, default=4, help="workers sharing answers in the last run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, Slapd(Path(temp) / "slapd") as server:
        server.add(employees_ldif(args.users))
        policy = load_policy(write_config(Path(temp) / "config", server, args.users))
        clock = Clock()
        directory = open_directory(policy.directory, str(policy.sources[0]))
        gateway = DirectoryGateway.cached(directory, policy.directory, str(policy.sources[0]), clock=clock)
        users = [f"user{n:03d}" for n in range(1, args.users + 1)]
        cache = gateway.cache
        print(
            f"cache: ttl {cache.ttl:g} s, negative_ttl {cache.negative_ttl:g} s, "
            f"credentials_ttl {cache.credentials_ttl:g} s, grace {cache.grace:g} s"
        )

        result = measure(server, [gateway], lambda: replay([gateway], policy, users, args.users, 0, clock))
        report(
            f"warm-up: one request from each of {args.users} users (cold cache)",
            *result[:1],
            args.users,
            *result[1:],
        )

        result = measure(server, [gateway], lambda: replay([gateway], policy, users, args.requests, 0, clock))
        report(
            f"{args.requests} requests from {args.users} users, warm cache, within one TTL",
            result[0],
            args.requests,
            *result[1:],
        )

        result = measure(
            server, [gateway], lambda: replay([gateway], policy, users, args.requests, args.spread, clock)
        )
        report(
            f"{args.requests} requests from {args.users} users spread over {args.spread:g} s "
            "(entries expire and are fetched again)",
            result[0],
            args.requests,
            *result[1:],
        )
        gateway.close()

        # As `citygate run --workers N` runs: N processes, each its own gateway and cache, sharing
        # their answers through one file (directory/shared.py). Fresh caches, a fresh file.
        scope = scope_of(policy.directory)
        shared = Path(temp) / "shared" / FILE_NAME
        shared.parent.mkdir()
        workers = [
            DirectoryGateway(
                SharedAnswers(
                    open_directory(policy.directory, str(policy.sources[0])),
                    shared,
                    scope,
                    cache,
                    clock=clock,
                ),
                cache,
                clock=clock,
            )
            for _ in range(args.workers)
        ]
        result = measure(
            server, workers, lambda: replay(workers, policy, users, args.requests, args.spread, clock)
        )
        asked = sum(
            sum(w.backend.directory_calls.get(name, 0) for name in ("lookup", "group_members"))
            for w in workers
        )  # type: ignore[attr-defined]
        report(
            f"the same through {args.workers} workers sharing their answers (each user's requests "
            f"served by every worker in turn)",
            result[0],
            args.requests,
            *result[1:],
        )
        print(f"  lookups that reached the directory: {asked} (for {args.users + 1} people)")
        for worker in workers:
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
