"""What `citygate report` and `citygate grants review` say, computed from access-log records.

Pure: records (dicts as the access log stores them, in time order, every worker's and host's
merged), the grants and flag rules of the configuration, and the period go in; summaries come
out. Reading files is the CLI's job (cli/reports.py), drawing them html.py's.

Definitions, also printed on every report:
- requests: allowed social-media requests, counting a tunnel passed through undecrypted as one
  (it is all that is seen of the visit); denied: refused requests and refused tunnels.
- active time: the number of distinct minutes (city time) in which the employee made at least
  one request. A tunnel passed through counts for the minute it was opened only, so for
  employees whose grants need no decryption active time is a lower bound.
- flags: per-request rules (business hours, path scope, grant expiring) as recorded on each
  record when it was decided; windowed rules (daily budgets, repeated denials) evaluated here
  over the merged records of every process, which is where they are exact.
- grants used / unused: grants in force at some time in the period with / without a request
  through them in it; expiring: in force at the period's end and ending within `expiring_days`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from citygate.proxy.flags import Counting, FlagSettings, Use, WindowTracker, expires_within, use_of_record
from citygate.proxy.grants import Grant, GrantKind, PurposeKind

UNKNOWN = "unknown"


@dataclass
class EmployeeSummary:
    user: str
    department: str
    requests: int = 0
    # Of `requests`, those allowed by a personal-use window (purpose_kind: personal).
    personal_requests: int = 0
    denied: int = 0
    minutes: set[tuple[date, int]] = field(default_factory=set)
    flags: Counter[str] = field(default_factory=Counter)
    sites: Counter[str] = field(default_factory=Counter)
    grants_used: set[str] = field(default_factory=set)
    grants_unused: set[str] = field(default_factory=set)
    grants_expiring: set[str] = field(default_factory=set)

    @property
    def active_minutes(self) -> int:
        return len(self.minutes)


@dataclass
class DepartmentSummary:
    department: str
    employees: int = 0
    requests: int = 0
    personal_requests: int = 0
    denied: int = 0
    active_minutes: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    grants_used: int = 0
    grants_unused: int = 0
    grants_expiring: int = 0


@dataclass(frozen=True)
class GrantUse:
    grant: Grant
    department: str
    requests: int
    last_use: datetime | None
    expiring: bool


@dataclass
class Report:
    city: str
    zone: tzinfo
    since: datetime
    until: datetime
    expiring_days: int
    rules: list[str]  # flag rule ids, configuration order first
    departments: list[DepartmentSummary]
    employees: list[EmployeeSummary]
    grants: list[GrantUse]  # grants in force at some time in the period
    decisions: int  # decision records read


def build_report(
    records: Iterable[Mapping[str, object]],
    *,
    city: str,
    zone: tzinfo,
    grants: Sequence[Grant],
    flags: FlagSettings,
    since: datetime,
    until: datetime,
    expiring_days: int = 14,
) -> Report:
    """Summaries per employee and department of the records in [since, until)."""
    windowed = {rule.id for rule in flags.windowed}
    tracker = WindowTracker(flags, zone)
    tally = _Tally(zone, rules=[rule.id for rule in flags.rules])
    for record in records:
        use = use_of_record(record)
        if use is None:
            continue
        # Records before the period still feed the windowed rules (today's budget so far).
        counted = tracker.observe(use)
        if not since <= use.at < until:
            continue
        # Recorded per-request flags stand as decided; windowed ones are evaluated afresh here,
        # over every process's records, so a process's early warning is not counted twice.
        recorded = record.get("citygate.flags")
        recorded_flags = recorded if isinstance(recorded, list) else []
        raised = [str(flag) for flag in recorded_flags if str(flag) not in windowed]
        tally.add(record, use, raised + counted)
    uses = tally.grant_uses(grants, since, until, expiring_days)
    return Report(
        city=city,
        zone=zone,
        since=since,
        until=until,
        expiring_days=expiring_days,
        rules=tally.rules,
        departments=_departments(tally.people.values()),
        employees=sorted(tally.people.values(), key=lambda p: (p.department, -p.requests, p.user)),
        grants=uses,
        decisions=tally.decisions,
    )


@dataclass
class _Tally:
    """What build_report has counted so far: per employee, per grant, and the flag rules seen."""

    zone: tzinfo
    rules: list[str]  # flag rule ids: the configuration's, then others as records name them
    people: dict[str, EmployeeSummary] = field(default_factory=dict)
    grant_requests: Counter[str] = field(default_factory=Counter)
    last_use: dict[str, datetime] = field(default_factory=dict)
    decisions: int = 0

    def add(self, record: Mapping[str, object], use: Use, raised: list[str]) -> None:
        """A decision record of the period, with the flags it raised."""
        self.decisions += 1
        if use.user is None:
            return  # nobody signed in: no employee to report on
        person = self._employee(use.user, record)
        for flag in raised:
            person.flags[flag] += 1
            if flag not in self.rules:
                self.rules.append(flag)
        if use.counts is Counting.USE:
            self._count_use(person, record, use)
        elif use.counts is Counting.ATTEMPT:
            person.denied += 1

    def _employee(self, user: str, record: Mapping[str, object]) -> EmployeeSummary:
        """The employee's summary, its department the first one a record of theirs names."""
        person = self.people.get(user)
        if person is None:
            department = str(record.get("citygate.department") or UNKNOWN)
            person = self.people[user] = EmployeeSummary(user, department)
        elif person.department == UNKNOWN and record.get("citygate.department"):
            person.department = str(record["citygate.department"])
        return person

    def _count_use(self, person: EmployeeSummary, record: Mapping[str, object], use: Use) -> None:
        person.requests += 1
        if record.get("citygate.purpose_kind") == PurposeKind.PERSONAL.value:
            person.personal_requests += 1
        local = use.at.astimezone(self.zone)
        person.minutes.add((local.date(), local.hour * 60 + local.minute))
        person.sites[use.site or UNKNOWN] += 1
        grant_id = record.get("rule.id")
        if grant_id:
            person.grants_used.add(str(grant_id))
            self.grant_requests[str(grant_id)] += 1
            self.last_use[str(grant_id)] = max(use.at, self.last_use.get(str(grant_id), use.at))

    def grant_uses(
        self, grants: Sequence[Grant], since: datetime, until: datetime, expiring_days: int
    ) -> list[GrantUse]:
        """Each grant in force at some time in the period, with its use; marks the unused and expiring."""
        in_force = [grant for grant in grants if grant.valid_from < until and grant.valid_until > since]
        uses = []
        for grant in sorted(in_force, key=lambda g: (g.employee, g.id)):
            # In force at the end, ending soon.
            expiring = expires_within(grant.valid_until, until, expiring_days)
            department = grant.department or UNKNOWN
            if grant.kind is GrantKind.PERSONAL:
                # A grant for a group, a department or the city is nobody's own: it has no row
                # of an employee to be unused or expiring in (the grants review lists its users).
                person = self.people.get(grant.employee)
                if person is None:
                    person = self.people[grant.employee] = EmployeeSummary(grant.employee, department)
                department = grant.department or person.department
                if grant.id not in self.grant_requests:
                    person.grants_unused.add(grant.id)
                if expiring:
                    person.grants_expiring.add(grant.id)
            requests = self.grant_requests.get(grant.id, 0)
            uses.append(GrantUse(grant, department, requests, self.last_use.get(grant.id), expiring))
        return uses


