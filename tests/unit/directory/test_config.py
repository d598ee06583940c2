"""The `directory:` section for the ldap backend and the cache: every mistake named, with its fix."""

from pathlib import Path

import pytest

from citygate.directory.backends import directory_gateway, open_directory
from citygate.directory.breaker import GuardSettings
from citygate.directory.cache import CacheSettings, cache_settings
from citygate.directory.ldap import LdapDirectory
from citygate.directory.ldap_config import ldap_settings
from citygate.directory.problems import ConfigError
from citygate.directory.settings import DirectorySettings


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "ldap-password"
    path.write_text("s3cret-from-file\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def options(secret: Path, **overrides):
    base = {
        "preset": "openldap",
        "servers": ["ldaps://ldap1.city.example", "ldaps://ldap2.city.example:1636"],
        "base_dn": "dc=city,dc=example",
        "bind_dn": "cn=citygate,ou=services,dc=city,dc=example",
        "bind_password_file": secret.name,
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def problems(tmp_path: Path, section: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        ldap_settings(section, tmp_path, tmp_path / "citygate.yaml")
    return [str(problem) for problem in caught.value.problems]


def one_problem(tmp_path: Path, section: dict, *fragments: str) -> str:
    found = problems(tmp_path, section)
    assert len(found) == 1, found
    for fragment in fragments:
        assert fragment in found[0], found[0]
    return found[0]


def test_openldap_preset_defaults(tmp_path, secret):
    settings = ldap_settings(options(secret), tmp_path, "citygate.yaml")
    assert settings.servers == ("ldaps://ldap1.city.example", "ldaps://ldap2.city.example:1636")
    assert settings.bind_password == "s3cret-from-file"
    assert settings.user_base == settings.group_base == "dc=city,dc=example"
    assert settings.login_attribute == "uid"
    assert settings.department_attribute == "departmentNumber"
    assert settings.groups == "memberof"
    assert settings.disabled == "ppolicy"
    assert (settings.strategy, settings.exhaust, settings.retries) == ("first", 30, 1)
    assert (settings.connect_timeout, settings.receive_timeout) == (3, 5)
    assert "s3cret" not in repr(settings)


def test_active_directory_preset_defaults(tmp_path, secret):
    settings = ldap_settings(options(secret, preset="active-directory"), tmp_path, "citygate.yaml")
    assert settings.login_attribute == "sAMAccountName"
    assert settings.department_attribute == "department"
    assert settings.user_filter == "(&(objectCategory=person)(objectClass=user))"
    assert settings.disabled == "user-account-control"


def test_every_attribute_and_base_can_be_overridden(tmp_path, secret):
    overrides = {
        "user_base": "ou=staff,dc=city,dc=example",
        "group_base": "ou=roles,dc=city,dc=example",
        "login_attribute": "mailNickname",
        "user_filter": "(objectClass=person)",
        "name_attribute": "cn",
        "department_attribute": "ou",
        "title_attribute": "description",
        "mail_attribute": "userPrincipalName",
        "member_of_attribute": "isMemberOf",
        "groups": "search",
        "group_filter": "(objectClass=groupOfUniqueNames)",
        "group_name_attribute": "ou",
        "group_member_attribute": "uniqueMember",
        "disabled": "filter",
        "disabled_filter": "(employeeType=separated)",
        "strategy": "round_robin",
        "exhaust": 5,
        "retries": 2,
        "connect_timeout": 1.5,
        "receive_timeout": 2,
        "pool_size": 3,
    }
    settings = ldap_settings(options(secret, **overrides), tmp_path, "citygate.yaml")
    for key, value in overrides.items():
        assert getattr(settings, key) == value, key


def test_a_password_in_the_yaml_is_refused(tmp_path, secret):
    text = one_problem(
        tmp_path,
        options(secret, bind_password="hunter2"),
        "directory.bind_password",
        "must not be written in the configuration",
        "bind_password_file",
        "bind_password_env",
    )
    assert "hunter2" not in text


def test_password_from_the_environment(tmp_path, secret, monkeypatch):
    monkeypatch.setenv("CITYGATE_TEST_LDAP_PASSWORD", "from-env")
    section = options(secret, bind_password_file=None, bind_password_env="CITYGATE_TEST_LDAP_PASSWORD")
    assert ldap_settings(section, tmp_path, "c.yaml").bind_password == "from-env"
    monkeypatch.delenv("CITYGATE_TEST_LDAP_PASSWORD")
    one_problem(tmp_path, section, "CITYGATE_TEST_LDAP_PASSWORD is not set")


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"bind_password_file": None}, ["neither bind_password_file nor bind_password_env"]),
        ({"bind_password_env": "X"}, ["both set"]),
        ({"bind_password_file": "missing-file"}, ["cannot read", "missing-file"]),
        (
            {"bind_password_file": None, "bind_password_env": "not a name"},
            ["not an environment variable name"],
        ),
        ({"preset": None}, ["directory.preset: is missing", "openldap", "active-directory"]),
        ({"preset": "novell"}, ["unknown preset 'novell'"]),
        ({"servers": None}, ["directory.servers: is missing"]),
        ({"servers": []}, ["list of ldap:// or ldaps:// URLs"]),
        ({"servers": ["http://ldap.city.example"]}, ["ldap:// or ldaps://"]),
        ({"servers": ["ldaps://ldap.city.example/dc=city"]}, ["user_base"]),
        ({"servers": ["ldap://ldap.city.example"]}, ["clear text", "start_tls"]),
        ({"base_dn": None}, ["directory.base_dn: is missing"]),
        ({"base_dn": "not a dn"}, ["is not a DN"]),
        ({"bind_dn": ""}, ["directory.bind_dn"]),
        ({"ca_file": "nope.pem"}, ["directory.ca_file", "does not exist"]),
        ({"user_filter": "objectClass=person"}, ["directory.user_filter", "not an LDAP filter"]),
        ({"group_filter": "(&(cn=a)"}, ["not an LDAP filter"]),
        ({"login_attribute": "uid)(cn=*"}, ["not an attribute name"]),
        ({"groups": "nested"}, ["directory.groups", "memberof, search"]),
        ({"disabled": "never"}, ["directory.disabled", "ppolicy"]),
        ({"disabled": "filter"}, ["directory.disabled_filter", "is needed"]),
        ({"strategy": "random"}, ["first, round_robin"]),
        ({"retries": 30}, ["directory.retries", "0 to 5"]),
        ({"receive_timeout": 0.5}, ["directory.receive_timeout", "whole number of seconds"]),
        ({"receive_timeout": 0}, ["directory.receive_timeout"]),
        ({"connect_timeout": "3"}, ["directory.connect_timeout"]),
        ({"exhaust": -1}, ["directory.exhaust"]),
        (
            {"call_timeout": 0},
            ["directory.call_timeout", "number of seconds from 0.05 to 120", "e.g. call_timeout: 2"],
        ),
        ({"call_timeout": "2s"}, ["directory.call_timeout", "not '2s'"]),
        ({"check_interval": 0}, ["directory.check_interval", "e.g. check_interval: 5"]),
        ({"breaker_failures": 0}, ["directory.breaker_failures", "whole number of failed calls"]),
        ({"breaker_failures": 2.5}, ["directory.breaker_failures"]),
        ({"breaker_backoff": 10}, ["directory.breaker_backoff", "longer than check_interval (5 s)"]),
        ({"start_tls": "yes"}, ["true or false"]),
        (
            {"bind_rate": 0},
            [
                "directory.bind_rate",
                "whole number of binds per account per minute from 1 to 1000",
                "e.g. bind_rate: 5",
            ],
        ),
        ({"bind_rate": 2.5}, ["directory.bind_rate", "not 2.5"]),
        ({"server": "ldaps://x"}, ['unknown setting "server"', "servers"]),
    ],
)
def test_mistakes_are_named_with_a_fix(tmp_path, secret, overrides, fragments):
    one_problem(tmp_path, options(secret, **overrides), *fragments)


