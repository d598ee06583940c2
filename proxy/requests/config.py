"""The `requests:` section: where access requests are kept and who decides them, in which stages.

    requests:
      enabled: true
      database: ../var/requests.sqlite     # a file (SQLite), or postgresql+psycopg://host/db
      stages:                              # in order; the grant exists once the last approves
        - name: Department Director
          approvers: department-directors  # the Directors (and designees) of the employee's department
          escalate_after_business_days: 3  # then executives are asked too
      expire_after_business_days: 10       # undecided requests end
      max_purpose_chars: 1000
      recorded_approvals: off              # off | warn | require (citygate check)
      kerberos_principal: HTTP/requests.city.example@CITY.EXAMPLE  # single sign-on to the portal

A stage's `approvers` is `department-directors` or `{group: <directory group cn>}` (Glendale's
Office of Communication and Public Affairs). Exactly one stage is the Directors': the grant
names its approver, whom the proxy checks live on every request like any approver.

With `kerberos_principal`, the portal signs people in as the proxy does (Negotiate), with the
key of that principal from `identity.kerberos.keytab` (one keytab may hold both principals);
a directory password (Basic) remains the fallback, over TLS or from the machine itself.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path

from citygate.directory.problems import Problems
from citygate.proxy.yamlfile import Items, Node

DEPARTMENT_DIRECTORS = "department-directors"


class RecordedApprovals(StrEnum):
    """What `citygate check` says of grants that no recorded approval backs."""

    OFF = "off"
    WARN = "warn"
    REQUIRE = "require"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    # The directory group whose members decide; None: the Directors of the employee's department
    # (and their designees).
    group: str | None = None
    escalate_after_business_days: int = 3

    @property
    def by_directors(self) -> bool:
        return self.group is None


DIRECTOR_STAGE = Stage("Department Director")


class SmtpSecurity(StrEnum):
    """How mail reaches the city's mail server: the SMTP password and the requests' purposes travel
    with it, so in clear only to a relay on this machine."""

    STARTTLS = "starttls"  # TLS before anything is said; a server that does not offer it is refused
    TLS = "tls"  # TLS from the first byte (port 465)
    NONE = "none"  # no TLS: smtp_host must be this machine (localhost, 127.0.0.1, ::1)


_DEFAULT_SMTP_PORTS = {SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465, SmtpSecurity.NONE: 25}


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """`requests.email`: the mail server the notices are sent through (proxy/requests/mail.py).

    email:
      smtp_host: mail.city.example
      smtp_port: 587                    # default: 587 (starttls), 465 (tls), 25 (none)
      security: starttls                # starttls | tls | none (a relay on this machine only)
      sender: City of Example Social Media Requests <citygate@city.example>
      username: citygate                # optional, with password_file
      password_file: /etc/citygate/smtp-password   # read at each send, never in this file
      ca_file: /etc/citygate/city-ca.pem           # optional: the city's own CA
      remind_days_before: 7             # remind before an approved grant ends
      timeout_seconds: 10
    """

    smtp_host: str
    sender: str  # the From header: an address, with a display name or without
    smtp_port: int = 587
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    # Read at every send, so a rotated password needs no restart and no process keeps it.
    password_file: Path | None = None
    ca_file: Path | None = None  # None: the system's CAs
    remind_days_before: int = 7
    timeout_seconds: int = 10


@dataclass(frozen=True, slots=True)
class RequestSettings:
    enabled: bool = False
    database: str = ""  # an SQLAlchemy URL ("" without a requests: section, when nothing is kept)
    stages: tuple[Stage, ...] = (DIRECTOR_STAGE,)
    expire_after_business_days: int = 10
    max_purpose_chars: int = 1000
    recorded_approvals: RecordedApprovals = RecordedApprovals.OFF
    # Where employees reach the portal (`citygate portal`): the block page links its request form.
    portal_url: str | None = None
    # The portal's own service principal for Negotiate sign-in (None: passwords only).
    kerberos_principal: str | None = None
    # Where the notices are mailed from (None: no mail is queued or sent).
    email: EmailSettings | None = None


_KEYS = (
    "enabled",
    "database",
    "stages",
    "expire_after_business_days",
    "max_purpose_chars",
    "recorded_approvals",
    "portal_url",
    "kerberos_principal",
    "email",
)
_STAGE_KEYS = ("name", "approvers", "escalate_after_business_days")
DEFAULT_DATABASE = "../var/requests.sqlite"


def parse_requests_section(
    config_path: Path, node: Node | None, line: int, problems: Problems
) -> RequestSettings:
    """The settings in `node`; without a section, requests are off (grants are written by hand)."""
    if node is None:
        return RequestSettings()
    database = _database_url(config_path, DEFAULT_DATABASE)
    for key in sorted(set(node) - set(_KEYS)):
        problems.error(
            config_path,
            node.line_of(key),
            f'unknown setting "requests.{key}"',
            f"known requests settings: {', '.join(_KEYS)}",
        )
    values: dict[str, object] = {"database": database, **_scalars(config_path, node, problems)}
    if "stages" in node:
        stages = _stages(config_path, node, problems)
        if stages is not None:
            values["stages"] = stages
    if "email" in node:
        email = _email(config_path, node, problems)
        if email is not None:
            values["email"] = email
    return RequestSettings(**values)  # type: ignore[arg-type]


def _scalars(config_path: Path, node: Node, problems: Problems) -> dict[str, object]:
    """The section's settings that are one value each, those that are valid."""
    values: dict[str, object] = {}
    if "enabled" in node:
        if isinstance(node["enabled"], bool):
            values["enabled"] = node["enabled"]
        else:
            problems.error(
                config_path,
                node.line_of("enabled"),
                f"requests.enabled {node['enabled']!r} is not true or false",
                "write enabled: true or enabled: false",
            )
    if "database" in node:
        if isinstance(node["database"], str) and node["database"].strip():
            values["database"] = _database_url(config_path, node["database"].strip())
        else:
            problems.error(
                config_path,
                node.line_of("database"),
                f"requests.database {node['database']!r} is not a file or a database URL",
                f"e.g. database: {DEFAULT_DATABASE}, or database: postgresql+psycopg://citygate@db.city.example/citygate",
            )
    for key, low, high in (("expire_after_business_days", 1, 365), ("max_purpose_chars", 20, 10_000)):
        if key in node:
            number = _whole(config_path, node, key, low, high, problems, f"requests.{key}")
            if number is not None:
                values[key] = number
    values |= _addresses(config_path, node, problems)
    if "recorded_approvals" in node:
        raw = node["recorded_approvals"]
        try:
            # YAML 1.1 reads a bare off as false: take it as meant.
            values["recorded_approvals"] = RecordedApprovals("off" if raw is False else str(raw))
        except ValueError:
            problems.error(
                config_path,
                node.line_of("recorded_approvals"),
                f"requests.recorded_approvals {node['recorded_approvals']!r} is not off, warn or require",
                "write recorded_approvals: off (hand-written grants are fine), warn or require",
            )
    return values


