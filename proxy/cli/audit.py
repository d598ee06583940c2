"""`citygate audit verify` and `citygate logs`: the access log for security staff.

Both read plain and gzip-compressed files, a folder meaning its log files in chain order, and
both stream: memory does not grow with the size of the log.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import NamedTuple, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citygate.proxy.audit.anchors import Anchor, anchors_in, parse_anchor
from citygate.proxy.audit.chain import ChainVerifier, Report, chain_of
from citygate.proxy.audit.export import export_bundle, is_bundle, verify_bundle
from citygate.proxy.audit.files import expand_chains, open_log
from citygate.proxy.audit.query import LogFilter, LogQuery, parse_when
from citygate.proxy.audit.record import DECISION_FIELDS
from citygate.proxy.catalog import Catalog
from citygate.proxy.cli.commands import Commands, command, command_with_actions, config_argument
from citygate.proxy.hosts import normalize_host

EPILOG_VERIFY = """examples:
  citygate audit verify /var/log/citygate                # every file in the folder, in order
  citygate audit verify /var/log/citygate/citygate-audit-2026112*.jsonl.gz
  citygate audit verify                                  # audit.directory of --config
  citygate audit verify /var/log/citygate --anchors-from proxy.log   # the heads the proxy published
  citygate audit verify host1/ host2/ --anchor vm1/worker-0:18233:9c1f...e07a

Checks the hash chain through every record and across files: an edited, deleted, inserted or
reordered record, a file cut short or missing, and a torn last record are found and the first
bad record is named as FILE:LINE. Give files oldest first (a folder is put in order). A folder
must hold its chain from the first record, or from after files its retention removed: a chain
that starts later (a deleted active file or folder) fails, naming the missing seq range. Records
the writer had to drop (an `audit-gap` record names them) fail too, with their seq range.

exit status: 0 when the chain holds, 1 when it does not, 2 when a file cannot be read.
"""

EPILOG_EXPORT = """examples:
  citygate audit export --user mnguyen --since 2026-11-16 --until 2026-11-22 --out mnguyen-week47
  citygate audit export /var/log/citygate --site facebook --since 30d --out facebook-30d --anchors-from proxy.log
  citygate audit verify mnguyen-week47                  # anywhere citygate is installed, offline

The bundle holds the matching records exactly as the log does, the chain's links over the range
(every record's seq and hashes, no other content: other people's records are not disclosed),
the chain heads published in the range, and a manifest with each file's SHA-256. `audit verify`
on the bundle checks every record against the links and the links end to end, naming each bad
record by its line.

exit status: 0 when written, 1 when the log has damaged lines (written, and named), 2 on a mistake.
"""

EPILOG_LOGS = """examples:
  citygate logs --user jlee --since 7d                   # one employee's last week, as a table
  citygate logs --user jlee --since 2026-11-01 --until 2026-11-30 --format csv > jlee-nov.csv
  citygate logs --department Parks --decision denied --reason path_out_of_scope
  citygate logs --site facebook --grant parks-2026-001 --format jsonl
  citygate logs --id 25b86ea6fe034783af14cf5771e8b3e6    # the "Reference" on a block page
  citygate logs /mnt/archive/citygate --since 2026-01-01 --format csv