def test_an_emptied_setting_is_named_rather_than_crashing(tmp_path, secret):
    # `login_attribute:` with nothing after it is YAML's null: it would drop the preset's value.
    section = {**options(secret), "login_attribute": None}
    one_problem(tmp_path, section, "directory.login_attribute: is empty", "e.g. login_attribute: uid")


def test_a_count_is_not_called_seconds(tmp_path, secret):
    found = problems(tmp_path, options(secret, retries=9, pool_size=0))
    assert any("retries: must be a whole number of retries from 0 to 5, not 9" in line for line in found), (
        found
    )
    assert any("pool_size: must be a whole number of connections from 1 to 64" in line for line in found), (
        found
    )


def test_problems_name_the_line_of_each_setting(tmp_path, secret):
    config = tmp_path / "citygate.yaml"
    settings = DirectorySettings("ldap", {**options(secret), "retries": -1}, tmp_path, {"retries": 17})
    with pytest.raises(ConfigError) as caught:
        open_directory(settings, str(config))
    assert [str(problem) for problem in caught.value.problems] == [
        f"{config}:17: directory.retries: must be a whole number of retries from 0 to 5, not -1; e.g. retries: 1"
    ]


def test_all_mistakes_are_reported_at_once(tmp_path, secret):
    found = problems(tmp_path, options(secret, preset="x", retries=-1, servers="ftp://x"))
    assert len(found) == 3


