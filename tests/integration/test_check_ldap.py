"""`citygate check` against a real OpenLDAP: every grant verified live, clear failure when it is down."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from slapd import Slapd, directory_options, group_dn, person_dn

from citygate.proxy.cli import main

REPO = Path(__file__).resolve().parents[2]


def write_config(
    folder: Path,
    server: Slapd | None,
    preset: str = "openldap",
    *,
    directory: dict | None = None,
    identity: dict | None = None,
) -> Path:
    """A citygate.yaml with three grants, reading `server` (or the `directory` options given)."""
    today = datetime.now(ZoneInfo("America/Los_Angeles")).date()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grants").mkdir(exist_ok=True)

    def grant(grant_id: str, employee: str, site: str, approver: str) -> dict:
        return {
            "id": grant_id,
            "employee": employee,
            "sites": [site],
            "purpose": "Run the City's official accounts",
            "approved_by": approver,
            "approved_on": (today - timedelta(days=5)).isoformat(),
            "expires": (today + timedelta(days=60)).isoformat(),
        }

    grants = {
        "parks.yaml": {"department": "Parks", "grants": [grant("parks-1", "jlee", "facebook", "ahernandez")]},
        "comms.yaml": {
            "department": "Communications",
            "grants": [
                grant("comms-1", "kwilliams", "x", "rpatel"),
                grant("comms-2", "kwilliams", "youtube", "tsmith"),
            ],
        },
    }
    for name, content in grants.items():
        (folder / "grants" / name).write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    config = {
        "city": "City of Example",
        "timezone": "America/Los_Angeles",
        "catalog": str(REPO / "config" / "sites.yaml"),
        "grants": "grants",
        "approval": {"director_groups": ["directors"], "executive_groups": ["city-managers"]},
        "directory": {"backend": "ldap", **(directory or directory_options(server, folder, preset))},
    }
    if identity is not None:
        config["identity"] = identity
    elif preset == "active-directory":
        config["identity"] = {"sign_in": ["basic"]}  # no keytab here: passwords only
    path = folder / "citygate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("preset", ["openldap", "active-directory"])
def test_check_passes_when_every_grant_works(slapd, tmp_path, capsys, preset):
    config = write_config(tmp_path, slapd, preset)
    assert main(["check", "--config", str(config)]) == 0
    assert "every grant would work now against the directory" in capsys.readouterr().out


def test_check_against_a_real_active_directory(samba_ad, tmp_path, capsys):
    # The preset's default sign-in, Kerberos then Basic, with the keytab AD exported for the proxy.
    kerberos = {"keytab": str(samba_ad.keytab), "principal": samba_ad.service_principal}
    config = write_config(
        tmp_path, None, directory=samba_ad.directory_options(), identity={"kerberos": kerberos}
    )
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "every grant would work now against the directory" in out
    assert (
        f"{samba_ad.service_principal} key version 2: aes256-cts-hmac-sha1-96, aes128-cts-hmac-sha1-96" in out
    )
    samba_ad.disable("kwilliams")
    try:
        assert main(["check", "--config", str(config)]) == 1
    finally:
        samba_ad.enable("kwilliams")
    lines = [line for line in capsys.readouterr().out.splitlines() if "would not work now" in line]
    assert len(lines) == 2 and all("employee_disabled" in line for line in lines), lines


def test_check_lists_each_grant_the_directory_would_refuse(fresh_slapd, tmp_path, capsys):
    config = write_config(tmp_path, fresh_slapd)
    fresh_slapd.replace(person_dn("ahernandez"), "departmentNumber", "Police")
    fresh_slapd.remove_member(group_dn("directors"), person_dn("rpatel"))
    fresh_slapd.lock(person_dn("kwilliams"))
    assert main(["check", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "would not work now" in line]
    assert len(lines) == 3, captured.out
    parks, comms1, comms2 = (
        next(line for line in lines if f"grant {g} " in line) for g in ("parks-1", "comms-1", "comms-2")
    )
    assert "approver_not_authorized" in parks and "directs Police" in parks
    assert "employee_disabled" in comms1 and "employee_disabled" in comms2
    assert "3 grant(s) or designee(s) would not work now" in captured.err


def test_check_fails_clearly_when_the_directory_is_down(fresh_slapd, tmp_path, capsys):
    config = write_config(tmp_path, fresh_slapd)
    fresh_slapd.stop()
    assert main(["check", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "the directory did not answer, so no grant could be checked" in captured.err
    assert "Connection refused" in captured.err
    assert "would not work now" not in captured.out
    # The files alone can still be checked.
    assert main(["check", "--no-directory", "--config", str(config)]) == 0


def test_check_reports_a_password_in_the_yaml(slapd, tmp_path, capsys):
    config = write_config(tmp_path, slapd)
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["directory"]["bind_password"] = "hunter2"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert main(["check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "directory.bind_password" in err and "bind_password_file" in err
    assert "hunter2" not in err
