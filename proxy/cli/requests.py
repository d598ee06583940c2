"""`citygate requests`: access requests from a terminal, for Directors and IT.

`list` and `show` read the request store; `approve` and `deny` decide as the web portal does
(proxy/requests/workflow.py), after the approver proves who they are with their directory
password: a name typed on the command line proves nothing. `advance`, run by a timer, is the
time-driven part: escalations, expiries, reminders, and with `requests.email` the mail due.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from citygate.directory.backends import open_directory
from citygate.directory.model import BindOutcome, Directory, DirectoryUnavailable
from citygate.directory.problems import ConfigError
from citygate.proxy.audit.writer import AuditUnavailable
from citygate.proxy.cli.commands import Commands, close_directory, command, command_with_actions
from citygate.proxy.policy import Policy, load_policy
from citygate.proxy.requests.form import FormProblems, checked_narrowing
from citygate.proxy.requests.log import EvidenceLog
from citygate.proxy.requests.mail import deliver_due
from citygate.proxy.requests.model import AccessRequest, Terms
from citygate.proxy.requests.routing import Due
from citygate.proxy.requests.store import RequestStore
from citygate.proxy.requests.workflow import Approver, Decided, advance, decide, queue_missed, remind

EPILOG = """examples:
  citygate requests list                                  # the requests waiting for a decision
  citygate requests list --all --department Parks
  citygate requests show req-2026-0042
  citygate requests approve req-2026-0042 --as ahernandez # asks for ahernandez's password
  citygate requests deny req-2026-0042 --as ahernandez --reason "Use the Parks page instead"
  echo "$PASSWORD" | citygate requests approve req-2026-0042 --as ahernandez --password-stdin
  citygate requests approve req-2026-0042 --as ahernandez --sites instagram --until 2027-01-31
  citygate requests advance                               # escalate and expire by the business days set,
                                                          # queue reminders, send the mail due

exit status: 0 when done, 1 when the request could not be decided (the reason is printed),
2 on a usage, configuration or sign-in error.
"""


def register_requests(commands: Commands) -> None:
    actions = command_with_actions(
        commands, "requests", "list, show, approve and deny access requests", EPILOG
    )
    listing = command(
        actions,
        "list",
        "requests waiting for a decision (all with --all)",
        EPILOG,
        _with_store(list_requests),
        config=True,
    )
    listing.add_argument("--all", action="store_true", help="every request, decided or not")
    listing.add_argument("--department", help="only this department's requests")
    show = command(
        actions,
        "show",
        "one request with every decision on it",
        EPILOG,
        _with_store(show_request),
        config=True,
    )
    show.add_argument("request", metavar="REQUEST", help="e.g. req-2026-0042")
    command(
        actions,
        "advance",
        "escalate and expire open requests whose time has come, queue reminders and send the mail due "
        "(run it every few minutes: a timer)",
        EPILOG,
        _with_store(advance_requests),
        config=True,
    )
    for name, handler, help in (
        (
            "approve",
            _with_store(functools.partial(decide_request, approved=True)),
            "approve the stage of a request you decide",
        ),
        (
            "deny",
            _with_store(functools.partial(decide_request, approved=False)),
            "deny a request, saying why (the employee is told)",
        ),
    ):
        action = command(actions, name, help, EPILOG, handler, config=True)
        action.add_argument("request", metavar="REQUEST", help="e.g. req-2026-0042")
        action.add_argument(
            "--as", dest="approver", required=True, metavar="LOGIN", help="your directory login"
        )
        action.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input, not a prompt",
        )
        action.add_argument("--reason", default="", help="why (required to deny)")
        if name == "approve":
            narrowing = action.add_argument_group("allowing less than was asked")
            narrowing.add_argument("--sites", help="only these of the requested sites (ids, comma-separated)")
            narrowing.add_argument(
                "--page",
                dest="pages",
                action="append",
                default=[],
                metavar="PATH",
                help="only this page on each site (repeat for more; within the pages asked for)",
            )
            narrowing.add_argument("--until", help="an earlier last day (YYYY-MM-DD)")


Action = Callable[[argparse.Namespace, Policy, RequestStore], int]


def _with_store(action: Action) -> Callable[[argparse.Namespace], int]:
    """The command: `action` with the loaded policy and the open request store, closed after."""

    def run(args: argparse.Namespace) -> int:
        loaded = _open(args.config)
        if loaded is None:
            return 2
        policy, store = loaded
        try:
            return action(args, policy, store)
        except AuditUnavailable as exc:
            return _fail(str(exc), 1)
        finally:
            store.close()

    return run


def list_requests(args: argparse.Namespace, policy: Policy, store: RequestStore) -> int:
    departments = [args.department] if args.department else None
    if args.all:
        found = [r for r in store.every() if departments is None or r.department in departments]
    else:
        found = store.pending(departments)
    stages = policy.features.requests.stages
    print("request\tstatus\tstage\temployee\tdepartment\tsites\tuntil\tsubmitted")
    for request in found:
        stage = stages[request.stage].name if request.status.open else "-"
        submitted = request.submitted_at.astimezone(policy.timezone).strftime("%Y-%m-%d %H:%M")
        print(
            f"{request.id}\t{request.status.value}\t{stage}\t{request.employee}\t{request.department or '-'}\t"
            f"{','.join(request.sites)}\t{request.until}\t{submitted}"
        )
    return 0


def show_request(args: argparse.Namespace, policy: Policy, store: RequestStore) -> int:
    request = store.get(args.request)
    if request is None:
        return _fail(f"there is no request {args.request}", 1)
    print(_described(request, policy))
    return 0


def advance_requests(args: argparse.Namespace, policy: Policy, store: RequestStore) -> int:
    now = datetime.now(policy.timezone)
    directory = open_directory(policy.directory, args.config)
    try:
        with EvidenceLog(policy.features.audit, policy.timezone, writer="cli") as evidence:
            done = advance(store=store, policy=policy, directory=directory, now=now, record=evidence.record)
        remind(store=store, policy=policy, directory=directory, now=now)
        queue_missed(store=store, policy=policy, directory=directory, now=now)
    finally:
        close_directory(directory)
    for request, action in done:
        print(f"{request.id}: {'escalated to the executives' if action is Due.ESCALATE else 'expired'}")
    email = policy.features.requests.email
    if email is not None:
        # A failed send is retried by a later run (or the portal): the run itself succeeded.
        for attempt in deliver_due(store, email, now):
            print(attempt.described(policy.timezone))
    return 0


def decide_request(args: argparse.Namespace, policy: Policy, store: RequestStore, *, approved: bool) -> int:
    directory = open_directory(policy.directory, args.config)
    try:
        refused = _signed_in(directory, args.approver, args.password_stdin)
        if refused is not None:
            return _fail(refused, 2)
        narrowed = _narrowed(args, policy, store) if approved else None
        if isinstance(narrowed, str):
            return _fail(narrowed, 2)
        with EvidenceLog(policy.features.audit, policy.timezone, writer="cli") as evidence:
            outcome = decide(
                store=store,
                policy=policy,
                config_path=Path(args.config),
                directory=directory,
                request_id=args.request,
                approver=Approver(args.approver, "cli", "cli"),
                approved=approved,
                reason=args.reason,
                now=datetime.now(policy.timezone),
                record=evidence.record,
                narrowed=narrowed,
            )
    finally:
        close_directory(directory)
    if not isinstance(outcome, Decided):
        return _fail(outcome.why, 1)
    request = outcome.request
    stage = f", stage {request.stage + 1}" if request.status.open else ""
    print(f"{request.id}: {request.status.value}{stage}")
    if outcome.grant_file is not None:
        print(
            f"grant {request.grant_id} written to {outcome.grant_file}; the proxy picks it up on its next reload"
        )
    return 0


def _narrowed(args: argparse.Namespace, policy: Policy, store: RequestStore) -> Terms | str | None:
    """What `--sites`, `--page` and `--until` allow of the request: None for all of it; a
    string says what is wrong (every problem)."""
    if args.sites is None and not args.pages and args.until is None:
        return None
    request = store.get(args.request)
    if request is None:
        return f"there is no request {args.request}"
    terms = request.terms
    narrowing = checked_narrowing(
        terms=terms,
        sites=terms.sites if args.sites is None else [site.strip() for site in args.sites.split(",")],
        pages="\n".join(args.pages),
        until=terms.until.isoformat() if args.until is None else args.until,
        today=datetime.now(policy.timezone).date(),
    )
    if isinstance(narrowing, FormProblems):
        return "; ".join(
            f"--{'page' if field == 'pages' else field}: {why}" for field, why in narrowing.fields.items()
        )
    return narrowing


def _signed_in(directory: Directory, uid: str, from_stdin: bool) -> str | None:
    """None when `uid`'s directory password is given; otherwise why not."""
    password = (
        sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass(f"{uid}'s directory password: ")
    )
    if not password:
        return "no password given"
    try:
        outcome = directory.authenticate(uid, password)
    except DirectoryUnavailable as exc:
        return f"the directory could not check the password: {exc}"
    if outcome is not BindOutcome.OK:
        return f"sign-in refused for {uid}: {outcome.value.replace('_', ' ')}"
    return None


