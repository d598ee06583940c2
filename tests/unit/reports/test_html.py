"""Report and review pages: every value from the logs or the grant files is escaped.

A department, a user name or a grant's purpose can hold anything a directory or a director
typed; in a page a director opens from an email, none of it may become markup.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

from citygate.proxy.flags import FlagSettings, Kind, Rule
from citygate.proxy.reports.html import report_html, review_html
from citygate.proxy.reports.summary import build_report, build_review

LA = ZoneInfo("America/Los_Angeles")
HOSTILE = '<script>alert("x")</script>'


def hostile_record() -> dict[str, object]:
    return {
        "@timestamp": "2026-06-15T17:00:00.000000Z",
        "event.action": "http-request",
        "event.type": "allowed",
        "event.reason": "granted",
        "user.name": 'jlee"><img src=x onerror=alert(1)>',
        "citygate.department": HOSTILE,
        "citygate.site": "facebook",
        "rule.id": "p1",
        "citygate.flags": ["<b>flag</b>"],
    }


def test_report_values_are_escaped_in_text_and_attributes(policy_files):
    policy = policy_files.load(
        [
            {
                "id": "p1",
                "employee": "jlee",
                "sites": ["facebook"],
                "purpose": "<iframe src=//evil>",
                "approved_by": "ahernandez",
                "approved_on": "2026-01-12",
                "expires": "2026-06-20",
            }
        ]
    )
    report = build_report(
        [hostile_record()],
        city="Town & <Country>",
        zone=LA,
        grants=policy.grants,
        flags=FlagSettings((Rule("after-hours", Kind.OUTSIDE_BUSINESS_HOURS),)),
        since=datetime(2026, 6, 15, tzinfo=LA),
        until=datetime(2026, 6, 16, tzinfo=LA),
    )

    html = report_html(report, datetime(2026, 6, 16, 8, 0, tzinfo=LA))

    for raw in (HOSTILE, "<img", "<b>flag", "<iframe", "<Country>"):
        assert raw not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "jlee&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Town &amp; &lt;Country&gt;" in html
    assert "&lt;b&gt;flag&lt;/b&gt;" in html  # a flag id recorded by an older configuration
    assert "2026-06-15 (America/Los_Angeles)" in html


def test_review_values_are_escaped(policy_files):
    policy = policy_files.load(
        [
            {
                "id": "p1",
                "employee": "jlee",
                "sites": ["facebook"],
                "purpose": "<iframe src=//evil>",
                "approved_by": "ahernandez",
                "approved_on": "2026-01-12",
                "expires": "2026-12-31",
            }
        ]
    )
    review = build_review(
        [hostile_record()],
        city="Testville",
        zone=LA,
        grants=policy.grants,
        at=datetime(2026, 6, 16, tzinfo=LA),
    )

    html = review_html(review, datetime(2026, 6, 16, tzinfo=LA))

    assert "<iframe" not in html and "&lt;iframe src=//evil&gt;" in html
    assert HOSTILE not in html and "&lt;script&gt;" in html  # the department the log recorded
    assert "2026-06-15 10:00" in html  # the last use, city time
