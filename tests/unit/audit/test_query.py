"""`citygate logs` filters against a generated log: each filter, time ranges in city time, and
what is never shown (the log's own bookkeeping, ordinary connections unless asked, damage)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from citygate.proxy.audit.chain import ChainHead, seal
from citygate.proxy.audit.query import LogFilter, LogQuery, parse_when
from citygate.proxy.audit.record import state_record

LA = ZoneInfo("America/Los_Angeles")
START = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # 08:00 in Los Angeles
PEOPLE = [("jlee", "Parks"), ("mnguyen", "Parks"), ("kwilliams", "Communications")]
SITES = [("facebook", "www.facebook.com"), ("instagram", "www.instagram.com"), ("x", "x.com")]


def generated_log(hours: int = 48) -> list[bytes]:
    """One decision an hour, cycling through people, sites and outcomes, plus bookkeeping."""
    head = ChainHead()
    lines = []
    line, head = seal(state_record("audit-file-start", START), head)
    lines.append(line)
    for n in range(hours):
        user, department = PEOPLE[n % 3]
        site, domain = SITES[n % 3 if n % 2 else (n + 1) % 3]
        allowed = n % 4 == 0
        record = {
            "@timestamp": (START + timedelta(hours=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event.id": f"{n:032x}",
            "event.action": "http-request" if n % 5 else "http-connect",
            "event.type": "allowed" if allowed else "denied",
            "event.reason": "granted" if allowed else ("no_grant" if n % 3 else "path_out_of_scope"),
            "user.name": user,
            "citygate.department": department,
            "url.domain": domain,
            "citygate.site": site,
            "rule.id": f"{department.lower()}-2026-001" if allowed else None,
            "citygate.flags": ["after_hours"] if n % 7 == 0 else [],
        }
        line, head = seal(record, head)
        lines.append(line)
    ordinary = {
        "@timestamp": START.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event.action": "connection",
        "url.domain": "www.example.org",
    }
    line, head = seal(ordinary, head)
    lines.append(line)
    return lines


LOG = generated_log()
RECORDS = [LogFilter(LogQuery(ordinary=True)).match(line) for line in LOG]


def run(**query) -> list[dict]:
    log_filter = LogFilter(LogQuery(**query))
    return [record for line in LOG if (record := log_filter.match(line)) is not None]


def expected(predicate) -> list[dict]:
    return [
        record
        for record in RECORDS
        if record is not None and record["event.action"] != "connection" and predicate(record)
    ]


def test_no_filter_shows_every_decision_and_nothing_else():
    shown = run()

    assert len(shown) == 48
    assert {record["event.action"] for record in shown} == {"http-request", "http-connect"}


@pytest.mark.parametrize(
    ("query", "predicate"),
    [
        ({"user": "jlee"}, lambda r: r["user.name"] == "jlee"),
        ({"user": "JLee"}, lambda r: r["user.name"] == "jlee"),
        ({"department": "parks"}, lambda r: r["citygate.department"] == "Parks"),
        ({"site": "instagram"}, lambda r: r["citygate.site"] == "instagram"),
        ({"site": "facebook.com"}, lambda r: r["url.domain"] == "www.facebook.com"),
        ({"decision": "denied"}, lambda r: r["event.type"] == "denied"),
        ({"reason": "path_out_of_scope"}, lambda r: r["event.reason"] == "path_out_of_scope"),
        ({"grant": "parks-2026-001"}, lambda r: r["rule.id"] == "parks-2026-001"),
        ({"flag": "after_hours"}, lambda r: "after_hours" in r["citygate.flags"]),
        ({"event_id": f"{7:032x}"}, lambda r: r["event.id"] == f"{7:032x}"),
        (
            {"user": "mnguyen", "decision": "denied", "site": "x"},
            lambda r: (
                r["user.name"] == "mnguyen" and r["event.type"] == "denied" and r["citygate.site"] == "x"
            ),
        ),
    ],
)
def test_each_filter_keeps_exactly_the_matching_records(query, predicate):
    want = expected(predicate)

    assert want, "the generated log must hold matches"
    assert run(**query) == want


def test_a_user_name_inside_another_field_does_not_match():
    assert run(user="parks") == []


def test_a_time_range_is_inclusive_at_the_start_and_exclusive_at_the_end():
    since = datetime(2026, 11, 21, 0, 0, tzinfo=LA)
    until = datetime(2026, 11, 21, 6, 0, tzinfo=LA)

    shown = run(since=since, until=until)

    stamps = [datetime.fromisoformat(record["@timestamp"]) for record in shown]
    assert len(stamps) == 6
    assert min(stamps) == since and max(stamps) < until


def test_ordinary_connections_only_when_asked():
    assert not [r for r in run() if r["event.action"] == "connection"]
    assert [r["url.domain"] for r in run(ordinary=True) if r["event.action"] == "connection"] == [
        "www.example.org"
    ]


def test_a_damaged_line_is_skipped_not_fatal():
    log_filter = LogFilter(LogQuery(user="jlee"))

    assert log_filter.match(b'{"@timestamp":"2026-11-21T00:00:00.000000Z","user.name":"jlee",') is None


NOW = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "end_of_day", "want"),
    [
        ("7d", False, NOW - timedelta(days=7)),
        ("12h", False, NOW - timedelta(hours=12)),
        ("30m", False, NOW - timedelta(minutes=30)),
        ("2026-11-01", False, datetime(2026, 11, 1, tzinfo=LA)),
        ("2026-11-30", True, datetime(2026, 12, 1, tzinfo=LA)),
        ("2026-11-21T08:30", False, datetime(2026, 11, 21, 8, 30, tzinfo=LA)),
        ("2026-11-21T16:30Z", False, datetime(2026, 11, 21, 16, 30, tzinfo=UTC)),
    ],
)
def test_times_are_ages_dates_or_iso_in_city_time(text, end_of_day, want):
    assert parse_when(text, LA, now=NOW, end_of_day=end_of_day) == want


def test_a_bad_time_says_what_is_accepted():
    with pytest.raises(ValueError, match="use a date"):
        parse_when("last tuesday", LA, now=NOW)


def test_would_deny_keeps_only_report_mode_denials():
    head = ChainHead()
    lines = []
    for would_deny in (False, True, False):
        record = {
            "@timestamp": "2026-11-20T16:00:00.000000Z",
            "event.action": "http-request",
            "event.type": "allowed",
            "event.reason": "no_grant" if would_deny else "granted",
            "citygate.would_deny": would_deny,
        }
        line, head = seal(record, head)
        lines.append(line)

    found = [LogFilter(LogQuery(would_deny=True)).match(line) for line in lines]

    assert [record is not None for record in found] == [False, True, False]
    assert found[1]["event.reason"] == "no_grant"
