"""What every Directory backend must do, checked against the demo city directory.

The cast is directory/demo.ldif; every password there is "<uid>-pass".
"""

import pytest

from citygate.directory.model import AccountState, BindOutcome, Person

DIRECTORS = {"ahernandez", "rpatel", "lgarcia", "pkim"}
EVERYONE = {
    "tsmith",
    "ahernandez",
    "jlee",
    "mnguyen",
    "rpatel",
    "kwilliams",
    "lgarcia",
    "dbrown",
    "pkim",
    "bjones",
}
# Strings that an unescaped LDAP filter would turn into wildcards or extra clauses, and names
# no account can have (NUL and other control characters, surrounding spaces, 10 kB of text).
HOSTILE_UIDS = [
    "*",
    "jlee*",
    "*)(uid=*",
    "jlee)(|(uid=*",
    "admin)(|(uid=*",
    "j*e",
    "jlee\\",
    "jlee\x00",
    "\x00",
    "jlee\x00*",
    "jlee\n",
    " jlee",
    "jlee ",
    "jl\u200bee",
    "x" * 10_000,
    "jlee" * 2_500,
]


def test_blocking_is_declared(directory):
    assert isinstance(directory.blocking, bool)


@pytest.mark.parametrize("uid", sorted(EVERYONE))
def test_lookup_finds_everyone_by_their_uid(directory, uid):
    person = directory.lookup(uid)
    assert isinstance(person, Person)
    assert person.uid == uid
    assert person.mail == f"{uid}@city.example"


@pytest.mark.parametrize("spelled", ["JLEE", "JLee", "jLeE"])
def test_lookup_is_case_insensitive_and_returns_the_directory_spelling(directory, spelled):
    person = directory.lookup(spelled)
    assert person is not None
    assert person.uid == "jlee"


@pytest.mark.parametrize("uid", ["nobody", "", "jle", "jlee2", *HOSTILE_UIDS])
def test_lookup_unknown_is_none(directory, uid):
    assert directory.lookup(uid) is None


def test_person_fields_for_an_employee(directory):
    assert directory.lookup("jlee") == Person(
        uid="jlee",
        name="Jordan Lee",
        department="Parks",
        title="Social Media Coordinator",
        groups=frozenset({"parks-social-team"}),
        state=AccountState.ACTIVE,
        mail="jlee@city.example",
    )


def test_person_fields_for_a_director(directory):
    person = directory.lookup("ahernandez")
    assert person is not None
    assert person.name == "Ana Hernandez"
    assert person.department == "Parks"
    assert person.title == "Director of Parks, After School, Recreation and Community Services"
    assert "directors" in person.groups
    assert not person.disabled


def test_city_manager_is_in_city_managers_only(directory):
    person = directory.lookup("tsmith")
    assert person is not None
    assert person.department == "City Manager"
    assert person.groups == frozenset({"city-managers"})


@pytest.mark.parametrize(
    ("uid", "department"),
    [
        ("mnguyen", "Parks"),
        ("rpatel", "Communications"),
        ("kwilliams", "Communications"),
        ("lgarcia", "Police"),
        ("dbrown", "Police"),
        ("pkim", "Public Works"),
        ("bjones", "Public Works"),
    ],
)
def test_departments(directory, uid, department):
    person = directory.lookup(uid)
    assert person is not None
    assert person.department == department


def test_separated_employee_is_disabled(directory):
    person = directory.lookup("bjones")
    assert person is not None
    assert person.disabled
    assert sum(directory.lookup(uid).disabled for uid in EVERYONE) == 1


@pytest.mark.parametrize("uid", sorted(EVERYONE - {"bjones"}))
def test_authenticate_with_the_right_password(directory, uid):
    assert directory.authenticate(uid, f"{uid}-pass") is BindOutcome.OK


def test_authenticate_uid_is_case_insensitive(directory):
    assert directory.authenticate("JLee", "jlee-pass") is BindOutcome.OK


@pytest.mark.parametrize(
    ("uid", "password", "why"),
    [
        ("jlee", "wrong", "wrong password"),
        ("jlee", "JLEE-PASS", "passwords are case-sensitive"),
        ("jlee", "jlee-pass ", "trailing space"),
        ("jlee", "mnguyen-pass", "someone else's password"),
        ("jlee", "", "empty password"),
        ("nobody", "nobody-pass", "unknown user"),
        ("", "", "empty everything"),
        *[(uid, "jlee-pass", f"hostile uid {uid!r}") for uid in HOSTILE_UIDS],
    ],
)
def test_authenticate_refuses(directory, uid, password, why):
    assert directory.authenticate(uid, password) is BindOutcome.WRONG_PASSWORD, why


def test_a_disabled_account_with_the_right_password_is_told_disabled(directory):
    assert directory.authenticate("bjones", "bjones-pass") is BindOutcome.DISABLED


@pytest.mark.parametrize("group", ["directors", "Directors", "DIRECTORS"])
def test_group_members_of_directors(directory, group):
    members = directory.group_members(group)
    assert {p.uid for p in members} == DIRECTORS
    assert len(members) == len(DIRECTORS)
    assert [p.uid for p in members] == sorted(p.uid for p in members)
    assert all("directors" in p.groups for p in members)


def test_group_members_of_city_managers(directory):
    assert [p.uid for p in directory.group_members("city-managers")] == ["tsmith"]


@pytest.mark.parametrize(
    "group", ["nonexistent", "", "*", "director", "people", "directors)(cn=*", "directors\x00", "d" * 10_000]
)
def test_group_members_of_unknown_group_is_empty(directory, group):
    assert directory.group_members(group) == []


def test_group_membership_agrees_with_group_members(directory):
    for uid in EVERYONE:
        person = directory.lookup(uid)
        assert ("directors" in person.groups) == (uid in DIRECTORS)


def test_group_members_are_the_people_lookup_returns(directory):
    for group in ("directors", "city-managers"):
        for person in directory.group_members(group):
            assert directory.lookup(person.uid) == person


def test_unknown_non_ascii_names_are_none(directory):
    assert directory.lookup("jlée") is None
    assert directory.authenticate("jlée", "jlee-pass") is BindOutcome.WRONG_PASSWORD


@pytest.mark.parametrize("group", ["parks-social-team", "Parks-Social-Team"])
def test_an_attribute_of_a_group_s_entry(directory, group):
    # The group's department may be read from its entry (approval.group_department_attribute).
    assert directory.group_attribute(group, "cn") == "parks-social-team"
    assert directory.group_attribute(group, "businessCategory") is None  # not set on it


@pytest.mark.parametrize("group", ["nonexistent", "", "parks-social-team)(cn=*", "d" * 10_000])
def test_no_attribute_of_a_group_that_does_not_exist(directory, group):
    assert directory.group_attribute(group, "cn") is None
