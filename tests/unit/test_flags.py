"""Non-business-use flag rules: each fires exactly at its boundary, DST and city days included.

Times are written in UTC where the point is the instant (the DST tests), and in city time
elsewhere. Decisions for the path rule come from the real `decide` on a small policy.
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.model import Person
from citygate.proxy.decision import Identity, decide
from citygate.proxy.flags import (
    Counting,
    FlagSettings,
    Kind,
    Rule,
    Use,
    WindowTracker,
    counting,
    outside_business_hours,
    request_flags,
    use_of_record,
    windowed_flags,
)
from citygate.proxy.outcomes import use_of_decision

LA = ZoneInfo("America/Los_Angeles")
HOURS = Rule("after-hours", Kind.OUTSIDE_BUSINESS_HOURS, start=7 * 60, end=18 * 60)


def use(
    at: datetime,
    *,
    user: str = "jlee",
    site: str = "facebook",
    counts=Counting.USE,
    reason: str = "granted",
    until=None,
):
    return Use(at=at, user=user, site=site, reason=reason, counts=counts, grant_until=until)


def la(*args: int) -> datetime:
    return datetime(*args, tzinfo=LA)


# --- outside business hours ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "outside"),
    [
        (la(2026, 6, 15, 6, 59, 59, 999999), True),  # a Monday, just before opening
        (la(2026, 6, 15, 7, 0), False),  # opening: inclusive
        (la(2026, 6, 15, 17, 59, 59, 999999), False),
        (la(2026, 6, 15, 18, 0), True),  # closing: exclusive
        (la(2026, 6, 13, 12, 0), True),  # a Saturday
        (la(2026, 6, 14, 12, 0), True),  # a Sunday
    ],
)
def test_business_hours_boundaries_in_city_time(at, outside):
    assert outside_business_hours(HOURS, at.astimezone(UTC), LA) is outside


def test_a_holiday_is_outside_business_hours_all_day_and_the_next_day_is_not():
    rule = Rule("after-hours", Kind.OUTSIDE_BUSINESS_HOURS, holidays=frozenset({date(2026, 11, 26)}))

    assert outside_business_hours(rule, la(2026, 11, 26, 10, 0), LA)
    assert outside_business_hours(rule, la(2026, 11, 26, 23, 59, 59), LA)
    assert not outside_business_hours(rule, la(2026, 11, 27, 10, 0), LA)
    # The holiday is a city day: 07:30 UTC on the 27th is still the 26th in Los Angeles.
    assert outside_business_hours(rule, datetime(2026, 11, 27, 7, 30, tzinfo=UTC), LA)


def test_the_same_utc_time_is_outside_before_the_spring_dst_change_and_inside_after():
    # 14:30 UTC is 06:30 PST on Friday 6 March 2026 and 07:30 PDT on Monday 9 March.
    friday = datetime(2026, 3, 6, 14, 30, tzinfo=UTC)
    monday = datetime(2026, 3, 9, 14, 30, tzinfo=UTC)

    assert outside_business_hours(HOURS, friday, LA)
    assert not outside_business_hours(HOURS, monday, LA)
    # Closing follows the wall clock too: 01:00 UTC is 17:00 PST on Friday and 18:00 PDT on Monday.
    assert not outside_business_hours(HOURS, datetime(2026, 3, 7, 1, 0, tzinfo=UTC), LA)
    assert outside_business_hours(HOURS, datetime(2026, 3, 10, 1, 0, tzinfo=UTC), LA)


def test_on_the_spring_forward_day_the_missing_hour_is_skipped():
    # Sunday 8 March 2026: 01:59:59 PST is followed by 03:00:00 PDT.
    every_day = Rule(
        "early", Kind.OUTSIDE_BUSINESS_HOURS, weekdays=frozenset(range(7)), start=3 * 60, end=18 * 60
    )

    assert outside_business_hours(every_day, datetime(2026, 3, 8, 9, 59, 59, tzinfo=UTC), LA)
    assert not outside_business_hours(every_day, datetime(2026, 3, 8, 10, 0, 0, tzinfo=UTC), LA)


def test_on_the_fall_back_day_both_occurrences_of_the_repeated_hour_count():
    # Sunday 1 November 2026: 01:00-01:59 happens twice, first in PDT (UTC-7), then in PST (UTC-8).
    night = Rule("night", Kind.OUTSIDE_BUSINESS_HOURS, weekdays=frozenset(range(7)), start=60, end=120)

    assert outside_business_hours(night, datetime(2026, 11, 1, 7, 59, 59, tzinfo=UTC), LA)  # 00:59:59 PDT
    assert not outside_business_hours(night, datetime(2026, 11, 1, 8, 30, tzinfo=UTC), LA)  # 01:30 PDT
    assert not outside_business_hours(night, datetime(2026, 11, 1, 9, 30, tzinfo=UTC), LA)  # 01:30 PST
    assert not outside_business_hours(night, datetime(2026, 11, 1, 9, 59, 59, tzinfo=UTC), LA)  # 01:59:59 PST
    assert outside_business_hours(night, datetime(2026, 11, 1, 10, 0, tzinfo=UTC), LA)  # 02:00 PST


def test_only_use_of_a_site_is_flagged_after_hours_not_a_denial():
    settings = FlagSettings((HOURS,))
    night = la(2026, 6, 15, 22, 0)

    assert request_flags(settings, use(night), LA) == ["after-hours"]
    assert request_flags(settings, use(night, counts=Counting.ATTEMPT, reason="no_grant"), LA) == []
    assert request_flags(settings, use(la(2026, 6, 15, 10, 0)), LA) == []


# --- path scope --------------------------------------------------------------------------------


@pytest.fixture
def scoped_policy(policy_files):
    return policy_files.load(
        [
            {
                "id": "parks-1",
                "employee": "jlee",
                "sites": ["facebook"],
                "purpose": "Post park closures",
                "approved_by": "ahernandez",
                "approved_on": "2026-01-12",
                "expires": "2026-12-31",
                "paths": {"facebook": ["/CityParks"]},
            }
        ]
    )


PEOPLE = {
    "ahernandez": Person("ahernandez", "Ana Hernandez", "Parks", "Director", frozenset({"directors"})),
    "jlee": Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator"),
}


@pytest.mark.parametrize(
    ("path", "flagged"),
    [("/CityParks", False), ("/CityParks/events", False), ("/CityParksX", True), ("/messages", True)],
)
def test_a_request_outside_the_grants_path_scope_is_flagged_at_the_segment_boundary(
    scoped_policy, path, flagged
):
    at = la(2026, 6, 15, 10, 0)
    decision = decide(Identity("jlee", "basic"), "www.facebook.com", path, at, scoped_policy, PEOPLE)
    settings = FlagSettings((Rule("out-of-scope", Kind.PATH_OUT_OF_SCOPE),))

    flags = request_flags(settings, use_of_decision(decision, True, None, at), LA)

    assert flags == (["out-of-scope"] if flagged else [])
    assert decision.allowed is not flagged


# --- grant expiring ----------------------------------------------------------------------------


def test_use_through_a_grant_ending_within_n_days_is_flagged_from_exactly_n_days_before(scoped_policy):
    grant = scoped_policy.grants[0]
    until = grant.valid_until  # midnight at the end of 2026-12-31, city time
    settings = FlagSettings((Rule("renew", Kind.GRANT_EXPIRING, days=14),))

    def flags_at(at: datetime) -> list[str]:
        decision = decide(
            Identity("jlee", "basic"), "www.facebook.com", "/CityParks", at, scoped_policy, PEOPLE
        )
        assert decision.allowed
        return request_flags(settings, use_of_decision(decision, True, None, at), LA)

    assert flags_at(until - timedelta(days=14, microseconds=1)) == []
    assert flags_at(until - timedelta(days=14)) == ["renew"]
    assert flags_at(until - timedelta(microseconds=1)) == ["renew"]
    assert until == la(2027, 1, 1, 0, 0)


# --- daily budgets -----------------------------------------------------------------------------


def test_the_daily_request_budget_flags_once_on_the_first_request_over_it_per_site_and_city_day():
    settings = FlagSettings((Rule("busy", Kind.DAILY_REQUESTS, limit=3),))
    day = la(2026, 6, 15, 9, 0)
    uses = [use(day + timedelta(minutes=i)) for i in range(5)]
    uses.append(use(day + timedelta(minutes=6), site="instagram"))  # another site: its own budget
    uses.append(use(day + timedelta(minutes=7), user="kwilliams"))  # another employee
    uses.append(use(day + timedelta(minutes=8), counts=Counting.ATTEMPT, reason="no_grant"))  # not a use
    # The next city day starts at local midnight: a fresh budget.
    next_day = [use(la(2026, 6, 15, 23, 59, 59))] + [
        use(la(2026, 6, 16, 0, 0) + timedelta(seconds=i)) for i in range(4)
    ]

    flagged = [(u.at, u.site, u.user, f) for u, f in windowed_flags(settings, uses + next_day, LA)]

    assert [row for row in flagged if row[3]] == [
        (day + timedelta(minutes=3), "facebook", "jlee", ["busy"]),  # the 4th of the day
        (la(2026, 6, 16, 0, 0, 3), "facebook", "jlee", ["busy"]),  # the 4th of the next day
    ]


def test_the_daily_active_minutes_budget_counts_distinct_city_minutes():
    settings = FlagSettings((Rule("long", Kind.DAILY_ACTIVE_MINUTES, limit=2),))
    tracker = WindowTracker(settings, LA)

    assert tracker.observe(use(la(2026, 6, 15, 10, 0, 5))) == []
    assert tracker.observe(use(la(2026, 6, 15, 10, 0, 59))) == []  # the same minute
    assert tracker.observe(use(la(2026, 6, 15, 10, 1, 0))) == []  # two minutes: at the limit
    assert tracker.observe(use(la(2026, 6, 15, 10, 1, 30))) == []
    assert tracker.observe(use(la(2026, 6, 15, 10, 2, 0))) == ["long"]  # the third minute
    assert tracker.observe(use(la(2026, 6, 15, 10, 3, 0))) == []  # flagged once a day


# --- repeated denials --------------------------------------------------------------------------


def denial(at: datetime, reason: str = "no_grant", user: str = "mnguyen") -> Use:
    return use(at, user=user, counts=Counting.ATTEMPT, reason=reason)


def test_repeated_denials_fire_when_the_count_falls_within_the_window():
    rule = Rule("retries", Kind.REPEATED_DENIALS, count=3, window=timedelta(minutes=10))
    start = la(2026, 6, 15, 10, 0)

    inside = WindowTracker(FlagSettings((rule,)), LA)
    assert inside.observe(denial(start)) == []
    assert inside.observe(denial(start + timedelta(minutes=5))) == []
    assert inside.observe(denial(start + timedelta(minutes=10) - timedelta(microseconds=1))) == ["retries"]
    assert inside.observe(denial(start + timedelta(minutes=10))) == []  # counting starts over

    spread = WindowTracker(FlagSettings((rule,)), LA)
    assert spread.observe(denial(start)) == []
    assert spread.observe(denial(start + timedelta(minutes=5))) == []
    assert spread.observe(denial(start + timedelta(minutes=10))) == []  # the first is out of the window


def test_repeated_denials_count_only_policy_denials_of_one_employee():
    rule = Rule("retries", Kind.REPEATED_DENIALS, count=2, window=timedelta(minutes=10))
    tracker = WindowTracker(FlagSettings((rule,)), LA)
    at = la(2026, 6, 15, 10, 0)

    assert tracker.observe(denial(at, "directory_unavailable")) == []  # the system's fault
    assert tracker.observe(denial(at, "credentials_invalid")) == []  # a mistyped password
    assert tracker.observe(denial(at, user="jlee")) == []  # another employee
    assert tracker.observe(use(at, user="mnguyen")) == []  # an allowed request
    assert tracker.observe(denial(at + timedelta(seconds=1))) == []
    assert tracker.observe(denial(at + timedelta(seconds=2), "path_out_of_scope")) == ["retries"]


# --- how decisions and records count ---------------------------------------------------------


@pytest.mark.parametrize(
    ("is_request", "allowed", "tunnel", "expected"),
    [
        (True, True, None, Counting.USE),
        (True, False, None, Counting.ATTEMPT),
        (False, True, "passthrough", Counting.USE),  # all that is seen of the visit
        (False, True, "decrypted", Counting.NONE),  # its requests count on their own
        (False, False, "decrypted", Counting.NONE),  # the block page inside counts
        (False, False, None, Counting.ATTEMPT),  # a CONNECT refused outright (407, 403)
    ],
)
def test_how_each_kind_of_decision_counts(is_request, allowed, tunnel, expected):
    assert counting(is_request, allowed, tunnel) is expected


def test_a_log_record_gives_the_same_facts_as_the_decision():
    record = {
        "@timestamp": "2026-06-15T17:00:00.000000Z",
        "event.action": "http-connect",
        "event.type": "allowed",
        "event.reason": "granted",
        "user.name": "kwilliams",
        "citygate.site": "facebook",
        "citygate.tunnel": "passthrough",
    }

    found = use_of_record(record)

    assert found == Use(
        at=datetime(2026, 6, 15, 17, 0, tzinfo=UTC),
        user="kwilliams",
        site="facebook",
        reason="granted",
        counts=Counting.USE,
    )
    assert use_of_record({"event.action": "audit-file-start", "@timestamp": "2026-06-15T17:00:00Z"}) is None


# --- the flags: section ------------------------------------------------------------------------

FLAGS_SECTION = """\
flags:
  rules:
    - id: after-hours
      kind: outside_business_hours
      weekdays: [mon, tue, wed, thu, friday]
      hours: 07:30-18:00
      holidays: [2026-11-26, "2026-12-25"]
    - id: busy
      kind: daily_requests
      limit: 500
    - id: retries
      kind: repeated_denials
      count: 4
      window_minutes: 15
      reasons: [no_grant]
    - id: renew
      kind: grant_expiring
