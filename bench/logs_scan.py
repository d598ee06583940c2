"""How fast does `citygate logs` scan the access log? Target: at least 200,000 lines a second.

Generates a realistic log (sealed, chained records of 200 employees in 10 departments over 30
days; rotated files gzip-compressed as the writer leaves them, the active file plain), then runs
the installed `citygate` command on it, as an analyst would, and prints lines scanned per second
of wall-clock time (interpreter start included) for:

  (a) one employee over a time range, as CSV    (the records-request query)
  (b) every denial, as CSV                      (a broad query: half the lines match and print)
  (c) `citygate audit verify` of the whole log  (hashes every line)

Reproduce:

    /tmp/venv312/bin/python bench/logs_scan.py                  # or .venv/bin/python
    /tmp/venv312/bin/python bench/logs_scan.py --lines 2000000 --keep /tmp/citygate-bench-log
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from citygate.proxy.audit.chain import FILE_START, ChainHead, seal
from citygate.proxy.audit.files import ACTIVE_NAME, rotated_name
from citygate.proxy.audit.record import DECISION_FIELDS, state_record, timestamp

CITYGATE = str(Path(sys.executable).parent / "citygate")
SITES = [
    ("facebook", "www.facebook.com"),
    ("instagram", "www.instagram.com"),
    ("x", "x.com"),
    ("youtube", "www.youtube.com"),
    ("linkedin", "www.linkedin.com"),
    ("nextdoor", "nextdoor.com"),
    ("reddit", "www.reddit.com"),
    ("tiktok", "www.tiktok.com"),
]
DEPARTMENTS = [
    "Parks",
    "Police",
    "Fire",
    "Communications",
    "Public Works",
    "Library",
    "Finance",
    "Water",
    "Planning",
    "Clerk",
]
START = datetime(2026, 10, 1, 7, 0, tzinfo=UTC)


def record(rng: random.Random, n: int, at: datetime) -> dict[str, object]:
    user = rng.randrange(200)
    site, domain = SITES[rng.randrange(len(SITES))]
    allowed = rng.random() < 0.5
    values: dict[str, object] = dict.fromkeys(DECISION_FIELDS)
    values.update(
        {
            "@timestamp": timestamp(at),
            "ecs.version": "8.11.0",
            "event.kind": "event",
            "event.category": ["web"],
            "event.id": f"{rng.getrandbits(128):032x}",
            "event.action": "http-request",
            "event.type": "allowed" if allowed else "denied",
            "event.reason": "granted"
            if allowed
            else rng.choice(["no_grant", "path_out_of_scope", "grant_expired"]),
            "event.end": timestamp(at + timedelta(milliseconds=120)) if allowed else None,
            "event.duration": 120_000_000 if allowed else None,
            "user.name": f"user{user:03d}",
            "citygate.department": DEPARTMENTS[user % len(DEPARTMENTS)],
            "source.ip": f"10.20.{user // 50}.{user % 250 + 1}",
            "url.scheme": "https",
            "url.domain": domain,
            "url.path": f"/CityOf{DEPARTMENTS[user % len(DEPARTMENTS)].replace(' ', '')}/posts/{n}",
            "http.request.method": "GET",
            "http.response.status_code": 200 if allowed else 403,
            "http.request.body.bytes": 0 if allowed else None,
            "http.response.body.bytes": rng.randrange(2_000, 200_000) if allowed else None,
            "rule.id": f"grant-{user:03d}" if allowed else None,
            "citygate.site": site,
            "citygate.approver": f"director{user % len(DEPARTMENTS):02d}" if allowed else None,
            "citygate.approver_role": "director" if allowed else None,
            "citygate.identity_method": "basic",
            "citygate.mode": "enforce",
            "citygate.flags": [],
            "citygate.detail": None if allowed else f"no grant for {site}",
        }
    )
    return values


def generate(folder: Path, lines: int, per_file: int) -> None:
    rng = random.Random(8_19)  # noqa: S311 -- reproducible test data, not secrets
    step = timedelta(days=30) / lines
    head, previous, n = ChainHead(), None, 0
    while n < lines:
        first_seq = head.seq + 1
        header = state_record(
            FILE_START,
            START + step * n,
            previous_file=previous[0] if previous else None,
            previous_records=previous[1] if previous else None,
            previous_torn=False,
            reason="size" if previous else "start",
        )
        chunk, head = seal(header, head)
        out = [chunk]
        for _ in range(min(per_file, lines - n) - 1):
            chunk, head = seal(record(rng, n, START + step * n), head)
            out.append(chunk)
            n += 1
        n += 1  # the header counts as a line
        data = b"".join(out)
        if n < lines:
            name = rotated_name(date(2026, 10, 1) + timedelta(days=first_seq * 30 // lines), first_seq)
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=6))
            previous = (name, len(out))
        else:
            (folder / ACTIVE_NAME).write_bytes(data)


def timed(label: str, command: list[str], lines: int) -> None:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{label}: exit {result.returncode}\n{result.stderr}")
    summary = (
        result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.stdout.splitlines()[-1]
    )
    print(f"{label:<44} {elapsed:6.2f} s  {lines / elapsed:>10,.0f} lines/s   ({summary[:70]})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="lines in the log (default: %(default)s)"
    )
    parser.add_argument("--per-file", type=int, default=200_000, help="lines per file (default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="citygate-bench-log-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if not any(folder.iterdir()):
            started = time.perf_counter()
            generate(folder, args.lines, args.per_file)
            print(f"generated {args.lines:,} lines in {time.perf_counter() - started:.1f} s into {folder}")
        size = sum(path.stat().st_size for path in folder.iterdir())
        print(
            f"{len(list(folder.iterdir()))} files, {size / 1e6:.0f} MB on disk (rotated files gzip-compressed)\n"
        )
        since, until = "2026-10-10", "2026-10-20"
        timed(
            "(a) --user user042 --since --until, csv",
            [
                CITYGATE,
                "logs",
                str(folder),
                "--user",
                "user042",
                "--since",
                since,
                "--until",
                until,
                "--format",
                "csv",
            ],
            args.lines,
        )
        timed(
            "(b) --decision denied, csv",
            [CITYGATE, "logs", str(folder), "--decision", "denied", "--format", "csv"],
            args.lines,
        )
        timed("(c) audit verify", [CITYGATE, "audit", "verify", str(folder)], args.lines)
        print(
            f"\nreproduce: {sys.executable} bench/logs_scan.py --lines {args.lines} --per-file {args.per_file}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
