"""`citygate report` and `citygate grants review`: the access log summed up for directors.

Both read the same files as `citygate logs` (rotated, compressed, every worker's chain, merged
in time order) and stream them: memory grows with the number of employees, not with the log.
The summaries themselves are computed in reports/summary.py and drawn in reports/html.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from citygate.directory.backends import open_directory
from citygate.directory.model import DirectoryUnavailable
from citygate.directory.problems import ConfigError
from citygate.proxy.audit.files import expand_chains
from citygate.proxy.audit.query import LogFilter, LogQuery, parse_when
from citygate.proxy.cli.audit import merged
from citygate.proxy.cli.commands import (
    Commands,
    close_directory,
    command,
    command_with_actions,
    config_argument,
)
from citygate.proxy.flags import FlagSettings, Kind
from citygate.proxy.metrics.config import MetricsSettings
from citygate.proxy.policy import Policy, load_policy
from citygate.proxy.reports.html import report_html, review_html
from citygate.proxy.reports.summary import Review, build_report, build_review, report_csv, review_csv

EPILOG_REPORT = """examples:
  citygate report --since 2026-11-01 --until 2026-11-30 --format html --output november.html
  citygate report --since 7d                                # last week, CSV on stdout
  citygate report /mnt/archive/citygate --since 2026-01-01 --until 2026-03-31 --format csv

Per department and per employee: requests, active time (distinct minutes with a request),
denials, flags by rule, grants used, unused and ending soon. Daily budgets and repeated
denials are computed here over the merged logs of every proxy process and host given.
Reads audit.directory of --config unless files or folders are given. Times without a zone
are city time; --until with a bare date includes that day.
"""

EPILOG_REVIEW = """examples:
  citygate grants review --format html --output review.html     # every approver
  citygate grants review --approver ahernandez                   # one director, CSV
  citygate grants review --since 90d                             # "unused" = no request in 90 days

For each approving director: the grants in force now that they approved, with purpose,
expiry, requests and last use from the access log, and the grants not used at all.
"""


def register_report(commands: Commands) -> None:
    report = command(
        commands,
        "report",
        "summarize social-media use per department and employee (CSV or HTML)",
        EPILOG_REPORT,
        run_report,
    )
    _log_and_output_arguments(report)
    report.add_argument("--since", default="7d", help="from this time: 2026-11-01, 7d (default: %(default)s)")
    report.add_argument("--until", help="up to this time (default: now; a bare date includes that day)")


def register_grants(commands: Commands) -> None:
    actions = command_with_actions(commands, "grants", "review grants with their approvers", EPILOG_REVIEW)
    review = command(
        actions,
        "review",
        "each director's grants in force, with last use and unused grants (CSV or HTML)",
        EPILOG_REVIEW,
        run_review,
    )
    _log_and_output_arguments(review)
    review.add_argument("--approver", help="only the grants this director (login name) approved")
    review.add_argument("--since", help="look for use from this time only (default: the whole log)")


def _log_and_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The logs to read (audit.directory of --config by default), and where and how to write the summary."""
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="log files or folders (default: audit.directory)"
    )
    config_argument(parser)
    parser.add_argument("--format", choices=("csv", "html"), default="csv", help="default: %(default)s")
    parser.add_argument("--output", "-o", type=Path, help="write to this file (default: stdout)")


# --- report ----------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    policy = _policy(args.config)
    if policy is None:
        return 2
    now = datetime.now(UTC)
    try:
        since = parse_when(args.since, policy.timezone, now=now)
        until = parse_when(args.until, policy.timezone, now=now, end_of_day=True) if args.until else now
    except ValueError as exc:
        return _fail(str(exc))
    if until <= since:
        return _fail(f"--until ({until.isoformat()}) is not after --since ({since.isoformat()})")
    found = _chains(args.paths, policy)
    if found is None:
        return 2
    flags = policy.features.flags
    metrics = policy.features.metrics
    # A day of records before the period feeds the windowed rules (a budget runs per city day,
    # repeated denials over a window), so the period's first hours are judged like the others.
    lead = max(
        [timedelta(days=1), *(rule.window for rule in flags.rules if rule.kind is Kind.REPEATED_DENIALS)]
    )
    try:
        report = build_report(
            _records(found, since - lead, until),
            city=policy.city,
            zone=policy.timezone,
            grants=policy.grants,
            flags=flags,
            since=since,
            until=until,
            expiring_days=_expiring_days(flags, metrics),
        )
    except OSError as exc:
        return _fail(f"cannot read the log: {exc}")
    text = report_csv(report) if args.format == "csv" else report_html(report, now)
    return _write(
        text, args.output, f"{report.decisions} decision record(s), {len(report.employees)} employee(s)"
    )