def _departments(people: Iterable[EmployeeSummary]) -> list[DepartmentSummary]:
    """The employees' summaries added up per department, the busiest first."""
    departments: dict[str, DepartmentSummary] = {}
    for person in people:
        summary = departments.setdefault(person.department, DepartmentSummary(person.department))
        summary.employees += 1
        summary.requests += person.requests
        summary.personal_requests += person.personal_requests
        summary.denied += person.denied
        summary.active_minutes += person.active_minutes
        summary.flags.update(person.flags)
        summary.grants_used += len(person.grants_used)
        summary.grants_unused += len(person.grants_unused)
        summary.grants_expiring += len(person.grants_expiring)
    return sorted(departments.values(), key=lambda d: (-d.requests, d.department))


def report_csv(report: Report) -> str:
    """One row per department (employee empty), then one per employee; a column per flag rule."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    flag_columns = [f"flags:{rule}" for rule in report.rules]
    writer.writerow(
        [
            "level",
            "department",
            "employee",
            "requests",
            "personal_requests",
            "denied",
            "active_minutes",
            *flag_columns,
            "grants_used",
            "grants_unused",
            "grants_expiring",
            "unused_grant_ids",
            "expiring_grant_ids",
        ]
    )
    for d in report.departments:
        ids = [p for p in report.employees if p.department == d.department]
        writer.writerow(
            [
                "department",
                d.department,
                "",
                d.requests,
                d.personal_requests,
                d.denied,
                d.active_minutes,
                *(d.flags.get(rule, 0) for rule in report.rules),
                d.grants_used,
                d.grants_unused,
                d.grants_expiring,
                ";".join(sorted(g for p in ids for g in p.grants_unused)),
                ";".join(sorted(g for p in ids for g in p.grants_expiring)),
            ]
        )
    for p in report.employees:
        writer.writerow(
            [
                "employee",
                p.department,
                p.user,
                p.requests,
                p.personal_requests,
                p.denied,
                p.active_minutes,
                *(p.flags.get(rule, 0) for rule in report.rules),
                len(p.grants_used),
                len(p.grants_unused),
                len(p.grants_expiring),
                ";".join(sorted(p.grants_unused)),
                ";".join(sorted(p.grants_expiring)),
            ]
        )
    return out.getvalue()


# --- grants review -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewRow:
    grant: Grant
    department: str
    requests: int  # in the records read
    last_use: datetime | None
    # Who reached a site through the grant, for recertifying a group's, department's or the
    # city's grant by its members (a personal grant's user is its employee).
    users: tuple[str, ...] = ()

    @property
    def unused(self) -> bool:
        return self.requests == 0


@dataclass
class Review:
    city: str
    zone: tzinfo
    at: datetime
    since: datetime | None  # how far back the records read go (None: every record kept)
    approvers: dict[str, list[ReviewRow]]  # approver uid -> their active grants
    # uid -> the name the directory gives, for a director reading the review (none: uids alone).
    names: Mapping[str, str] = field(default_factory=dict)

    def named(self, uid: str) -> str:
        """`Ana Hernandez (ahernandez)`, or the uid where the directory gave no name."""
        name = self.names.get(uid)
        return f"{name} ({uid})" if name else uid

    def whom(self, grant: Grant) -> str:
        """Whom the grant is for, by name for a person."""
        return self.named(grant.employee) if grant.kind is GrantKind.PERSONAL else grant.whom


def build_review(
    records: Iterable[Mapping[str, object]],
    *,
    city: str,
    zone: tzinfo,
    grants: Sequence[Grant],
    at: datetime,
    since: datetime | None = None,
    approver: str | None = None,
    names: Mapping[str, str] | None = None,
) -> Review:
    """Each approver's grants in force at `at`, with their last use in the records; `names`
    gives people's names by uid."""
    active = [
        grant
        for grant in grants
        if grant.valid_from <= at < grant.valid_until
        and (approver is None or grant.approved_by == approver.casefold())
    ]
    wanted = {grant.id for grant in active}
    requests: Counter[str] = Counter()
    last: dict[str, datetime] = {}
    departments: dict[str, str] = {}
    users: dict[str, set[str]] = {}
    for record in records:
        grant_id = str(record.get("rule.id") or "")
        if grant_id not in wanted:
            continue
        use = use_of_record(record)
        if use is None or use.counts is not Counting.USE or (since is not None and use.at < since):
            continue
        requests[grant_id] += 1
        last[grant_id] = max(use.at, last.get(grant_id, use.at))
        if record.get("user.name"):
            users.setdefault(grant_id, set()).add(str(record["user.name"]))
        if record.get("citygate.department"):
            departments[grant_id] = str(record["citygate.department"])
    approvers: dict[str, list[ReviewRow]] = {}
    for grant in sorted(active, key=lambda g: (g.approved_by, g.valid_until, g.id)):
        row = ReviewRow(
            grant,
            grant.department or departments.get(grant.id, UNKNOWN),
            requests[grant.id],
            last.get(grant.id),
            tuple(sorted(users.get(grant.id, ()))),
        )
        approvers.setdefault(grant.approved_by, []).append(row)
    return Review(city, zone, at, since, dict(sorted(approvers.items())), dict(names or {}))


