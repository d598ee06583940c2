"""deploy/systemd/citygate.service: systemd accepts it, and it agrees with the CLI and the README."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from deployfiles import UNIT, option, parse_run, readme_section, set_options, unit_entries, unit_values

CITYGATE = "/opt/citygate/bin/citygate"
EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")


def exec_start() -> list[str]:
    (line,) = unit_values("ExecStart")
    return shlex.split(line)


def with_true_binaries(text: str) -> str:
    """The unit with every Exec*= program replaced by /bin/true (its arguments kept), so that
    systemd-analyze's check that the programs exist passes on a machine without citygate."""
    # Continuation lines stay as they are: only the program at the start of an Exec line changes.
    pattern = rf"^((?:{'|'.join(EXEC_KEYS)})=[-@:+!]*)(\S+)"
    return re.sub(pattern, r"\1/bin/true", text, flags=re.M)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is missing: run tools/system-deps (it installs Debian's systemd package)",
            pytrace=False,
        )
    copy = tmp_path / UNIT.name
    copy.write_text(with_true_binaries(UNIT.read_text(encoding="utf-8")), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).strip()
    # verify exits 0 on an unknown key or a value it cannot parse, and only says so: no output at all.
    assert result.returncode == 0 and not output, output


def test_the_binary_replacement_leaves_the_arguments() -> None:
    text = with_true_binaries(UNIT.read_text(encoding="utf-8"))
    assert CITYGATE not in text and "/bin/kill" not in text
    assert "--listen-port 3128" in text and "-HUP $MAINPID" in text


def test_exec_start_is_a_valid_citygate_run() -> None:
    argv = exec_start()
    assert argv[0] == CITYGATE
    parse_run(argv[1:])
    assert option(argv, "--listen-port") == "3128"
    assert option(argv, "--listen-host") == "0.0.0.0"
    assert option(argv, "--confdir") == "/var/lib/citygate/ca"
    assert set_options(argv) == {"citygate_audit_directory": "/var/log/citygate"}
    # systemd makes (and owns for the service's user) the folders it writes.
    assert unit_values("StateDirectory") == ["citygate"]
    assert unit_values("LogsDirectory") == ["citygate"]


def test_start_and_reload_check_the_configuration_first() -> None:
    config = option(exec_start(), "--config")
    check = [CITYGATE, "check", "--no-directory", "--config", config]
    assert [shlex.split(line) for line in unit_values("ExecStartPre")] == [check]
    reload_lines = [shlex.split(line) for line in unit_values("ExecReload")]
    assert reload_lines == [check, ["/bin/kill", "-HUP", "$MAINPID"]]


def test_it_stops_the_supervisor_which_stops_its_workers() -> None:
    assert unit_values("KillMode") == ["mixed"]
    assert unit_values("KillSignal") == ["SIGTERM"]


def test_it_is_hardened() -> None:
    service = unit_entries()["Service"]
    expected = {
        "User": "citygate",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged"]


def test_memory_deny_write_execute_stays_off() -> None:
    """mitmproxy sets pyOpenSSL callbacks on every intercepted TLS connection, and cffi's
    callbacks need memory that is writable and executable: with MemoryDenyWriteExecute=yes the
    block page over HTTPS and path-scoped grants fail."""
    assert unit_values("MemoryDenyWriteExecute") in ([], ["no"])


def test_memory_deny_write_execute_breaks_pyopenssl_callbacks() -> None:
    """Why: the kernel's own write-xor-execute switch (PR_SET_MDWE, what systemd applies where
    the kernel has it) makes mitmproxy's ALPN callback fail."""
    code = textwrap.dedent(
        """
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            sys.exit(3)                       # a kernel older than 6.3
        from OpenSSL import SSL
        context = SSL.Context(SSL.TLS_METHOD)
        try:
            context.set_alpn_select_callback(lambda connection, protocols: protocols[0])
        except MemoryError:
            sys.exit(0)
        sys.exit(1)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or newer has it)")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_vm_steps_match_the_unit() -> None:
    vm = readme_section("Installing on a VM (systemd)")
    assert "python3.12 -m venv /opt/citygate" in vm
    assert "/opt/citygate/bin/pip install -c constraints.txt ." in vm
    assert f"install -m 0644 deploy/systemd/citygate.service /etc/systemd/system/{UNIT.name}" in vm
    assert "useradd --system" in vm and " citygate\n" in vm
    (environment_file,) = unit_values("EnvironmentFile")
    assert environment_file.lstrip("-") in vm
    config = option(exec_start(), "--config")
    assert config in vm
    for folder in (option(exec_start(), "--confdir"), set_options(exec_start())["citygate_audit_directory"]):
        assert folder in vm, folder
    (documentation,) = unit_values("Documentation", "Unit")
    assert documentation.removeprefix("file://") in vm
    assert "systemctl reload citygate" in vm