def test_plain_ldap_is_allowed_on_loopback_with_start_tls_or_explicitly(tmp_path, secret):
    for section in (
        options(secret, servers=["ldap://127.0.0.1:3890", "ldap://localhost"]),
        options(secret, servers=["ldap://ldap.city.example"], start_tls=True),
        options(secret, servers=["ldap://ldap.city.example"], allow_plaintext=True),
    ):
        ldap_settings(section, tmp_path, "c.yaml")


def test_a_bad_ca_file_is_refused(tmp_path, secret):
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    one_problem(tmp_path, options(secret, ca_file="ca.pem"), "not a usable PEM CA file")


def test_open_directory_builds_ldap_without_contacting_it(tmp_path, secret):
    # Nothing listens on this port: opening must still succeed (the proxy starts, fails closed).
    section = options(secret, servers=["ldap://127.0.0.1:9"])
    directory = open_directory(DirectorySettings("ldap", section, tmp_path), "c.yaml")
    assert isinstance(directory, LdapDirectory)
    assert directory.blocking is True


def test_open_directory_reports_ldap_errors_as_config_errors(tmp_path, secret):
    with pytest.raises(ConfigError) as caught:
        open_directory(DirectorySettings("ldap", options(secret, bind_password="x"), tmp_path), "c.yaml")
    assert "bind_password_file" in str(caught.value)


def test_unknown_backend_lists_ldap(tmp_path):
    with pytest.raises(ConfigError) as caught:
        open_directory(DirectorySettings("ad", {}, tmp_path), "c.yaml")
    assert "static, ldap" in str(caught.value)


# --- cache settings -------------------------------------------------------------------------


def test_cache_defaults():
    assert cache_settings(None, "c.yaml") == CacheSettings(
        ttl=60,
        negative_ttl=30,
        grace=300,
        max_entries=50_000,
        credentials_ttl=300,
        failed_credentials_ttl=300,
    )


def test_cache_settings_are_read():
    section = {"ttl": 5, "negative_ttl": 1.5, "grace": 0, "max_entries": 10, "credentials_ttl": 30}
    assert cache_settings(section, "c.yaml") == CacheSettings(5, 1.5, 0, 10, 30)


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"ttl": -1}, "directory.cache.ttl must be a number of seconds"),
        ({"ttl": "60"}, "directory.cache.ttl"),
        ({"max_entries": 0}, "directory.cache.max_entries must be a whole number"),
        ({"max_entries": 1.5}, "directory.cache.max_entries"),
        ({"credentials_ttl": True}, "directory.cache.credentials_ttl"),
        ({"grace": 10**9}, "directory.cache.grace"),
        (
            {"failed_credentials_ttl": -1},
            "directory.cache.failed_credentials_ttl must be a number of seconds",
        ),
        ({"failed_credentials_ttl": "5m"}, "e.g. failed_credentials_ttl: 300"),
        ({"tll": 5}, 'unknown setting "tll"'),
        ([60], "directory.cache must be a mapping"),
    ],
)
def test_cache_mistakes(section, fragment):
    with pytest.raises(ConfigError) as caught:
        cache_settings(section, "c.yaml")
    assert fragment in str(caught.value)


