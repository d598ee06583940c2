"""load_policy: the demo configuration loads; every broken setting names file, line and fix."""

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.model import AccountState, Person
from citygate.directory.problems import ConfigError, Severity
from citygate.directory.static import StaticDirectory
from citygate.proxy.decision import Identity, Reason, decide, facts_needed, people_involved
from citygate.proxy.grants import GrantKind
from citygate.proxy.policy import Policy, Role, load_policy

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "config" / "citygate.yaml"
LA = ZoneInfo("America/Los_Angeles")
TODAY = date(2026, 6, 15)


@pytest.fixture(scope="module")
def demo_policy() -> Policy:
    return load_policy(DEMO_CONFIG, today=TODAY)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param(lambda p: p.warnings, (), id="no-warnings"),
        pytest.param(lambda p: p.city, "City of Example", id="city"),
        pytest.param(lambda p: p.timezone.key, "America/Los_Angeles", id="timezone"),
        pytest.param(lambda p: p.text.name, "Administrative Order 8-19: Social Media", id="policy-name"),
        pytest.param(lambda p: p.approval.director_groups, {"directors"}, id="director-groups"),
        pytest.param(lambda p: p.approval.executive_groups, {"city-managers"}, id="executive-groups"),
        pytest.param(lambda p: p.directory.backend, "static", id="directory-backend"),
        pytest.param(lambda p: p.directory.options["ldif"], "../directory/demo.ldif", id="directory-ldif"),
        pytest.param(
            lambda p: {g.id for g in p.grants},
            {
                "comms-2026-001",
                "comms-2026-002",
                "parks-2026-001",
                "parks-2026-002",
                "police-2026-001",
                "police-2026-002",
                "city-2026-001",
            },
            id="grant-ids",
        ),
    ],
)
def test_demo_config_loads_without_errors_or_warnings(demo_policy, setting, expected):
    assert setting(demo_policy) == expected


def test_demo_config_sources_are_config_catalog_then_grant_files(demo_policy):
    assert demo_policy.sources[:2] == (DEMO_CONFIG, REPO / "config" / "sites.yaml")
    assert set(demo_policy.sources[2:]) == set((REPO / "config" / "grants").glob("*.yaml"))


@pytest.mark.parametrize(
    ("employee", "site_id", "grant_ids"),
    [
        pytest.param("jlee", "facebook", ("parks-2026-001",), id="parks-facebook"),
        pytest.param("jlee", "instagram", ("parks-2026-001",), id="parks-instagram-same-grant"),
        pytest.param("jlee", "youtube", (), id="parks-youtube-not-granted"),
        pytest.param("dbrown", "nextdoor", ("police-2026-001",), id="police-nextdoor"),
        pytest.param("kwilliams", "x", ("comms-2026-001",), id="comms-x"),
    ],
)
def test_demo_grants_for(demo_policy, employee, site_id, grant_ids):
    assert tuple(g.id for g in demo_policy.grants_for(employee, site_id)) == grant_ids


def test_demo_parks_grant_is_scoped_to_the_parks_page(demo_policy):
    (parks,) = demo_policy.grants_for("jlee", "facebook")
    assert parks.scope_for("facebook") == ("/CityOfExampleParks",)
    assert demo_policy.grants_for("jlee", "instagram") == (parks,)


def test_demo_police_grant_runs_from_its_start_to_the_end_of_its_expiry_day(demo_policy):
    (police,) = demo_policy.grants_for("dbrown", "nextdoor")
    assert police.valid_from == datetime(2026, 3, 16, tzinfo=LA)
    assert police.valid_until == datetime(2027, 1, 1, tzinfo=LA)


# Who uses each demo grant that is not one person's, and on which page (a city-wide one: someone
# not signed in, on one of its pages).
DEMO_USERS = {"parks-2026-002": "mnguyen", "comms-2026-002": "kwilliams", "city-2026-001": None}
DEMO_PATHS = {"city-2026-001": "/CityOfExample/videos"}


