"""The `citygate` command as an admin or a director runs it: the installed console script."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "citygate.yaml"
CITYGATE = str(Path(sys.executable).parent / "citygate")


def citygate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CITYGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """The demo config copied to a temp folder, so a test can break a grant file."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(
        ROOT / "directory", tmp_path / "directory", ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    return tmp_path / "config" / "citygate.yaml"


# --- check -------------------------------------------------------------------------------------


def test_check_names_the_line_of_a_directory_mistake(config_copy: Path):
    text = config_copy.read_text(encoding="utf-8")
    ldap = (
        "directory:\n  backend: ldap\n  preset: openldap\n  servers: [ldap://127.0.0.1:3890]\n"
        "  base_dn: dc=city,dc=example\n  bind_dn: cn=citygate,dc=city,dc=example\n"
        "  bind_password_env: CITYGATE_TEST_NO_SUCH_VARIABLE\n  login_attribute:\n"
    )
    config_copy.write_text(
        text.replace("directory:\n  backend: static\n  ldif: ../directory/demo.ldif\n", ldap)
    )
    line = ldap.count("\n") + text[: text.index("directory:\n")].count("\n")

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 1
    assert f"citygate.yaml:{line}: directory.login_attribute: is empty" in result.stderr


def test_check_accepts_the_demo_config():
    result = citygate("check", "--config", str(DEMO_CONFIG))

    assert result.returncode == 0, result.stderr
    assert "valid:" in result.stdout
    assert "every grant would work now" in result.stdout


def test_check_names_file_line_and_fix_of_a_broken_grant(config_copy: Path):
    grant_file = config_copy.parent / "grants" / "parks.yaml"
    text = grant_file.read_text()
    text = text.replace("sites: [facebook, instagram]", "sites: [facebok, instagram]")
    text = text.replace("expires: 2027-01-11", "expires: 2029-01-11")
    grant_file.write_text(text)

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 1
    lines = text.splitlines()
    sites_line = next(i for i, line in enumerate(lines, 1) if "facebok" in line)
    expires_line = next(i for i, line in enumerate(lines, 1) if "expires:" in line)
    assert f'parks.yaml:{sites_line}: unknown site "facebok"; did you mean "facebook"?' in result.stderr
    assert (
        f"parks.yaml:{expires_line}: expires 2029-01-11 would give 1096 days of access from 2026-01-12"
        in result.stderr
    )
    assert "expire on or before 2027-01-11" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_fails_when_a_grant_would_not_work_against_the_directory(config_copy: Path):
    grant_file = config_copy.parent / "grants" / "communications.yaml"
    grant_file.write_text(grant_file.read_text().replace("approved_by: rpatel", "approved_by: ahernandez"))

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 1
    assert (
        "grant comms-2026-001 would not work now: approver_not_authorized: approved by ahernandez"
        in result.stdout
    )
    assert "the approver directs Parks, not Communications" in result.stdout
    assert "who can approve it: Ravi Patel (rpatel), Taylor Smith (tsmith)" in result.stdout
    # The problem, and no "valid" for the same configuration.
    assert "valid:" not in result.stdout
    assert "grant(s) or designee(s) would not work now (the files load: 23 sites" in result.stderr


def _with_x_pass_through(config: Path, value: str) -> int:
    """Set `pass_through_when_granted: <value>` on X's catalog entry; the line it is on."""
    sites = config.parent / "sites.yaml"
    setting = f"    pass_through_when_granted: {value}"
    entry = "    domains: [x.com, twitter.com, tweetdeck.com]\n"
    text = sites.read_text().replace(entry, entry + setting + "\n")
    sites.write_text(text)
    return text.splitlines().index(setting) + 1


def test_check_warns_about_a_site_that_passes_through_when_granted(config_copy: Path):
    line = _with_x_pass_through(config_copy, "true")

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 0, result.stderr  # a warning, not an error: the admin may accept it
    output = result.stdout + result.stderr
    assert f'sites.yaml:{line}: warning: allowed tunnels to "x" are passed through undecrypted' in output
    assert "domain fronting" in output


def test_check_refuses_a_pass_through_setting_that_is_not_true_or_false(config_copy: Path):
    line = _with_x_pass_through(config_copy, "sometimes")

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 1
    assert f'sites.yaml:{line}: pass_through_when_granted of site "x" must be true or false' in result.stderr


def test_check_reports_a_missing_config_file_without_a_traceback(tmp_path: Path):
    result = citygate("check", "--config", str(tmp_path / "nope.yaml"))

    assert result.returncode == 1
    assert "nope.yaml: file not found" in result.stderr
    assert "Traceback" not in result.stderr