def _addresses(config_path: Path, node: Node, problems: Problems) -> dict[str, object]:
    """Where the portal is, and the Kerberos name browsers know it by: those that are valid."""
    values: dict[str, object] = {}
    if "portal_url" in node:
        url = node["portal_url"]
        if isinstance(url, str) and re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url.strip()):
            values["portal_url"] = url.strip().rstrip("/")
        else:
            problems.error(
                config_path,
                node.line_of("portal_url"),
                f"requests.portal_url {url!r} is not an http(s) address",
                "e.g. portal_url: https://requests.city.example (where citygate portal is served)",
            )
    if "kerberos_principal" in node:
        principal = node["kerberos_principal"]
        if isinstance(principal, str) and re.fullmatch(r"HTTP/[^\s/@]+@[^\s@]+", principal.strip()):
            values["kerberos_principal"] = principal.strip()
        else:
            problems.error(
                config_path,
                node.line_of("kerberos_principal"),
                f"requests.kerberos_principal {principal!r} is not an HTTP service principal with a realm",
                "e.g. kerberos_principal: HTTP/requests.city.example@CITY.EXAMPLE (the portal's host as browsers know it)",
            )
    return values


def _database_url(config_path: Path, value: str) -> str:
    """An SQLAlchemy URL: a URL as written, a file path (relative to the config) as SQLite's."""
    if "://" in value:
        return value
    return f"sqlite:///{(config_path.parent / value).resolve()}"


def _stages(config_path: Path, node: Node, problems: Problems) -> tuple[Stage, ...] | None:
    raw = node["stages"]
    example = "e.g. stages: [{name: Department Director, approvers: department-directors}]"
    if not isinstance(raw, Items) or not raw:
        problems.error(
            config_path, node.line_of("stages"), "requests.stages must be a list of stages", example
        )
        return None
    errors_before = len(problems.errors)
    stages = []
    for entry, line in zip(raw, raw.item_lines, strict=True):
        stage = _stage(config_path, entry, line, problems)
        if stage is not None:
            stages.append(stage)
    directors = [stage for stage in stages if stage.by_directors]
    if len(problems.errors) == errors_before and len(directors) != 1:
        problems.error(
            config_path,
            node.line_of("stages"),
            f"requests.stages has {len(directors)} stages decided by department-directors; it needs exactly one",
            "the grant names that stage's approver, whom the proxy checks live: keep one "
            "stage with approvers: department-directors",
        )
    return tuple(stages) if len(problems.errors) == errors_before else None


