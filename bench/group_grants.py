"""Do group grants slow the decision down? The same requests against two policies, side by side.

The city of bench/decision_core.py (20,000 employees in 50 departments, 100,000 personal
grants), once as it is (A) and once with 1,000 group grants of 50 members each added (B): each
group's members are employees of one department, its grant for one site, approved by that
department's Director. Every request is decided as the gate decides it (addons/gate.py
`_decide`): `people_involved`, the person's `facts_needed` (their groups' and department's
grants), then `decide_request`, with the directory's answers cached. The requests are decision_core.py's
mix (drawn from the personal grants: the figure the decision core was measured with), so a
member's request for one of their groups' sites is allowed by the group grant in B and refused
in A; those are also timed on their own. Each request is timed against both policies back to back
(`timed_side_by_side`), in several passes, and its time is the fastest of its runs (the code's
own cost, as in decision_core.py): the machine's slow spells fall on both policies alike.

Reproduce:

    .venv/bin/python bench/group_grants.py        # or: make bench-groups
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from decision_core import DEPARTMENTS, percentile_of, request_mix, summary, write_city

from citygate.directory.model import Person
from citygate.proxy.decision import Identity, decide_request, facts_needed, people_for_sites, sites_named
from citygate.proxy.grants import GrantKind
from citygate.proxy.policy import Policy, load_policy

TARGET_RATIO = 1.10  # B's p99 within 10% of A's


def add_group_grants(
    folder: Path, people: dict[str, Person], groups: int, size: int, seed: int
) -> tuple[dict[str, Person], dict[str, frozenset[str]]]:
    """Write `groups` group grants to grants/groups.yaml; the people with their new groups, and each
    group's members' departments (what the gate fetches for a group grant)."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data, not secrets
    site_ids = [site["id"] for site in yaml.safe_load((folder / "sites.yaml").read_text())["sites"]]
    by_department: dict[str, list[str]] = {}
    for uid, person in people.items():
        if uid.startswith("emp"):
            by_department.setdefault(person.department or "", []).append(uid)
    member_of: dict[str, set[str]] = {}
    departments: dict[str, frozenset[str]] = {}
    entries: list[dict[str, Any]] = []
    today = date.today()
    for g in range(groups):
        department = g % DEPARTMENTS
        name = f"group{g:04d}"
        for uid in rng.sample(by_department[f"dept{department:02d}"], size):
            member_of.setdefault(uid, set()).add(name)
        departments[name] = frozenset({f"dept{department:02d}"})
        entries.append(
            {
                "id": f"grp{g:04d}",
                "group": name,
                "sites": [rng.choice(site_ids)],
                "purpose": "Benchmark group grant",
                "approved_by": f"dir{department:02d}",
                "approved_on": (today - timedelta(days=10)).isoformat(),
                "expires": (today + timedelta(days=200)).isoformat(),
            }
        )
    (folder / "grants" / "groups.yaml").write_text(yaml.safe_dump({"grants": entries}, sort_keys=False))
    grouped = {
        uid: Person(p.uid, p.name, p.department, p.title, p.groups | member_of.get(uid, set()))
        for uid, p in people.items()
    }
    return grouped, departments


def gathered_facts(
    policy: Policy,
    people: Mapping[str, Person],
    groups: Mapping[str, frozenset[str]],
    user: str,
    hosts: list[str],
) -> tuple[dict[str, Person | None], dict[str, frozenset[str]]]:
    """The directory facts of one request, gathered as the gate gathers them, from cached answers."""
    site_ids = sites_named(policy, hosts)
    found = {uid: people.get(uid) for uid in people_for_sites(policy, user, site_ids)}
    person = found.get(user)
    if person is None:
        return found, {}
    facts = facts_needed(policy, person, site_ids)
    for uid in facts.approvers - found.keys():
        found[uid] = people.get(uid)
    return found, {group: groups[group] for group in facts.groups}


def decision_calls(
    policy: Policy,
    people: Mapping[str, Person],
    groups: Mapping[str, frozenset[str]],
    mix: list[tuple[str, list[str], str]],
) -> list[Callable[[], object]]:
    """One call per request: the gate's `_decide` (facts, then the decision)."""
    at = datetime.now(policy.timezone)

    def decide(user: str, hosts: list[str], path: str) -> object:
        found, group_facts = gathered_facts(policy, people, groups, user, hosts)
        return decide_request(Identity(user, "basic"), hosts, path, at, policy, found, group_facts)

    return [lambda u=user, h=hosts, p=path: decide(u, h, p) for user, hosts, path in mix]


