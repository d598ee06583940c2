"""Access-log records: every field present and typed, and nothing private in them.

Decisions come from the real `decide` on a small policy (tests/unit/conftest.py) with directory
facts built here; events are the gate's real `DecisionEvent`.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from citygate.addons.events import DecisionEvent, Stage
from citygate.directory.model import Person
from citygate.proxy.audit.record import (
    DECISION_FIELDS,
    Completion,
    connection_record,
    decision_record,
    shown_url,
)
from citygate.proxy.decision import Identity, decide

LA = ZoneInfo("America/Los_Angeles")
AT = datetime(2026, 6, 15, 10, 0, tzinfo=LA)
ANA = Person("ahernandez", "Ana Hernandez", "Parks", "Director of Parks", frozenset({"directors"}))
JLEE = Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator")
MINH = Person("mnguyen", "Minh Nguyen", "Parks", "Recreation Specialist")
PEOPLE = {p.uid: p for p in (ANA, JLEE, MINH)}

# The JSON type of every field: a SIEM mapping relies on it never changing.
STR, INT, LIST, NONE = str, int, list, type(None)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "@timestamp": (STR,),
    "ecs.version": (STR,),
    "event.kind": (STR,),
    "event.category": (LIST,),
    "event.id": (STR,),
    "event.action": (STR,),
    "event.type": (STR,),
    "event.reason": (STR,),
    "event.end": (STR, NONE),
    "event.duration": (INT, NONE),
    "user.name": (STR, NONE),
    "citygate.department": (STR, NONE),
    "source.ip": (STR, NONE),
    "url.scheme": (STR, NONE),
    "url.domain": (STR,),
    "url.path": (STR, NONE),
    "url.query": (STR, NONE),
    "http.request.method": (STR,),
    "http.response.status_code": (INT, NONE),
    "http.request.body.bytes": (INT, NONE),
    "http.response.body.bytes": (INT, NONE),
    "rule.id": (STR, NONE),
    "rule.category": (STR, NONE),
    "citygate.delegated_by": (STR, NONE),
    "citygate.purpose_kind": (STR, NONE),
    "citygate.site": (STR, NONE),
    "citygate.approver": (STR, NONE),
    "citygate.approver_role": (STR, NONE),
    "citygate.identity_method": (STR, NONE),
    "citygate.mode": (STR,),
    "citygate.would_deny": (bool,),
    "citygate.flags": (LIST,),
    "citygate.tunnel": (STR, NONE),
    "citygate.detail": (STR, NONE),
    "error.message": (STR, NONE),
}


@pytest.fixture
def policy(policy_files):
    grants = [
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
    return policy_files.load(grants)


def event(policy, user, url, stage=Stage.REQUEST, status=None, method="GET"):
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":")[0]
    path = None if stage is Stage.CONNECT else "/" + url.split("://", 1)[-1].partition("/")[2]
    identity = Identity(user, "basic") if user else None
    decision = decide(identity, host, path, AT, policy, PEOPLE)
    return DecisionEvent(
        id="e" * 32,
        timestamp=datetime(2026, 6, 15, 17, 0, 0, 123456, tzinfo=UTC),
        decision=decision,
        stage=stage,
        client_ip="10.20.3.14",
        method=method,
        url=url,
        status=status,
    )


def assert_typed(record):
    assert set(record) == set(DECISION_FIELDS) == set(FIELD_TYPES)
    for key, value in record.items():
        assert isinstance(value, FIELD_TYPES[key]), (key, value)


def test_a_denial_names_who_what_why_and_when(policy):
    record = decision_record(event(policy, "mnguyen", "http://www.facebook.com/", status=403))

    assert_typed(record)
    assert record["@timestamp"] == "2026-06-15T17:00:00.123456Z"
    assert record["event.type"] == "denied"
    assert record["event.reason"] == "no_grant"
    assert record["event.action"] == "http-request"
    assert record["user.name"] == "mnguyen"
    assert record["citygate.department"] == "Parks"
    assert record["source.ip"] == "10.20.3.14"
    assert record["url.domain"] == "www.facebook.com"
    assert record["url.path"] == "/"
    assert record["http.response.status_code"] == 403
    assert record["citygate.site"] == "facebook"
    assert record["citygate.mode"] == "enforce"
    assert record["citygate.would_deny"] is False
    assert record["citygate.flags"] == []
    assert record["rule.id"] is None


def test_an_allowed_request_carries_grant_approver_status_bytes_and_duration(policy):
    announced = event(policy, "jlee", "http://www.facebook.com/CityParks/events")
    completion = Completion(
        end=announced.timestamp + timedelta(milliseconds=250),
        status=200,
        request_bytes=0,
        response_bytes=5120,
    )

    record = decision_record(announced, completion)

    assert_typed(record)
    assert record["event.type"] == "allowed"
    assert record["event.reason"] == "granted"
    assert record["rule.id"] == "parks-1"
    assert (record["rule.category"], record["citygate.purpose_kind"]) == ("personal", "business")
    assert record["citygate.approver"] == "ahernandez"
    assert record["citygate.approver_role"] == "director"
    assert record["citygate.identity_method"] == "basic"
    assert record["http.response.status_code"] == 200
    assert record["http.request.body.bytes"] == 0
    assert record["http.response.body.bytes"] == 5120
    assert record["event.duration"] == 250_000_000  # ECS: nanoseconds
    assert record["event.end"] == "2026-06-15T17:00:00.373456Z"


def test_a_passthrough_tunnel_has_no_path_and_unknown_bytes(policy, policy_files):
    # Without a path scope jlee's grant passes the tunnel through: nothing inside is seen.
    announced = event(policy, "jlee", "www.facebook.com:443", stage=Stage.CONNECT, method="CONNECT")

    record = decision_record(announced)

    assert_typed(record)
    assert record["event.action"] == "http-connect"
    assert record["url.path"] is None and record["url.scheme"] is None
    assert record["http.request.body.bytes"] is None and record["http.response.body.bytes"] is None
    # jlee's grant is limited to some paths, so this tunnel is decrypted to check each request.
    assert record["citygate.tunnel"] == "decrypted"


WHOLE_SITE_GRANT = {
    "id": "parks-2",
    "employee": "jlee",
    "sites": ["facebook"],
    "purpose": "Post park closures",
    "approved_by": "ahernandez",
    "approved_on": "2026-01-12",
    "expires": "2026-12-31",
}


def test_a_granted_whole_site_tunnel_is_decrypted_by_default(policy_files):
    # So that each request inside is decided on its own host (a shared front end serves others).
    policy = policy_files.load([WHOLE_SITE_GRANT])
    record = decision_record(
        event(policy, "jlee", "www.facebook.com:443", stage=Stage.CONNECT, method="CONNECT")
    )

    assert record["citygate.tunnel"] == "decrypted"
    assert record["event.type"] == "allowed"


def test_a_granted_tunnel_to_a_site_that_passes_through_is_passthrough(policy_files):
    sites = policy_files.mini_sites.replace(
        "    domains: [facebook.com]\n", "    domains: [facebook.com]\n    pass_through_when_granted: true\n"
    )
    policy = policy_files.load([WHOLE_SITE_GRANT], sites=sites)
    record = decision_record(
        event(policy, "jlee", "www.facebook.com:443", stage=Stage.CONNECT, method="CONNECT")
    )

    assert record["citygate.tunnel"] == "passthrough"
    assert record["event.type"] == "allowed"


def test_a_report_mode_denial_is_allowed_with_its_deny_reason_and_would_deny(policy):
    # Report mode: the request was let through, so its type is "allowed"; the reason is the
    # denial enforce mode would have made.
    announced = replace(event(policy, "mnguyen", "http://www.facebook.com/"), mode="report", would_deny=True)
    completion = Completion(end=announced.timestamp + timedelta(milliseconds=40), status=200)

    record = decision_record(announced, completion)

    assert_typed(record)
    assert record["event.type"] == "allowed"
    assert record["event.reason"] == "no_grant"
    assert record["citygate.would_deny"] is True
    assert record["citygate.mode"] == "report"
    assert record["http.response.status_code"] == 200


def test_a_report_mode_denied_tunnel_is_decrypted_like_an_allowed_one(policy):
    announced = replace(
        event(policy, "mnguyen", "www.facebook.com:443", stage=Stage.CONNECT, method="CONNECT"),
        mode="report",
        would_deny=True,
    )

    record = decision_record(announced)

    assert_typed(record)
    assert record["citygate.tunnel"] == "decrypted"
    assert record["event.type"] == "allowed" and record["event.reason"] == "no_grant"


def test_a_request_without_credentials_has_no_user(policy):
    record = decision_record(event(policy, None, "http://www.facebook.com/", status=407))

    assert_typed(record)
    assert record["event.reason"] == "credentials_required"
    assert record["event.type"] == "denied"
    assert record["user.name"] is None


def test_the_query_string_is_dropped_unless_configured(policy):
    announced = event(policy, "mnguyen", "http://www.facebook.com/login?token=s3cr3t&next=/", status=403)

    dropped = decision_record(announced)
    kept = decision_record(announced, include_query=True)

    assert "s3cr3t" not in repr(dropped)
    assert dropped["url.path"] == "/login"
    assert dropped["url.query"] is None
    assert kept["url.query"] == "token=s3cr3t&next=/"


def test_an_ordinary_connection_has_host_and_bytes_only():
    started = datetime(2026, 6, 15, 17, 0, tzinfo=UTC)
    record = connection_record("c" * 32, started, started + timedelta(seconds=2), "www.example.org", 10, 2000)

    assert record["url.domain"] == "www.example.org"
    assert record["http.request.body.bytes"] == 10
    assert record["http.response.body.bytes"] == 2000
    assert not {"url.path", "url.query", "user.name", "source.ip"} & set(record)


@pytest.mark.parametrize(
    ("url", "scheme", "path", "query"),
    [
        ("http://[:::]/a?b=1#c", "http", "/a", "b=1"),  # urlsplit: "does not appear to be an IPv6 address"
        ("http://[::1/x", "http", "/x", None),  # urlsplit: "Invalid IPv6 URL"
        ("http://a]b:8080?q", "http", "/", "q"),
        ("https://www.facebook.com", "https", "/", None),
        ("http://www.facebook.com/p?", "http", "/p", None),
        ("www.facebook.com:443", None, "/", None),
    ],
)
def test_the_url_of_a_record_is_split_whatever_it_holds(policy, url, scheme, path, query):
    record = decision_record(
        replace(event(policy, None, "http://www.facebook.com/"), url=url), include_query=True
    )

    assert (record["url.scheme"], record["url.path"], record["url.query"]) == (scheme, path, query)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://www.facebook.com/caf\u00e9?q=%41", "http://www.facebook.com/caf\u00e9?q=%41"),  # as sent
        ("http://www.facebook.com/\udcff\udcfe", "http://www.facebook.com/%FF%FE"),  # bytes not UTF-8
        ("http://www.facebook.com/a\x00b\x7f c\u200e", "http://www.facebook.com/a%00b%7F c%E2%80%8E"),
        ("http://www.facebook.com/\ud800", "http://www.facebook.com/%ED%A0%80"),  # no byte behind it
    ],
)
def test_a_url_is_shown_in_printable_ascii(url, shown):
    assert shown_url(url) == shown