# --- explain -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "url", "exit_code", "expected"),
    [
        (
            "jlee",
            "https://www.example.org/",
            0,
            ["ALLOW", "not_social_media", "passed through without decryption"],
        ),
        ("-", "http://www.facebook.com/", 1, ["AUTH_REQUIRED", "credentials_required"]),
        ("mnguyen", "http://www.facebook.com/", 1, ["DENY", "no_grant", "Ana Hernandez (ahernandez)"]),
        (
            "jlee",
            "https://www.facebook.com/CityOfExampleParks",
            0,
            [
                "ALLOW",
                "granted",
                "parks-2026-001",
                "ahernandez, director, department Parks",
                "decrypted so each request's path",
            ],
        ),
        ("jlee", "https://x.com/", 1, ["DENY", "no_grant", "X (Twitter)"]),
        (
            "jlee",
            "https://www.facebook.com/messages",
            1,
            ["DENY", "path_out_of_scope", "/messages is outside /CityOfExampleParks"],
        ),
        ("bjones", "https://www.reddit.com/", 1, ["DENY", "employee_disabled"]),
        ("nobody", "https://www.reddit.com/", 1, ["DENY", "unknown_employee"]),
        (
            "kwilliams",
            "https://x.com/",
            0,
            ["ALLOW", "granted", "comms-2026-001", "passed through without decryption"],
        ),
    ],
)
def test_explain_shows_reason_and_evidence(user, url, exit_code, expected):
    result = citygate("explain", user, url, "--at", "2026-06-01T12:00")

    assert result.returncode == exit_code, result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout


def test_explain_expiry_boundaries_in_city_time():
    last_day = citygate("explain", "dbrown", "https://nextdoor.com/", "--at", "2026-12-31T23:59")
    day_after = citygate("explain", "dbrown", "https://nextdoor.com/", "--at", "2027-01-01T00:00")
    before_start = citygate("explain", "dbrown", "https://nextdoor.com/", "--at", "2026-03-15T12:00")

    assert last_day.returncode == 0
    assert "grant_expired" in day_after.stdout
    assert "grant_not_yet_valid" in before_start.stdout


def test_explain_json_carries_decision_grant_and_evidence():
    result = citygate(
        "explain", "jlee", "https://www.facebook.com/CityOfExampleParks", "--at", "2026-06-01", "--json"
    )

    record = json.loads(result.stdout)
    assert record["result"] == "allow"
    assert record["reason"] == "granted"
    assert record["site"] == "facebook"
    assert record["grant"]["id"] == "parks-2026-001"
    assert record["grant"]["paths"] == {"facebook": ["/CityOfExampleParks"]}
    assert record["evidence"]["approver"] == "ahernandez"
    assert record["evidence"]["approver_role"] == "director"
    assert record["evidence"]["employee_department"] == "Parks"
    assert record["tunnel"].startswith("decrypted")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jlee", "https://x.com/", "--at", "next tuesday"], "is not a time"),
        (["jlee", "http://"], "has no host"),
    ],
)
def test_explain_rejects_bad_input_clearly(args, message):
    result = citygate("explain", *args)

    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("command", ["run", "check", "explain"])
def test_every_command_has_help_with_examples(command):
    result = citygate(command, "--help")

    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--config" in result.stdout


# --- run ---------------------------------------------------------------------------------------


