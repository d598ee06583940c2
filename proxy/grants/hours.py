"""Time windows: when a grant may be used, in the city's time zone (`hours: Mon-Fri 07:00-18:00`).

A grant's `hours:` is one window or a list of them. Each window is optional days and a time
range: `Mon-Fri 07:00-18:00`, `Sat,Sun 10:00-14:00`, `12:00-13:00` (every day), `Fri-Mon
22:00-02:00` (a range that ends at or before its start runs past midnight, into the next day).
`24:00` ends a window at midnight. Parsed once when the grant file loads; `contains` is a
weekday lookup and two comparisons, on the decision's own clock (`at`, already in city time).

Pure: the grant loader (grants/__init__.py) parses, decision.py asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"(?:(?P<days>[A-Za-z][A-Za-z ,\-]*?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
)
_MINUTES_PER_DAY = 24 * 60
EXAMPLE = 'hours: "Mon-Fri 07:00-18:00" (or a list, e.g. ["Mon-Fri 12:00-13:00", "Sat 09:00-12:00"])'


class HoursProblem(ValueError):
    """A window that cannot be read, with what is wrong in plain words."""


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int  # minutes after midnight
    end: int  # minutes after midnight; at or before `start`: the next day
    text: str

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def contains(self, weekday: int, minute: int) -> bool:
        if not self.overnight:
            return weekday in self.days and self.start <= minute < self.end
        # Started today, or started yesterday and not over yet.
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True, slots=True)
class Hours:
    windows: tuple[Window, ...]

    @property
    def text(self) -> str:
        return ", ".join(window.text for window in self.windows)

    def contains(self, at: datetime) -> bool:
        weekday, minute = at.weekday(), at.hour * 60 + at.minute
        return any(window.contains(weekday, minute) for window in self.windows)

    def resumes(self, at: datetime) -> datetime | None:
        """When access next begins after `at`: the earliest window start within a week."""
        midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
        weekday = at.weekday()
        starts = [
            midnight + timedelta(days=offset, minutes=window.start)
            for offset in range(8)
            for window in self.windows
            if (weekday + offset) % 7 in window.days
        ]
        return min((start for start in starts if start > at), default=None)


def parse_hours(value: object) -> Hours:
    """`hours:` as written in a grant file: a window or a list of windows; HoursProblem otherwise."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise HoursProblem("hours must be a window or a list of windows")
    return Hours(tuple(_window(text.strip()) for text in values))


def _window(text: str) -> Window:
    found = _WINDOW.fullmatch(text)
    if found is None:
        raise HoursProblem(f"{text!r} is not days and a time range")
    start, end = _minutes(found["start"], text), _minutes(found["end"], text)
    if start == _MINUTES_PER_DAY:
        raise HoursProblem(f"{text!r} starts at 24:00; a window starts at 00:00 to 23:59")
    if start == end:
        raise HoursProblem(f"{text!r} starts and ends at the same time, so it never matches")
    days = _days(found["days"], text) if found["days"] else frozenset(range(7))
    return Window(days, start, 0 if end == _MINUTES_PER_DAY else end, " ".join(text.split()))


def _minutes(clock: str, text: str) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise HoursProblem(f"{clock} in {text!r} is not a time of day")
    return hours * 60 + minutes


def _days(spec: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in spec.replace(" ", "").lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise HoursProblem(f"{part!r} in {text!r} is not a day or a range of days (Mon to Sun)")
        begin, finish = DAYS.index(first), DAYS.index(last or first)
        # A range that wraps (Fri-Mon) runs through the end of the week.
        days.update((begin + step) % 7 for step in range((finish - begin) % 7 + 1))
    return frozenset(days)
