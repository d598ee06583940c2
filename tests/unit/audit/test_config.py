"""The `audit:` section: defaults, paths relative to the config file, and mistakes with file,
line and fix (through the real `load_policy`, as `citygate check` runs it)."""

import pytest
from rsyslog import write_collector_pki

from citygate.directory.problems import ConfigError
from citygate.proxy.audit.config import (
    DEFAULT_DIRECTORY,
    DEFAULT_SPOOL_MAX_BYTES,
    AuditSettings,
    Fsync,
    SyslogSettings,
)


def test_without_a_section_the_defaults_apply(policy_files):
    settings = policy_files.load().features.audit

    assert settings == AuditSettings()
    assert settings.directory == DEFAULT_DIRECTORY
    assert settings.fail_closed is True and settings.include_query is False
    assert settings.retention_days is None  # nothing is deleted unless a city decides to


def test_every_setting_is_read_and_the_folder_is_relative_to_the_config(policy_files):
    config = policy_files.mini_config + (
        "audit:\n"
        "  directory: ../var/log\n"
        "  rotate_bytes: 2048\n"
        "  rotate_daily: false\n"
        "  compress: false\n"
        "  retention_days: 90\n"
        "  flush_interval_ms: 50\n"
        "  max_buffered_records: 10\n"
        "  fsync: never\n"
        "  include_query: true\n"
        "  log_ordinary_connections: true\n"
        "  stdout: true\n"
        "  syslog: {address: udp://127.0.0.1:5514, facility: authpriv, app_name: cg}\n"
        "  fail_closed: false\n"
        "  anchor_interval_s: 5\n"
    )

    settings = policy_files.load(config=config).features.audit

    assert settings == AuditSettings(
        directory=policy_files.root / "../var/log",
        rotate_bytes=2048,
        rotate_daily=False,
        compress=False,
        retention_days=90,
        flush_interval_ms=50,
        max_buffered_records=10,
        fsync=Fsync.NEVER,
        include_query=True,
        log_ordinary_connections=True,
        stdout=True,
        syslog=SyslogSettings("udp://127.0.0.1:5514", "authpriv", "cg"),
        fail_closed=False,
        anchor_interval_s=5,
    )


@pytest.mark.parametrize(
    ("setting", "message", "fix"),
    [
        ("rotate_bytes: 10", "audit.rotate_bytes 10 is not a whole number", "e.g. rotate_bytes"),
        ("fail_closed: maybe", "audit.fail_closed 'maybe' is not true or false", "fail_closed: true"),
        ("retention_days: 0", "audit.retention_days 0 is not a positive number", "retention_days: 730"),
        ("fsync: sometimes", "audit.fsync 'sometimes' is not one of flush, rotate, never", "fsync: flush"),
        ("syslog: {address: 10.0.0.1}", "is not a syslog address", "udp://HOST:PORT"),
        ("syslog: {address: /dev/log, facility: mail2}", "is not a syslog facility", "local0"),
        ("rotate_every: 5", 'unknown setting "audit.rotate_every"', "known audit settings"),
    ],
)
def test_a_mistake_names_file_line_and_fix(policy_files, problem_with, setting, message, fix):
    config = policy_files.mini_config + "audit:\n  directory: logs\n  " + setting + "\n"

    problem = problem_with(policy_files.problems(config=config), message)

    assert problem.path == policy_files.config
    assert problem.line == policy_files.mini_config.count("\n") + 3
    assert fix in problem.fix


def test_a_retention_shorter_than_two_years_is_the_city_s_choice_but_check_warns(policy_files):
    config = policy_files.mini_config + "audit:\n  retention_days: 90\n"

    policy = policy_files.load(config=config)

    assert policy.features.audit.retention_days == 90
    [warning] = [w for w in policy.warnings if "retention_days" in w]
    assert "younger than two years" in warning and "§34090" in warning and "retention_days: 730" in warning
    assert not [
        w
        for w in policy_files.load(
            config=policy_files.mini_config + "audit:\n  retention_days: 730\n"
        ).warnings
        if "retention" in w
    ]


def test_the_host_name_records_and_anchors_give_is_checked(policy_files):
    named = policy_files.load(config=policy_files.mini_config + "audit:\n  host_name: proxy1\n")
    assert named.features.audit.host_name == "proxy1"

    with pytest.raises(ConfigError, match=r"audit\.host_name 'proxy 1' is not a host name"):
        policy_files.load(config=policy_files.mini_config + "audit:\n  host_name: proxy 1\n")


# --- the SIEM copy over TCP and TLS (audit.syslog) ------------------------------------------------


@pytest.fixture
def siem_pki(policy_files):
    """The collector's CA and a client certificate, beside the configuration."""
    return write_collector_pki(policy_files.root / "siem")