def core_calls(
    policy: Policy,
    people: Mapping[str, Person],
    groups: Mapping[str, frozenset[str]],
    mix: list[tuple[str, list[str], str]],
) -> list[Callable[[], object]]:
    """One call per request: `decide_request` alone, its directory facts gathered beforehand."""
    at = datetime.now(policy.timezone)
    calls = []
    for user, hosts, path in mix:
        found, group_facts = gathered_facts(policy, people, groups, user, hosts)
        identity = Identity(user, "basic")
        calls.append(
            lambda i=identity, h=hosts, p=path, f=found, g=group_facts: decide_request(
                i, h, p, at, policy, f, g
            )
        )
    return calls


def timed_side_by_side(calls: Mapping[str, list[Callable[[], object]]]) -> dict[str, list[float]]:
    """Microseconds per call, each timed on its own; the variants of one request back to back, in
    an order that turns with each request, so that a slow spell of the machine falls on all of
    them and none always follows another (what it leaves in the caches is shared out too)."""
    clock = time.perf_counter_ns
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(len(calls[names[0]])):
        turn = i % len(names)
        for name in names[turn:] + names[:turn]:
            call = calls[name][i]
            start = clock()
            call()
            times[name].append((clock() - start) / 1000)
    return times


def _granted_by_group(decision: object) -> bool:
    return _granted_by(decision, GrantKind.GROUP)


def _granted_by_personal(decision: object) -> bool:
    return _granted_by(decision, GrantKind.PERSONAL)


def _granted_by(decision: object, kind: GrantKind) -> bool:
    grant = getattr(decision, "grant", None)
    return bool(getattr(decision, "allowed", False)) and grant is not None and grant.kind is kind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--employees", type=int, default=20_000)
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--group-size", type=int, default=50)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    print(f"Reproduce: {Path(sys.executable).name} bench/group_grants.py {' '.join(sys.argv[1:])}".rstrip())

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        config, people = write_city(folder, args.employees, args.grants, args.seed)
        personal_only = load_policy(config)
        grouped_people, departments = add_group_grants(
            folder, people, args.groups, args.group_size, args.seed
        )
        with_groups = load_policy(config)
        print(
            f"A: {len(personal_only.grants):,} personal grants; B: the same plus {args.groups:,} group grants "
            f"of {args.group_size} members ({len(with_groups.grants):,} grants), {args.employees:,} employees"
        )
        # The request mix of decision_core.py (its "today's figure"), drawn from the personal grants:
        # a member's request for one of their groups' sites is decided by the group grant in B.
        mix = request_mix(personal_only, people, args.decisions, args.seed)
        calls = {
            "A personal grants only, as the gate decides": decision_calls(personal_only, people, {}, mix),
            "B plus group grants, as the gate decides": decision_calls(
                with_groups, grouped_people, departments, mix
            ),
            "A personal grants only, decide_request alone": core_calls(personal_only, people, {}, mix),
            "B plus group grants, decide_request alone": core_calls(
                with_groups, grouped_people, departments, mix
            ),
        }
        best = timed_side_by_side(calls)
        started = time.perf_counter()
        for _ in range(args.passes - 1):
            again = timed_side_by_side(calls)
            best = {name: [min(x, y) for x, y in zip(best[name], again[name], strict=True)] for name in calls}
        print(
            f"{len(mix):,} requests, {args.passes} side-by-side passes ({time.perf_counter() - started:.0f} s)"
        )
        for name, times in best.items():
            print(f"  {name:<46} {summary(times)}")
        # Where B's extra time goes: requests that B allows by a group grant and A refuses (more
        # work: a grant judged), and the rest, which both decide alike.
        gate_a = best["A personal grants only, as the gate decides"]
        gate_b = best["B plus group grants, as the gate decides"]
        by_group = [
            i
            for i, call in enumerate(calls["B plus group grants, as the gate decides"])
            if _granted_by_group(call())
        ]
        by_personal = [
            i
            for i, call in enumerate(calls["A personal grants only, as the gate decides"])
            if _granted_by_personal(call())
        ]
        alike = sorted(set(range(len(mix))) - set(by_group))
        print("  as the gate decides, by outcome:")
        print(
            f"    A, the {len(by_personal):,} requests a personal grant allowed   {summary([gate_a[i] for i in by_personal])}"
        )
        print(
            f"    B, the {len(by_group):,} requests a group grant allowed       {summary([gate_b[i] for i in by_group])}"
        )
        print(
            f"    A, the other {len(alike):,} requests                         {summary([gate_a[i] for i in alike])}"
        )
        print(
            f"    B, the same {len(alike):,} requests                          {summary([gate_b[i] for i in alike])}"
        )
        verdicts = []
        for what in ("as the gate decides", "decide_request alone"):
            ratio = percentile_of(best[f"B plus group grants, {what}"], 99) / percentile_of(
                best[f"A personal grants only, {what}"], 99
            )
            verdicts.append(ratio <= TARGET_RATIO)
            print(
                f"target: B's p99 within 10% of A's, {what}: {'met' if ratio <= TARGET_RATIO else 'MISSED'} (B/A = {ratio:.3f})"
            )
        return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