def _stage(config_path: Path, entry: object, line: int, problems: Problems) -> Stage | None:
    if not isinstance(entry, Node):
        problems.error(config_path, line, "a stage must be a mapping", "write - name: ..., approvers: ...")
        return None
    errors_before = len(problems.errors)
    for key in sorted(set(entry) - set(_STAGE_KEYS)):
        problems.error(
            config_path,
            entry.line_of(key),
            f'unknown stage setting "{key}"',
            f"known: {', '.join(_STAGE_KEYS)}",
        )
    name = str(entry.get("name") or "").strip()
    if not name:
        problems.error(config_path, line, "a stage needs a name", "e.g. name: Department Director")
    group = None
    approvers = entry.get("approvers")
    if isinstance(approvers, Node) and set(approvers) == {"group"} and str(approvers["group"]).strip():
        group = str(approvers["group"]).strip().casefold()
    elif approvers != DEPARTMENT_DIRECTORS:
        problems.error(
            config_path,
            entry.line_of("approvers") if "approvers" in entry else line,
            f"stage approvers {approvers!r} is not department-directors or {{group: <cn>}}",
            "write approvers: department-directors, or approvers: {group: communications-office}",
        )
    days = 3
    if "escalate_after_business_days" in entry:
        days = (
            _whole(
                config_path,
                entry,
                "escalate_after_business_days",
                1,
                60,
                problems,
                "escalate_after_business_days",
            )
            or days
        )
    if len(problems.errors) > errors_before:
        return None
    return Stage(name, group, days)


def _whole(
    config_path: Path, node: Node, key: str, low: int, high: int, problems: Problems, label: str
) -> int | None:
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.error(
            config_path,
            node.line_of(key),
            f"{label} {value!r} is not a whole number from {low} to {high}",
            f"e.g. {key}: {low if low > 1 else 3}",
        )
        return None
    return value


