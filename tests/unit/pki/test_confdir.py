"""What `citygate check` says of the CA in a confdir (proxy/pki/confdir.py), on real files."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from city_pki import CityPKI, ca_certificate, name

from citygate.proxy.pki.certfiles import pem
from citygate.proxy.pki.confdir import CA_FILE, TRUSTED_FILES, ca_file, check_confdir
from citygate.proxy.pki.request import key_pem, new_key

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return CityPKI(tmp_path_factory.mktemp("city"))


def install(confdir: Path, city: CityPKI, *, passphrase: bytes | None = None, days: int = 730, order=None):
    """A confdir as `citygate ca install` writes it, with a CA `days` long."""
    key = new_key("ec")
    ca = ca_certificate(name("citygate proxy CA"), key.public_key(), city.root, city.root_key, days=days)
    confdir.mkdir(mode=0o700, exist_ok=True)
    chain = order(ca, city.root) if order else [ca, city.root]
    path = confdir / CA_FILE
    path.write_bytes(ca_file(key_pem(key, passphrase), chain))
    path.chmod(0o600)
    (confdir / TRUSTED_FILES[0]).write_bytes(pem(city.root))
    return path


def test_an_installed_subordinate_is_summed_up_in_one_line(city, tmp_path):
    path = install(tmp_path / "ca", city)

    found = check_confdir(tmp_path / "ca", None, NOW)

    assert found.errors == [] and found.warnings == []
    assert found.summary.startswith(
        f"{path}: CN=citygate proxy CA,O=City of Example, issued by CN=City of Example Root CA,O=City of Example; "
        "the chain is valid until "
    )
    assert f"the key in {path}: EC P-256, not encrypted, matches the certificate" in found.notes


def test_no_ca_yet_is_no_problem(tmp_path):
    found = check_confdir(tmp_path, None, NOW)

    assert found.errors == [] and found.warnings == []
    assert "none yet (citygate run makes a CA of its own there at its first start" in found.summary


@pytest.mark.parametrize(
    ("mode", "errors", "warnings"),
    [(0o600, 0, 0), (0o640, 0, 1), (0o604, 1, 0), (0o644, 1, 0)],
)
def test_a_key_others_may_read_is_an_error_a_group_a_warning(city, tmp_path, mode, errors, warnings):
    path = install(tmp_path / "ca", city)
    path.chmod(mode)

    found = check_confdir(tmp_path / "ca", None, NOW)

    assert (len(found.errors), len(found.warnings)) == (errors, warnings), found
    for problem in found.errors:
        assert f"the CA file {path} is open to every user of this machine (mode {mode:04o})" in problem
        assert "chmod 0600, owned by the user citygate runs as" in problem
    for problem in found.warnings:
        assert "is open to the group" in problem and f"(mode {mode:04o})" in problem


def test_a_folder_anyone_may_write_to_is_an_error(city, tmp_path):
    install(tmp_path / "ca", city)
    (tmp_path / "ca").chmod(0o777)

    found = check_confdir(tmp_path / "ca", None, NOW)

    assert any(
        "is writable by every user (mode 0777), who can replace the proxy's CA" in e for e in found.errors
    )


def test_a_key_that_is_not_the_certificates_is_an_error(city, tmp_path):
    path = install(tmp_path / "ca", city)
    other = new_key("ec")
    certificates = path.read_bytes().split(b"-----END PRIVATE KEY-----\n")[1]
    path.write_bytes(key_pem(other, None) + certificates)

    found = check_confdir(tmp_path / "ca", None, NOW)

    assert found.errors == [
        f"the key in {path} is not the key of its certificate (CN=citygate proxy CA,O=City of Example): mitmproxy "
        "would make certificates no browser accepts; install the certificate issued for this key (citygate ca install)"
    ]


def test_an_encrypted_key_is_checked_with_its_passphrase(city, tmp_path):
    path = install(tmp_path / "ca", city, passphrase=b"s3cret")

    without = check_confdir(tmp_path / "ca", None, NOW)
    wrong = check_confdir(tmp_path / "ca", b"wrong", NOW)
    right = check_confdir(tmp_path / "ca", b"s3cret", NOW)

    assert without.errors == []
    assert f"the key in {path} is encrypted; give its passphrase file to check" in " ".join(without.notes)
    assert wrong.errors == [
        f"the passphrase given does not decrypt the key in {path}; give the file holding the passphrase "
        "the key was encrypted with"
    ]
    assert right.errors == []
    assert f"the key in {path}: EC P-256, encrypted, matches the certificate" in right.notes


def test_a_ca_expiring_within_30_days_is_a_warning_and_an_expired_one_an_error(city, tmp_path):
    install(tmp_path / "soon", city, days=12)

    soon = check_confdir(tmp_path / "soon", None, NOW)
    later = check_confdir(tmp_path / "soon", None, NOW - timedelta(days=20))
    expired = check_confdir(tmp_path / "soon", None, NOW + timedelta(days=13))

    assert soon.errors == []
    [warning] = soon.warnings
    assert "the proxy's CA certificate (CN=citygate proxy CA,O=City of Example) expires in 11 days" in warning
    assert later.warnings == []
    assert any(
        error.startswith("CN=citygate proxy CA,O=City of Example is not valid before ")
        and error.endswith(" UTC; check this machine's clock, or wait until then")
        for error in later.errors
    ), later.errors
    [error] = expired.errors
    assert "the proxy's CA certificate (CN=citygate proxy CA,O=City of Example) expired on" in error


def test_a_file_without_the_root_or_out_of_order_is_an_error(city, tmp_path):
    no_root = install(tmp_path / "a", city, order=lambda ca, root: [ca])
    swapped = install(tmp_path / "b", city, order=lambda ca, root: [root, ca])

    [missing] = check_confdir(tmp_path / "a", None, NOW).errors
    mismatch, broken = check_confdir(tmp_path / "b", None, NOW).errors

    assert missing.startswith(
        f"{no_root} does not end with the root (CN=City of Example Root CA,O=City of Example)"
    )
    assert "mitmproxy then sends no chain and browsers refuse every HTTPS block page" in missing
    assert mismatch.startswith(f"the key in {swapped} is not the key of its certificate")
    assert broken.startswith(
        f"{swapped}: certificate 2 (CN=citygate proxy CA,O=City of Example) did not issue"
    )


def test_devices_given_another_certificate_than_the_root_is_a_warning(city, tmp_path):
    install(tmp_path / "ca", city)
    (tmp_path / "ca" / TRUSTED_FILES[0]).write_bytes(pem(CityPKI(tmp_path / "other").root))

    found = check_confdir(tmp_path / "ca", None, NOW)

    [warning] = found.warnings
    assert "the certificate devices are given to trust, is not the root of the proxy's chain" in warning


def test_mitmproxys_own_ca_passes_with_a_note(tmp_path):
    from mitmproxy.certs import CertStore

    CertStore.create_store(tmp_path, "mitmproxy", 2048)

    found = check_confdir(tmp_path, None, NOW)

    assert found.errors == [] and found.warnings == []
    assert found.summary.startswith(
        f"{tmp_path / CA_FILE}: O=mitmproxy,CN=mitmproxy, self-signed, valid until"
    )
    assert any(
        "the CA is self-signed (mitmproxy makes such a CA at its first start)" in n for n in found.notes
    )
    assert os.stat(tmp_path / CA_FILE).st_mode & 0o777 == 0o600
    # The key mitmproxy writes (RSA, OpenSSL's traditional PEM) is read too.
    assert any("RSA 2048, not encrypted, matches the certificate" in n for n in found.notes)
