"""The features' settings on the policy: one typed field per config section (proxy/policy.py)."""

import pytest

from citygate.directory.problems import ConfigError
from citygate.proxy.pac import PacSettings
from citygate.proxy.policy import SECTION_NAMES, FeatureSettings, load_policy


def test_without_feature_sections_every_feature_has_its_defaults(policy_files):
    assert policy_files.load().features == FeatureSettings()


def test_a_section_is_parsed_into_the_field_of_its_name(policy_files):
    config = policy_files.mini_config + "pac:\n  proxies: [proxy.city.example:8080]\n"

    features = policy_files.load(config=config).features

    assert features.pac == PacSettings(proxies=("proxy.city.example:8080",))
    assert features == FeatureSettings(pac=features.pac)


def test_the_sections_are_read_in_the_order_of_the_features():
    assert list(SECTION_NAMES) == ["pac", "identity", "audit", "metrics", "flags", "requests"]


def test_the_sections_are_listed_among_the_known_settings(policy_files, problem_with):
    problems = policy_files.problems(config=policy_files.mini_config + "pack: {}\n")

    assert problem_with(problems, 'unknown setting "pack"').fix.endswith(
        "directory, mode, departments, pac, identity, audit, metrics, flags, requests"
    )


def test_sections_that_are_not_mappings_are_reported_in_the_order_they_are_read(policy_files):
    # `citygate check` prints the problems as found: the sections in SECTION_NAMES's order.
    config = policy_files.write(config=policy_files.mini_config + "flags: 3\npac: [a]\n")

    with pytest.raises(ConfigError) as caught:
        load_policy(config)

    assert str(caught.value).splitlines() == [
        f'{config}:13: "pac:" must be a mapping of settings; indent its settings under it',
        f'{config}:12: "flags:" must be a mapping of settings; indent its settings under it',
    ]