def last_day(grant: Grant, zone: tzinfo) -> date:
    """The grant's `expires:` date: the last day it works (valid_until is the midnight after)."""
    return (grant.valid_until.astimezone(zone) - timedelta(microseconds=1)).date()


def review_csv(review: Review) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "approver",
            "grant",
            "kind",
            "employee",
            "department",
            "sites",
            "hours",
            "purpose",
            "approved_on",
            "expires",
            "days_left",
            "requests",
            "last_use",
            "unused",
            "used_by",
            "approver_name",
            "employee_name",
        ]
    )
    for approver, rows in review.approvers.items():
        for row in rows:
            grant = row.grant
            writer.writerow(
                [
                    approver,
                    grant.id,
                    grant.kind.value,
                    grant.whom,
                    row.department,
                    ";".join(grant.sites),
                    grant.hours.text if grant.hours else "",
                    grant.purpose,
                    grant.approved_on.isoformat(),
                    last_day(grant, review.zone).isoformat(),
                    days_left(grant, review.at),
                    row.requests,
                    row.last_use.astimezone(review.zone).isoformat(timespec="seconds")
                    if row.last_use
                    else "",
                    "yes" if row.unused else "no",
                    ";".join(row.users),
                    review.names.get(approver, ""),
                    review.names.get(grant.employee, "") if grant.kind is GrantKind.PERSONAL else "",
                ]
            )
    return out.getvalue()


def days_left(grant: Grant, at: datetime) -> int:
    """Whole days of access left after today (0 on the last day)."""
    return max(0, (grant.valid_until - at).days)
