"""`citygate check` on the Kerberos keytab, against keytabs exported from a real MIT KDC."""

from __future__ import annotations

import grp
from pathlib import Path

import pytest
import yaml
from demo_config import demo_config
from kdc import SERVICE

from citygate.proxy.cli import main


def write_config(tmp_path: Path, keytab: Path, principal: str = SERVICE) -> Path:
    kerberos = {"keytab": str(keytab), "principal": principal}
    return demo_config(tmp_path, identity={"sign_in": ["negotiate", "basic"], "kerberos": kerberos})


def check(config: Path, capsys) -> tuple[int, str, str]:
    status = main(["check", "--config", str(config), "--no-directory"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_good_keytab_reports_its_key_versions_and_enctypes(kdc, tmp_path, capsys):
    keytab = kdc.service_keytab(SERVICE, tmp_path / "proxy.keytab")
    status, out, err = check(write_config(tmp_path, keytab), capsys)

    assert status == 0, err
    assert (
        f"keytab {keytab}: {SERVICE} key version 1: aes256-cts-hmac-sha1-96, aes128-cts-hmac-sha1-96" in out
    )
    assert "warning" not in out


def test_a_missing_keytab(kdc, tmp_path, capsys):
    status, _, err = check(write_config(tmp_path, tmp_path / "nowhere.keytab"), capsys)

    assert status == 1  # a configuration error, found when the configuration loads
    assert f"identity.kerberos.keytab {tmp_path / 'nowhere.keytab'} is not a file" in err
    assert "ktpass" in err and "kadmin ktadd" in err


def test_a_keytab_without_the_principal(kdc, tmp_path, capsys):
    keytab = kdc.service_keytab(SERVICE, tmp_path / "proxy.keytab")
    status, _, err = check(write_config(tmp_path, keytab, "HTTP/elsewhere.test.lan@TEST.LAN"), capsys)

    assert status == 1
    assert f"holds no key for HTTP/elsewhere.test.lan@TEST.LAN (it holds: {SERVICE})" in err
    assert "set identity.kerberos.principal" in err


@pytest.mark.parametrize(
    ("mode", "warning"),
    [
        (0o644, "is open to every user of this machine (mode 0644)"),
        (0o640, "is open to the group {group} (mode 0640)"),
    ],
)
def test_a_keytab_others_can_read_is_a_warning(kdc, tmp_path, capsys, mode, warning):
    keytab = kdc.service_keytab(SERVICE, tmp_path / "proxy.keytab")
    keytab.chmod(mode)
    status, out, _ = check(write_config(tmp_path, keytab), capsys)

    assert status == 0
    group = grp.getgrgid(keytab.stat().st_gid).gr_name
    assert warning.format(group=group) in out and "chmod 0600" in out


def test_rc4_only_keys_are_flagged_with_the_ad_fix(kdc, tmp_path, capsys):
    principal = "HTTP/rc4.test.lan@TEST.LAN"
    kdc.add_service(principal, enctypes="rc4-hmac:normal")
    keytab = kdc.service_keytab(principal, tmp_path / "rc4.keytab")
    status, out, err = check(write_config(tmp_path, keytab, principal), capsys)

    assert status == 1
    assert "key version 1: arcfour-hmac" in out
    assert "RC4 or DES only" in err
    assert "msDS-SupportedEncryptionTypes: 24" in err


def test_a_file_that_is_no_keytab(kdc, tmp_path, capsys):
    keytab = tmp_path / "proxy.keytab"
    keytab.write_bytes(b"not a keytab at all")
    keytab.chmod(0o600)
    status, _, err = check(write_config(tmp_path, keytab), capsys)

    assert status == 1
    assert "cannot be read as a keytab" in err


@pytest.mark.parametrize("sign_in", [["basic"]])
def test_no_keytab_check_when_negotiate_is_off(tmp_path, capsys, sign_in):
    unread = tmp_path / "unread.keytab"
    unread.write_bytes(b"not a keytab: never read while Negotiate is off")
    config = write_config(tmp_path, unread)
    document = yaml.safe_load(config.read_text())
    document["identity"]["sign_in"] = sign_in
    config.write_text(yaml.safe_dump(document))
    status, out, _ = check(config, capsys)

    assert status == 0
    assert "key version" not in out


def test_an_rc4_only_keytab_from_active_directory_names_the_attribute_to_set(samba_ad, tmp_path, capsys):
    # An SPN given to an account without msDS-SupportedEncryptionTypes, as `setspn` alone leaves
    # it: Samba, like Windows AD, exports (and seals tickets with) RC4 keys only.
    spn = "HTTP/rc4.city.test"
    samba_ad.add_service("svc-rc4-proxy", spn)
    keytab = samba_ad.export_keytab(spn, tmp_path / "rc4.keytab")
    status, out, err = check(write_config(tmp_path, keytab, f"{spn}@{samba_ad.realm}"), capsys)

    assert status == 1
    # Key version 2: the account's password was set once after it was created.
    assert f"{spn}@{samba_ad.realm} key version 2: arcfour-hmac\n" in out
    assert "RC4 or DES only" in err
    assert "msDS-SupportedEncryptionTypes: 24" in err