def test_demo_grants_are_in_force_against_the_demo_directory():
    """Each demo grant, judged against demo.ldif on a day inside it, allows someone it is for."""
    policy = load_policy(DEMO_CONFIG, today=TODAY)
    directory = StaticDirectory.from_ldif(REPO / "directory" / "demo.ldif")
    at = datetime(2026, 6, 15, 12, tzinfo=LA)  # a Monday noon: inside police-2026-002's hours
    assert set(DEMO_USERS) == {grant.id for grant in policy.grants if grant.kind is not GrantKind.PERSONAL}
    for grant in policy.grants:
        user = DEMO_USERS.get(grant.id, grant.employee)
        for site_id in grant.sites:
            host = policy.catalog.sites[site_id].domains[0]
            people = {uid: directory.lookup(uid) for uid in people_involved(policy, user, [host])}
            groups = {}
            if user is not None:
                facts = facts_needed(policy, people[user], [site_id])
                people |= {uid: directory.lookup(uid) for uid in facts.approvers}
                groups = {
                    g: frozenset(p.department for p in directory.group_members(g)) for g in facts.groups
                }
            identity = Identity(user, "basic") if user is not None else None
            path = DEMO_PATHS.get(grant.id)
            decision = decide(identity, host, path, at, policy, people, groups)
            assert (decision.reason, decision.grant) == (Reason.GRANTED, grant), (grant.id, site_id, decision)


def test_minimal_config_defaults(policy_files):
    config = policy_files.mini_config.replace("city: Testville\n", "")
    policy = policy_files.load(config=config)
    assert policy.city == "the City"
    assert policy.text.name == "Social media policy"
    assert "Director" in policy.text.summary
    assert policy.grants == ()
    assert policy.warnings == ()


def test_group_names_are_case_insensitive(policy_files):
    config = policy_files.mini_config.replace("[directors]", "[Directors, ' Dept-Heads ']")
    policy = policy_files.load(config=config)
    assert policy.approval.director_groups == {"directors", "dept-heads"}
    assert policy.approver_groups == {"directors", "dept-heads", "city-managers"}


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        pytest.param({"directors"}, Role.DIRECTOR, id="director"),
        pytest.param({"city-managers"}, Role.EXECUTIVE, id="executive"),
        pytest.param({"directors", "city-managers"}, Role.EXECUTIVE, id="both-executive-wins"),
        pytest.param({"staff"}, None, id="neither"),
        pytest.param(set(), None, id="no-groups"),
    ],
)
def test_role_of(policy_files, groups, role):
    policy = policy_files.load()
    person = Person("p", "P", "Parks", groups=frozenset(groups))
    assert policy.approval.role_of(person) is role


def test_approvers_for_lists_own_directors_then_executives(policy_files):
    policy = policy_files.load()
    people = [
        Person("zed", "Zed", "Parks", groups=frozenset({"directors"})),
        Person("amy", "Amy", "Parks", groups=frozenset({"directors"})),
        Person("off", "Off", "Parks", groups=frozenset({"directors"}), state=AccountState.DISABLED),
        Person("other", "Other", "Police", groups=frozenset({"directors"})),
        Person("boss", "Boss", "City Manager", groups=frozenset({"city-managers"})),
        Person("clerk", "Clerk", "Parks"),
    ]
    assert [p.uid for p in policy.approval.approvers_for("Parks", people)] == ["amy", "zed", "boss"]
    assert [p.uid for p in policy.approval.approvers_for(None, people)] == ["boss"]


def without(text: str, *lines: str) -> str:
    for line in lines:
        assert line in text
        text = text.replace(line, "")
    return text


MINI = """\
city: Testville
timezone: America/Los_Angeles
catalog: sites.yaml
grants: grants
max_grant_days: 365
approval:
  director_groups: [directors]
  executive_groups: [city-managers]
directory:
  backend: static
  ldif: people.ldif
"""

