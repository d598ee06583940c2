"""The `citygate` command, the top of the layers: `run` assembles mitmproxy and the addons,
`check` and `explain` load a configuration; its other commands are in this package's modules."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from citygate.directory.model import Directory, DirectoryUnavailable, Person
from citygate.directory.problems import ConfigError
from citygate.proxy.cli import audit, ca, pac, portal, reports, requests
from citygate.proxy.cli.commands import Commands, close_directory, command
from citygate.proxy.cli.keytab import check_keytab
from citygate.proxy.decision import (
    Decision,
    Identity,
    Reason,
    Result,
    approval_problem,
    decide,
    decide_request,
    facts_needed,
    people_involved,
    sites_named,
)
from citygate.proxy.grants import Grant, GrantKind, PurposeKind
from citygate.proxy.policy import Policy, load_policy
from citygate.proxy.requests.backing import unbacked
from citygate.proxy.requests.config import RecordedApprovals
from citygate.proxy.requests.store import RequestStore
from citygate.proxy.runtime.event_loop import (
    DEFAULT_EVENT_LOOP,
    EVENT_LOOP_ENV,
    EVENT_LOOPS,
    chosen_event_loop,
    loop_factory,
)
from citygate.proxy.runtime.open_files import raise_open_files_limit
from citygate.proxy.runtime.workers import default_workers, positive_count, supervise
from citygate.proxy.wording import plain_reason

if TYPE_CHECKING:
    from mitmproxy.options import Options

# Commands that live with their feature (e.g. the audit log's `citygate audit verify`): each is a
# function that adds its subparser to the `commands` given, with `handler` set as a default.
FEATURE_COMMANDS: tuple[Callable[[Commands], None], ...] = (
    pac.register,
    audit.register_audit,
    audit.register_logs,
    reports.register_report,
    reports.register_grants,
    requests.register_requests,
    portal.register_portal,
    ca.register,
)

EPILOG_RUN = """examples:
  citygate run                                  # demo config, listen on 127.0.0.1:8080
  citygate run --config /etc/citygate/citygate.yaml --listen-host 0.0.0.0 --listen-port 3128
  citygate run --set block_global=false         # any mitmproxy option
  citygate run --workers 4                      # 4 processes on one port (default: one per core)
  citygate run --event-loop asyncio             # the standard library's event loop
"""
EPILOG_CHECK = """examples:
  citygate check                                # the demo config
  citygate check --config /etc/citygate/citygate.yaml
  citygate check --no-directory                 # syntax only, without asking the directory

exit status: 0 when every file is valid and every grant would work now, 1 otherwise.
"""
EPILOG_EXPLAIN = """examples:
  citygate explain jlee https://www.facebook.com/CityOfExampleParks
  citygate explain mnguyen http://www.facebook.com/ --json
  citygate explain kwilliams https://x.com/ --at 2027-03-01
  citygate explain - https://www.reddit.com/        # nobody signed in

