"""Grant files: what loads, what is refused (file:line: problem; fix), and path scopes."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.problems import ConfigError, Severity
from citygate.proxy.grants import REQUIRED_KEYS, Grant, normalize_path, path_in_scope
from citygate.proxy.policy import Policy, load_policy

LA = ZoneInfo("America/Los_Angeles")

# The grant every row starts from; "grants:" is line 1, so key N of this dict is on line N + 1.
BASE = {
    "id": "parks-001",  # line 2
    "employee": "jlee",  # line 3
    "sites": "[facebook]",  # line 4
    "purpose": "Post park closures",  # line 5
    "approved_by": "ahernandez",  # line 6
    "approved_on": "2026-01-12",  # line 7
    "expires": "2026-12-31",  # line 8
}


def grant_text(*, drop: tuple[str, ...] = (), extra: tuple[str, ...] = (), **values: str) -> str:
    """BASE as YAML with some values replaced, some keys dropped and raw lines added (line 9+)."""
    fields = {**BASE, **values}
    lines = [f"{key}: {value}" for key, value in fields.items() if key not in drop]
    lines += list(extra)
    body = ["  - " + lines[0], *("    " + line for line in lines[1:])]
    return "grants:\n" + "\n".join(body) + "\n"


# ---------------------------------------------------------------- what a good grant becomes


# One grant written with mixed case and an untidy path scope, loaded from grants/parks.yaml.
GOOD_GRANT = grant_text(
    employee="JLee",
    approved_by="AHernandez",
    sites="[Facebook, instagram]",
    extra=("paths: {facebook: [/FresnoParks/./photos/.., /Other/]}",),
)


@pytest.fixture
def good_policy(policy_files) -> Policy:
    return policy_files.load({"parks.yaml": GOOD_GRANT})


@pytest.fixture
def good_grant(good_policy: Policy) -> Grant:
    (grant,) = good_policy.grants
    return grant


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("id", "parks-001", id="id"),
        pytest.param("employee", "jlee", id="employee-lowercased"),
        pytest.param("approved_by", "ahernandez", id="approved-by-lowercased"),
        pytest.param("sites", ("facebook", "instagram"), id="sites-lowercased-in-order"),
        pytest.param("purpose", "Post park closures", id="purpose"),
        pytest.param("approved_on", date(2026, 1, 12), id="approved-on-is-a-date"),
        pytest.param(
            "valid_from", datetime(2026, 1, 12, tzinfo=LA), id="valid-from-approval-day-local-midnight"
        ),
        # "expires: 2026-12-31" works until local midnight at the end of that day.
        pytest.param(
            "valid_until", datetime(2027, 1, 1, tzinfo=LA), id="valid-until-local-midnight-after-expiry"
        ),
    ],
)
def test_grant_fields_after_loading(good_grant, field, expected):
    assert getattr(good_grant, field) == expected


@pytest.mark.parametrize(
    ("site_id", "scope"),
    [
        pytest.param("facebook", ("/FresnoParks", "/Other/"), id="scoped-site-paths-normalized"),
        pytest.param("instagram", None, id="unscoped-site-whole-site"),
    ],
)
def test_grant_path_scope_after_loading(good_grant, site_id, scope):
    assert good_grant.scope_for(site_id) == scope


def test_grant_location_is_its_file_and_line(policy_files, good_grant):
    assert good_grant.location == f"{policy_files.grants_dir / 'parks.yaml'}:2"


@pytest.mark.parametrize(
    ("employee", "site_id", "found"),
    [
        pytest.param("jlee", "facebook", True, id="employee-and-site"),
        pytest.param("jlee", "instagram", True, id="employee-and-second-site"),
        pytest.param("jlee", "youtube", False, id="site-not-granted"),
        pytest.param("ahernandez", "facebook", False, id="approver-is-not-granted"),
    ],
)
def test_grants_for_after_loading(good_policy, good_grant, employee, site_id, found):
    assert good_policy.grants_for(employee, site_id) == ((good_grant,) if found else ())


def test_each_kind_of_grant_loads_with_whom_it_is_for(policy_files):
    policy = policy_files.load(
        {
            "kinds.yaml": "grants:\n"
            + grant_text(
                id="g-group", drop=("employee",), extra=("group: CN=Parks-Team,OU=Groups,DC=city",)
            ).split("\n", 1)[1]
            + grant_text(id="g-dept", drop=("employee",), extra=("department: Parks",)).split("\n", 1)[1]
            + grant_text(
                id="g-city",
                drop=("employee",),
                extra=("city: true", "hours: Mon-Fri 12:00-13:00", "purpose_kind: personal"),
            ).split("\n", 1)[1]
        }
    )
    kinds = {grant.id: (grant.kind.value, grant.whom, grant.purpose_kind.value) for grant in policy.grants}
    assert kinds == {
        "g-group": ("group", "group parks-team", "business"),
        "g-dept": ("department", "department Parks", "business"),
        "g-city": ("city", "everyone", "personal"),  # a whole-site window: hours and personal
    }


def test_hours_are_read_once_at_load(policy_files):
    policy = policy_files.load({"parks.yaml": grant_text(extra=('hours: "Mon-Fri 07:00-18:00"',))})
    assert policy.grants[0].hours is not None
    assert policy.grants[0].hours.text == "Mon-Fri 07:00-18:00"


def test_start_sets_valid_from(policy_files):
    policy = policy_files.load({"p.yaml": grant_text(extra=("start: 2026-07-01",))})
    assert policy.grants[0].valid_from == datetime(2026, 7, 1, tzinfo=LA)


def test_single_site_may_be_written_as_a_string(policy_files):
    policy = policy_files.load({"p.yaml": grant_text(sites="youtube")})
    assert policy.grants[0].sites == ("youtube",)


def test_max_grant_days_boundary_matches_the_fix_text(policy_files, problem_with):
    """The "latest" date the fix proposes is accepted, the day after it is refused."""
    problems = policy_files.problems({"p.yaml": grant_text(expires="2027-06-01")})
    fix = problem_with(problems, "days of access from 2026-01-12").fix
    latest = date.fromisoformat(fix.split("on or before ")[1].split(" ")[0])
    assert latest == date(2027, 1, 11)  # 365 days of access, both ends counted
    policy_files.load({"p.yaml": grant_text(expires=latest.isoformat())})
    problems = policy_files.problems({"p.yaml": grant_text(expires="2027-01-12")})
    problem_with(problems, "would give 366 days of access from 2026-01-12, more than the maximum of 365")


def test_max_grant_days_comes_from_the_config(policy_files, problem_with):
    config = policy_files.mini_config.replace("max_grant_days: 365", "max_grant_days: 30")
    problems = policy_files.problems({"p.yaml": grant_text(expires="2026-03-01")}, config=config)
    problem = problem_with(problems, "days of access from 2026-01-12, more than the maximum of 30")
    assert "grants last at most 30 days: expire on or before 2026-02-10" in problem.fix


# ---------------------------------------------------------------- errors

GRANT_ERRORS = [
    pytest.param(
        grant_text(sites="[facebok]"),
        4,
        'unknown site "facebok"',
        'did you mean "facebook"?',
        id="unknown-site-suggestion",
    ),
    pytest.param(
        grant_text(sites="[facebook, zzz]"),
        4,
        'unknown site "zzz"',
        "use a site id from the catalog",
        id="unknown-site-no-suggestion",
    ),
    pytest.param(
        grant_text(sites="[all]"),
        4,
        'unknown site "all"',
        "a grant must name each site it allows",
        id="sites-all",
    ),
    pytest.param(
        grant_text(sites="['*']"),
        4,
        'unknown site "*"',
        "a grant must name each site it allows",
        id="sites-star",
    ),
    pytest.param(
        grant_text(sites="{facebook: yes}"),
        4,
        "sites must be a list of site ids",
        "write sites: [facebook, instagram]",
        id="sites-not-a-list",
    ),
    pytest.param(
        grant_text(purpose='"   "'),
        5,
        "the business purpose is empty",
        "state what the access is for",
        id="blank-purpose",
    ),
    pytest.param(
        grant_text(purpose='""'),
        5,
        "the business purpose is empty",
        "state what the access is for",
        id="empty-purpose",
    ),
    pytest.param(
        grant_text(expires="2027-06-01"),
        8,
        "expires 2027-06-01 would give 506 days of access from 2026-01-12",
        "expire on or before 2027-01-11",
        id="expiry-beyond-max-days",
    ),
    pytest.param(
        grant_text(expires="2027-03-15", extra=("start: 2026-03-01",)),
        8,
        "expires 2027-03-15 would give 380 days of access from 2026-03-01",
        "expire on or before 2027-02-28",
        id="expiry-beyond-max-days-from-start",
    ),
    pytest.param(
        grant_text(approved_on="2026-07-01"),
        7,
        "approved_on 2026-07-01 is in the future",
        "use the date the Director actually approved the grant",
        id="approval-in-future",
    ),
    pytest.param(
        grant_text(expires="2026-01-11"),
        8,
        "expires 2026-01-11 is before the grant begins (2026-01-12)",
        "set an expiry after approved_on and start",
        id="expires-before-approval",
    ),
    pytest.param(
        grant_text(expires="2026-02-28", extra=("start: 2026-03-01",)),
        8,
        "expires 2026-02-28 is before the grant begins (2026-03-01)",
        "set an expiry after approved_on and start",
        id="expires-before-start",
    ),
    pytest.param(
        grant_text(expires="next year"),
        8,
        "expires 'next year' is not a date",
        "write it as YYYY-MM-DD, e.g. expires: 2026-12-31",
        id="bad-expires",
    ),
    pytest.param(
        grant_text(approved_on="12/01/2026"),
        7,
        "approved_on '12/01/2026' is not a date",
        "write it as YYYY-MM-DD",
        id="bad-approved-on",
    ),
    pytest.param(
        grant_text(extra=("start: soon",)),
        9,
        "start 'soon' is not a date",
        "write it as YYYY-MM-DD",
        id="bad-start",
    ),
    pytest.param(
        grant_text(drop=("expires",), extra=("expire: 2026-12-31",)),
        8,
        'unknown key "expire" in a grant',
        'did you mean "expires"?',
        id="unknown-key-expire",
    ),
    pytest.param(
        grant_text(extra=("valid_until: 2026-12-31",)),
        9,
        'unknown key "valid_until" in a grant',
        "allowed keys: id, employee, group, department, city, sites",
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        grant_text(extra=("paths: {instagram: [/parks]}",)),
        9,
        'paths names "instagram", which is not in this grant\'s sites',
        "scope only sites the grant allows",
        id="paths-site-not-in-grant",
    ),
    pytest.param(
        grant_text(extra=("paths: {facebook: [FresnoParks]}",)),
        9,
        "path 'FresnoParks' must start with /",
        'write a path such as "/FresnoParks"',
        id="path-without-slash",
    ),
    pytest.param(
        grant_text(extra=("paths: {facebook: ['/FresnoParks?tab=photos']}",)),
        9,
        "path '/FresnoParks?tab=photos' must start with / and have no query",
        'write a path such as "/FresnoParks"',
        id="path-with-query",
    ),
    pytest.param(
        grant_text(extra=("paths: [/FresnoParks]",)),
        9,
        "paths must map a site id to a list of paths",
        "write paths: {facebook: [/FresnoParks]}",
        id="paths-not-a-mapping",
    ),
    pytest.param(
        grant_text(extra=("paths: {facebook: []}",)),
        9,
        'paths for "facebook" must be a non-empty list',
        "write facebook: [/PageName]",
        id="paths-empty",
    ),
    pytest.param(
        grant_text(extra=("expires: 2026-11-30",)),
        9,
        '"expires" appears twice in one entry (first on line 8)',
        "keep one of them",
        id="duplicate-key",
    ),
    pytest.param(
        grant_text(id='"parks 001"'),
        2,
        "grant id 'parks 001' is not valid",
        'use letters, digits, ".", "_" and "-"',
        id="bad-grant-id",
    ),
    pytest.param(
        "grants:\n  - parks-001\n",
        2,
        "a grant must be a mapping",
        'write "- id: ..."',
        id="grant-not-a-mapping",
    ),
    pytest.param(
        "# Parks\ngrant:\n  - id: parks-001\n",
        2,
        'a grant file must have a "grants:" list',
        'start the file with "grants:"',
        id="no-grants-list",
    ),
    pytest.param(
        "department: Parks\nowner: ana\ngrants: []\n",
        2,
        'unknown top-level key "owner"',
        'use "grants:"',
        id="unknown-top-level-key",
    ),
    pytest.param(
        grant_text(extra=('hours: "Mon-Fri 7am-6pm"',)),
        9,
        "hours: 'Mon-Fri 7am-6pm' is not days and a time range",
        'write hours: "Mon-Fri 07:00-18:00"',
        id="hours-unreadable",
    ),
    pytest.param(
        grant_text(extra=('hours: ["Mon-Fri 07:00-18:00", "Sat 12:00-12:00"]',)),
        9,
        "starts and ends at the same time, so it never matches",
        "(or a list",
        id="hours-never-match",
    ),
    pytest.param(
        grant_text(extra=('schedule: "Mon-Fri 07:00-18:00"',)),
        9,
        'unknown key "schedule" in a grant',
        'did you mean "hours"?',
        id="hours-alias",
    ),
    pytest.param(
        grant_text(drop=("employee",), extra=("city: true",)),
        8,
        'a city-wide allowance must name the pages it allows on "facebook", never the whole site',
        "add paths: {facebook: [/CityOfExample]}, or make it a personal-use window",
        id="city-whole-site",
    ),
    pytest.param(
        grant_text(drop=("employee",), extra=("city: yes please",)),
        8,
        "city: 'yes please' is not true",
        "write city: true for everyone",
        id="city-not-true",
    ),
    pytest.param(
        grant_text(extra=("purpose_kind: personal",)),
        9,
        "personal use is allowed only city-wide or department-wide",
        "make it a city: true or department: grant",
        id="personal-use-for-one-employee",
    ),
    pytest.param(
        grant_text(drop=("employee",), extra=("department: Parks", "purpose_kind: personal")),
        9,
        "a personal-use allowance must be limited by hours:",
        "hours: Mon-Fri 12:00-13:00",
        id="personal-use-without-hours",
    ),
    pytest.param(
        grant_text(extra=("purpose_kind: leisure",)),
        9,
        "purpose_kind 'leisure' is not known",
        "use business or personal",
        id="purpose-kind-unknown",
    ),
    pytest.param(
        grant_text(drop=("employee",), extra=("group: [a, b]",)),
        8,
        "group must be one name",
        "employee: jlee, group: communications-team",
        id="group-list",
    ),
    pytest.param(
        grant_text(approved_by="ahernandez: yes"),
        6,
        "not valid YAML",
        "quote a value that contains ': '",
        id="invalid-yaml",
    ),
]


@pytest.mark.parametrize(("text", "line", "message", "fix"), GRANT_ERRORS)
def test_grant_error(policy_files, problem_with, text, line, message, fix):
    problems = policy_files.problems({"parks.yaml": text})
    problem = problem_with(problems, message)
    path = policy_files.grants_dir / "parks.yaml"
    assert problem.severity is Severity.ERROR
    assert (problem.path, problem.line) == (path, line)
    assert fix in problem.fix
    assert str(problem).startswith(f"{path}:{line}: ")


_REQUIRED_FIX_FRAGMENT = {
    "id": 'e.g. "id: parks-2026-001"',
    "sites": 'e.g. "sites: [facebook]"',
    "purpose": "state the business purpose",
    "approved_by": "approving Director",
    "approved_on": "approval date",
    "expires": "expiry date",
}


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_required_key(policy_files, problem_with, key):
    problems = policy_files.problems({"parks.yaml": grant_text(drop=(key,))})
    problem = problem_with(problems, f'grant is missing "{key}"')
    assert (problem.path, problem.line) == (policy_files.grants_dir / "parks.yaml", 2)
    assert _REQUIRED_FIX_FRAGMENT[key] in problem.fix


def test_a_grant_for_nobody_or_for_two_kinds_of_people_is_refused(policy_files, problem_with):
    path = policy_files.grants_dir / "parks.yaml"
    nobody = problem_with(
        policy_files.problems({"parks.yaml": grant_text(drop=("employee",))}),
        'grant is missing "employee" (or "group", "department", "city")',
    )
    assert (nobody.path, nobody.line) == (path, 2)
    assert "employee: jlee, group: communications-team, department: Parks, city: true" in nobody.fix
    both = problem_with(
        policy_files.problems({"parks.yaml": grant_text(extra=("group: parks-staff",))}),
        "grant names employee and group: a grant is for one of them",
    )
    assert (both.path, both.line) == (path, 9)


def test_required_fix_texts_cover_every_required_key():
    assert set(_REQUIRED_FIX_FRAGMENT) == set(REQUIRED_KEYS)


def test_duplicate_grant_id_across_files_names_the_other_file(policy_files, problem_with):
    problems = policy_files.problems({"a.yaml": grant_text(), "b.yaml": grant_text()})
    problem = problem_with(problems, "is already used at")
    first = policy_files.grants_dir / "a.yaml"
    assert (problem.path, problem.line) == (policy_files.grants_dir / "b.yaml", 2)
    assert problem.message == f'grant id "parks-001" is already used at {first}:2'
    assert problem.fix == "give every grant its own id"


def test_duplicate_grant_id_in_one_file(policy_files, problem_with):
    second = grant_text().removeprefix("grants:\n")
    problems = policy_files.problems({"a.yaml": grant_text() + second})
    problem = problem_with(problems, "is already used at")
    assert problem.line == 9
    assert problem.message.endswith(f"{policy_files.grants_dir / 'a.yaml'}:2")


def test_errors_in_several_grants_are_all_reported(policy_files):
    text = grant_text(sites="[facebok]") + grant_text(id="parks-002", expires="nope").removeprefix(
        "grants:\n"
    )
    problems = policy_files.problems({"a.yaml": text})
    assert sorted(p.line for p in problems) == [4, 15]


# ---------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    ("values", "line", "message"),
    [
        pytest.param(
            {"approved_on": "2025-07-01", "expires": "2026-06-14"},
            8,
            'grant "parks-001" expired on 2026-06-14; renew it or delete it',
            id="expired-yesterday",
        ),
        pytest.param(
            {"approved_by": "jlee"},
            6,
            'grant "parks-001" is approved by its own employee and will never be used',
            id="self-approval",
        ),
        pytest.param(
            {"approved_by": "JLee"},
            6,
            'grant "parks-001" is approved by its own employee',
            id="self-approval-other-case",
        ),
    ],
)
def test_grant_warning_does_not_block_loading(policy_files, values, line, message):
    policy = policy_files.load({"parks.yaml": grant_text(**values)})
    assert len(policy.grants) == 1
    path = policy_files.grants_dir / "parks.yaml"
    (warning,) = policy.warnings
    assert warning.startswith(f"{path}:{line}: warning: ")
    assert message in warning


def test_grant_expiring_today_is_not_warned_about(policy_files):
    policy = policy_files.load({"parks.yaml": grant_text(approved_on="2025-07-01", expires="2026-06-15")})
    assert policy.warnings == ()


# ---------------------------------------------------------------- loading never crashes


GARBAGE = [
    pytest.param(b"- a\n- b\n", id="yaml-list"),
    pytest.param(b"", id="empty"),
    pytest.param(b"# only a comment\n", id="only-comment"),
    pytest.param(bytes(range(256)), id="binary"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", id="png-header"),
    pytest.param(b"grants:\x00\n", id="nul-byte"),
    pytest.param(b"grants: []\n# pasted from Word:\x0b\n", id="vertical-tab"),
    pytest.param(b"just words\n", id="scalar"),
    pytest.param(b"42\n", id="number"),
    pytest.param(b"grants: 5\n", id="grants-scalar"),
    pytest.param(b"grants:\n  - [a, b]\n", id="grant-is-list"),
    pytest.param(b"grants: [\n", id="unclosed"),
    pytest.param(b"grants:\n\t- id: x\n", id="tab"),
    pytest.param(b"grants: !!python/object/apply:os.system [ls]\n", id="python-tag"),
    pytest.param(b"grants: &a [*a]\n", id="recursive-alias"),
    pytest.param(b"grants:\n  - {1: 2, [a]: b, null: c}\n", id="non-string-keys"),
    pytest.param(
        b"grants:\n  - id: {a: 1}\n    employee: [x]\n    sites: {a: 1}\n    purpose: [p]\n"
        b"    approved_by: {b: 2}\n    approved_on: [1]\n    expires: {c: 3}\n"
        b"    start: 7\n    paths: {facebook: {a: 1}}\n",
        id="wrong-types-everywhere",
    ),
    pytest.param("\ufeffgrants: []\n".encode(), id="bom"),
    pytest.param("grants: []\n".encode("utf-16"), id="utf-16"),
]


@pytest.mark.parametrize("content", GARBAGE)
def test_a_bad_grant_file_raises_only_config_error(policy_files, content):
    path = policy_files.grants_dir / "bad.yaml"
    config = policy_files.write()
    path.write_bytes(content)
    try:
        policy = load_policy(config, today=date(2026, 6, 15))
    except ConfigError as caught:
        assert caught.problems
        assert all(p.path == path for p in caught.problems)
    else:
        assert isinstance(policy, Policy)
        assert policy.grants == ()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"- a\n- b\n", id="yaml-list"),
        pytest.param(bytes(range(256)), id="binary"),
        pytest.param(b"grants: 5\n", id="grants-scalar"),
    ],
)
def test_a_bad_grant_file_is_an_error(policy_files, content):
    config = policy_files.write()
    (policy_files.grants_dir / "bad.yaml").write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_policy(config, today=date(2026, 6, 15))
    assert [p.line for p in caught.value.problems] in ([1], [None])


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"expires": "2026-02-30"}, id="feb-30"),
        pytest.param({"approved_on": "2026-13-01"}, id="month-13"),
        pytest.param({"expires": "2026-04-31"}, id="april-31"),
    ],
)
def test_impossible_date_is_a_config_error(policy_files, values):
    with pytest.raises(ConfigError) as caught:
        load_policy(policy_files.write({"p.yaml": grant_text(**values)}), today=date(2026, 6, 15))
    line = 8 if "expires" in values else 7
    assert [p.line for p in caught.value.problems] == [line]


def test_far_future_dates_are_a_config_error(policy_files):
    # The day after 9999-12-31 (where the grant ends) is no date: an error naming the line,
    # not an OverflowError.
    text = grant_text(expires="9999-12-31", extra=("start: 9999-12-01",))
    with pytest.raises(ConfigError) as caught:
        load_policy(policy_files.write({"p.yaml": text}), today=date(2026, 6, 15))
    assert "p.yaml:8: expires 9999-12-31 is out of range" in str(caught.value)


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("/FresnoParks", "/FresnoParks", id="plain"),
        pytest.param("/FresnoParks/", "/FresnoParks/", id="trailing-slash-kept"),
        pytest.param("/a/b/../c", "/a/c", id="dot-dot"),
        pytest.param("/a/./b", "/a/b", id="dot"),
        pytest.param("/a//b", "/a/b", id="double-slash"),
        pytest.param("//FresnoParks", "/FresnoParks", id="leading-double-slash"),
        pytest.param("/a/%2e%2e/c", "/c", id="encoded-dot-dot"),
        pytest.param("/a/%2E%2E/c", "/c", id="encoded-dot-dot-upper"),
        pytest.param("/a%2f..%2fc", None, id="encoded-slashes-ambiguous"),
        pytest.param("/a%5c..%5cc", None, id="encoded-backslashes-ambiguous"),
        pytest.param("/a\\..\\c", None, id="backslashes-ambiguous"),
        pytest.param("/a/%252e%252e/c", None, id="double-encoded-ambiguous"),
        pytest.param("/a/%00/c", None, id="nul-ambiguous"),
        pytest.param("/a/..;/c", "/c", id="dot-dot-with-parameter"),
        pytest.param("/a/..%3b/c", "/c", id="dot-dot-with-encoded-parameter"),
        pytest.param("/a;jsessionid=1/b", "/a/b", id="parameter-dropped"),
        pytest.param("/50%25off", "/50%off", id="escaped-percent-once"),
        pytest.param("/../../etc", "/etc", id="cannot-climb-above-root"),
        pytest.param("/..", "/", id="root-parent"),
        pytest.param("/a?x=/b/../..", "/a", id="query-dropped"),
        pytest.param("/a#/../b", "/a", id="fragment-dropped"),
        pytest.param("", "/", id="empty"),
        pytest.param("/Fresno%20Parks", "/Fresno Parks", id="space-decoded"),
    ],
)
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "scope", "inside"),
    [
        pytest.param("/FresnoParks", ["/FresnoParks"], True, id="exact"),
        pytest.param("/FresnoParks/", ["/FresnoParks"], True, id="exact-trailing-slash"),
        pytest.param("/FresnoParks/photos", ["/FresnoParks"], True, id="below"),
        pytest.param("/FresnoParksEvil", ["/FresnoParks"], False, id="prefix-not-segment"),
        pytest.param("/FresnoParks/../evil", ["/FresnoParks"], False, id="dot-dot-escape"),
        pytest.param("/FresnoParks/%2e%2e/evil", ["/FresnoParks"], False, id="encoded-escape"),
        pytest.param("/FresnoParks%2f..%2fevil", ["/FresnoParks"], False, id="encoded-slash-escape"),
        pytest.param("/evil%2f..%2fFresnoParks", ["/FresnoParks"], False, id="encoded-slash-ambiguous"),
        pytest.param("/FresnoParks/..;/evil", ["/FresnoParks"], False, id="parameter-escape"),
        pytest.param("/FresnoParks/%252e%252e/evil", ["/FresnoParks"], False, id="double-encoded-escape"),
        pytest.param("/FresnoParks;x/photos", ["/FresnoParks"], True, id="parameter-inside"),
        pytest.param("/FresnoParks/photos/../../evil", ["/FresnoParks"], False, id="deep-escape"),
        pytest.param("/FresnoParks/photos/../videos", ["/FresnoParks"], True, id="dot-dot-inside"),
        pytest.param("//FresnoParks", ["/FresnoParks"], True, id="double-slash"),
        pytest.param("/./FresnoParks", ["/FresnoParks"], True, id="dot-segment"),
        pytest.param("/FresnoParks?next=/evil", ["/FresnoParks"], True, id="query-ignored"),
        pytest.param("/evil?page=/FresnoParks", ["/FresnoParks"], False, id="query-no-help"),
        pytest.param("/", ["/FresnoParks"], False, id="root-outside"),
        pytest.param("/evil", ["/"], True, id="root-scope-allows-all"),
        pytest.param("/a/b/c", ["/"], True, id="root-scope-deep"),
        pytest.param("/FresnoParks", ["/FresnoParks/"], True, id="scope-trailing-slash"),
        pytest.param("/B/x", ["/A", "/B"], True, id="second-scope"),
        pytest.param("/C", ["/A", "/B"], False, id="no-scope"),
        pytest.param("/FresnoParks", [], False, id="empty-scope"),
    ],
)
def test_path_in_scope(raw, scope, inside):
    assert path_in_scope(normalize_path(raw), scope) is inside
