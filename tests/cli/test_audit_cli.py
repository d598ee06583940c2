"""`citygate audit verify` and `citygate logs` as security staff run them: help, and mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from demo_config import requests_city

from citygate.proxy.policy import load_policy
from citygate.proxy.requests.log import EvidenceLog

ROOT = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")


def citygate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CITYGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [("audit", "verify"), ("logs",)])
def test_each_command_has_help_with_examples(command):
    result = citygate(*command, "--help")

    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert f"citygate {' '.join(command)} " in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("audit", "verify", "/nonexistent/log"), "no such file or folder: /nonexistent/log"),
        (("audit", "verify", ".", "--anchor", "12:abc"), "is not CHAIN:SEQ:SHA256 or SEQ:SHA256"),
        (("logs", "/nonexistent/log"), "no such file or folder: /nonexistent/log"),
        (("logs", ".", "--since", "last tuesday"), "is not a time; use a date"),
        (("logs", ".", "--tz", "Mars/Olympus"), 'unknown timezone "Mars/Olympus"'),
    ],
)
def test_mistakes_exit_2_and_say_what_to_do(args, message):
    result = citygate(*args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_of_a_folder_without_logs_says_so(tmp_path):
    result = citygate("audit", "verify", str(tmp_path))

    assert result.returncode == 2
    assert "no access-log files found" in result.stderr


def test_the_csv_columns_are_the_record_fields_in_the_record_order():
    from citygate.proxy.audit.record import DECISION_FIELDS
    from citygate.proxy.cli.audit import CSV_FIELDS

    shared = [field for field in CSV_FIELDS if field in DECISION_FIELDS]
    assert shared == [field for field in DECISION_FIELDS if field in CSV_FIELDS]
    assert set(CSV_FIELDS) - set(DECISION_FIELDS) == {"local_time", "citygate.chain.seq"}


def test_verify_without_a_path_verifies_the_configured_log_folder(tmp_path):
    # A chain written by the request CLI's evidence log is enough: requests_city keeps it in tmp.
    config = requests_city(tmp_path)
    policy = load_policy(config)
    with EvidenceLog(policy.features.audit, policy.timezone, writer="cli") as evidence:
        evidence.record({"event.action": "test", "event.kind": "event"})

    result = citygate("audit", "verify", "--config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert str(tmp_path / "log") in result.stdout and "OK:" in result.stdout


def test_unnamed_anchors_with_several_chains_ask_for_the_chain(tmp_path):
    for worker in ("worker-0", "worker-1"):
        (tmp_path / worker).mkdir()
        (tmp_path / worker / "citygate-audit.jsonl").write_text("")

    result = citygate("audit", "verify", str(tmp_path), "--anchor", "12:" + "a" * 64)

    assert result.returncode == 2
    assert "name each anchor's chain" in result.stderr


def test_a_misspelled_site_is_named_with_the_site_it_likely_meant():
    result = citygate("logs", ".", "--site", "facebok")

    assert result.returncode == 2
    assert "--site facebok is no site of the catalog: did you mean facebook (Facebook)?" in result.stderr
    assert citygate("logs", ".", "--site", "www.facebook.com").returncode == 0  # a domain of a site