Reads the log folder of the configuration (audit.directory) unless files or folders are given;
rotated and .gz files are read in order. Times without a zone are in the city's timezone;
--until with a bare date includes that whole day. --format jsonl prints the records exactly as
stored, each still carrying its chain hash.
"""

# The CSV export's columns: the record's own fields, in the record's order, less the ones a
# reviewer's spreadsheet does not need; the local time beside the UTC one; the chain position.
_NOT_IN_CSV = frozenset(
    {
        "ecs.version",
        "event.kind",
        "event.category",
        "event.end",
        "event.duration",
        "citygate.approver_role",
        "citygate.tunnel",
        "error.message",
    }
)
CSV_FIELDS = (
    "@timestamp",
    "local_time",
    *(field for field in DECISION_FIELDS[1:] if field not in _NOT_IN_CSV),
    "citygate.chain.seq",
)
# (heading, width) of the table; the last column takes the rest of the line.
TABLE_COLUMNS = (
    ("TIME", 19),
    ("DECISION", 10),  # "would-deny": let through in report mode, denied in enforce mode
    ("REASON", 23),
    ("USER", 12),
    ("DEPARTMENT", 14),
    ("SITE", 10),
    ("STATUS", 6),
    ("GRANT", 16),
    ("SOURCE", 15),
    ("URL", 0),
)


def register_audit(commands: Commands) -> None:
    actions = command_with_actions(commands, "audit", "check the access log's tamper evidence", EPILOG_VERIFY)
    verify = command(
        actions, "verify", "verify the hash chain of access-log files", EPILOG_VERIFY, run_verify
    )
    verify.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="log files or folders, oldest first; several hosts' folders at once (default: audit.directory)",
    )
    config_argument(verify)
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="CHAIN:SEQ:SHA256",
        help="a chain head published elsewhere, as the proxy log names it (vm1/worker-0:18233:9c1f...); may be repeated",
    )
    register_export(actions)
    verify.add_argument(
        "--anchors-from",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="every chain head published in FILE: the proxy's log, or the SIEM's copy; may be repeated",
    )


def register_export(actions: Commands) -> None:
    export = command(
        actions,
        "export",
        "write a bundle of records that verifies offline, for a records request",
        EPILOG_EXPORT,
        run_export,
    )
    export.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="log files or folders (default: audit.directory)"
    )
    config_argument(export)
    export.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="the bundle's folder (new)")
    export.add_argument("--user", help="the employee's login name")
    export.add_argument("--site", help="a site id (facebook) or domain (facebook.com)")
    export.add_argument("--grant", help="a grant id, e.g. parks-2026-001")
    export.add_argument("--since", required=True, help="from this time: 2026-11-21, 2026-11-21T08:30, 7d")
    export.add_argument("--until", help="up to this time (a bare date includes that day; default: now)")
    export.add_argument(
        "--anchors-from",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="the proxy's log (or the SIEM's copy): the chain heads published within the range go in the bundle",
    )
    export.add_argument("--tz", help="timezone of the times given (default: the city's)")


def register_logs(commands: Commands) -> None:
    logs = command(commands, "logs", "search the access log", EPILOG_LOGS, run_logs)
    logs.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="log files or folders (default: audit.directory)"
    )
    config_argument(logs)
    logs.add_argument("--user", help="the employee's login name")
    logs.add_argument("--department", help="the employee's department")
    logs.add_argument("--site", help="a site id (facebook) or domain (facebook.com)")
    logs.add_argument("--decision", choices=("allowed", "denied"))
    logs.add_argument("--reason", help="a reason code, e.g. no_grant or path_out_of_scope")
    logs.add_argument(
        "--would-deny",
        action="store_true",
        help="only requests let through in report mode that enforce mode would deny",
    )
    logs.add_argument("--grant", help="a grant id, e.g. parks-2026-001")
    logs.add_argument("--flag", help="a flag raised on the request")
    logs.add_argument("--id", dest="event_id", help="an event id (a block page's Reference)")
    logs.add_argument("--since", help="from this time: 2026-11-21, 2026-11-21T08:30, 7d, 12h")
    logs.add_argument("--until", help="up to this time (a bare date includes that day)")
    logs.add_argument("--ordinary", action="store_true", help="include ordinary-connection records")
    logs.add_argument(
        "--format", choices=("table", "jsonl", "csv"), default="table", help="default: %(default)s"
    )
    logs.add_argument("--tz", help="timezone for input and table times (default: the city's)")


# --- audit verify ----------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    anchors = _anchors(args)
    if anchors is None:
        return 2
    paths = list(args.paths) or [
        directory for directory in [_config_facts(args.config).directory] if directory
    ]
    if not paths:
        print(
            f"citygate: no log given and {args.config} could not be read for audit.directory; "
            "name the log folder or files, e.g. citygate audit verify /var/log/citygate",
            file=sys.stderr,
        )
        return 2
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        print(f"citygate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if len(paths) == 1 and is_bundle(paths[0]):
        return _verify_bundle(paths[0])
    copies = [path for path in paths if path.is_file() and _is_copy(path)]
    if copies:
        return max(_verify_copy(path, _by_chain(anchors)) for path in copies)
    found = expand_chains(paths)
    folders = {path.resolve() for path in paths if path.is_dir()}
    if not found:
        print("citygate: no access-log files found there", file=sys.stderr)
        return 2
    if len(found) > 1 and any(anchor.chain is None for anchor in anchors):
        print(
            "citygate: these logs hold several chains: name each anchor's chain as the proxy log does "
            "(e.g. --anchor vm1/worker-0:18233:9c1f...), or use --anchors-from with the proxy's log",
            file=sys.stderr,
        )
        return 2
    by_chain = _by_chain(anchors)
    status, verified = 0, set()
    for number, files in enumerate(found, 1):
        try:
            # A folder's chain (its own, or a worker subfolder's) is all there is of it.
            parent = files[0].parent.resolve()
            report = verify_files(files, by_chain, whole=bool({parent, parent.parent} & folders))
        except OSError as exc:
            print(f"citygate: cannot read the log: {exc}", file=sys.stderr)
            return 2
        if len(found) > 1:
            named = f" ({', '.join(sorted(report.chains))})" if report.chains else ""
            print(f"chain {number} of {len(found)}: {files[0].parent}{named}")
        _print_report(report)
        verified |= report.chains
        status = max(status, 0 if report.ok else 1)
    return max(status, _anchors_without_logs(anchors, verified))


def run_export(args: argparse.Namespace) -> int:
    setup = _zone_and_paths(args)
    if setup is None:
        return 2
    zone, paths = setup
    if args.out.exists():
        print(f"citygate: {args.out} exists: name a new folder for the bundle", file=sys.stderr)
        return 2
    if not (args.user or args.site or args.grant):
        print("citygate: say whose records: --user, --site or --grant", file=sys.stderr)
        return 2
    anchors = _anchors(args)
    if anchors is None:
        return 2
    now = datetime.now(UTC)
    try:
        since = parse_when(args.since, zone, now=now)
        until = parse_when(args.until, zone, now=now, end_of_day=True) if args.until else now
    except ValueError as exc:
        print(f"citygate: {exc}", file=sys.stderr)
        return 2
    query = LogQuery(user=args.user, site=args.site, grant=args.grant, since=since, until=until)
    try:
        exported = export_bundle(expand_chains(paths), query, args.out, anchors)
    except OSError as exc:
        print(f"citygate: cannot write the bundle: {exc}", file=sys.stderr)
        return 2
    for problem in exported.problems:
        print(f"citygate: damaged log line, not exported: {problem}", file=sys.stderr)
    chains = ", ".join(
        f"{name} seq {seg.first_seq}-{seg.last_seq}" for name, seg in exported.segments.items()
    )
    print(f"{args.out}: {exported.records} record(s), the links of {chains or 'no chain'}")
    print(f"verify it with: citygate audit verify {args.out}")
    return 1 if exported.problems else 0


def _verify_bundle(path: Path) -> int:
    report = verify_bundle(path)
    print(
        f"{path}: bundle of {report.records} record(s), {report.links} link(s) in {len(report.chains)} chain(s)"
    )
    for problem in report.problems:
        print(f"FAILED: {problem}")
    if report.ok:
        print(
            f"OK: every record is the chain's own at its place, and the links run unbroken ({', '.join(report.chains)})"
        )
    return 0 if report.ok else 1


def _by_chain(anchors: Iterable[Anchor]) -> dict[str | None, dict[int, str]]:
    by_chain: dict[str | None, dict[int, str]] = {}
    for anchor in anchors:
        by_chain.setdefault(anchor.chain, {})[anchor.seq] = anchor.hash
    return by_chain


def _is_copy(path: Path) -> bool:
    """A SIEM's copy (syslog lines, each ending in a record), not one of the log's own files."""
    with open_log(path) as handle:
        first = handle.readline()
    return bool(first) and not first.startswith(b"{") and b'"citygate.chain.hash"' in first


def _verify_copy(path: Path, anchors: dict[str | None, dict[int, str]]) -> int:
    """Each chain's records in a SIEM's copy, in the copy's order: each intact, none missing
    between the first and the last of its chain, none twice; checked against the anchors."""
    verifiers: dict[str, ChainVerifier] = {}
    damaged = 0
    with open_log(path) as handle:
        for number, raw in enumerate(handle, 1):
            start = raw.find(b"{")
            line = raw[start:] if start >= 0 else b""
            if b'"citygate.chain.hash"' not in line or b'"audit-chain-head"' in line:
                continue  # a published head (no record of the chain), or a message that is not a record
            chain = chain_of(line)
            if chain is None:
                print(f"FAILED: {path}:{number}: a record that names no chain")
                damaged = 1
                continue
            verifier = verifiers.get(chain)
            if verifier is None:
                verifier = verifiers[chain] = ChainVerifier(anchors, copy=True)
                verifier.begin_file(str(path))
            verifier.feed(line if line.endswith(b"\n") else line + b"\n", number)
    if not verifiers:
        print(f"citygate: {path} holds no citygate record", file=sys.stderr)
        return 2
    status = damaged
    for chain, verifier in sorted(verifiers.items()):
        print(f"chain {chain} in {path}:")
        report = verifier.finish()
        _print_report(report)
        status = max(status, 0 if report.ok else 1)
    return status


def _zone_and_paths(args: argparse.Namespace) -> tuple[tzinfo, list[Path]] | None:
    """What `logs` and `audit export` read: the time zone of the times given (`--tz`, else the
    city's) and the log files or folders (the paths given, else audit.directory); None once a
    mistake was said (a misspelled --site among them)."""
    zone, directory, catalog = _config_facts(args.config)
    unknown = _unknown_site(args.site, catalog)
    if unknown is not None:
        print(f"citygate: {unknown}", file=sys.stderr)
        return None
    if args.tz:
        try:
            zone = ZoneInfo(args.tz)
        except (ZoneInfoNotFoundError, ValueError):
            print(
                f'citygate: unknown timezone "{args.tz}"; use an IANA name such as America/Los_Angeles',
                file=sys.stderr,
            )
            return None
    paths = list(args.paths) or ([directory] if directory else [])
    if not paths:
        print(
            f"citygate: no log given and {args.config} could not be read for audit.directory; "
            "name the log folder or files, e.g. /var/log/citygate",
            file=sys.stderr,
        )
        return None
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        print(f"citygate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return None
    return zone, paths


def _anchors(args: argparse.Namespace) -> list[Anchor] | None:
    """The anchors given and those in the files named; None (said why) when one cannot be read."""
    anchors = []
    for text in getattr(args, "anchor", ()):  # export takes published heads from files only
        anchor = parse_anchor(text)
        if anchor is None:
            print(
                f"citygate: --anchor {text!r} is not CHAIN:SEQ:SHA256 or SEQ:SHA256 "
                "(e.g. vm1/worker-0:18233:9c1f..., as the proxy log prints it)",
                file=sys.stderr,
            )
            return None
        anchors.append(anchor)
    for path in args.anchors_from:
        try:
            with path.open(encoding="utf-8", errors="replace") as lines:
                published = anchors_in(lines)
        except OSError as exc:
            print(f"citygate: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return None
        if not published:
            print(f"citygate: {path} holds no published chain head (audit chain head ...)", file=sys.stderr)
            return None
        anchors.extend(published)
    return anchors


def _anchors_without_logs(anchors: Iterable[Anchor], verified: set[str]) -> int:
    """Anchored chains that none of the logs given hold: a worker's folder removed, if that host's
    other chains are here (1); a host whose logs were not given, a note (0)."""
    hosts = {chain.partition("/")[0] for chain in verified}
    status = 0
    for chain in sorted(
        {anchor.chain for anchor in anchors if anchor.chain and anchor.chain not in verified}
    ):
        last = max(anchor.seq for anchor in anchors if anchor.chain == chain)
        host = chain.partition("/")[0]
        if host in hosts:
            print(
                f"FAILED: chain {chain} published its head at seq {last}, but none of its files are here: "
                "its folder was removed, or give it too"
            )
            status = 1
        else:
            print(
                f"note: anchors for chain {chain} (up to seq {last}) were not checked: no log of {host} was given"
            )
    return status


def verify_files(
    files: Iterable[Path], anchors: dict[str | None, dict[int, str]] | None = None, *, whole: bool = False
) -> Report:
    verifier = ChainVerifier(anchors, whole=whole)
    for path in files:
        verifier.begin_file(str(path))
        with open_log(path) as handle:
            for line in handle:
                if not verifier.feed(line):
                    break
        if verifier.failed:
            break
    return verifier.finish()


def _print_report(report: Report) -> None:
    for summary in report.files:
        seqs = f", seq {summary.first_seq}-{summary.last_seq}" if summary.first_seq is not None else ""
        print(f"{summary.path}: {summary.records} record(s){seqs}")
    for note in report.notes:
        print(f"  note: {note}")
    for gap in report.gaps:
        print(f"FAILED: {gap}")
    head = report.head
    if report.failure is None and report.gaps:
        print(f"  the other {report.records} record(s) in {len(report.files)} file(s) verify")
        return
    if report.failure is None:
        assert head is not None or report.records == 0
        where = f"; chain head seq {head.seq} sha256 {head.hash}" if head else ""
        print(f"OK: {report.records} record(s) in {len(report.files)} file(s) verify{where}")
        return
    print(f"FAILED: {report.failure}")
    if head is not None and report.start is not None:
        print(
            f"  the {report.records} record(s) before it verify "
            f"(seq {report.start.seq + 1}-{head.seq}, last sha256 {head.hash})"
        )
    else:
        print("  no record before it verifies")


# --- logs ------------------------------------------------------------------------------------


def run_logs(args: argparse.Namespace) -> int:
    setup = _zone_and_paths(args)
    if setup is None:
        return 2
    zone, paths = setup
    now = datetime.now(UTC)
    try:
        since = parse_when(args.since, zone, now=now) if args.since else None
        until = parse_when(args.until, zone, now=now, end_of_day=True) if args.until else None
    except ValueError as exc:
        print(f"citygate: {exc}", file=sys.stderr)
        return 2
    query = LogQuery(
        user=args.user,
        department=args.department,
        site=args.site,
        decision=args.decision,
        reason=args.reason,
        grant=args.grant,
        flag=args.flag,
        event_id=args.event_id,
        would_deny=args.would_deny,
        since=since,
        until=until,
        ordinary=args.ordinary,
    )
    found = expand_chains(paths)
    try:
        matched, scanned = write_matches(found, LogFilter(query), args.format, zone, sys.stdout)
    except BrokenPipeError:
        # `citygate logs ... | head`: the reader has all it wanted.
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"citygate: cannot read the log: {exc}", file=sys.stderr)
        return 2
    files = sum(len(files) for files in found)
    times = f"; table times in {zone}" if args.format == "table" else ""
    print(
        f"citygate: {matched} matching record(s) of {scanned} line(s) in {files} file(s){times}",
        file=sys.stderr,
    )
    return 0


def scan(
    files: Iterable[Path], log_filter: LogFilter, counter: list[int]
) -> Iterator[tuple[bytes, dict[str, object]]]:
    """Matching (line, record) pairs of one chain, file by file; counter[0] counts lines scanned."""
    match = log_filter.match
    for path in files:
        with open_log(path) as handle:
            scanned = 0
            for line in handle:
                scanned += 1
                record = match(line)
                if record is not None:
                    yield line, record
            counter[0] += scanned


def merged(
    found: list[list[Path]], log_filter: LogFilter, counter: list[int]
) -> Iterator[tuple[bytes, dict[str, object]]]:
    """Matches of every chain, interleaved by time (one pending record per chain in memory)."""
    if len(found) == 1:
        return scan(found[0], log_filter, counter)
    return heapq.merge(*(scan(files, log_filter, counter) for files in found), key=_when)


def _when(match: tuple[bytes, dict[str, object]]) -> str:
    return str(match[1].get("@timestamp") or "")


def write_matches(
    found: list[list[Path]], log_filter: LogFilter, output_format: str, zone: tzinfo, out: TextIO
) -> tuple[int, int]:
    counter = [0]
    matched = 0
    matches = merged(found, log_filter, counter)
    if output_format == "jsonl":
        binary = out.buffer
        for line, _ in matches:
            binary.write(line if line.endswith(b"\n") else line + b"\n")
            matched += 1
    elif output_format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for _, record in matches:
            writer.writerow(_csv_row(record, zone))
            matched += 1
    else:
        out.write(_table_row([heading for heading, _ in TABLE_COLUMNS]))
        for _, record in matches:
            out.write(_table_row(_table_values(record, zone)))
            matched += 1
    out.flush()
    return matched, counter[0]


def _local(stamp: object, zone: tzinfo, spec: str | None = None) -> str:
    """A record's UTC timestamp in `zone`: RFC 3339 to the second, or formatted with `spec`."""
    try:
        at = datetime.fromisoformat(str(stamp)).astimezone(zone)
    except ValueError:
        return str(stamp)
    return at.strftime(spec) if spec else at.isoformat(timespec="seconds")


_LOCAL_TIME = CSV_FIELDS.index("local_time")
_FLAGS = CSV_FIELDS.index("citygate.flags")


def _csv_row(record: dict[str, object], zone: tzinfo) -> list[object]:
    row = [record.get(key) for key in CSV_FIELDS]  # csv writes None as an empty cell
    row[_LOCAL_TIME] = _local(record.get("@timestamp"), zone)
    flags = row[_FLAGS]
    row[_FLAGS] = ";".join(str(flag) for flag in flags) if isinstance(flags, list) else flags
    return row


def _table_values(record: dict[str, object], zone: tzinfo) -> list[str]:
    url = str(record.get("url.domain") or "")
    if record.get("url.path"):
        url += str(record["url.path"])
    if record.get("event.action") == "http-connect":
        # A CONNECT: passed through untouched, or decrypted so each request is decided (and
        # logged) on its own, or refused outright.
        url += f" (tunnel{', ' + str(record['citygate.tunnel']) if record.get('citygate.tunnel') else ''})"
    status = record.get("http.response.status_code")
    return [
        _local(record.get("@timestamp"), zone, "%Y-%m-%d %H:%M:%S"),
        "would-deny" if record.get("citygate.would_deny") else str(record.get("event.type") or ""),
        str(record.get("event.reason") or ""),
        str(record.get("user.name") or "-"),
        str(record.get("citygate.department") or "-"),
        str(record.get("citygate.site") or "-"),
        "-" if status is None else str(status),
        str(record.get("rule.id") or "-"),
        str(record.get("source.ip") or "-"),
        url,
    ]


def _table_row(values: list[str]) -> str:
    cells = []
    for (_, width), value in zip(TABLE_COLUMNS, values, strict=True):
        if width:
            value = value if len(value) <= width else value[: width - 1] + "~"
            cells.append(value.ljust(width))
        else:
            cells.append(value)
    return " ".join(cells).rstrip() + "\n"


class ConfigFacts(NamedTuple):
    zone: tzinfo
    directory: Path | None
    catalog: Catalog | None


def _config_facts(config: str) -> ConfigFacts:
    """The city's timezone, the log folder and the site catalog from the configuration; UTC and
    None without one.

    `citygate logs` must work on a copied-out archive with no configuration at hand.
    """
    from citygate.directory.problems import ConfigError
    from citygate.proxy.policy import load_policy

    path = Path(config)
    if not path.exists():
        return ConfigFacts(UTC, None, None)
    try:
        policy = load_policy(path)
    except ConfigError:
        return ConfigFacts(UTC, None, None)
    return ConfigFacts(policy.timezone, policy.features.audit.directory, policy.catalog)


def _unknown_site(site: str | None, catalog: Catalog | None) -> str | None:
    """Why `--site` names no site of the catalog, with the one it likely meant; None if it does
    (or there is no catalog to ask: an archive read without its configuration)."""
    if not site or catalog is None or site.casefold() in catalog.sites:
        return None
    host = normalize_host(site)
    if host is not None and catalog.match(host) is not None:
        return None
    close = catalog.closest(site)
    hint = (
        f"did you mean {close.id} ({close.name})?"
        if close
        else "use a site id from the catalog (config/sites.yaml)"
    )
    return f"--site {site} is no site of the catalog: {hint}"
