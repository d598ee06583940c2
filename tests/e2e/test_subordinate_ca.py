"""The proxy on a subordinate CA from the city's own PKI, end to end.

A test city root (tests/city_pki.py; with `issuing`, an issuing CA under it as AD CS usually has)
signs the request `citygate ca request` made; `citygate ca install` writes the confdir; a real
mitmproxy with the gate loads it. Clients trust only the city's root, for real:

- headless Chromium (Debian's) through the managed policy `CACertificates`, as a city pushes a
  root by GPO or MDM (tests/browser.py: no --ignore-certificate-errors-spki-list, no NSS
  database), gets the HTTPS block page for https://www.facebook.com/, 403, no certificate error;
  the same browser without the policy gets ERR_CERT_AUTHORITY_INVALID;
- curl, verifying with the root alone (the harness's --cacert), also through an issuing CA.

Then the key encrypted at rest: the proxy opens it with `citygate_ca_passphrase_file`, refuses to
start without it or with a wrong one, logs the coming expiry and exports it as a metric.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from browser import Browser
from city_pki import CityPKI
from demo_config import demo_config
from harness import curl, tunnel_peer_certificate
from mitmproxy.exceptions import OptionsError
from prometheus_client.parser import text_string_to_metric_families

from citygate.addons import ca as ca_addon
from citygate.addons.ca import OPTION, CertificateAuthority
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

CITYGATE = str(Path(sys.executable).parent / "citygate")
SUBJECT = "CN=citygate proxy CA,O=City of Example"
# mnguyen (no grant for Facebook) is signed in by this device's address: no credentials dialog.
MNGUYEN_HERE = {"source_addresses": [{"address": "127.0.0.1", "employee": "mnguyen"}]}
BLOCKED = "Facebook is blocked on the City of Example network"


def citygate(*args: object) -> str:
    result = subprocess.run([CITYGATE, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def install_subordinate(
    confdir: Path, city: CityPKI, *, passphrase: Path | None = None, **signing: object
) -> None:
    """What the admin does (README "A CA the city can trust"): request, have it signed, install."""
    locked = ("--passphrase-file", passphrase) if passphrase else ()
    citygate("ca", "request", "--confdir", confdir, "--subject", SUBJECT, *locked)
    cert = city.sign(confdir / "citygate-ca.csr", **signing)
    citygate(
        "ca", "install", "--confdir", confdir, "--cert", cert, "--chain", city.chain_pem,
        "--root", city.root_pem, "--owner", pwd.getpwuid(os.getuid()).pw_name, *locked,
    )  # fmt: skip


@pytest.fixture
def start(proxy_runner_factory, redirect_addon, tmp_path):
    """start(confdir, *addons, **options) -> a proxy on the demo city with the CA in `confdir`."""

    def start(confdir: Path, *addons: object, **options: object):
        config = demo_config(tmp_path, identity=MNGUYEN_HERE, metrics={"listen": "127.0.0.1:0"})
        return proxy_runner_factory(
            [CityGate(), *addons, redirect_addon],
            {"citygate_config": str(config), **options},
            confdir=confdir,
        )

    return start


def test_a_browser_trusting_only_the_city_root_gets_the_https_block_page(start, tmp_path):
    city = CityPKI(tmp_path / "city")
    install_subordinate(tmp_path / "ca", city)
    proxy = start(tmp_path / "ca")

    with Browser(proxy=proxy.address, trusted_roots=[city.root_pem]) as browser:
        load = browser.open("https://www.facebook.com/")
        log = browser.log()
    with Browser(proxy=proxy.address) as untrusting:
        refused = untrusting.open("https://www.facebook.com/")

    assert load.error is None, log
    assert load.status == 403 and load.loaded
    assert BLOCKED in load.text
    # Without the city's root, the same chain is refused: the trust came from the root alone.
    assert refused.error == "net::ERR_CERT_AUTHORITY_INVALID"
    # The site certificate is citygate's, signed by the subordinate.
    assert tunnel_peer_certificate(proxy, "www.facebook.com")["issuer_cn"] == "citygate proxy CA"


@pytest.mark.parametrize("issuing", [False, True], ids=["root-signed", "issuing-ca"])
def test_a_client_verifying_with_the_root_alone_gets_the_chain(start, tmp_path, issuing):
    city = CityPKI(tmp_path / "city", issuing=issuing)
    install_subordinate(tmp_path / "ca", city)
    proxy = start(tmp_path / "ca")

    # curl trusts mitmproxy-ca-cert.pem (the city's root after install) and the test upstream's CA.
    result = curl(proxy, "https://www.facebook.com/")

    assert result.returncode == 0, result.stderr
    assert result.status == 403
    assert BLOCKED in result.body


def passphrase_file(folder: Path, text: str = "correct horse battery staple") -> Path:
    path = folder / "ca-passphrase"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_an_encrypted_key_is_opened_with_its_passphrase_file_and_its_expiry_is_warned(
    start, tmp_path, monkeypatch
):
    city = CityPKI(tmp_path / "city")
    passphrase = passphrase_file(tmp_path)
    expires = datetime.now(UTC) + timedelta(days=10, hours=1)
    install_subordinate(tmp_path / "ca", city, passphrase=passphrase, not_after=expires)
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca" / "mitmproxy-ca.pem").read_bytes()
    metrics = Metrics()
    monkeypatch.setattr(ca_addon, "CHECK_SECONDS", 0.2)  # "once a day", sped up

    proxy = start(tmp_path / "ca", CertificateAuthority(), metrics, **{OPTION: str(passphrase)})

    blocked = curl(proxy, "https://www.facebook.com/")
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.status == 403 and BLOCKED in blocked.body
    warning = proxy.wait_for_log("expires in 10 days")
    assert warning.startswith(
        "WARNING citygate.ca: citygate: the proxy's CA certificate (CN=citygate proxy CA"
    )
    assert "browsers will then show a certificate error instead of every HTTPS block page" in warning
    deadline = time.monotonic() + 5
    while sum("expires in 10 days" in line for line in proxy.log_lines()) < 2:
        assert time.monotonic() < deadline, "the expiry was not warned of again"
        time.sleep(0.05)
    # The gauge the alerts read: the chain's first expiry, as Unix time.
    assert wait_for_gauge(metrics.server.url) == int(expires.timestamp())


def wait_for_gauge(url: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "citygate_ca_expiry_timestamp_seconds" and sample.value:
                    return int(sample.value)
        assert time.monotonic() < deadline, "citygate_ca_expiry_timestamp_seconds was never set"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        (
            None,
            "is encrypted: give the file holding its passphrase with --set citygate_ca_passphrase_file=FILE",
        ),
        ("wrong", "the passphrase given does not decrypt the key in"),
        ("missing", "citygate_ca_passphrase_file: the passphrase file"),
    ],
    ids=["none", "wrong", "missing"],
)
def test_an_encrypted_key_without_its_passphrase_stops_the_start_saying_why(start, tmp_path, given, refusal):
    city = CityPKI(tmp_path / "city")
    install_subordinate(tmp_path / "ca", city, passphrase=passphrase_file(tmp_path))
    options = {}
    if given == "wrong":
        options[OPTION] = str(passphrase_file(tmp_path / "ca", "not the passphrase"))
    elif given == "missing":
        options[OPTION] = str(tmp_path / "no-such-file")

    with pytest.raises(OptionsError) as raised:
        start(tmp_path / "ca", CertificateAuthority(), **options)

    assert refusal in str(raised.value)


def test_a_ca_key_others_may_read_is_warned_of_at_start(start, tmp_path):
    city = CityPKI(tmp_path / "city")
    install_subordinate(tmp_path / "ca", city)
    (tmp_path / "ca" / "mitmproxy-ca.pem").chmod(0o644)

    proxy = start(tmp_path / "ca", CertificateAuthority())

    warning = proxy.wait_for_log("is open to every user of this machine (mode 0644)")
    assert warning.startswith(
        f"WARNING citygate.ca: citygate: the CA file {tmp_path / 'ca' / 'mitmproxy-ca.pem'}"
    )
    assert "expires" not in " ".join(proxy.log_lines())  # two years left: nothing to say about that
