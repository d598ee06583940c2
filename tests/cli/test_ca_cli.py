"""`citygate ca` and `citygate check --confdir`, run as an admin runs them: the installed console
script, with keys made by the command and certificates signed by a test city root (tests/city_pki.py)
or by the `openssl` command the request's next steps print."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from city_pki import CityPKI
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "citygate.yaml"
CITYGATE = str(Path(sys.executable).parent / "citygate")
SUBJECT = "CN=citygate proxy CA,O=City of Example"
ME = pwd.getpwuid(os.getuid()).pw_name


def citygate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYGATE, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60, input=stdin
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def city(tmp_path: Path) -> CityPKI:
    return CityPKI(tmp_path / "city")


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


def request(confdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = citygate("ca", "request", "--confdir", confdir, "--subject", SUBJECT, *extra)
    assert result.returncode == 0, result.stderr
    return result


def install(confdir: Path, city: CityPKI, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return citygate(
        "ca", "install", "--confdir", confdir, "--cert", cert, "--root", city.root_pem, "--owner", ME, *extra
    )


# --- request -------------------------------------------------------------------------------------


def test_request_writes_a_private_key_and_a_ca_request_and_says_how_to_have_it_signed(confdir):
    result = request(confdir)

    key, csr = confdir / "citygate-ca.key", confdir / "citygate-ca.csr"
    assert (mode(confdir), mode(key), mode(csr)) == (0o700, 0o600, 0o644)
    assert f"wrote {key}: the new CA key (EC P-256, not encrypted, mode 0600)" in result.stdout
    signing = x509.load_pem_x509_csr(csr.read_bytes())
    assert signing.subject.rfc4514_string() == SUBJECT
    assert signing.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    # The next steps for each kind of city CA, and the install command with this confdir.
    assert 'certreq -submit -attrib "CertificateTemplate:SubCA" citygate-ca.csr' in result.stdout
    assert "openssl x509 -req -in citygate-ca.csr -CA city-root.pem" in result.stdout
    assert "step certificate sign --profile intermediate-ca" in result.stdout
    assert f"citygate ca install --confdir {confdir} --cert citygate-ca.cer" in result.stdout


def test_a_second_request_would_lose_the_first_key_and_is_refused(confdir):
    request(confdir)
    first = (confdir / "citygate-ca.key").read_bytes()

    again = citygate("ca", "request", "--confdir", confdir, "--subject", SUBJECT)
    forced = citygate(
        "ca", "request", "--confdir", confdir, "--subject", SUBJECT, "--force", "--key-type", "rsa"
    )

    assert again.returncode == 1
    assert (
        "citygate-ca.key already exists: a request made earlier is waiting for its certificate"
        in again.stderr
    )
    assert (confdir / "citygate-ca.key").read_bytes() != first
    assert forced.returncode == 0 and "(RSA 3072, not encrypted, mode 0600)" in forced.stdout


def test_a_subject_without_a_common_name_is_refused_before_any_file_is_written(confdir):
    result = citygate("ca", "request", "--confdir", confdir, "--subject", "O=City of Example")

    assert result.returncode == 1
    assert "the subject 'O=City of Example' has no CN (common name)" in result.stderr
    assert not confdir.exists()


def test_a_passphrase_encrypts_the_key_from_a_file_or_stdin(confdir, tmp_path):
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery\n")
    passphrase.chmod(0o600)

    from_file = request(confdir, "--passphrase-file", passphrase)
    from_stdin = citygate(
        "ca", "request", "--confdir", tmp_path / "other", "--subject", SUBJECT, "--passphrase-file", "-",
        stdin="correct horse battery\n",
    )  # fmt: skip

    for folder, result in ((confdir, from_file), (tmp_path / "other", from_stdin)):
        assert result.returncode == 0, result.stderr
        assert "(EC P-256, encrypted with the passphrase given, mode 0600)" in result.stdout
        data = (folder / "citygate-ca.key").read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        serialization.load_pem_private_key(data, b"correct horse battery")


# --- install -------------------------------------------------------------------------------------


def test_install_writes_what_mitmproxy_loads_and_the_root_for_devices(confdir, city):
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr")

    result = install(confdir, city, cert)

    assert result.returncode == 0, result.stderr
    ca_file = confdir / "mitmproxy-ca.pem"
    assert (
        f"installed {SUBJECT} in {ca_file}, with its chain up to CN=City of Example Root CA" in result.stdout
    )
    assert "devices must trust CN=City of Example Root CA,O=City of Example" in result.stdout
    assert "next: restart citygate so that it loads the new CA" in result.stdout
    assert mode(ca_file) == 0o600 and ca_file.stat().st_uid == os.getuid()
    # The key, then the CA, then the root: mitmproxy serves the chain from this file.
    data = ca_file.read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(data)] == [
        SUBJECT,
        "CN=City of Example Root CA,O=City of Example",
    ]
    assert (confdir / "mitmproxy-ca-cert.pem").read_bytes() == city.root_pem.read_bytes()
    assert (confdir / "mitmproxy-ca-cert.cer").read_bytes() == city.root_pem.read_bytes()
    assert (confdir / "mitmproxy-dhparam.pem").exists()
    assert not (confdir / "citygate-ca.key").exists()  # the key lives in the CA file only


def test_install_replaces_mitmproxys_own_ca_only_when_told(confdir, city):
    from mitmproxy.certs import CertStore

    CertStore.create_store(confdir, "mitmproxy", 2048)
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr")

    refused = install(confdir, city, cert)
    replaced = install(confdir, city, cert, "--replace")

    assert refused.returncode == 1
    assert "already holds the proxy's CA; --replace installs this one instead" in refused.stderr
    assert replaced.returncode == 0, replaced.stderr
    # mitmproxy's own CA in PKCS#12, its key included, must not outlive its replacement.
    assert not (confdir / "mitmproxy-ca.p12").exists() and not (confdir / "mitmproxy-ca-cert.p12").exists()


def test_an_issuing_ca_between_the_root_and_citygate_comes_from_chain(confdir, tmp_path):
    city = CityPKI(tmp_path / "two-tier", issuing=True)
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr")

    without = install(confdir, city, cert)
    with_chain = install(confdir, city, cert, "--chain", city.chain_pem)

    assert without.returncode == 1
    assert (
        "(CN=City of Example Issuing CA 1,O=City of Example) is not among those given; add it with --chain"
        in (without.stderr)
    )
    assert with_chain.returncode == 0, with_chain.stderr
    certificates = x509.load_pem_x509_certificates((confdir / "mitmproxy-ca.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in certificates] == [
        SUBJECT,
        "CN=City of Example Issuing CA 1,O=City of Example",
        "CN=City of Example Root CA,O=City of Example",
    ]


@pytest.mark.parametrize(
    ("wrong", "problem"),
    [
        ({"ca": False}, "is not a CA certificate (basicConstraints CA:TRUE is missing)"),
        ({"cert_sign": False}, "may not sign certificates (keyUsage lacks keyCertSign)"),
        ({"not_before": datetime.now(UTC) - timedelta(days=60), "days": 30}, "expired on"),
    ],
    ids=["leaf", "no-cert-sign", "expired"],
)
def test_a_certificate_browsers_would_refuse_is_not_installed(confdir, city, wrong, problem):
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr", **wrong)

    result = install(confdir, city, cert)

    assert result.returncode == 1
    assert problem in result.stderr
    assert f"citygate: nothing was installed in {confdir}" in result.stderr
    assert not (confdir / "mitmproxy-ca.pem").exists()
    assert (confdir / "citygate-ca.key").exists()  # the request can still be signed again


def test_a_certificate_for_another_key_is_refused(confdir, city, tmp_path):
    request(tmp_path / "elsewhere")
    other = city.sign(tmp_path / "elsewhere" / "citygate-ca.csr")
    request(confdir)

    result = install(confdir, city, other)

    assert result.returncode == 1
    assert f"no certificate in {other} is for the key {confdir / 'citygate-ca.key'}" in result.stderr


def test_as_root_install_must_be_told_the_service_user(confdir, city):
    if os.geteuid() != 0:
        pytest.skip("the tests do not run as root here")
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr")

    result = citygate("ca", "install", "--confdir", confdir, "--cert", cert, "--root", city.root_pem)

    assert result.returncode == 1
    assert (
        "running as root: name the user citygate runs as with --owner (e.g. --owner citygate)"
        in result.stderr
    )


def test_an_encrypted_key_is_installed_encrypted_with_its_passphrase(confdir, city, tmp_path):
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("s3cret\n")
    passphrase.chmod(0o600)
    request(confdir, "--passphrase-file", passphrase)
    cert = city.sign(confdir / "citygate-ca.csr")

    locked = install(confdir, city, cert)
    unlocked = install(confdir, city, cert, "--passphrase-file", passphrase)
    check = citygate("ca", "check", "--confdir", confdir, "--passphrase-file", passphrase)

    assert locked.returncode == 1
    assert "is encrypted: give the file holding its passphrase (--passphrase-file)" in locked.stderr
    assert unlocked.returncode == 0, unlocked.stderr
    assert "--set citygate_ca_passphrase_file=FILE" in unlocked.stdout
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in (confdir / "mitmproxy-ca.pem").read_bytes()
    assert check.returncode == 0, check.stderr
    assert "EC P-256, encrypted, matches the certificate" in check.stdout


def test_a_passphrase_file_others_may_read_is_warned_about(confdir, city, tmp_path):
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("s3cret\n")
    passphrase.chmod(0o640)

    result = request(confdir, "--passphrase-file", passphrase)

    assert f"warning: the passphrase file {passphrase} is open to the group" in result.stdout


def test_the_openssl_commands_the_request_prints_make_a_ca_that_installs(confdir, tmp_path):
    """README's OpenSSL recipe, run: a root made by openssl signs the request with subca.ext."""
    request(confdir)
    work = tmp_path / "openssl"
    work.mkdir()

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=work, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "city-root.key", "-out", "city-root.pem", "-days", "3650",
        "-subj", "/O=City of Example/CN=City of Example Root CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    (work / "subca.ext").write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
    )
    openssl(
        "x509", "-req", "-in", str(confdir / "citygate-ca.csr"), "-CA", "city-root.pem", "-CAkey", "city-root.key",
        "-CAcreateserial", "-days", "730", "-sha256", "-extfile", "subca.ext", "-out", "citygate-ca.cer",
    )  # fmt: skip

    result = citygate(
        "ca", "install", "--confdir", confdir, "--cert", work / "citygate-ca.cer",
        "--root", work / "city-root.pem", "--owner", ME,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "the chain is valid until" in result.stdout


# --- check ---------------------------------------------------------------------------------------


def test_citygate_check_warns_of_a_ca_expiring_within_30_days(confdir, city):
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr", days=20)
    assert install(confdir, city, cert).returncode == 0

    checked = citygate("check", "--no-directory", "--config", DEMO_CONFIG, "--confdir", confdir)
    ca_checked = citygate("ca", "check", "--confdir", confdir)

    assert checked.returncode == 0, checked.stderr  # a warning, not an error
    assert (
        f"  CA {confdir / 'mitmproxy-ca.pem'}: {SUBJECT}, issued by CN=City of Example Root CA"
        in checked.stdout
    )
    assert f"  warning: the proxy's CA certificate ({SUBJECT}) expires in 19 days, on " in checked.stdout, (
        checked.stdout
    )
    assert "citygate ca request, then citygate ca install --replace" in checked.stdout
    assert f"{DEMO_CONFIG}: valid:" in checked.stdout
    assert ca_checked.returncode == 0 and "expires in 19 days" in ca_checked.stdout


def test_citygate_check_fails_for_an_expired_ca_and_a_key_others_may_read(confdir, city, tmp_path):
    request(confdir)
    cert = city.sign(confdir / "citygate-ca.csr")
    assert install(confdir, city, cert).returncode == 0
    (confdir / "mitmproxy-ca.pem").chmod(0o644)
    expired = tmp_path / "expired"
    request(expired)
    old = city.sign(
        expired / "citygate-ca.csr", out="old.cer", not_before=datetime.now(UTC) - timedelta(days=3)
    )
    assert install(expired, city, old).returncode == 0
    ca_file = expired / "mitmproxy-ca.pem"
    # The certificate expired since it was installed: made again with the same key, in the past.
    key = ca_file.read_bytes().split(b"-----BEGIN CERTIFICATE-----")[0]
    past = city.sign(
        expired / "citygate-ca.csr", out="past.cer", not_before=datetime.now(UTC) - timedelta(days=3), days=1
    )
    ca_file.write_bytes(key + past.read_bytes() + city.root_pem.read_bytes())

    readable = citygate("check", "--no-directory", "--config", DEMO_CONFIG, "--confdir", confdir)
    outdated = citygate("check", "--no-directory", "--config", DEMO_CONFIG, "--confdir", expired)

    assert readable.returncode == 1
    assert (
        f"the CA file {confdir / 'mitmproxy-ca.pem'} is open to every user of this machine (mode 0644)"
        in (readable.stderr)
    )
    assert "the proxy's CA cannot be used" in readable.stderr
    assert outdated.returncode == 1
    assert f"the proxy's CA certificate ({SUBJECT}) expired on" in outdated.stderr
    assert "browsers show a certificate error instead of every HTTPS block page" in outdated.stderr


def test_citygate_check_without_a_ca_yet_is_not_a_failure(tmp_path):
    result = citygate("check", "--no-directory", "--config", DEMO_CONFIG, "--confdir", tmp_path / "none")

    assert result.returncode == 0, result.stderr
    assert "none yet (citygate run makes a CA of its own there at its first start" in result.stdout


def test_ca_check_fails_when_there_is_no_ca(tmp_path):
    result = citygate("ca", "check", "--confdir", tmp_path)

    assert result.returncode == 1
    assert "none yet" in result.stdout


@pytest.mark.parametrize("action", ["request", "install", "check"])
def test_every_action_has_help_with_examples(action):
    result = citygate("ca", action, "--help")

    assert result.returncode == 0
    assert "examples:" in result.stdout and "--confdir" in result.stdout


def test_the_workers_supervisor_refuses_an_encrypted_key_it_cannot_open(confdir, city, tmp_path):
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("s3cret\n")
    passphrase.chmod(0o600)
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    wrong.chmod(0o600)
    request(confdir, "--passphrase-file", passphrase)
    cert = city.sign(confdir / "citygate-ca.csr")
    assert install(confdir, city, cert, "--passphrase-file", passphrase).returncode == 0
    run = ("run", "--workers", "2", "--config", DEMO_CONFIG, "--confdir", confdir, "--listen-port", "0")

    without = citygate(*run)
    mistaken = citygate(*run, "--set", f"citygate_ca_passphrase_file={wrong}")

    # Refused before any worker starts, saying what to give; never mitmproxy's traceback.
    assert without.returncode == 2
    assert (
        f"citygate: the CA key in {confdir / 'mitmproxy-ca.pem'} is encrypted: give the file holding its "
        "passphrase with --set citygate_ca_passphrase_file=FILE"
    ) in without.stderr
    assert mistaken.returncode == 2
    assert "the passphrase given does not decrypt the key in" in mistaken.stderr
    assert "Traceback" not in without.stderr + mistaken.stderr
