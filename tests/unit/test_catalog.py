"""Catalog loading: every mistake in sites.yaml is reported as file:line: problem; fix."""

import ipaddress
from pathlib import Path

import pytest

from citygate.directory.problems import Problems, Severity
from citygate.proxy.catalog import load_catalog
from citygate.proxy.hosts import normalize_host

REAL_SITES = Path(__file__).resolve().parents[2] / "config" / "sites.yaml"


def load(tmp_path: Path, text: str):
    path = tmp_path / "sites.yaml"
    path.write_text(text, encoding="utf-8")
    problems = Problems()
    catalog = load_catalog(path, problems)
    return path, catalog, problems


def test_real_catalog_loads_cleanly():
    problems = Problems()
    catalog = load_catalog(REAL_SITES, problems)
    assert [str(p) for p in problems] == []
    assert {"facebook", "instagram", "x", "youtube", "tiktok", "linkedin"} <= set(catalog.sites)
    facebook = catalog.sites["facebook"]
    assert "fbcdn.net" in facebook.asset_domains
    assert ipaddress.ip_network("2a03:2880::/32") in facebook.networks


def test_catalog_domains_are_normalized_when_loaded(tmp_path):
    _, catalog, problems = load(
        tmp_path,
        "sites:\n  - id: a\n    name: A\n    domains: [Social.Example., bücher.example]\n",
    )
    assert problems == []
    assert catalog.sites["a"].domains == ("social.example", "xn--bcher-kva.example")
    assert catalog.match(normalize_host("www.social.example")).site.id == "a"


TWO_SITES = """\
sites:
  - id: a
    name: A
    domains: [{a_domains}]
  - id: {b_id}
    name: B
    domains: [{b_domains}]
"""