exit status: 0 when the request would be allowed, 1 when not, 2 on a usage or config error.
"""


def _version() -> str:
    """The installed distribution's version, with mitmproxy's (the proxy it runs on)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{version('citygate')} (mitmproxy {version('mitmproxy')})"
    except PackageNotFoundError:  # run from a checkout without installing it
        return "unknown (not installed: pip install -e .)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="citygate",
        description="Access-control forward proxy enforcing the city's social-media policy.",
    )
    parser.add_argument("--version", action="version", version=f"citygate {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = command(commands, "run", "run the proxy", EPILOG_RUN, run_command, config=True)
    run.add_argument("--listen-host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    run.add_argument("--listen-port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    run.add_argument(
        "--confdir",
        default="~/.mitmproxy",
        help="where the proxy's CA certificate and key live (default: %(default)s)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="set a mitmproxy option; may be repeated",
    )
    run.add_argument(
        "--workers",
        type=positive_count,
        default=None,
        metavar="N",
        help="proxy processes sharing the port, one core each (default: one per core; 1: a single process)",
    )
    run.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=None,
        help=f"the event loop mitmproxy runs on (default: ${EVENT_LOOP_ENV}, else {DEFAULT_EVENT_LOOP})",
    )

    check = command(
        commands, "check", "validate the configuration and every grant", EPILOG_CHECK, _check, config=True
    )
    check.add_argument(
        "--no-directory",
        action="store_true",
        help="only validate the files; do not check grants against the directory",
    )

    explain = command(
        commands, "explain", "show the decision for a user and a URL", EPILOG_EXPLAIN, _explain, config=True
    )
    explain.add_argument("user", help='login name of the employee, or "-" for nobody signed in')
    explain.add_argument("url", help="the URL requested, e.g. https://www.facebook.com/CityOfExampleParks")
    explain.add_argument(
        "--at", help="decide as of this time (YYYY-MM-DD or ISO 8601; default: now, city time)"
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")

    for register in FEATURE_COMMANDS:
        register(commands)

    args = parser.parse_args(argv)
    return args.handler(args)


def _load(config: str) -> tuple[Policy, Directory]:
    from citygate.directory.backends import open_directory

    policy = load_policy(Path(config))
    return policy, open_directory(policy.directory, config)


def _print_config_error(exc: ConfigError) -> None:
    errors = [p for p in exc.problems if p.severity == "error"]
    print(f"citygate: the configuration has {len(errors)} error(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


# --- run -------------------------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """`citygate run`: the proxy in this process, or a supervisor of `--workers` processes."""
    try:
        event_loop = chosen_event_loop(args.event_loop)
    except ValueError as exc:
        print(f"citygate: {exc}", file=sys.stderr)
        return 2
    workers = default_workers() if args.workers is None else args.workers
    # Before the workers start, so that they inherit it; logged once the log is set up.
    open_files = raise_open_files_limit()
    if workers > 1:
        # A supervisor: each of its workers comes back here with workers=1 (proxy/runtime/workers.py).
        return supervise(argparse.Namespace(**{**vars(args), "workers": workers}))

    import asyncio
    import logging
    import signal

    from mitmproxy import exceptions, hooks, options
    from mitmproxy.tools.dump import DumpMaster

    from citygate.addons.audit import AuditLog
    from citygate.addons.ca import CertificateAuthority
    from citygate.addons.chain import AddonGroup, skip_entries_without_hooks
    from citygate.addons.connection_limits import ConnectionLimits
    from citygate.addons.decision_log import DecisionLog
    from citygate.addons.fast_path import FastPath
    from citygate.addons.flags import Flags
    from citygate.addons.gate import CityGate
    from citygate.addons.memory import STREAM_LARGE_BODIES, MemoryGuard
    from citygate.addons.metrics import Metrics
    from citygate.addons.reload import ConfigWatcher
    from citygate.addons.stopping import GracefulStop

    async def serve() -> int:
        opts = options.Options(
            listen_host=args.listen_host,
            listen_port=args.listen_port,
            confdir=args.confdir,
        )
        master = DumpMaster(opts, with_termlog=True, with_dumper=False)
        skip_entries_without_hooks(master.addons)
        termlog = getattr(master, "_termlog_addon", None)
        if termlog is not None:
            # The proxy's own log goes to stderr: stdout may carry the access log's JSON lines
            # (audit.stdout), and the two must never interleave.
            termlog.logger.file = sys.stderr
        # mitmdump's own entry point lowers the root logger's level; without that, the decision
        # lines and the audit chain-head anchors (INFO) would never reach the proxy log.
        logging.getLogger("citygate").setLevel(logging.INFO)
        _lighten_log_records()
        logging.getLogger("citygate").info(
            "citygate: running on the %s event loop, with up to %d open files (connections; a relayed tunnel takes two)",
            event_loop,
            open_files,
        )
        # GracefulStop first (a request is under way before any addon sees it), then the connection
        # limits (a request head stops its header timeout before the gate decides) and their
        # tunnel-start part after the gate (whose choice it waits for); flags before the access
        # log (it records them), metrics after it (they skip vetoed decisions), MemoryGuard last
        # (every other addon has seen a WebSocket message before it is dropped). One entry of
        # mitmproxy's chain, as each entry costs every event (chain.py).
        stopping = GracefulStop()
        limits = ConnectionLimits()
        gate = CityGate()
        master.addons.add(
            AddonGroup(
                stopping,
                limits,
                gate,
                limits.after_gate,
                FastPath(gate),
                Flags(),
                AuditLog(),
                DecisionLog(),
                Metrics(),
                ConfigWatcher(),
                CertificateAuthority(),
                MemoryGuard(),
            )
        )
        try:
            # Options registered by addons exist only once the master has its addons. Large
            # bodies are forwarded as they arrive instead of being held whole in memory.
            opts.update(connection_strategy="lazy", stream_large_bodies=STREAM_LARGE_BODIES)
            if args.set:
                opts.set(*args.set)
            # The configuration last, so it loads once, with every --set already in place: an
            # access log moved by --set citygate_audit_directory is never started where the
            # configuration's own audit.directory points.
            opts.update(citygate_config=args.config)
        except exceptions.OptionsError as exc:
            print(f"citygate: {exc}{_option_hint(opts, args.set or [])}", file=sys.stderr)
            # The addons configured so far may have started threads (the access-log writer):
            # stop them as a shutdown would, before the event loop they log through is closed.
            await master.addons.trigger_event(hooks.DoneHook())
            return 2
        # Until the configuration watcher takes SIGHUP over, a reload request must not kill us.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # No new connections, the requests under way answered and recorded, then the exit.
            loop.add_signal_handler(signum, stopping.stop)
        await master.run()
        return 0

    return asyncio.run(serve(), loop_factory=loop_factory(event_loop))


def _option_hint(opts: Options, given: Sequence[str]) -> str:
    """Close matches for the --set names that are no option (a misspelling, most often)."""
    import difflib

    known = sorted(opts.keys())
    hints = []
    for setting in given:
        name = setting.partition("=")[0].strip()
        if name and name not in known:
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.8)
            if close:
                hints.append(f"{name}: did you mean {' or '.join(close)}?")
    if not hints:
        return ""
    return "; " + "; ".join(hints)


def _lighten_log_records() -> None:
    """Stop recording, on every log record, facts that no log line of the proxy shows.

    The logging HOWTO's own optimizations: no caller lookup (a walk up the stack), no thread,
    process or task names. citygate writes a line per social-media decision, and this halves
    the cost of each one (BENCHMARKS.md).
    """
    import logging

    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # new in 3.12; typeshed lacks it


# --- check -----------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    """Every problem first, each where it is; then one line saying whether the whole is valid
    (never "valid" for a configuration that has a problem)."""
    try:
        policy, directory = _load(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return 1
    for warning in policy.warnings:
        print(f"  {warning}")
    problems = []
    if not _check_recorded_approvals(policy):
        problems.append("grants without a recorded approval")
    if not _check_keytab(policy):
        problems.append("the keytab cannot be used")
    problems += ca.check_problems(args)
    if not args.no_directory:
        failing = _failing_grants(policy, directory)
        if failing is None:
            problems.append("the directory did not answer")
        elif failing:
            problems.append(f"{failing} grant(s) or designee(s) would not work now")
    files = len(policy.sources) - 2
    summary = f"{len(policy.catalog.sites)} sites, {len(policy.grants)} grants in {files} grant file(s)"
    if problems:
        print(f"citygate: {args.config}: {'; '.join(problems)} (the files load: {summary})", file=sys.stderr)
        return 1
    print(f"{args.config}: valid: {summary}")
    if not args.no_directory:
        print("every grant would work now against the directory")
    return 0


def _failing_grants(policy: Policy, directory: Directory) -> int | None:
    """Print each grant the directory would refuse now; how many (None: the directory did not answer)."""
    try:
        failing = _grants_not_working(policy, directory, datetime.now(policy.timezone))
        for location, what, reason, detail in failing:
            print(f"  {location}: {what} would not work now: {reason.value}: {detail}")
    except DirectoryUnavailable as exc:
        print(
            f"citygate: the directory did not answer, so no grant could be checked: {exc}\n"
            "  check the directory settings (servers, bind_dn, its password, ca_file) and that the "
            "servers are reachable from here; `citygate check --no-directory` checks the files alone",
            file=sys.stderr,
        )
        return None
    finally:
        close_directory(directory)
    return len(failing)


def _check_recorded_approvals(policy: Policy) -> bool:
    """`requests.recorded_approvals`: name the grants no recorded approval backs; False when
    that is required and some are not."""
    settings = policy.features.requests
    if not settings.enabled or settings.recorded_approvals is RecordedApprovals.OFF:
        return True
    store = RequestStore(settings.database)
    try:
        store.migrate()
        named = {grant.request_id for grant in policy.grants if grant.request_id}
        found = unbacked(policy.grants, store.requests(named), settings)
    finally:
        store.close()
    required = settings.recorded_approvals is RecordedApprovals.REQUIRE
    for grant, why in found:
        print(f"  {grant.location}: grant {grant.id}: {why}")
    if found:
        consequence = "" if required else " (recorded_approvals: warn)"
        print(f"citygate: {len(found)} grant(s) without a recorded approval{consequence}", file=sys.stderr)
    return not (found and required)


def _check_keytab(policy: Policy) -> bool:
    """Check the Kerberos keytab when Negotiate sign-in is on; whether it has no errors."""
    identity = policy.features.identity
    if identity.kerberos is None or not identity.negotiate_enabled:
        return True
    report = check_keytab(identity.kerberos)
    for line in report.keys:
        print(f"  keytab {identity.kerberos.keytab}: {line}")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    for error in report.errors:
        print(f"citygate: {error}", file=sys.stderr)
    return not report.errors


# Grants that have not started or have ended are reported as warnings when the files load;
# `check` fails only on grants that are in force on paper but refused by the directory.
# The grant's own dates and hours, not a fault: it works on its days and in its hours.
_CALENDAR_REASONS = (Reason.GRANT_NOT_YET_VALID, Reason.GRANT_EXPIRED, Reason.OUTSIDE_HOURS)


def _grants_not_working(
    policy: Policy, directory: Directory, now: datetime
) -> list[tuple[str, str, Reason, str]]:
    """Grants in force on paper that the directory would refuse now; DirectoryUnavailable if it cannot say.

    A personal grant is decided for its employee. A department, group or city grant is judged
    on its approval (is the approver entitled to approve it, by the directory now?), and a
    group grant on its group too: a group the directory does not know, or that has no members,
    lets nobody through.
    """
    failing = []
    known: dict[str, Person | None] = {}  # each person is asked once, however many grants name them

    def lookup(uid: str) -> Person | None:
        if uid not in known:
            known[uid] = directory.lookup(uid)
        return known[uid]

    candidates: list[Person] | None = None

    def instead(grant: Grant, department: str | None, detail: str) -> str:
        """The approver's refusal, naming them and who could approve the grant instead."""
        nonlocal candidates
        if candidates is None:
            candidates = [p for group in sorted(policy.approver_groups) for p in _members(directory, group)]
        able = policy.approval.approvers_for(department, candidates)
        who = ", ".join(f"{p.name} ({p.uid})" for p in able) or "nobody the directory names"
        return f"approved by {grant.approved_by}, but {detail}; who can approve it: {who}"

    for grant in policy.grants:
        judge = _personal_problem if grant.kind is GrantKind.PERSONAL else _shared_problem
        problem = judge(grant, policy, directory, lookup, now)
        if problem is None:
            continue
        reason, detail, department = problem
        if reason is Reason.APPROVER_NOT_AUTHORIZED:
            detail = instead(grant, department, detail)
        failing.append((grant.location, f"grant {grant.id}", reason, detail))
    return failing + _void_delegations(policy, lookup)


Problem = tuple[Reason, str, str | None]  # why, in words, and the department that approves


def _personal_problem(
    grant: Grant, policy: Policy, directory: Directory, lookup: Callable[[str], Person | None], now: datetime
) -> Problem | None:
    """A personal grant, decided for its employee on its first site."""
    site = policy.catalog.sites[grant.sites[0]]
    host = (site.domains or site.asset_domains)[0]
    people = {uid: lookup(uid) for uid in people_involved(policy, grant.employee, [host])}
    decision = decide(Identity(grant.employee, "check"), host, None, now, policy.with_only(grant), people)
    if decision.allowed or decision.reason in _CALENDAR_REASONS:
        return None
    return decision.reason, decision.evidence.detail, decision.evidence.employee_department


def _shared_problem(
    grant: Grant, policy: Policy, directory: Directory, lookup: Callable[[str], Person | None], now: datetime
) -> Problem | None:
    """A department, group or city grant, judged on its approval (and a group's on its members)."""
    groups: dict[str, frozenset[str]] = {}
    if grant.kind is GrantKind.GROUP:
        members = directory.group_members(grant.audience)
        if not members:
            detail = (
                f"group {grant.audience} has no members in the directory (no such group under "
                "group_base, or it is empty), so the grant lets nobody through"
            )
            return Reason.NO_GRANT, detail, None
        groups[grant.audience] = _group_department(directory, policy, grant.audience, members)
    approvers = {uid: lookup(uid) for uid in policy.approvers_of(grant)}
    refusal = approval_problem(grant, policy, approvers, groups, now)
    return None if refusal is None else (*refusal, _department_of(grant, groups))


def _void_delegations(
    policy: Policy, lookup: Callable[[str], Person | None]
) -> list[tuple[str, str, Reason, str]]:
    """Designees whose Director no longer holds the role, by the directory now."""
    void = []
    for designee, delegations in policy.delegations.items():
        for delegation in delegations:
            director = lookup(delegation.director)
            if director is None or director.disabled or policy.approval.role_of(director) is None:
                detail = (
                    f"{delegation.director} no longer holds a Director's role, so the delegation to "
                    f"{designee} is void: remove it, or have the department's Director name the designee"
                )
                void.append(
                    (delegation.location, f"designee {designee}", Reason.APPROVER_NOT_AUTHORIZED, detail)
                )
    return void


def _department_of(grant: Grant, groups: Mapping[str, frozenset[str]]) -> str | None:
    """The department whose Directors approve a shared grant (None: executives only)."""
    if grant.kind is GrantKind.DEPARTMENT:
        return grant.audience
    if grant.kind is GrantKind.GROUP:
        departments = groups.get(grant.audience, frozenset())
        return next(iter(departments)) if len(departments) == 1 else None
    return None


def _facts(
    directory: Directory, policy: Policy, user: str | None, hosts: list[str]
) -> tuple[dict[str, Person | None], dict[str, frozenset[str]]]:
    """The directory facts a decision needs, as the proxy fetches them (addons/gate.py `_decide`)."""
    people = _people(directory, people_involved(policy, user, hosts))
    person = people.get(user) if user is not None else None
    if person is None:
        return people, {}
    facts = facts_needed(policy, person, sites_named(policy, hosts))
    people |= _people(directory, set(facts.approvers - people.keys()))
    return people, _group_departments(directory, policy, facts.groups)


def _group_departments(
    directory: Directory, policy: Policy, groups: Iterable[str]
) -> dict[str, frozenset[str]]:
    """As the gateway's `group_departments`: each group's department, by its members or its attribute."""
    answers: dict[str, frozenset[str]] = {}
    for group in groups:
        # An unanswered group stays absent: the decision then says directory_unavailable.
        with contextlib.suppress(DirectoryUnavailable):
            answers[group] = _group_department(directory, policy, group)
    return answers


def _group_department(
    directory: Directory, policy: Policy, group: str, members: list[Person] | None = None
) -> frozenset[str]:
    """One group's department: its entry's attribute, or its members' departments (`members`
    when they were listed already); DirectoryUnavailable if the directory cannot say."""
    attribute = policy.approval.group_department_attribute
    if attribute is not None:
        value = directory.group_attribute(group, attribute)
        return frozenset({value}) if value else frozenset()
    listed = members if members is not None else directory.group_members(group)
    return frozenset(person.department or "" for person in listed)


def _people(directory: Directory, uids: set[str]) -> dict[str, Person | None]:
    people: dict[str, Person | None] = {}
    for uid in uids:
        # An unanswered uid stays absent: the decision then says directory_unavailable.
        with contextlib.suppress(DirectoryUnavailable):
            people[uid] = directory.lookup(uid)
    return people


# --- explain ---------------------------------------------------------------------------------


def _explain(args: argparse.Namespace) -> int:
    try:
        policy, directory = _load(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return 2
    at = _parse_time(args.at, policy) if args.at else datetime.now(policy.timezone)
    if at is None:
        print(
            f"citygate: --at {args.at!r} is not a time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM",
            file=sys.stderr,
        )
        return 2
    url = args.url if "://" in args.url else f"http://{args.url}"
    parts = urlsplit(url)
    if not parts.hostname:
        print(
            f"citygate: {args.url!r} has no host; give a URL such as https://www.facebook.com/",
            file=sys.stderr,
        )
        return 2
    identity = None if args.user == "-" else Identity(args.user.casefold(), "explain")
    user = identity.user if identity else None
    people, groups = _facts(directory, policy, user, [parts.hostname])
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    decision = decide_request(identity, [parts.hostname], path, at, policy, people, groups)
    tunnel = (
        decide_request(identity, [parts.hostname], None, at, policy, people, groups)
        if parts.scheme == "https"
        else None
    )
    approvers: list[Person] = []
    if not decision.allowed and decision.evidence.employee_department:
        candidates = [
            person for group in sorted(policy.approver_groups) for person in _members(directory, group)
        ]
        approvers = policy.approval.approvers_for(decision.evidence.employee_department, candidates)

    if args.json:
        record = decision.to_dict() | {
            "url": args.url,
            "at": at.isoformat(),
            "tunnel": None if tunnel is None else _tunnel_handling(tunnel),
            "approvers": [person.uid for person in approvers],
        }
        print(json.dumps(record, indent=2))
    else:
        _print_explanation(decision, tunnel, approvers, at, args.url)
    return 0 if decision.allowed else 1


def _members(directory: Directory, group: str) -> list[Person]:
    try:
        return directory.group_members(group)
    except DirectoryUnavailable:
        return []


def _parse_time(text: str, policy: Policy) -> datetime | None:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=policy.timezone)


def _tunnel_handling(tunnel: Decision) -> str:
    if tunnel.result is Result.AUTH_REQUIRED:
        return (
            "refused with 407 until the employee signs in (a browser that has not signed in yet gets "
            "a tunnel in which the page goes to the sign-in page and embeds are refused quietly)"
        )
    if not tunnel.is_social:
        return "passed through without decryption"
    if tunnel.allowed and not tunnel.needs_path:
        return "passed through without decryption"
    if tunnel.allowed and tunnel.grant is not None and tunnel.grant.hours is not None:
        return "decrypted so each request is checked against the grant's pages and hours"
    if tunnel.allowed:
        return "decrypted so each request's path can be checked against the grant"
    return "decrypted so the block page can be shown"


def _print_explanation(
    decision: Decision, tunnel: Decision | None, approvers: list[Person], at: datetime, url: str
) -> None:
    evidence = decision.evidence
    rows = [
        ("url", url),
        ("at", at.isoformat(timespec="seconds")),
        ("decision", decision.result.value.upper()),
        ("reason", f"{decision.reason.value}: {plain_reason(decision.reason)}"),
    ]
    if evidence.detail:
        rows.append(("detail", evidence.detail))
    if decision.match:
        rows.append(
            (
                "site",
                f"{decision.match.site.name} ({decision.match.site.id}), matched {decision.match.matched}",
            )
        )
    if evidence.employee:
        rows.append(
            (
                "employee",
                f"{evidence.employee}, department {evidence.employee_department or 'unknown'}",
            )
        )
    if decision.grant:
        grant = decision.grant
        rows.append(("grant", f"{grant.id} at {grant.location}"))
        if grant.kind is not GrantKind.PERSONAL:
            use = ", personal use" if grant.purpose_kind is PurposeKind.PERSONAL else ""
            rows.append(("for", f"{grant.whom} ({grant.kind.value} grant{use})"))
        rows.append(("purpose", grant.purpose))
        last_day = (grant.valid_until - timedelta(days=1)).date()
        rows.append(("valid", f"{grant.valid_from:%Y-%m-%d} through {last_day} ({grant.valid_until.tzinfo})"))
        if grant.hours is not None:
            rows.append(("hours", f"{grant.hours.text} (city time)"))
    if evidence.approver:
        role = f"{evidence.approver_role or 'no approving role'}"
        rows.append(
            (
                "approver",
                f"{evidence.approver}, {role}, department {evidence.approver_department or 'unknown'}",
            )
        )
    if tunnel is not None:
        rows.append(("https", f"the tunnel is {_tunnel_handling(tunnel)}"))
    if approvers:
        rows.append(("can approve", ", ".join(f"{p.name} ({p.uid})" for p in approvers)))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label + ':':<{width + 2}}{value}")


if __name__ == "__main__":
    sys.exit(main())