CONFIG_ERRORS = [
    pytest.param(
        MINI + "timezon: UTC\n",
        12,
        'unknown setting "timezon"',
        "known settings: city, timezone, policy",
        id="unknown-setting",
    ),
    pytest.param(
        MINI.replace("America/Los_Angeles", "Mars/Olympus_Mons"),
        2,
        'unknown timezone "Mars/Olympus_Mons"',
        'use an IANA name such as "America/Los_Angeles"',
        id="bad-timezone",
    ),
    pytest.param(
        MINI.replace("America/Los_Angeles", "../../etc/passwd"),
        2,
        'unknown timezone "../../etc/passwd"',
        "use an IANA name",
        id="timezone-path",
    ),
    pytest.param(
        MINI.replace("America/Los_Angeles", "PST"),
        2,
        'unknown timezone "PST"',
        "use an IANA name",
        id="timezone-abbreviation",
    ),
    pytest.param(
        without(
            MINI, "approval:\n", "  director_groups: [directors]\n", "  executive_groups: [city-managers]\n"
        ),
        1,
        'missing "approval:" section',
        "approval: {director_groups: [directors], executive_groups: [city-managers]}",
        id="missing-approval",
    ),
    pytest.param(
        MINI.replace("director_groups: [directors]", "director_groups: {a: 1}"),
        7,
        "approval.director_groups must be a list of group names",
        "e.g. director_groups: [directors]",
        id="director-groups-not-a-list",
    ),
    pytest.param(
        MINI.replace("[directors]", "[]").replace("[city-managers]", "[]"),
        6,  # the "approval:" line
        "nobody could approve a grant",
        "list at least one group in approval.director_groups",
        id="no-approver-groups",
    ),
    pytest.param(
        MINI.replace("max_grant_days: 365", "max_grant_days: 0"),
        5,
        "max_grant_days 0 is not a positive number of days",
        "e.g. max_grant_days: 365",
        id="max-days-zero",
    ),
    pytest.param(
        MINI.replace("max_grant_days: 365", "max_grant_days: a year"),
        5,
        "max_grant_days 'a year' is not a positive number of days",
        "e.g. max_grant_days: 365",
        id="max-days-text",
    ),
    pytest.param(
        MINI.replace("max_grant_days: 365", "max_grant_days: yes"),
        5,
        "max_grant_days True is not a positive number of days",
        "e.g. max_grant_days: 365",
        id="max-days-bool",
    ),
    pytest.param(
        MINI.replace("grants: grants", "grants: nowhere"),
        4,
        "nowhere does not exist",
        "create it, or point grants: at the folder of grant files",
        id="missing-grants-folder",
    ),
    pytest.param(
        without(MINI, "directory:\n", "  backend: static\n", "  ldif: people.ldif\n"),
        1,
        'missing "directory:" section with a backend',
        "e.g. directory: {backend: static",
        id="missing-directory",
    ),
    pytest.param(
        without(MINI, "  backend: static\n"),
        9,
        'missing "directory:" section with a backend',
        "e.g. directory: {backend: static",
        id="directory-without-backend",
    ),
    pytest.param(
        MINI + "policy: {summary: Blocked}\n",
        12,
        'policy must have a "name"',
        'e.g. policy: {name: "Administrative Order 8-19"',
        id="policy-without-name",
    ),
    pytest.param(
        "- city: Testville\n",
        1,
        "the config file must be a mapping of settings",
        "see config/citygate.yaml",
        id="config-is-a-list",
    ),
    pytest.param(
        MINI.replace("city: Testville", "city: Testville: CA"),
        1,
        "not valid YAML",
        "quote a value that contains ': '",
        id="invalid-yaml",
    ),
]


@pytest.mark.parametrize(("config", "line", "message", "fix"), CONFIG_ERRORS)
def test_config_error(policy_files, problem_with, config, line, message, fix):
    assert policy_files.mini_config == MINI
    problems = policy_files.problems(config=config)
    problem = problem_with(problems, message)
    assert problem.severity is Severity.ERROR
    assert (problem.path, problem.line) == (policy_files.config, line)
    assert fix in problem.fix
    assert str(problem).startswith(f"{policy_files.config}:{line}: ")


def test_missing_grants_folder_is_reported_when_the_folder_was_never_made(policy_files, problem_with):
    problems = policy_files.problems(make_grants_dir=False)
    problem = problem_with(problems, "does not exist")
    assert (problem.path, problem.line) == (policy_files.config, 4)
    assert str(policy_files.grants_dir) in problem.message


def test_missing_catalog_file(policy_files, problem_with):
    problems = policy_files.problems(config=MINI.replace("sites.yaml", "nowhere.yaml"))
    problem = problem_with(problems, "file not found")
    assert (problem.path, problem.line) == (policy_files.root / "nowhere.yaml", None)
    assert "check the path, relative to the config file" in problem.fix


def test_every_error_of_every_file_is_reported_at_once(policy_files):
    config = MINI.replace("America/Los_Angeles", "Nowhere/Town") + "colour: blue\n"
    sites = policy_files.mini_sites + "  - id: Bad\n    name: Bad\n    domains: [bad.example]\n"
    grant = (
        "grants:\n  - id: g1\n    employee: jlee\n    sites: [facebok]\n    purpose: p\n"
        "    approved_by: ahernandez\n    approved_on: 2026-01-12\n    expires: 2026-12-31\n"
    )
    problems = policy_files.problems({"g.yaml": grant}, config=config, sites=sites)
    where = sorted((p.path.name, p.line) for p in problems)
    assert where == [("citygate.yaml", 2), ("citygate.yaml", 12), ("g.yaml", 4), ("sites.yaml", 13)]