def test_a_tls_collector_with_its_ca_a_client_certificate_and_a_spool(policy_files, siem_pki):
    config = policy_files.mini_config + (
        "audit:\n"
        "  directory: logs\n"
        "  syslog:\n"
        "    address: tls://siem.city.example:6514\n"
        "    ca_file: siem/ca.pem\n"
        "    cert_file: siem/client.pem\n"
        "    key_file: siem/client.key\n"
        "    server_name: collector.city.example\n"
        "    spool_directory: ../spool\n"
        "    spool_max_bytes: 1048576\n"
        "    facility: local4\n"
    )

    syslog = policy_files.load(config=config).features.audit.syslog

    assert syslog == SyslogSettings(
        "tls://siem.city.example:6514",
        "local4",
        "citygate",
        ca_file=policy_files.root / "siem/ca.pem",
        cert_file=policy_files.root / "siem/client.pem",
        key_file=policy_files.root / "siem/client.key",
        server_name="collector.city.example",
        spool_directory=policy_files.root / "../spool",
        spool_max_bytes=1048576,
    )
    assert syslog.transport == "tls"


def test_a_tcp_collector_spools_in_the_audit_directory_by_default(policy_files):
    config = policy_files.mini_config + "audit:\n  syslog: {address: 'tcp://[2001:db8::5]:514'}\n"

    syslog = policy_files.load(config=config).features.audit.syslog

    assert syslog == SyslogSettings("tcp://[2001:db8::5]:514")
    assert syslog.transport == "tcp" and syslog.spool_directory is None  # the writer's syslog-spool
    assert syslog.spool_max_bytes == DEFAULT_SPOOL_MAX_BYTES == 1 << 30


@pytest.mark.parametrize(
    ("lines", "message", "fix"),
    [
        (["address: tcp://siem.city.example"], "is not a syslog address", "tls://HOST:PORT"),
        (
            ["address: tls://siem.city.example:6514"],
            "audit.syslog.ca_file is missing",
            "ca_file: /etc/citygate/siem-ca.pem",
        ),
        (
            ["address: tls://siem:6514", "ca_file: nowhere.pem"],
            "audit.syslog.ca_file 'nowhere.pem' is not a file",
            "PEM file",
        ),
        (
            ["address: tls://siem:6514", "ca_file: siem/client.key"],
            "is not a usable PEM CA file",
            "export the CA",
        ),
        (
            ["address: tls://siem:6514", "ca_file: siem/ca.pem", "cert_file: siem/client.pem"],
            "audit.syslog.cert_file is given without key_file",
            "give both",
        ),
        (
            [
                "address: tls://siem:6514",
                "ca_file: siem/ca.pem",
                "key_file: siem/server.key",  # another certificate's key
                "cert_file: siem/client.pem",
            ],
            "are not a usable certificate and key",
            "belongs to it",
        ),
        (
            ["address: tls://siem:6514", "ca_file: siem/ca.pem", "server_name: siem city"],
            "audit.syslog.server_name 'siem city' is not a host name",
            "server_name: siem.city.example",
        ),
        (
            ["address: tcp://siem:514", "ca_file: siem/ca.pem"],
            "audit.syslog.ca_file applies to tls:// addresses only",
            "use address: tls://",
        ),
        (
            ["address: udp://siem:514", "spool_max_bytes: 1048576"],
            "audit.syslog.spool_max_bytes applies to tcp:// and tls:// addresses only",
            "or remove spool_max_bytes",
        ),
        (
            ["address: tcp://siem:514", "spool_max_bytes: 1000"],
            "audit.syslog.spool_max_bytes 1000 is not a whole number from 65536",
            "spool_max_bytes: 1073741824",
        ),
        (
            ["address: tcp://siem:514", "spool_directory: ''"],
            "audit.syslog.spool_directory '' is not a folder path",
            "syslog-spool",
        ),
        (
            ["address: tcp://siem:514", "spool_dir: /var/spool"],
            'unknown setting "audit.syslog.spool_dir"',
            "spool_directory",
        ),
    ],
)
def test_a_syslog_mistake_names_file_line_and_fix(policy_files, siem_pki, problem_with, lines, message, fix):
    config = policy_files.mini_config + "audit:\n  syslog:\n" + "".join(f"    {line}\n" for line in lines)

    problems = policy_files.problems(config=config)
    problem = problem_with(problems, message)

    assert problem.path == policy_files.config
    assert problem.line == policy_files.mini_config.count("\n") + 2 + len(lines)  # the last line given
    assert fix in problem.fix
    with pytest.raises(ConfigError):  # syslog is never left half on
        policy_files.load(config=config)
