"""Time windows: reading `hours:`, whether a moment is inside, and when access resumes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from citygate.proxy.grants.hours import HoursProblem, parse_hours

LA = ZoneInfo("America/Los_Angeles")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=LA)


# 2026-12-07 is a Monday.
@pytest.mark.parametrize(
    ("hours", "moment", "inside"),
    [
        ("Mon-Fri 07:00-18:00", "2026-12-07T07:00", True),
        ("Mon-Fri 07:00-18:00", "2026-12-07T17:59", True),
        ("Mon-Fri 07:00-18:00", "2026-12-07T18:00", False),  # the end is excluded
        ("Mon-Fri 07:00-18:00", "2026-12-07T06:59", False),
        ("Mon-Fri 07:00-18:00", "2026-12-12T10:00", False),  # Saturday
        ("12:00-13:00", "2026-12-13T12:30", True),  # no days: every day
        ("sat , sun 10:00-14:00", "2026-12-13T11:00", True),
        ("Fri-Mon 09:00-10:00", "2026-12-13T09:30", True),  # a range through the weekend
        ("Fri-Mon 09:00-10:00", "2026-12-09T09:30", False),  # Wednesday
        ("Mon 22:00-02:00", "2026-12-07T23:00", True),  # past midnight...
        ("Mon 22:00-02:00", "2026-12-08T01:59", True),  # ...into Tuesday
        ("Mon 22:00-02:00", "2026-12-08T02:00", False),
        ("Mon 22:00-02:00", "2026-12-07T01:00", False),  # Sunday night was not listed
        ("Sun 18:00-24:00", "2026-12-13T23:59", True),
        ("Sun 18:00-24:00", "2026-12-14T00:00", False),
    ],
)
def test_a_moment_is_inside_or_outside(hours, moment, inside):
    assert parse_hours(hours).contains(at(moment)) is inside


@pytest.mark.parametrize(
    ("hours", "moment", "resumes"),
    [
        ("Mon-Fri 07:00-18:00", "2026-12-07T20:00", "2026-12-08T07:00"),
        ("Mon-Fri 07:00-18:00", "2026-12-11T18:00", "2026-12-14T07:00"),  # Friday evening: Monday
        ("Mon-Fri 07:00-18:00", "2026-12-07T05:00", "2026-12-07T07:00"),  # later the same day
        (["Mon 12:00-13:00", "Mon 16:00-17:00"], "2026-12-07T14:00", "2026-12-07T16:00"),
        ("Sun 10:00-11:00", "2026-12-13T10:30", "2026-12-20T10:00"),  # a week on
    ],
)
def test_access_resumes_at_the_next_window_start(hours, moment, resumes):
    assert parse_hours(hours).resumes(at(moment)) == at(resumes)


def test_the_text_is_the_director_s_own_with_spaces_tidied():
    assert (
        parse_hours(["Mon-Fri  07:00-18:00", "Sat 9:00 - 12:00"]).text
        == "Mon-Fri 07:00-18:00, Sat 9:00 - 12:00"
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "is not days and a time range"),
        ("business hours", "is not days and a time range"),
        ("Mon-Fri", "is not days and a time range"),
        ("Mon-Fri 7am-6pm", "is not days and a time range"),
        ("Mon-Fry 07:00-18:00", "'mon-fry' in 'Mon-Fry 07:00-18:00' is not a day or a range of days"),
        ("Mon-Fri 07:60-18:00", "07:60 in 'Mon-Fri 07:60-18:00' is not a time of day"),
        ("Mon-Fri 07:00-25:00", "25:00"),
        ("Mon 24:00-02:00", "starts at 24:00"),
        ("Mon 12:00-12:00", "never matches"),
        ([], "a window or a list of windows"),
        (7, "a window or a list of windows"),
        (["Mon 12:00-13:00", 5], "a window or a list of windows"),
    ],
)
def test_a_window_that_cannot_be_read_says_what_is_wrong(value, words):
    with pytest.raises(HoursProblem, match=None) as caught:
        parse_hours(value)
    assert words in str(caught.value)