def test_config_error_message_lists_every_problem(policy_files):
    config = MINI.replace("max_grant_days: 365", "max_grant_days: -1") + "colour: blue\n"
    with pytest.raises(ConfigError) as caught:
        load_policy(policy_files.write(config=config), today=TODAY)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{policy_files.config}:") for line in lines)


def test_warnings_are_kept_when_the_policy_loads(policy_files):
    grant = (
        "grants:\n  - id: g1\n    employee: jlee\n    sites: [facebook]\n    purpose: p\n"
        "    approved_by: jlee\n    approved_on: 2026-01-12\n    expires: 2026-12-31\n"
    )
    policy = policy_files.load({"g.yaml": grant})
    assert isinstance(policy, Policy)
    assert len(policy.warnings) == 1
    assert "warning: " in policy.warnings[0]


def test_today_defaults_to_the_current_day_in_the_city_timezone(policy_files):
    """Without `today`, dates are judged against now: an approval dated far ahead is an error."""
    grant = (
        "grants:\n  - id: g1\n    employee: jlee\n    sites: [facebook]\n    purpose: p\n"
        "    approved_by: ahernandez\n    approved_on: 9000-01-01\n    expires: 9000-06-01\n"
    )
    with pytest.raises(ConfigError, match="is in the future"):
        load_policy(policy_files.write({"g.yaml": grant}))


GARBAGE = [
    pytest.param(b"- a\n- b\n", id="yaml-list"),
    pytest.param(bytes(range(256)), id="binary"),
    pytest.param(b"just words\n", id="scalar"),
    pytest.param(b"sites: 5\ncatalog: [x]\ngrants: {a: 1}\n", id="wrong-types"),
    pytest.param(b"{{{\n", id="unclosed"),
    pytest.param(b"a: &a [*a]\n", id="recursive-alias"),
    pytest.param(b"!!python/object/apply:os.system [ls]\n", id="python-tag"),
]


@pytest.mark.parametrize("which", ["config", "sites"])
@pytest.mark.parametrize("content", GARBAGE)
def test_a_garbage_file_raises_only_config_error(policy_files, which, content):
    config = policy_files.write()
    target = policy_files.config if which == "config" else policy_files.sites
    target.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_policy(config, today=TODAY)
    assert any(p.path == target for p in caught.value.problems)


def test_empty_config_file_names_the_file(policy_files):
    config = policy_files.write(config="")
    with pytest.raises(ConfigError) as caught:
        load_policy(config, today=TODAY)
    assert any(p.path == config for p in caught.value.problems)


def test_empty_catalog_does_not_load(policy_files):
    with pytest.raises(ConfigError):
        policy_files.load(sites="")


def test_a_group_s_department_comes_from_its_members_or_a_named_attribute(policy_files, problem_with):
    assert policy_files.load().approval.group_department_attribute is None
    config = policy_files.mini_config.replace(
        "  executive_groups: [city-managers]\n",
        "  executive_groups: [city-managers]\n  group_department_attribute: businessCategory\n",
    )
    assert policy_files.load(config=config).approval.group_department_attribute == "businessCategory"
    problems = policy_files.problems(config=config.replace("businessCategory", "'two words'"))
    problem = problem_with(
        problems, "approval.group_department_attribute 'two words' is not an attribute name"
    )
    assert problem.line == 9 and "e.g. group_department_attribute: department" in problem.fix


def test_an_unclosed_bracket_is_reported_where_it_was_opened(policy_files):
    grants = "grants:\n  - id: t-1\n    employee: jlee\n    sites: [facebook\n    purpose: Post\n"
    problems = policy_files.problems({"bad.yaml": grants})

    assert any(
        p.line == 4
        and "the [ opened on this line is not closed (line 5: expected ',' or ']'" in p.message
        and "close it with ] on this line" in p.fix
        for p in problems
    ), problems


def test_a_tab_in_the_indentation_is_named(policy_files):
    problems = policy_files.problems({"bad.yaml": "grants:\n\t- id: t-1\n"})

    assert any(p.line == 2 and "indent with spaces: YAML does not allow tabs" in p.fix for p in problems), (
        problems
    )