CATALOG_ERRORS = [
    pytest.param(
        TWO_SITES.format(a_domains="shared.example", b_id="b", b_domains="shared.example"),
        5,
        'domain "shared.example" is already listed under "a" (line 2)',
        "list each domain under one site only",
        id="duplicate-domain-across-sites",
    ),
    pytest.param(
        TWO_SITES.format(a_domains="a.example", b_id="b", b_domains="b.example, A.Example."),
        5,
        'domain "a.example" is already listed under "a" (line 2)',
        "list each domain under one site only",
        id="duplicate-domain-other-spelling",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [a.example]\n    asset_domains: [a.example]\n",
        2,
        'domain "a.example" is already listed under "a" (line 2)',
        "list each domain under one site only",
        id="domain-and-asset-domain-in-one-site",
    ),
    pytest.param(
        TWO_SITES.format(a_domains="a.example", b_id="a", b_domains="b.example"),
        5,
        'site id "a" is used twice',
        "give each site its own id",
        id="duplicate-site-id",
    ),
    pytest.param(
        "sites:\n  - name: A\n    id: Face_Book\n    domains: [a.example]\n",
        3,
        "site id 'Face_Book' is missing or invalid",
        'use lower-case letters, digits and "-"',
        id="bad-site-id",
    ),
    pytest.param(
        "sites:\n  - name: A\n    domains: [a.example]\n",
        2,
        "site id None is missing or invalid",
        'e.g. "id: facebook"',
        id="missing-site-id",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [https://a.example/page]\n",
        4,
        "'https://a.example/page' in domains is not a domain name",
        'write a bare domain such as "facebook.com"',
        id="url-as-domain",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: ['*.a.example']\n",
        4,
        "'*.a.example' in domains is not a domain name",
        "it covers every subdomain",
        id="wildcard-as-domain",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [.a.example]\n",
        4,
        "'.a.example' in domains is not a domain name",
        'write a bare domain such as "facebook.com"',
        id="leading-dot-domain",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: ['a.example:443']\n",
        4,
        "'a.example:443' in domains is not a domain name",
        'write a bare domain such as "facebook.com"',
        id="domain-with-port",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [a.example]\n    asset_domains: [192.0.2.1]\n",
        5,
        "'192.0.2.1' in asset_domains is not a domain name",
        "put IP ranges under networks",
        id="ip-as-asset-domain",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: a.example\n",
        4,
        "domains must be a list",
        "write domains: [example.com]",
        id="domains-not-a-list",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [a.example]\n    networks: [192.0.2.1/24]\n",
        5,
        "'192.0.2.1/24' in networks is not an IP network",
        "write a CIDR range with host bits zero",
        id="cidr-host-bits-set",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [a.example]\n    networks: [not-a-net]\n",
        5,
        "'not-a-net' in networks is not an IP network",
        'e.g. "157.240.0.0/16"',
        id="cidr-garbage",
    ),
    pytest.param(
        "sites:\n"
        "  - id: a\n    name: A\n    domains: [a.example]\n    networks: [10.0.0.0/8]\n"
        "  - id: b\n    name: B\n    domains: [b.example]\n    networks: [10.1.0.0/16]\n",
        6,
        'network 10.1.0.0/16 overlaps 10.0.0.0/8 of "a" (line 2)',
        "give each address range to one site only",
        id="overlapping-networks",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domain: [a.example]\n    domains: [b.example]\n",
        4,
        'unknown key "domain" in a site',
        "use id, name, domains, asset_domains, networks or pass_through_when_granted",
        id="unknown-key",
    ),
    pytest.param(
        "sites:\n  - id: a\n    domains: [a.example]\n",
        2,
        'site "a" has no name',
        'add e.g. "name: Facebook"',
        id="missing-name",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    asset_domains: []\n",
        2,
        'site "a" lists no domains',
        'add e.g. "domains: [facebook.com]"',
        id="no-domains",
    ),
    pytest.param(
        "sites:\n  - a.example\n",
        2,
        "a site must be a mapping",
        'write "- id: ..."',
        id="site-not-a-mapping",
    ),
    pytest.param(
        "site:\n  - id: a\n    name: A\n    domains: [a.example]\n",
        1,
        'the catalog must have a "sites:" list',
        'start the file with "sites:"',
        id="missing-sites-list",
    ),
    pytest.param(
        "# the catalog\n\n- id: a\n  name: A\n",
        3,
        'the catalog must have a "sites:" list',
        'start the file with "sites:"',
        id="top-level-list",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A: the site\n    domains: [a.example]\n",
        3,
        "not valid YAML",
        "quote a value that contains ': '",
        id="invalid-yaml",
    ),
    pytest.param(
        "sites:\n  - id: a\n    name: A\n    domains: [a.example]\n    name: B\n",
        5,
        '"name" appears twice in one entry (first on line 3)',
        "keep one of them",
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("text", "line", "message", "fix"), CATALOG_ERRORS)
def test_catalog_error(tmp_path, problem_with, text, line, message, fix):
    path, _, problems = load(tmp_path, text)
    problem = problem_with(problems, message)
    assert problem.severity is Severity.ERROR
    assert (problem.path, problem.line) == (path, line)
    assert fix in problem.fix
    assert str(problem) == f"{path}:{line}: {problem.message}; {problem.fix}"


def test_missing_catalog_file_is_an_error(tmp_path, problem_with):
    problems = Problems()
    catalog = load_catalog(tmp_path / "nowhere.yaml", problems)
    assert catalog.sites == {}
    problem = problem_with(problems, "file not found")
    assert problem.path == tmp_path / "nowhere.yaml"


def test_every_problem_is_reported_in_one_run(tmp_path):
    text = (
        "sites:\n"
        "  - id: Bad_Id\n    name: A\n    domains: [a.example]\n"
        "  - id: b\n    name: B\n    domains: [b.example, '*.b.example']\n    networks: [nonsense]\n"
    )
    _, _, problems = load(tmp_path, text)
    assert sorted(p.line for p in problems) == [2, 7, 8]


@pytest.mark.parametrize(
    "text",
    [pytest.param("", id="empty-file"), pytest.param("# sites\n", id="only-comments")],
)
def test_empty_catalog_file_is_an_error(tmp_path, text):
    _, _, problems = load(tmp_path, text)
    assert problems.errors, "an empty catalog must not load as 'nothing is social media'"


def test_block_list_error_points_at_the_item(tmp_path, problem_with):
    text = (
        "sites:\n"
        "  - id: a\n"
        "    name: A\n"
        "    domains: [a.example]\n"
        "    networks:\n"
        "      - 10.0.0.0/8\n"
        "      - 10.300.0.0/16\n"
    )
    _, _, problems = load(tmp_path, text)
    assert problem_with(problems, "'10.300.0.0/16'").line == 7