"""


def test_flags_section_is_parsed(policy_files):
    policy = policy_files.load(config=policy_files.mini_config + FLAGS_SECTION)
    settings = policy.features.flags

    hours, busy, retries, renew = settings.rules
    assert hours == Rule(
        "after-hours",
        Kind.OUTSIDE_BUSINESS_HOURS,
        weekdays=frozenset({0, 1, 2, 3, 4}),
        start=7 * 60 + 30,
        end=18 * 60,
        holidays=frozenset({date(2026, 11, 26), date(2026, 12, 25)}),
    )
    assert (busy.kind, busy.limit) == (Kind.DAILY_REQUESTS, 500)
    assert (retries.count, retries.window, retries.reasons) == (
        4,
        timedelta(minutes=15),
        frozenset({"no_grant"}),
    )
    assert (renew.kind, renew.days) == (Kind.GRANT_EXPIRING, 14)
    assert [r.id for r in settings.per_request] == ["after-hours", "renew"]
    assert [r.id for r in settings.windowed] == ["busy", "retries"]


def test_without_a_flags_section_there_are_no_rules(policy_files):
    assert policy_files.load().features.flags == FlagSettings()


@pytest.mark.parametrize(
    ("section", "line", "message", "fix"),
    [
        (
            "flags:\n  rules:\n    - id: x\n      kind: after_hours\n",
            15,
            "unknown flag rule kind 'after_hours'",
            "kinds:",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: daily_request\n",
            15,
            "unknown flag rule kind",
            'did you mean "daily_requests"?',
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: outside_business_hours\n      hours: 18:00-07:00\n",
            16,
            "is not a span of the day",
            "START before END",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: outside_business_hours\n      weekdays: [mon, funday]\n",
            16,
            "'funday' is not a day of the week",
            "use mon, tue",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: outside_business_hours\n      holidays: [2026-02-30]\n",
            16,
            "holiday '2026-02-30' is not a date",
            "YYYY-MM-DD",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: daily_requests\n",
            15,
            "a daily_requests rule needs a limit",
            "limit: 2000",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: daily_active_minutes\n      limit: 0\n",
            16,
            "limit 0 is not a whole number from 1 to 1439",
            "limit: 240",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: path_out_of_scope\n      limit: 3\n",
            16,
            '"limit" is not a setting of a path_out_of_scope rule',
            "its settings: id, kind",
        ),
        (
            "flags:\n  rules:\n    - id: x\n      kind: repeated_denials\n      reasons: [no_grants]\n",
            16,
            "unknown reason 'no_grants'",
            'did you mean "no_grant"?',
        ),
        (
            "flags:\n  rules:\n    - id: Bad Id\n      kind: path_out_of_scope\n",
            14,
            "flag rule id 'Bad Id' is not valid",
            "lower-case letters",
        ),
        (
            "flags:\n  rules:\n    - {id: x, kind: path_out_of_scope}\n    - {id: x, kind: grant_expiring}\n",
            15,
            'flag rule id "x" is already used on line 14',
            "its own id",
        ),
        ("flags:\n  rule: []\n", 13, 'unknown setting "flags.rule"', "rules:"),
    ],
)
def test_flag_rule_mistakes_name_the_file_line_and_fix(policy_files, section, line, message, fix):
    problems = policy_files.problems(config=policy_files.mini_config + section)

    [problem] = [p for p in problems if message in p.message]
    assert problem.path == policy_files.config
    assert problem.line == line
    assert fix in problem.fix


def test_a_personal_use_window_counts_towards_no_business_use_rule():
    # Lunch, on a Saturday (outside business hours), far over any daily budget: all permitted.
    settings = FlagSettings(
        (
            Rule("after-hours", Kind.OUTSIDE_BUSINESS_HOURS),
            Rule("budget", Kind.DAILY_REQUESTS, limit=1),
            Rule("expiring", Kind.GRANT_EXPIRING, days=30),
        )
    )
    at = datetime(2026, 6, 13, 12, 30, tzinfo=ZoneInfo("America/Los_Angeles"))
    personal = Use(at, "mnguyen", "facebook", "granted", Counting.USE, at + timedelta(days=2), personal=True)
    business = Use(at, "mnguyen", "facebook", "granted", Counting.USE, at + timedelta(days=2))
    tracker = WindowTracker(settings, ZoneInfo("America/Los_Angeles"))

    assert request_flags(settings, personal, ZoneInfo("America/Los_Angeles")) == []
    assert [tracker.observe(personal) for _ in range(3)] == [[], [], []]
    assert request_flags(settings, business, ZoneInfo("America/Los_Angeles")) == ["after-hours", "expiring"]
    assert [tracker.observe(business) for _ in range(2)] == [[], ["budget"]]


def test_a_record_of_a_personal_use_window_is_read_as_personal_use():
    record = {
        "event.action": "http-request",
        "@timestamp": "2026-06-15T19:30:00.000000Z",
        "user.name": "mnguyen",
        "citygate.site": "facebook",
        "event.reason": "granted",
        "event.type": "allowed",
        "citygate.purpose_kind": "personal",
    }
    assert use_of_record(record).personal is True
    assert use_of_record(record | {"citygate.purpose_kind": "business"}).personal is False