def wait_for_listener(port: int, seconds: float = 20) -> None:
    """Until something accepts connections on 127.0.0.1:`port` (the proxy started), or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


def _environment_without_proxies() -> dict[str, str]:
    """This environment without *_proxy variables: curl must talk to the proxy under test only."""
    return {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}


def _status_through(port: int, url: str, env: dict[str, str]) -> str:
    """The HTTP status curl gets for `url` through the proxy on `port`."""
    curl = ["curl", "-sS", "--noproxy", "", "-x", f"http://127.0.0.1:{port}", "-o", "/dev/null"]
    answer = subprocess.run(
        [*curl, "-w", "%{http_code}", url], capture_output=True, text=True, timeout=20, env=env
    )
    return answer.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_serves_the_demo_and_stops_cleanly_on_sigterm(config_copy: Path, tmp_path: Path):
    port = _free_port()
    env = _environment_without_proxies()
    moved_log = tmp_path / "moved-log"
    process = subprocess.Popen(
        [
            CITYGATE,
            "run",
            "--config",
            str(config_copy),
            "--listen-port",
            str(port),
            "--confdir",
            str(tmp_path / "ca"),
            "--set",
            f"citygate_audit_directory={moved_log}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_for_listener(port)
        assert _status_through(port, "http://www.facebook.com/", env) == "407"
        assert (tmp_path / "ca" / "mitmproxy-ca-cert.pem").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    # The access log went only where --set moved it: the configuration's own folder
    # (audit.directory: ../var/log) was never started, not even for a moment.
    assert list(moved_log.rglob("citygate-audit.jsonl"))  # one folder per worker
    assert not (config_copy.parent.parent / "var").exists()


def test_run_with_a_broken_config_exits_with_the_problem(config_copy: Path, tmp_path: Path):
    (config_copy.parent / "grants" / "extra.yaml").write_text("grants:\n  - id: x\n")

    result = citygate(
        "run", "--config", str(config_copy), "--listen-port", "0", "--confdir", str(tmp_path / "ca")
    )

    assert result.returncode == 2
    assert 'extra.yaml:2: grant is missing "employee"' in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_misspelled_option_writes_nothing_and_suggests_the_option(
    config_copy: Path, tmp_path: Path
):
    log = config_copy.parents[1] / "var" / "log"  # the copy's audit.directory (../var/log)

    for workers in ("1", "2"):
        result = citygate(
            "run",
            "--config",
            str(config_copy),
            "--workers",
            workers,
            "--listen-port",
            "0",
            "--confdir",
            str(tmp_path / "ca"),
            "--set",
            "citygate_audit_directry=/tmp/elsewhere",
        )

        assert result.returncode == 2, result.stderr
        assert "citygate_audit_directry: did you mean citygate_audit_directory?" in result.stderr
        assert not log.exists(), sorted(log.rglob("*"))  # no access log started, no record written


def test_check_judges_each_grant_on_its_own(config_copy: Path):
    # jlee keeps a working grant for facebook; a second one, approved by a Director of another
    # department, must still be reported although the first would let jlee through.
    grant_file = config_copy.parent / "grants" / "parks.yaml"
    grant_file.write_text(
        grant_file.read_text() + "  - id: parks-2026-099\n    employee: jlee\n    sites: [facebook]\n"
        "    purpose: Answer residents' questions on the Parks page\n"
        "    approved_by: rpatel\n    approved_on: 2026-02-01\n    expires: 2026-12-31\n"
    )

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 1
    assert "grant parks-2026-099 would not work now: approver_not_authorized" in result.stdout
    assert "parks-2026-001" not in result.stdout


def test_pac_command_writes_the_demo_pac_file(tmp_path: Path):
    output = tmp_path / "proxy.pac"

    result = citygate("pac", "--output", str(output))

    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "function FindProxyForURL(url, host)" in text
    assert '"PROXY citygate.city.example:3128"' in text


def test_pac_command_without_proxies_says_what_to_add(config_copy: Path):
    text = config_copy.read_text()
    config_copy.write_text(text[: text.index("pac:")])

    result = citygate("pac", "--config", str(config_copy))

    assert result.returncode == 1
    assert 'has no "pac: proxies:"' in result.stderr


# --- the event loop -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "environment", "loop"),
    [
        ([], {}, "uvloop"),  # the default
        (["--event-loop", "uvloop"], {}, "uvloop"),
        (["--event-loop", "asyncio"], {"CITYGATE_EVENT_LOOP": "uvloop"}, "asyncio"),  # the option wins
        ([], {"CITYGATE_EVENT_LOOP": "uvloop"}, "uvloop"),
        ([], {"CITYGATE_EVENT_LOOP": "asyncio"}, "asyncio"),
    ],
)
def test_run_serves_on_the_chosen_event_loop(
    config_copy: Path, tmp_path: Path, arguments: list[str], environment: dict[str, str], loop: str
):
    port = _free_port()
    env = _environment_without_proxies()
    env.pop("CITYGATE_EVENT_LOOP", None)
    command = [CITYGATE, "run", "--workers", "1", "--config", str(config_copy), "--listen-port", str(port)]
    command += ["--confdir", str(tmp_path / "ca"), *arguments]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env | environment
    )
    try:
        wait_for_listener(port)
        # The proxy decides on this loop as on the other.
        assert _status_through(port, "http://www.facebook.com/", env) == "407"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"citygate: running on the {loop} event loop" in output
    assert "Traceback" not in output


def test_run_refuses_an_unknown_event_loop_in_the_environment(config_copy: Path, tmp_path: Path):
    env = {**os.environ, "CITYGATE_EVENT_LOOP": "trio"}
    result = subprocess.run(
        [CITYGATE, "run", "--config", str(config_copy), "--confdir", str(tmp_path / "ca")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )

    assert result.returncode == 2
    assert "CITYGATE_EVENT_LOOP='trio': the event loop is one of uvloop, asyncio" in result.stderr


# --- open files ---------------------------------------------------------------------------------


def test_run_raises_its_open_files_limit_to_the_hard_limit(config_copy: Path, tmp_path: Path):
    # Started as systemd and a login shell start it (soft 1,024): a relayed tunnel takes two
    # descriptors, so without this the proxy refuses connections past about 500 tunnels.
    port = _free_port()
    env = _environment_without_proxies()
    command = [CITYGATE, "run", "--workers", "2", "--config", str(config_copy), "--listen-port", str(port)]
    command += [
        "--confdir",
        str(tmp_path / "ca"),
        "--set",
        f"citygate_metrics_listen=127.0.0.1:{_free_port()}",
    ]

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=low_soft_limit,
    )
    try:
        wait_for_listener(port)
        # An answer: a worker has started serving (and logged its start).
        assert _status_through(port, "http://www.facebook.com/", env) == "407"
        workers = [
            int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        ]
        assert len(workers) == 2
        for pid in (process.pid, *workers):
            limits = Path(f"/proc/{pid}/limits").read_text()
            assert re.search(r"Max open files\s+4096\s+4096", limits), limits
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "with up to 4096 open files" in output


def test_explain_at_shows_a_grant_s_hours_inside_and_outside():
    # police-2026-002: dbrown, YouTube, Mon-Fri 07:00-18:00; 2026-06-01 is a Monday.
    morning = citygate("explain", "dbrown", "https://www.youtube.com/watch?v=1", "--at", "2026-06-01T10:00")
    evening = citygate("explain", "dbrown", "https://www.youtube.com/watch?v=1", "--at", "2026-06-01T20:00")

    assert morning.returncode == 0, morning.stdout + morning.stderr
    assert "granted" in morning.stdout and "police-2026-002" in morning.stdout
    assert "hours:    Mon-Fri 07:00-18:00 (city time)" in morning.stdout
    assert "each request is checked against the grant's pages and hours" in morning.stdout
    assert evening.returncode == 1
    assert "outside_hours" in evening.stdout
    assert "access resumes Tue 2026-06-02 07:00" in evening.stdout


def test_check_accepts_a_grant_outside_its_hours_now(config_copy: Path):
    # A grant's hours are when it works, not a fault: check passes at any time of day.
    now = datetime.now(ZoneInfo("America/Los_Angeles"))
    hour = next(h for h in range(23) if h != now.hour)
    (config_copy.parent / "grants" / "hours.yaml").write_text(
        "department: Police\ngrants:\n"
        "  - id: police-2026-097\n    employee: dbrown\n    sites: [facebook]\n"
        f"    purpose: Community liaison\n    hours: Mon-Sun {hour:02d}:00-{hour + 1:02d}:00\n"
        "    approved_by: lgarcia\n    approved_on: 2026-12-01\n    expires: 2027-11-30\n"
    )

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "every grant would work now against the directory" in result.stdout


def test_check_reports_group_grants_the_directory_cannot_honour(config_copy: Path):
    (config_copy.parent / "grants" / "groups.yaml").write_text(
        "department: Parks\ngrants:\n"
        "  - id: parks-2026-097\n    group: no-such-group\n    sites: [pinterest]\n"
        "    purpose: Share program flyers\n    approved_by: ahernandez\n"
        "    approved_on: 2026-02-02\n    expires: 2027-02-01\n"
        "  - id: parks-2026-098\n    group: parks-social-team\n    sites: [pinterest]\n"
        "    purpose: Share program flyers\n    approved_by: rpatel\n"
        "    approved_on: 2026-02-02\n    expires: 2027-02-01\n"
        "  - id: city-2026-099\n    city: true\n    sites: [youtube]\n    paths: {youtube: [/CityOfExample]}\n"
        "    purpose: The City's channel\n    approved_by: ahernandez\n"
        "    approved_on: 2026-02-02\n    expires: 2027-02-01\n"
    )

    result = citygate("check", "--config", str(config_copy))

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        "groups.yaml:3: grant parks-2026-097 would not work now: no_grant: group no-such-group has no members"
        in line
        for line in lines
    ), result.stdout
    assert any(
        "groups.yaml:10: grant parks-2026-098 would not work now: approver_not_authorized: approved by rpatel, "
        "but the approver directs Communications, not Parks (group parks-social-team); who can approve it: "
        "Ana Hernandez (ahernandez), Taylor Smith (tsmith)" in line
        for line in lines
    ), result.stdout
    assert any(
        "grant city-2026-099 would not work now: approver_not_authorized: approved by ahernandez, but a city-wide "
        "allowance must be approved by an executive (a City Manager), not a Director; who can approve it: "
        "Taylor Smith (tsmith)" in line
        for line in lines
    ), result.stdout
    assert "parks-2026-002" not in result.stdout  # the demo's own group grant works
