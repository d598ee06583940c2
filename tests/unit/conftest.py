"""Shared fixtures for the policy-core tests: a throw-away configuration written into tmp_path.

`policy_files` writes a config file, a small catalog and grant files into a temporary folder
and loads them with `load_policy`, with `today` fixed so that date checks never depend on the
day the tests run. Line numbers in MINI_CONFIG and MINI_SITES are relied on by the tests.
"""

from datetime import date
from pathlib import Path

import pytest
import yaml

from citygate.directory.problems import ConfigError, Problem
from citygate.proxy.policy import Policy, load_policy

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "config" / "citygate.yaml"
TODAY = date(2026, 6, 15)

MINI_CONFIG = """\
city: Testville
timezone: America/Los_Angeles
catalog: sites.yaml
grants: grants
max_grant_days: 365
approval:
  director_groups: [directors]
  executive_groups: [city-managers]
directory:
  backend: static
  ldif: people.ldif
"""

MINI_SITES = """\
sites:
  - id: facebook
    name: Facebook
    domains: [facebook.com]
    asset_domains: [fbcdn.net]
    networks: [157.240.0.0/16, 2a03:2880::/32]
  - id: instagram
    name: Instagram
    domains: [instagram.com]
  - id: youtube
    name: YouTube
    domains: [youtube.com]
"""


class PolicyFiles:
    """Writes a configuration into one folder and loads it."""

    mini_config = MINI_CONFIG
    mini_sites = MINI_SITES

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "citygate.yaml"
        self.sites = root / "sites.yaml"
        self.grants_dir = root / "grants"

    def write(
        self,
        grants: dict[str, str | list[dict]] | list[dict] | None = None,
        *,
        sites: str = MINI_SITES,
        config: str = MINI_CONFIG,
        make_grants_dir: bool = True,
    ) -> Path:
        """Write the files; `grants` is {file name: YAML text or list of grant dicts}.

        A bare list of grant dicts is written to grants/grants.yaml.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config, encoding="utf-8")
        self.sites.write_text(sites, encoding="utf-8")
        if make_grants_dir:
            self.grants_dir.mkdir(exist_ok=True)
        if isinstance(grants, list):
            grants = {"grants.yaml": grants}
        for name, content in (grants or {}).items():
            if not isinstance(content, str):
                content = yaml.safe_dump({"grants": content}, sort_keys=False)
            (self.grants_dir / name).write_text(content, encoding="utf-8")
        return self.config

    def load(self, grants=None, *, today: date = TODAY, **files) -> Policy:
        return load_policy(self.write(grants, **files), today=today)

    def problems(self, grants=None, *, today: date = TODAY, **files) -> list[Problem]:
        """The problems of a configuration that must not load."""
        config = self.write(grants, **files)
        with pytest.raises(ConfigError) as caught:
            load_policy(config, today=today)
        return caught.value.problems


@pytest.fixture
def policy_files(tmp_path: Path) -> PolicyFiles:
    return PolicyFiles(tmp_path / "config")


def find_problem(problems: list[Problem], fragment: str) -> Problem:
    """The one problem whose message contains `fragment` (fails the test otherwise)."""
    found = [p for p in problems if fragment in p.message]
    assert len(found) == 1, f"expected one problem with {fragment!r}, got: {[str(p) for p in problems]}"
    return found[0]


@pytest.fixture
def problem_with():
    return find_problem
