"""The block page links the portal's request form for the blocked site, where the city runs one."""

from __future__ import annotations

from citygate.addons.blockpage import render_block_page
from citygate.proxy.decision import Decision, Evidence, Reason, Result
from citygate.proxy.hosts import normalize_host


def page(policy, reason: Reason = Reason.NO_GRANT) -> str:
    host = normalize_host("www.youtube.com")
    assert host is not None
    decision = Decision(
        Result.DENY, reason, "www.youtube.com", policy.catalog.match(host), evidence=Evidence(employee="jlee")
    )
    return render_block_page(decision, policy, "https://www.youtube.com/", [], "ref-1")


def test_a_refusal_a_grant_would_cure_links_the_request_form(policy_files):
    config = (
        policy_files.mini_config
        + "requests:\n  enabled: true\n  portal_url: https://requests.city.example/\n"
    )
    policy = policy_files.load(config=config)

    assert (
        '<a class="request" href="https://requests.city.example/request?site=youtube">Request access</a>'
        in page(policy)
    )
    assert 'class="request"' not in page(policy, Reason.EMPLOYEE_DISABLED)  # no grant helps there
    assert 'class="request"' not in page(policy, Reason.CREDENTIALS_REQUIRED)


def test_no_link_without_the_portal(policy_files):
    assert 'class="request"' not in page(policy_files.load())
    off = (
        policy_files.mini_config
        + "requests:\n  enabled: false\n  portal_url: https://requests.city.example\n"
    )
    assert 'class="request"' not in page(policy_files.load(config=off))


def test_a_portal_url_that_is_not_http_is_refused_with_its_line(policy_files):
    config = policy_files.mini_config + "requests:\n  enabled: true\n  portal_url: javascript:alert(1)\n"

    [problem] = policy_files.problems(config=config)

    assert problem.line == 14 and "is not an http(s) address" in problem.message
