"""Kerberos sign-in settings (identity.sign_in, identity.kerberos) and the principal -> employee mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from citygate.proxy.identity.config import IdentitySettings, KerberosSettings
from citygate.proxy.identity.kerberos import (
    PrincipalRefused,
    principal_login,
    refusal_reason,
    replay_cache_problem,
)

FIRST_LINE = 12  # MINI_CONFIG has 11 lines; the identity section starts after it
KERBEROS = """\
identity:
  sign_in: [negotiate, basic]
  kerberos:
    keytab: proxy.keytab
    principal: HTTP/proxy.city.example@CITY.EXAMPLE
"""
AD_DIRECTORY = """\
directory:
  backend: ldap
  preset: active-directory
  servers: [ldaps://dc1.city.example]
"""


def identity(policy_files, section: str, *, directory: str | None = None) -> IdentitySettings:
    return policy_files.load(config=_config(policy_files, section, directory)).features.identity


def problems(policy_files, section: str, *, directory: str | None = None) -> list[str]:
    return [str(p) for p in policy_files.problems(config=_config(policy_files, section, directory))]


def _config(policy_files, section: str, directory: str | None) -> str:
    # The keytabs the sections name exist (their keys are `citygate check`'s business).
    policy_files.root.mkdir(parents=True, exist_ok=True)
    for name in ("proxy.keytab", "p.keytab"):
        (policy_files.root / name).write_bytes(b"")
    config = policy_files.mini_config
    if directory is not None:
        config = config.split("directory:")[0] + directory
    return config + section


def test_negotiate_then_basic_with_a_keytab(policy_files):
    settings = identity(policy_files, KERBEROS)

    assert settings.sign_in == ("negotiate", "basic")
    assert settings.negotiate_enabled and settings.basic_enabled
    assert settings.kerberos == KerberosSettings(
        keytab=policy_files.root / "proxy.keytab",
        principal="HTTP/proxy.city.example@CITY.EXAMPLE",
        realms=("CITY.EXAMPLE",),  # the principal's realm by default
        location=f"{policy_files.config}:{FIRST_LINE + 2}",
    )


def test_realms_and_negotiate_only(policy_files):
    section = (
        KERBEROS.replace("[negotiate, basic]", "[negotiate]")
        + "    realms: [CITY.EXAMPLE, POLICE.CITY.EXAMPLE]\n"
    )
    settings = identity(policy_files, section)

    assert settings.sign_in == ("negotiate",)
    assert not settings.basic_enabled
    assert settings.kerberos is not None
    assert settings.kerberos.realms == ("CITY.EXAMPLE", "POLICE.CITY.EXAMPLE")


def test_basic_only_by_default(policy_files):
    assert identity(policy_files, "").sign_in == ("basic",)
    assert identity(policy_files, "identity:\n  max_token_bytes: 4096\n").sign_in == ("basic",)


def test_the_active_directory_preset_defaults_to_negotiate_then_basic(policy_files):
    section = KERBEROS.replace("  sign_in: [negotiate, basic]\n", "")
    assert identity(policy_files, section, directory=AD_DIRECTORY).sign_in == ("negotiate", "basic")


def test_the_active_directory_preset_without_kerberos_says_what_to_add(policy_files):
    [found] = problems(policy_files, "", directory=AD_DIRECTORY)

    assert found.startswith(f"{policy_files.config}:{FIRST_LINE - 1}: ")  # directory.preset
    assert "active-directory preset signs employees in with Kerberos" in found
    assert "add identity.kerberos.keytab and principal, or set identity.sign_in: [basic]" in found
    # With an identity section but no kerberos, the same.
    [found] = problems(policy_files, "identity:\n  max_token_bytes: 4096\n", directory=AD_DIRECTORY)
    assert "add identity.kerberos.keytab and principal" in found
    # And Basic only is a choice that needs no keytab.
    assert identity(policy_files, "identity:\n  sign_in: [basic]\n", directory=AD_DIRECTORY).sign_in == (
        "basic",
    )


@pytest.mark.parametrize(
    ("section", "line", "message", "fix"),
    [
        (
            "identity:\n  sign_in: [negotiate]\n",
            1,
            "sign_in offers negotiate (Kerberos), and identity.kerberos is missing",
            "add identity.kerberos.keytab and principal, or set identity.sign_in: [basic]",
        ),
        (
            "identity:\n  sign_in: [ntlm]\n",
            1,
            "identity.sign_in: unknown scheme 'ntlm'",
            "[negotiate, basic]",
        ),
        (
            "identity:\n  sign_in: [basic, negotiate]\n",
            1,
            "offers basic before negotiate",
            "[negotiate, basic]",
        ),
        ("identity:\n  sign_in: [basic, basic]\n", 1, "lists a scheme twice", "[basic]"),
        ("identity:\n  sign_in: []\n", 1, "must be a list of schemes", "[negotiate, basic]"),
        (
            "identity:\n  kerberos:\n    principal: HTTP/p.city.example@CITY.EXAMPLE\n",
            2,  # the section's first line
            "identity.kerberos.keytab is missing",
            "relative to the config file",
        ),
        (
            "identity:\n  kerberos:\n    keytab: p.keytab\n    principal: proxy\n",
            3,
            "identity.kerberos.principal 'proxy' is not a service principal with a realm",
            "HTTP/proxy.city.example@CITY.EXAMPLE",
        ),
        (
            "identity:\n  kerberos:\n    keytab: p.keytab\n    principal: HTTP/p@CITY.EXAMPLE\n    realm: X\n",
            4,
            'unknown setting "identity.kerberos.realm"',
            "known settings: keytab, principal, realms",
        ),
        (
            "identity:\n  kerberos: p.keytab\n",
            1,
            "identity.kerberos must be a mapping of settings",
            "e.g. kerberos:",
        ),
        (
            "identity:\n  kerberos:\n    keytab: gone.keytab\n    principal: HTTP/p@CITY.EXAMPLE\n",
            2,
            "gone.keytab is not a file",
            "AD: ktpass, MIT Kerberos: kadmin ktadd",
        ),
    ],
    ids=[
        "negotiate-without-kerberos",
        "unknown-scheme",
        "basic-first",
        "twice",
        "empty",
        "no-keytab",
        "bad-principal",
        "unknown-key",
        "not-a-mapping",
        "no-keytab-file",
    ],
)
def test_each_mistake_names_its_line_and_fix(policy_files, section, line, message, fix):
    found = problems(policy_files, section)

    assert len(found) == 1, found
    assert found[0].startswith(f"{policy_files.config}:{FIRST_LINE + line}: "), found[0]
    assert message in found[0]
    assert fix in found[0]


def test_all_mistakes_at_once(policy_files):
    section = "identity:\n  sign_in: [ntlm]\n  kerberos:\n    realms: [7]\n"
    found = problems(policy_files, section)
    assert len(found) == 4, found  # the scheme, no keytab, no principal, realms not names


# --- principal -> employee ----------------------------------------------------------------------


def test_a_principal_of_an_accepted_realm_is_its_login_casefolded():
    assert principal_login("JLee@CITY.EXAMPLE", ("CITY.EXAMPLE",)) == "jlee"
    assert principal_login("jlee@POLICE.CITY", ("CITY.EXAMPLE", "POLICE.CITY")) == "jlee"


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        ("jlee@OTHER.LAN", "realm OTHER.LAN, which is not accepted (accepted: CITY.EXAMPLE)"),
        ("jlee@city.example", "realm city.example, which is not accepted"),  # realms are case-sensitive
        ("jlee/admin@CITY.EXAMPLE", "is a service or admin principal"),
        ("HTTP/web.city.example@CITY.EXAMPLE", "is a service or admin principal"),
        ("jlee", "names no realm"),
    ],
)
def test_other_principals_sign_nobody_in(principal, reason):
    with pytest.raises(PrincipalRefused) as refused:
        principal_login(principal, ("CITY.EXAMPLE",))
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Minor (100005): Request is a replay", "a replayed Negotiate token"),
        ("Minor (100006): Token header is malformed or corrupt", "a malformed Negotiate token"),
        ("Minor (100009): Ticket expired", "the Kerberos ticket has expired"),
        ("Minor (100010): Clock skew too great", "outside the allowed clock skew"),
        ("Minor (100008): Cannot find key for HTTP/p@R kvno 2 in keytab", "wrong key version"),
        (
            "Minor (100007): Cannot decrypt ticket for HTTP/o@R using keytab key for HTTP/p@R",
            "another service principal",
        ),
        ("Major (589824): Invalid token was supplied", "a malformed Negotiate token"),
        ("Minor (0): something new", "the Kerberos token was refused"),
    ],
)
def test_krb5_errors_become_plain_reasons(message, reason):
    assert reason in refusal_reason(message)


def test_settings_realm_is_the_principals():
    settings = KerberosSettings(Path("k"), "HTTP/p.city.example@CITY.EXAMPLE", ("CITY.EXAMPLE",))
    assert settings.realm == "CITY.EXAMPLE"


def test_an_unwritable_replay_cache_is_the_proxys_problem():
    message = "Minor (100005): Permission denied (filename: /var/tmp/krb5_998.rcache2)"
    problem = replay_cache_problem(message)
    assert problem is not None
    assert "Permission denied (filename: /var/tmp/krb5_998.rcache2)" in problem
    assert "set KRB5RCACHEDIR" in problem
    assert replay_cache_problem("Minor (100005): Request is a replay") is None
