import base64

import pytest

from citygate.directory.ldif import LdifEntry, LdifError, read_ldif


def write(tmp_path, text, name="dir.ldif", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


PERSON = """\
version: 1

# a comment
dn: uid=jlee,ou=people,dc=city,dc=example
objectClass: inetOrgPerson
objectClass: top
uid: jlee
cn: Jordan Lee

dn: cn=directors,ou=groups,dc=city,dc=example
objectClass: groupOfNames
cn: directors
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_reads_entries_with_lower_cased_attributes_and_dn_lines(tmp_path, newline):
    entries = read_ldif(write(tmp_path, PERSON, newline=newline))
    assert entries == [
        LdifEntry(
            dn="uid=jlee,ou=people,dc=city,dc=example",
            attributes={
                "objectclass": ["inetOrgPerson", "top"],
                "uid": ["jlee"],
                "cn": ["Jordan Lee"],
            },
            line=4,
        ),
        LdifEntry(
            dn="cn=directors,ou=groups,dc=city,dc=example",
            attributes={"objectclass": ["groupOfNames"], "cn": ["directors"]},
            line=10,
        ),
    ]


def test_folded_lines_are_joined_without_the_leading_space(tmp_path):
    path = write(
        tmp_path,
        "dn: uid=jlee,ou=peo\n ple,dc=city,dc=example\ntitle: Social Media\n  Coordinator\ncn: J\n",
    )
    [entry] = read_ldif(path)
    assert entry.dn == "uid=jlee,ou=people,dc=city,dc=example"
    assert entry.attributes["title"] == ["Social Media Coordinator"]
    assert entry.attributes["cn"] == ["J"]


def test_base64_values_are_decoded_as_utf8(tmp_path):
    name = base64.b64encode("Ana Hernández".encode()).decode()
    dn = base64.b64encode(b"uid=ahernandez,dc=city").decode()
    path = write(tmp_path, f"dn:: {dn}\ncn:: {name[:10]}\n {name[10:]}\nsn::{name}\n")
    [entry] = read_ldif(path)
    assert entry.dn == "uid=ahernandez,dc=city"
    assert entry.attributes["cn"] == ["Ana Hernández"]
    assert entry.attributes["sn"] == ["Ana Hernández"]


def test_comments_and_their_continuations_are_ignored(tmp_path):
    path = write(
        tmp_path,
        "# header\n#  folded comment\n continues here\ndn: cn=a\n# inside\ncn: a\n\n\n\n# end\n",
    )
    [entry] = read_ldif(path)
    assert entry == LdifEntry(dn="cn=a", attributes={"cn": ["a"]}, line=4)


def test_values_keep_colons_and_empty_values_are_allowed(tmp_path):
    [entry] = read_ldif(write(tmp_path, "dn: cn=a\ndescription: Parks: fun\nmail:\n"))
    assert entry.attributes == {"description": ["Parks: fun"], "mail": [""]}


def test_version_header_needs_no_blank_line_and_utf8_bom_is_tolerated(tmp_path):
    path = tmp_path / "bom.ldif"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\ndn: cn=a\ncn: a\n")
    assert read_ldif(path) == [LdifEntry(dn="cn=a", attributes={"cn": ["a"]}, line=2)]


def test_empty_file_has_no_entries(tmp_path):
    assert read_ldif(write(tmp_path, "# nothing\n\nversion: 1\n")) == []


def test_attribute_options_are_kept_in_the_key(tmp_path):
    [entry] = read_ldif(write(tmp_path, "dn: cn=a\ncn;lang-en: a\n"))
    assert entry.attributes == {"cn;lang-en": ["a"]}


@pytest.mark.parametrize(
    ("text", "line", "hint"),
    [
        ("dn: cn=a\ncn: a\nthis line has no colon\n", 3, 'expected "attribute: value"'),
        ("dn: cn=a\ncn: a\n\ncn: b\n", 4, 'expected "dn: ..."'),
        ("dn: cn=a\ncn: a\ndn: cn=b\n", 3, "blank line before each new entry"),
        ("\n continued\n", 2, "nothing to continue"),
        ("dn: cn=a\ncn:: not*base64\n", 2, "not valid base64"),
        ("dn: cn=a\ncn:: " + base64.b64encode(b"\xff\xfe").decode() + "\n", 2, "UTF-8"),
        ("dn: cn=a\njpegPhoto:< file:///etc/passwd\n", 2, "URL values are not supported"),
        ("dn: cn=a\nchangetype: add\ncn: a\n", 2, "change records"),
        ("dn: cn=a\nchangetype: modify\nreplace: cn\ncn: b\n-\n", 2, "change records"),
        ("dn: cn=a\ncontrol: 1.2.3\ncn: a\n", 2, "change records"),
        ("version: 2\n\ndn: cn=a\ncn: a\n", 1, 'use "version: 1"'),
        ("\n\ndn: cn=a\n\n", 3, "has no attributes"),
        ("dn: cn=a\nbad attr: x\n", 2, "fold long lines with a leading space"),
    ],
)
def test_errors_name_file_and_line_with_a_hint(tmp_path, text, line, hint):
    path = write(tmp_path, text, name="broken.ldif")
    with pytest.raises(LdifError) as caught:
        read_ldif(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert hint in str(caught.value)
    assert caught.value.line == line
    assert caught.value.path == str(path)


def test_error_line_numbers_count_crlf_lines_and_folds(tmp_path):
    text = "dn: cn=a\ndescription: long\n  value\ncn: a\noops\n"
    path = write(tmp_path, text, newline="\r\n")
    with pytest.raises(LdifError, match=r":5: expected"):
        read_ldif(path)


def test_invalid_utf8_is_reported_at_its_line(tmp_path):
    path = tmp_path / "latin1.ldif"
    path.write_bytes("dn: cn=a\ncn: Hernández\n".encode("latin-1"))
    with pytest.raises(LdifError, match=r"latin1\.ldif:2: not valid UTF-8"):
        read_ldif(path)


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_ldif(tmp_path / "absent.ldif")