_EMAIL_KEYS = (
    "smtp_host",
    "smtp_port",
    "security",
    "sender",
    "username",
    "password_file",
    "ca_file",
    "remind_days_before",
    "timeout_seconds",
)
_EMAIL_EXAMPLE = "e.g. email: {smtp_host: mail.city.example, sender: citygate@city.example}"
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)
# An address as SMTP carries it: nothing a header would have to quote, and no line break.
MAIL_ADDRESS = re.compile(r"[^@\s\"<>(),;:\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _email(config_path: Path, requests: Node, problems: Problems) -> EmailSettings | None:
    """`requests.email`, when every setting in it is right (each wrong one is reported)."""
    section = requests["email"]
    if not isinstance(section, Node):
        problems.error(
            config_path,
            requests.line_of("email"),
            "requests.email must be a mapping of mail settings",
            _EMAIL_EXAMPLE,
        )
        return None
    errors_before = len(problems.errors)
    # A `password:` is reported by _smtp_login, which says where a password goes instead.
    for key in sorted(set(section) - set(_EMAIL_KEYS) - {"password"}):
        problems.error(
            config_path,
            section.line_of(key),
            f'unknown setting "requests.email.{key}"',
            f"known email settings: {', '.join(_EMAIL_KEYS)}",
        )
    host, security = _smtp_server(config_path, section, problems)
    port = _email_number(config_path, section, "smtp_port", 1, 65535, _DEFAULT_SMTP_PORTS[security], problems)
    sender = _sender(config_path, section, problems)
    username, password_file = _smtp_login(config_path, section, problems)
    ca_file = _email_file(
        config_path,
        section,
        "ca_file",
        "the PEM file of the CA that signed the mail server's certificate",
        problems,
    )
    remind = _email_number(config_path, section, "remind_days_before", 1, 60, 7, problems)
    timeout = _email_number(config_path, section, "timeout_seconds", 1, 300, 10, problems)
    if "portal_url" not in requests:
        problems.warning(
            config_path,
            requests.line_of("email"),
            "requests.email is set without requests.portal_url: the mails cannot link the portal",
            "add portal_url: https://requests.city.example (where citygate portal is served)",
        )
    if len(problems.errors) > errors_before or host is None or sender is None:
        return None
    return EmailSettings(host, sender, port, security, username, password_file, ca_file, remind, timeout)


def _smtp_server(config_path: Path, section: Node, problems: Problems) -> tuple[str | None, SmtpSecurity]:
    """The mail server's host and how it is reached: in clear only on this machine."""
    raw = section.get("smtp_host")
    host = raw.strip() if isinstance(raw, str) else ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None and not _HOST_NAME.fullmatch(host):
        problems.error(
            config_path,
            section.line_of("smtp_host"),
            "requests.email.smtp_host is missing"
            if raw is None
            else f"requests.email.smtp_host {raw!r} is not a host name or address",
            "e.g. smtp_host: mail.city.example (the city's mail server)",
        )
        return None, SmtpSecurity.STARTTLS
    security = SmtpSecurity.STARTTLS
    if "security" in section:
        try:
            security = SmtpSecurity(str(section["security"]))
        except ValueError:
            problems.error(
                config_path,
                section.line_of("security"),
                f"requests.email.security {section['security']!r} is not starttls, tls or none",
                "write security: starttls (port 587, the default) or security: tls (port 465)",
            )
    on_this_machine = (
        address.is_loopback if address is not None else host.casefold().rstrip(".") == "localhost"
    )
    if security is SmtpSecurity.NONE and not on_this_machine:
        problems.error(
            config_path,
            section.line_of("security"),
            f"requests.email.security none would send mail (and the SMTP password) to {host} in clear; "
            "it is allowed only to a relay on this machine (localhost, 127.0.0.1 or ::1)",
            "use security: starttls (port 587) or tls (port 465); or run a relay here and write smtp_host: localhost",
        )
    return host, security


def _sender(config_path: Path, section: Node, problems: Problems) -> str | None:
    raw = section.get("sender")
    value = raw.strip() if isinstance(raw, str) else ""
    _, address = parseaddr(value)
    # A line break would start a header of its own: refused here, not at the first send.
    if not value or "\n" in value or "\r" in value or not MAIL_ADDRESS.fullmatch(address):
        problems.error(
            config_path,
            section.line_of("sender"),
            "requests.email.sender is missing"
            if raw is None
            else f"requests.email.sender {raw!r} is not a mail address",
            "e.g. sender: citygate@city.example, or sender: City of Example <citygate@city.example> (the From of every notice)",
        )
        return None
    return value


def _smtp_login(config_path: Path, section: Node, problems: Problems) -> tuple[str | None, Path | None]:
    """The mail server account: a user name and the file its password is in, both or neither."""
    raw = section.get("username")
    username = raw.strip() if isinstance(raw, str) and raw.strip() else None
    if raw is not None and username is None:
        problems.error(
            config_path,
            section.line_of("username"),
            f"requests.email.username {raw!r} is not a user name",
            "e.g. username: citygate (the mail server's account for the proxy)",
        )
    if "password" in section:
        problems.error(
            config_path,
            section.line_of("password"),
            "requests.email.password: a password is never written in the configuration",
            "put it alone in a file only citygate can read, and write password_file: <that file> (then remove it here)",
        )
    password_file = _email_file(
        config_path, section, "password_file", "a file holding the SMTP password alone (mode 0600)", problems
    )
    if ("username" in section) != ("password_file" in section):
        given, missing = (
            ("username", "password_file") if "username" in section else ("password_file", "username")
        )
        problems.error(
            config_path,
            section.line_of(given),
            f"requests.email.{given} is set without {missing}",
            "give both username and password_file to sign in to the mail server, or neither",
        )
    return username, password_file


def _email_file(config_path: Path, section: Node, key: str, what: str, problems: Problems) -> Path | None:
    """A file named relative to the config file: found missing now, not at the first send."""
    if key not in section:
        return None
    raw = section[key]
    path = config_path.parent / raw.strip() if isinstance(raw, str) and raw.strip() else None
    if path is None or not path.is_file():
        problems.error(
            config_path,
            section.line_of(key),
            f"requests.email.{key} {str(path) if path else repr(raw)} is not a file",
            f"give {what}, relative to the config file",
        )
        return None
    return path


def _email_number(
    config_path: Path, section: Node, key: str, low: int, high: int, default: int, problems: Problems
) -> int:
    """A whole-number setting, or its default when absent (or wrong, which is reported)."""
    if key not in section:
        return default
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.error(
            config_path,
            section.line_of(key),
            f"requests.email.{key} {value!r} is not a whole number from {low} to {high}",
            f"e.g. {key}: {default}",
        )
        return default
    return value
