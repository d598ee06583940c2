"""The PAC file, evaluated by a real JavaScript engine (node) with the standard PAC helpers."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from citygate.directory.problems import Problems
from citygate.proxy.pac import PacSettings, parse_pac_section, render_pac
from citygate.proxy.yamlfile import read_yaml

# The helpers browsers give a PAC file (Netscape's definitions), for node to run it with.
PAC_HELPERS = r"""
function isPlainHostName(host) { return host.indexOf(".") === -1; }
function dnsDomainIs(host, domain) {
  return host.length >= domain.length && host.substring(host.length - domain.length) === domain;
}
function isInNet(ip, pattern, mask) {
  function n(a) { return a.split(".").reduce(function (x, o) { return x * 256 + Number(o); }, 0); }
  return (n(ip) & n(mask)) >>> 0 === (n(pattern) & n(mask)) >>> 0;
}
"""

SETTINGS = PacSettings(
    proxies=("citygate1.city.example:3128", "citygate2.city.example:3128"),
    direct_domains=(".city.example", "intranet.example.gov"),
    direct_networks=(ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("192.168.0.0/16")),
)
ROUTE = "PROXY citygate1.city.example:3128; PROXY citygate2.city.example:3128"


def run_pac(pac: str, hosts: list[str]) -> list[str]:
    node = shutil.which("node")
    assert node, "node is needed to evaluate PAC files (tools/system-deps installs it)"
    script = (
        PAC_HELPERS
        + pac
        + f"\nconsole.log(JSON.stringify({json.dumps(hosts)}.map(function (h) {{ return FindProxyForURL('https://' + h + '/', h); }})));"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("www.facebook.com", ROUTE),
        ("example.org", ROUTE),
        ("intranet.city.example", "DIRECT"),
        ("city.example", "DIRECT"),
        ("INTRANET.City.Example", "DIRECT"),
        ("evilcity.example", ROUTE),  # not a subdomain of city.example
        ("city.example.evil.test", ROUTE),
        ("intranet.example.gov", "DIRECT"),
        ("www.intranet.example.gov", ROUTE),  # listed without a leading dot: that host only
        ("10.20.30.40", "DIRECT"),
        ("192.168.1.1", "DIRECT"),
        ("157.240.1.35", ROUTE),
        ("printer", "DIRECT"),
        ("localhost", "DIRECT"),
    ],
)
def test_pac_routes(host, expected):
    assert run_pac(render_pac(SETTINGS), [host]) == [expected]


def test_no_direct_fallback_unless_configured():
    fallback = PacSettings(proxies=("citygate.city.example:3128",), fallback_direct=True)

    assert run_pac(render_pac(SETTINGS), ["example.org"]) == [ROUTE]
    assert run_pac(render_pac(fallback), ["example.org"]) == ["PROXY citygate.city.example:3128; DIRECT"]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ('pac:\n  proxies: ["citygate:3128\\"; alert(1); //"]\n', "is not host:port"),
        ('pac:\n  proxies: ["a:1"]\n  direct_domains: ["x\\"+y"]\n', "is not a domain"),
        ('pac:\n  proxies: ["a:1"]\n  direct_networks: ["10.0.0.1/8"]\n', "is not an IPv4 network"),
        ('pac:\n  proxies: ["a:1"]\n  fallback: true\n', 'unknown pac setting "fallback"'),
    ],
)
def test_pac_settings_reject_bad_values_with_line(tmp_path: Path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    problems = Problems()
    document = read_yaml(path, problems, "")

    parse_pac_section(path, document["pac"], document.line_of("pac"), problems)

    assert [p for p in problems if message in p.message], problems
    assert all(p.line and p.line >= 2 for p in problems)