def _open(config: str) -> tuple[Policy, RequestStore] | None:
    try:
        policy = load_policy(Path(config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"citygate: {problem}", file=sys.stderr)
        return None
    settings = policy.features.requests
    if not settings.enabled:
        _fail(f"access requests are off in {config}: set requests: {{enabled: true}} (README)", 2)
        return None
    store = RequestStore(settings.database)
    store.migrate()
    return policy, store


def _described(request: AccessRequest, policy: Policy) -> str:
    zone = policy.timezone
    lines = [
        f"request     {request.id} ({request.status.value})",
        f"employee    {request.name} ({request.employee}), {request.title or '-'}, {request.department or '-'}",
        f"sites       {', '.join(request.sites)}",
        *(f"pages       {site}: {', '.join(scope)}" for site, scope in request.paths.items()),
        f"purpose     {request.purpose}",
        f"until       {request.until}",
        f"submitted   {request.submitted_at.astimezone(zone):%Y-%m-%d %H:%M}",
    ]
    stages = policy.features.requests.stages
    for decision in request.decisions:
        name = stages[decision.stage].name if decision.stage < len(stages) else f"stage {decision.stage + 1}"
        verb = "approved" if decision.approved else "denied"
        by = decision.approver + (f" (for {decision.delegated_by})" if decision.delegated_by else "")
        why = f": {decision.reason}" if decision.reason else ""
        lines.append(
            f"decision    {name}: {verb} by {by}, {decision.at.astimezone(zone):%Y-%m-%d %H:%M}, "
            f"signed in with {decision.method} from {decision.address}{why}"
        )
        if decision.narrowed is not None:
            allowed = decision.narrowed
            pages = "".join(f"; {site}: {', '.join(scope)}" for site, scope in allowed.paths.items())
            lines.append(f"allowed     {', '.join(allowed.sites)} until {allowed.until}{pages}")
    if request.grant_id:
        lines.append(f"grant       {request.grant_id}")
    return "\n".join(lines)


def _fail(message: str, status: int) -> int:
    print(f"citygate: {message}", file=sys.stderr)
    return status
