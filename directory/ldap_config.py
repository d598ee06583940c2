"""Reading the `directory:` section for the LDAP backend into LdapSettings, with clear errors.

Every mistake is collected (not only the first) and reported as a Problem naming the setting
and the fix. The service account's password never lives in the YAML: it comes from a file
(`bind_password_file`) or an environment variable (`bind_password_env`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import parse_filter
from ldap3.utils.dn import parse_dn

from citygate.directory.breaker import GuardSettings
from citygate.directory.ldap import (
    DISABLED_MARKERS,
    GROUP_MODES,
    PRESETS,
    STRATEGIES,
    LdapSettings,
    parse_server_url,
)
from citygate.directory.problems import ConfigError, Problems

log = logging.getLogger(__name__)

_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTRIBUTE_KEYS = (
    "login_attribute",
    "name_attribute",
    "department_attribute",
    "title_attribute",
    "mail_attribute",
    "member_of_attribute",
    "group_name_attribute",
    "group_member_attribute",
)
_FILTER_KEYS = ("user_filter", "group_filter")
#: Every key the ldap backend accepts (besides `backend`).
LDAP_KEYS = (
    "preset",
    "servers",
    "base_dn",
    "user_base",
    "group_base",
    "bind_dn",
    "bind_password_file",
    "bind_password_env",
    "start_tls",
    "ca_file",
    "allow_plaintext",
    "strategy",
    "exhaust",
    "retries",
    "connect_timeout",
    "receive_timeout",
    "pool_size",
    "call_timeout",
    "check_interval",
    "breaker_failures",
    "breaker_backoff",
    "bind_rate",
    *_ATTRIBUTE_KEYS,
    *_FILTER_KEYS,
    "groups",
    "disabled",
    "disabled_filter",
    "cache",
)
_EXAMPLE = (
    "e.g. directory: {backend: ldap, preset: active-directory, servers: [ldaps://dc1.city.example], "
    "base_dn: 'dc=city,dc=example', bind_dn: 'cn=citygate,ou=Service Accounts,dc=city,dc=example', "
    "bind_password_file: /etc/citygate/ldap-password, ca_file: /etc/citygate/city-ca.pem}"
)


def ldap_settings(
    options: Mapping[str, object],
    base: Path,
    config_path: str | Path,
    line_of: Callable[[str], int | None] = lambda key: None,
) -> LdapSettings:
    """The validated settings; ConfigError listing every problem otherwise (at `line_of` each key)."""
    reader = _Reader(options, base, Path(config_path), line_of)
    settings = reader.read()
    if reader.problems.errors or settings is None:
        raise ConfigError(reader.problems)
    return settings


class _Reader:
    def __init__(
        self, options: Mapping[str, object], base: Path, path: Path, line_of: Callable[[str], int | None]
    ) -> None:
        self.options = options
        self.base = base
        self.path = path
        self.line_of = line_of
        self.problems = Problems()

    def error(self, key: str, message: str, fix: str) -> None:
        self.problems.error(self.path, self.line_of(key), f"directory.{key}: {message}", fix)

    # -- scalar readers --

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.options.get(key, default)
        if value is None and default is not None:
            # `key: null` (or `key:` with nothing after it) would drop the preset's value.
            self.error(key, "is empty", f"e.g. {key}: {default}, or leave the line out for that default")
            return None
        if value is None:
            if required:
                self.error(key, "is missing", _EXAMPLE)
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(key, f"must be a non-empty text, not {value!r}", _EXAMPLE)
            return None
        return value.strip()

    def boolean(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, not {value!r}", f"e.g. {key}: {str(default).lower()}")
            return default
        return value

    def number(
        self, key: str, default: float, low: float, high: float, *, whole: bool = False, unit: str = "seconds"
    ) -> float:
        value = self.options.get(key, default)
        kind = f"{'whole ' if whole else ''}number of {unit}"
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (whole and not isinstance(value, int))
            or not low <= value <= high
        ):
            self.error(
                key,
                f"must be a {kind} from {low:g} to {high:g}, not {value!r}",
                f"e.g. {key}: {default:g}",
            )
            return default
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.options.get(key, default)
        if value not in choices:
            self.error(key, f"unknown value {value!r}", f"use one of: {', '.join(choices)}")
            return default
        return value

    def dn(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.string(key, default, required=required)
        if value is None:
            return None
        try:
            parse_dn(value)
        except LDAPException:
            self.error(key, f"{value!r} is not a DN", "e.g. 'ou=people,dc=city,dc=example'")
            return None
        return value

    def search_filter(self, key: str, default: str | None) -> str | None:
        value = self.string(key, default)
        if value is None:
            return None
        try:
            parse_filter(value, None, False, False, None, False)
        except (LDAPException, IndexError, ValueError):
            self.error(
                key,
                f"{value!r} is not an LDAP filter",
                "write it in parentheses, e.g. '(objectClass=inetOrgPerson)'",
            )
            return None
        return value

    # -- the whole section --

    def read(self) -> LdapSettings | None:
        options = self.options
        if "bind_password" in options:
            self.error(
                "bind_password",
                "the service account's password must not be written in the configuration",
                "remove it; put the password in a file readable only by citygate's user and set "
                "bind_password_file: /etc/citygate/ldap-password, or set an environment variable "
                "and name it with bind_password_env: CITYGATE_LDAP_PASSWORD",
            )
        for key in sorted(set(options) - set(LDAP_KEYS) - {"bind_password"}):
            self.problems.error(
                self.path,
                self.line_of(key),
                f'directory: unknown setting "{key}" for the ldap backend',
                f"known settings: {', '.join(LDAP_KEYS)}",
            )

        preset_name = options.get("preset")
        if preset_name not in PRESETS:
            self.error(
                "preset",
                "is missing" if preset_name is None else f"unknown preset {preset_name!r}",
                f"use preset: openldap or preset: active-directory ({_EXAMPLE})",
            )
            preset = PRESETS["openldap"]
        else:
            preset = PRESETS[str(preset_name)]

        servers = self.servers()
        start_tls = self.boolean("start_tls", False)
        allow_plaintext = self.boolean("allow_plaintext", False)
        ca_file = self.ca_file()
        for url, host, secure in servers:
            if not secure and not start_tls and not allow_plaintext and not _loopback(host):
                self.error(
                    "servers",
                    f"{url} would carry employees' passwords across the network in clear text",
                    "use ldaps://, or start_tls: true (with ca_file: the directory's CA); "
                    "allow_plaintext: true is for a lab only",
                )

        base_dn = self.dn("base_dn", required=True)
        user_base = self.dn("user_base", base_dn)
        group_base = self.dn("group_base", base_dn)
        bind_dn = self.string("bind_dn", required=True)
        password = self.password()

        values = {key: self.string(key, preset[key]) for key in _ATTRIBUTE_KEYS}
        for key, value in values.items():
            if value is not None and not _ATTRIBUTE.fullmatch(value):
                self.error(key, f"{value!r} is not an attribute name", f"e.g. {key}: {preset[key]}")
        filters = {key: self.search_filter(key, preset[key]) for key in _FILTER_KEYS}
        groups = self.choice("groups", preset["groups"], GROUP_MODES)
        disabled = self.choice("disabled", preset["disabled"], DISABLED_MARKERS)
        disabled_filter = self.search_filter("disabled_filter", None)
        if disabled == "filter" and disabled_filter is None and "disabled_filter" not in options:
            self.error(
                "disabled_filter",
                "is needed with disabled: filter (it says which accounts are disabled)",
                "e.g. disabled_filter: '(employeeType=separated)'",
            )

        exhaust = self.number("exhaust", 30, 0, 3600)
        retries = int(self.number("retries", 1, 0, 5, whole=True, unit="retries"))
        connect_timeout = self.number("connect_timeout", 3, 0.1, 60)
        # Whole seconds: ldap3 2.9.1 packs the receive timeout into SO_RCVTIMEO as an integer.
        receive_timeout = int(self.number("receive_timeout", 5, 1, 120, whole=True))
        pool_size = int(self.number("pool_size", 8, 1, 64, whole=True, unit="connections"))
        strategy = self.choice("strategy", "first", STRATEGIES)
        guard = self.guard()

        if self.problems.errors:
            return None
        assert base_dn and user_base and group_base and bind_dn and password is not None
        return LdapSettings(
            servers=tuple(url for url, _, _ in servers),
            bind_dn=bind_dn,
            bind_password=password,
            user_base=user_base,
            group_base=group_base,
            groups=groups,
            disabled=disabled,
            disabled_filter=disabled_filter,
            start_tls=start_tls,
            ca_file=ca_file,
            strategy=strategy,
            exhaust=exhaust,
            retries=retries,
            connect_timeout=connect_timeout,
            receive_timeout=receive_timeout,
            pool_size=pool_size,
            guard=guard,
            **{key: value for key, value in values.items() if value is not None},
            **{key: value for key, value in filters.items() if value is not None},
        )

    def guard(self) -> GuardSettings:
        """How the proxy bounds and breaks directory calls (see directory/breaker.py)."""
        defaults = GuardSettings()
        call_timeout = self.number("call_timeout", defaults.call_timeout, 0.05, 120)
        check_interval = self.number("check_interval", defaults.check_interval, 0.1, 3600)
        failures = self.number(
            "breaker_failures", defaults.failures, 1, 1000, whole=True, unit="failed calls"
        )
        backoff = self.number("breaker_backoff", defaults.backoff, 0.01, 3600)
        # The default first backoff is simply capped by a shorter check_interval; one written
        # down that can never apply is a mistake worth naming.
        if "breaker_backoff" in self.options and backoff > check_interval:
            self.error(
                "breaker_backoff",
                f"{backoff:g} s is longer than check_interval ({check_interval:g} s), the longest backoff",
                f"e.g. breaker_backoff: {min(defaults.backoff, check_interval):g}, or a longer check_interval",
            )
        bind_rate = self.number(
            "bind_rate", defaults.bind_rate, 1, 1000, whole=True, unit="binds per account per minute"
        )
        return GuardSettings(
            call_timeout=call_timeout,
            check_interval=check_interval,
            failures=int(failures),
            backoff=min(backoff, check_interval),
            bind_rate=int(bind_rate),
        )

    def servers(self) -> list[tuple[str, str, bool]]:
        value = self.options.get("servers")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.error(
                "servers",
                "is missing" if value is None else "must be a list of ldap:// or ldaps:// URLs",
                "e.g. servers: [ldaps://dc1.city.example, ldaps://dc2.city.example]",
            )
            return []
        servers = []
        for url in value:
            try:
                address = parse_server_url(str(url))
            except ValueError as exc:
                self.error("servers", f"{url!r}: {exc}", "e.g. ldaps://dc1.city.example:636")
                continue
            servers.append((address.url, address.host, address.ssl))
        return servers

    def ca_file(self) -> str | None:
        name = self.string("ca_file")
        if name is None:
            return None
        path = self.base / name
        if not path.is_file():
            self.error(
                "ca_file",
                f"{path} does not exist",
                "give the PEM file of the CA that signed the directory's certificate (relative "
                "paths are relative to the config file's folder)",
            )
            return None
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.error(
                "ca_file", f"{path} is not a usable PEM CA file ({exc})", "export the CA certificate as PEM"
            )
            return None
        return str(path)

    def password(self) -> str | None:
        file_name = self.string("bind_password_file")
        env_name = self.string("bind_password_env")
        if file_name and env_name:
            self.error(
                "bind_password_file",
                "and bind_password_env are both set",
                "keep one of them, so there is no doubt which password is used",
            )
            return None
        if file_name:
            path = self.base / file_name
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                self.error(
                    "bind_password_file",
                    f"cannot read {path} ({exc.strerror})",
                    "create it holding only the service account's password, readable by citygate's user",
                )
                return None
            except UnicodeDecodeError:
                self.error("bind_password_file", f"{path} is not UTF-8 text", "save the password as UTF-8")
                return None
            password = text.rstrip("\r\n")
            if not password:
                self.error(
                    "bind_password_file", f"{path} is empty", "write the service account's password in it"
                )
                return None
            if os.name == "posix" and path.stat().st_mode & 0o004:
                log.warning("%s is readable by every user; chmod 600 it", path)
            return password
        if env_name:
            if not _ENV_NAME.fullmatch(env_name):
                self.error(
                    "bind_password_env",
                    f"{env_name!r} is not an environment variable name",
                    "e.g. bind_password_env: CITYGATE_LDAP_PASSWORD",
                )
                return None
            password = os.environ.get(env_name, "")
            if not password:
                self.error(
                    "bind_password_env",
                    f"the environment variable {env_name} is not set or empty",
                    f"set {env_name} to the service account's password in the proxy's environment "
                    "(e.g. EnvironmentFile= in its systemd unit)",
                )
                return None
            return password
        if "bind_password" in self.options:
            return None  # already reported, with the same fix
        self.error(
            "bind_password_file",
            "the service account needs a password: neither bind_password_file nor bind_password_env is set",
            "set bind_password_file: /etc/citygate/ldap-password (a file readable only by citygate) "
            "or bind_password_env: CITYGATE_LDAP_PASSWORD",
        )
        return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