def _expiring_days(flags: FlagSettings, metrics: MetricsSettings) -> int:
    """The renewal horizon: the grant_expiring rule's, else the metrics gauge's (14 days)."""
    for rule in flags.rules:
        if rule.kind is Kind.GRANT_EXPIRING:
            return rule.days
    return metrics.expiring_days


# --- grants review ---------------------------------------------------------------------------


def run_review(args: argparse.Namespace) -> int:
    policy = _policy(args.config)
    if policy is None:
        return 2
    now = datetime.now(UTC)
    try:
        since = parse_when(args.since, policy.timezone, now=now) if args.since else None
    except ValueError as exc:
        return _fail(str(exc))
    found = _chains(args.paths, policy)
    if found is None:
        return 2
    try:
        review = build_review(
            _records(found, since, None),
            city=policy.city,
            zone=policy.timezone,
            grants=policy.grants,
            at=now.astimezone(policy.timezone),
            since=since,
            approver=args.approver,
        )
    except OSError as exc:
        return _fail(f"cannot read the log: {exc}")
    review.names = _names(policy, args.config, review)
    if args.approver and not review.approvers:
        print(f"citygate: {args.approver} approved no grant in force now", file=sys.stderr)
    text = review_csv(review) if args.format == "csv" else review_html(review, now)
    grants = sum(len(rows) for rows in review.approvers.values())
    return _write(text, args.output, f"{grants} grant(s) in force, {len(review.approvers)} approver(s)")


def _names(policy: Policy, config: str, review: Review) -> dict[str, str]:
    """The directory's names of the review's approvers, employees and users: a Director reviews
    people, not logins. Without the directory the review shows logins, and says why."""
    uids = set(review.approvers)
    for rows in review.approvers.values():
        for row in rows:
            uids.update(row.users)
            if row.grant.employee:
                uids.add(row.grant.employee)
    directory = open_directory(policy.directory, config)
    try:
        return {uid: person.name for uid in sorted(uids) if (person := directory.lookup(uid)) and person.name}
    except DirectoryUnavailable as exc:
        print(
            f"citygate: the directory did not answer, so the review shows logins, not names: {exc}",
            file=sys.stderr,
        )
        return {}
    finally:
        close_directory(directory)


# --- shared ----------------------------------------------------------------------------------


def _policy(config: str) -> Policy | None:
    try:
        return load_policy(Path(config))
    except ConfigError as exc:
        print(
            f"citygate: {config} is invalid; `citygate check --config {config}` lists every problem:",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _chains(paths: list[Path], policy: Policy) -> list[list[Path]] | None:
    if not paths:
        paths = [policy.features.audit.directory]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        print(
            f"citygate: no such file or folder: {', '.join(missing)}; name the log folder, e.g. /var/log/citygate",
            file=sys.stderr,
        )
        return None
    return expand_chains(paths)


def _records(
    found: list[list[Path]], since: datetime | None, until: datetime | None
) -> Iterator[dict[str, object]]:
    counter = [0]
    for _, record in merged(found, LogFilter(LogQuery(since=since, until=until)), counter):
        yield record


def _write(text: str, output: Path | None, summary: str) -> int:
    if output is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            sys.stderr.close()
            return 0
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {output}: {exc}")
    print(f"citygate: {summary}" + (f"; written to {output}" if output else ""), file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print(f"citygate: {message}", file=sys.stderr)
    return 2