def test_a_bad_cache_section_fails_when_the_directory_opens(tmp_path):
    ldif = Path(__file__).resolve().parents[3] / "directory" / "demo.ldif"
    settings = DirectorySettings("static", {"ldif": str(ldif), "cache": {"ttl": -5}}, tmp_path)
    with pytest.raises(ConfigError, match=r"directory\.cache\.ttl"):
        open_directory(settings, "c.yaml")


def test_the_gateway_gets_the_cache_settings(tmp_path):
    ldif = Path(__file__).resolve().parents[3] / "directory" / "demo.ldif"
    settings = DirectorySettings("static", {"ldif": str(ldif), "cache": {"ttl": 7, "grace": 9}}, tmp_path)
    gateway = directory_gateway(open_directory(settings, "c.yaml"), settings, "c.yaml")
    assert (gateway.cache.ttl, gateway.cache.grace, gateway.cache.negative_ttl) == (7, 9, 30)


def test_guard_defaults_and_overrides(tmp_path, secret):
    assert ldap_settings(options(secret), tmp_path, "c.yaml").guard == GuardSettings(2, 5, 3, 0.5)
    section = options(secret, call_timeout=0.5, check_interval=1, breaker_failures=5, breaker_backoff=0.25)
    assert ldap_settings(section, tmp_path, "c.yaml").guard == GuardSettings(0.5, 1, 5, 0.25)
    assert ldap_settings(options(secret, bind_rate=2), tmp_path, "c.yaml").guard.bind_rate == 2
    # The default first backoff (0.5 s) is capped by a shorter check_interval, not refused.
    assert ldap_settings(options(secret, check_interval=0.2), tmp_path, "c.yaml").guard.backoff == 0.2


def test_a_guard_mistake_names_its_line(tmp_path, secret):
    config = tmp_path / "citygate.yaml"
    settings = DirectorySettings(
        "ldap", {**options(secret), "call_timeout": -1}, tmp_path, {"call_timeout": 23}
    )
    with pytest.raises(ConfigError) as caught:
        open_directory(settings, str(config))
    assert [str(problem) for problem in caught.value.problems] == [
        f"{config}:23: directory.call_timeout: must be a number of seconds from 0.05 to 120, not -1; "
        "e.g. call_timeout: 2"
    ]


def test_an_ldap_gateway_is_guarded_and_a_static_one_is_not(tmp_path, secret):
    ldap = DirectorySettings("ldap", options(secret, call_timeout=0.5), tmp_path)
    gateway = directory_gateway(open_directory(ldap, "c.yaml"), ldap, "c.yaml")
    assert gateway.guard is not None and gateway.guard.call_timeout == 0.5
    assert gateway.breaker is not None
    gateway.close()
    ldif = Path(__file__).resolve().parents[3] / "directory" / "demo.ldif"
    static = DirectorySettings("static", {"ldif": str(ldif)}, tmp_path)
    assert directory_gateway(open_directory(static, "c.yaml"), static, "c.yaml").breaker is None


def test_a_bind_rate_mistake_names_its_line(tmp_path, secret):
    config = tmp_path / "citygate.yaml"
    settings = DirectorySettings("ldap", {**options(secret), "bind_rate": 0}, tmp_path, {"bind_rate": 31})
    with pytest.raises(ConfigError) as caught:
        open_directory(settings, str(config))
    assert [str(problem) for problem in caught.value.problems] == [
        f"{config}:31: directory.bind_rate: must be a whole number of binds per account per minute from 1 "
        "to 1000, not 0; e.g. bind_rate: 5"
    ]


def test_an_ldap_gateway_limits_binds_and_remembers_failures_as_configured(tmp_path, secret):
    section = options(secret, bind_rate=2, cache={"failed_credentials_ttl": 60})
    ldap = DirectorySettings("ldap", section, tmp_path)
    gateway = directory_gateway(open_directory(ldap, "c.yaml"), ldap, "c.yaml")
    try:
        assert gateway._bind_rate is not None and gateway._bind_rate.limit == 2
        assert gateway.cache.failed_credentials_ttl == 60
    finally:
        gateway.close()
