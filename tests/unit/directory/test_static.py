"""Load-time behaviour of StaticDirectory that no other backend shares."""

import logging

import pytest

from citygate.directory.model import AccountState, BindOutcome
from citygate.directory.passwords import hash_password
from citygate.directory.static import DirectoryConfigError, StaticDirectory, normalize_dn

BASE = "ou=people,dc=city,dc=example"


def person(uid, *extra, dn_uid=None):
    lines = [f"dn: uid={dn_uid or uid},{BASE}", "objectClass: inetOrgPerson", f"cn: {uid}"]
    if uid:
        lines.append(f"uid: {uid}")
    return "\n".join([*lines, *extra]) + "\n"


def load(tmp_path, *records, name="city.ldif"):
    path = tmp_path / name
    path.write_text("\n".join(records), encoding="utf-8")
    return path, StaticDirectory.from_ldif(path)


def test_missing_uid_names_file_and_line(tmp_path):
    path = tmp_path / "people.ldif"
    path.write_text("# staff\n\n" + person("jlee") + "\n" + person("", dn_uid="ghost"))
    with pytest.raises(DirectoryConfigError) as caught:
        StaticDirectory.from_ldif(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:8: ")
    assert "no uid" in message
    assert "add a `uid:` line" in message


def test_duplicate_uid_names_both_lines(tmp_path):
    path = tmp_path / "people.ldif"
    path.write_text(person("jlee") + "\n" + person("JLee", dn_uid="jlee2"))
    with pytest.raises(DirectoryConfigError) as caught:
        StaticDirectory.from_ldif(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:6: ")
    assert "line 1" in message
    assert "unique uid" in message


def test_duplicate_dn_names_both_lines(tmp_path):
    path = tmp_path / "people.ldif"
    path.write_text(person("jlee") + "\n" + person("other", dn_uid="JLee"))
    with pytest.raises(DirectoryConfigError, match=r"people\.ldif:6: .*line 1"):
        StaticDirectory.from_ldif(path)


def test_two_uid_values_is_an_error(tmp_path):
    path = tmp_path / "people.ldif"
    path.write_text(person("jlee", "uid: jordan"))
    with pytest.raises(DirectoryConfigError, match=r"people\.ldif:1: .*2 uid values"):
        StaticDirectory.from_ldif(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "city.ldif"
    with pytest.raises(DirectoryConfigError) as caught:
        StaticDirectory.from_ldif(path)
    assert str(path) in str(caught.value)
    assert "not found" in str(caught.value)


def test_ldif_syntax_errors_become_config_errors(tmp_path):
    path = tmp_path / "city.ldif"
    path.write_text(person("jlee") + "oops\n")
    with pytest.raises(DirectoryConfigError, match=r"city\.ldif:5: expected \"attribute: value\""):
        StaticDirectory.from_ldif(path)


def test_person_without_password_never_authenticates(tmp_path):
    _, directory = load(tmp_path, person("jlee"))
    assert directory.lookup("jlee") is not None
    assert directory.authenticate("jlee", "anything") is BindOutcome.WRONG_PASSWORD


def test_cleartext_password_never_authenticates_and_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        path, directory = load(tmp_path, person("jlee", "userPassword: jlee-pass"))
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.WRONG_PASSWORD
    assert f"{path}:1: userPassword of 'jlee'" in caplog.text


def test_any_of_several_stored_hashes_authenticates(tmp_path):
    _, directory = load(
        tmp_path,
        person(
            "jlee",
            f"userPassword: {hash_password('old', '{SSHA}')}",
            f"userPassword: {hash_password('new', '{SSHA256}')}",
        ),
    )
    assert directory.authenticate("jlee", "old") is BindOutcome.OK
    assert directory.authenticate("jlee", "new") is BindOutcome.OK
    assert directory.authenticate("jlee", "other") is BindOutcome.WRONG_PASSWORD


def test_name_falls_back_to_cn_and_optional_fields_to_none(tmp_path):
    _, directory = load(tmp_path, person("jlee"))
    found = directory.lookup("jlee")
    assert (found.name, found.department, found.title, found.mail) == ("jlee", None, None, None)
    assert not found.disabled


def test_non_people_are_ignored_and_member_dns_are_normalized(tmp_path):
    _, directory = load(
        tmp_path,
        "dn: ou=people,dc=city,dc=example\nobjectClass: organizationalUnit\nou: people\n",
        person("jlee"),
        person("kim"),
        "dn: cn=Directors,ou=groups\nobjectClass: groupOfNames\ncn: Directors\n"
        "member: UID=JLee , ou=People, dc=City,dc=example\n"
        "member: cn=placeholder\n",
        f"dn: cn=Press,ou=groups\nobjectClass: groupOfUniqueNames\ncn: Press\nuniqueMember: uid=kim,{BASE}\n",
    )
    assert directory.lookup("people") is None
    assert directory.lookup("jlee").groups == frozenset({"directors"})
    assert directory.lookup("kim").groups == frozenset({"press"})
    assert [p.uid for p in directory.group_members("DIRECTORS")] == ["jlee"]
    assert [p.uid for p in directory.group_members("press")] == ["kim"]


def test_group_members_are_sorted_by_uid(tmp_path):
    names = ["mnguyen", "Adams", "jlee"]
    members = "".join(f"member: uid={n},{BASE}\n" for n in names)
    _, directory = load(
        tmp_path,
        *(person(n) for n in names),
        f"dn: cn=g,ou=groups\nobjectClass: groupOfNames\ncn: g\n{members}",
    )
    assert [p.uid for p in directory.group_members("g")] == ["Adams", "jlee", "mnguyen"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("uid=jlee,ou=people,dc=city", "UID = JLee , OU=People,dc=City"),
        (" uid=jlee,dc=city ", "uid=jlee,dc=city"),
    ],
)
def test_normalize_dn(a, b):
    assert normalize_dn(a) == normalize_dn(b)


def test_normalize_dn_keeps_different_dns_apart():
    assert normalize_dn("uid=jlee,dc=city") != normalize_dn("uid=jlee2,dc=city")


@pytest.mark.parametrize(
    ("lines", "state"),
    [
        ((), AccountState.ACTIVE),
        (("pwdAccountLockedTime: 000001010000Z",), AccountState.DISABLED),  # OpenLDAP's "disabled"
        (("pwdAccountLockedTime: 20261207120000Z",), AccountState.LOCKED),
        (("pwdReset: TRUE",), AccountState.MUST_CHANGE_PASSWORD),
    ],
)
def test_account_states_are_told_only_to_the_right_password(tmp_path, lines, state):
    _, directory = load(tmp_path, person("jlee", f"userPassword: {hash_password('right')}", *lines))
    assert directory.lookup("jlee").state is state
    assert directory.authenticate("jlee", "right") is BindOutcome.of_state(state)
    assert directory.authenticate("jlee", "wrong") is BindOutcome.WRONG_PASSWORD
    assert directory.authenticate("nobody", "right") is BindOutcome.WRONG_PASSWORD
