"""Group grants and designees through a real citygate against a real OpenLDAP, with curl.

The demo's parks-2026-002 lets the group parks-social-team (jlee, mnguyen) use LinkedIn,
approved by the Director of Parks. The directory cache TTL is 0.2 s here, so a change made in
slapd must decide the next request after it, in both directions. A second group grant, approved
by the Director of another department, must be refused with the approver's reason. A grant
approved by a designee of the Director of Parks works while she is a Director in the directory.
"""

from __future__ import annotations

import time

import pytest
from demo_config import demo_config
from harness import curl
from slapd import GROUPS_BASE, directory_options, person_dn

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate

TEAM = f"cn=parks-social-team,{GROUPS_BASE}"
LINKEDIN = "https://www.linkedin.com/company/city-of-example"
PINTEREST = "https://www.pinterest.com/cityofexample/"
TTL = 0.2


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon, fresh_slapd, tmp_path):
    directory = {
        "backend": "ldap",
        **directory_options(fresh_slapd, tmp_path / "ldap", "openldap"),
        "cache": {"ttl": TTL, "negative_ttl": TTL, "grace": 0},
    }
    config = demo_config(tmp_path, directory=directory)
    # Approved by the Director of Communications, for a group whose members are all in Parks.
    (config.parent / "grants" / "wrong-approver.yaml").write_text(
        "grants:\n  - id: parks-2026-098\n    group: parks-social-team\n    sites: [pinterest]\n"
        "    purpose: Share program flyers\n    approved_by: rpatel\n"
        "    approved_on: 2026-02-02\n    expires: 2027-02-01\n"
    )
    # mnguyen approves in the Director of Parks' stead; jlee's Pinterest grant is theirs.
    (config.parent / "grants" / "designee.yaml").write_text(
        "department: Parks\ndesignees:\n  - {designee: mnguyen, director: ahernandez}\n"
        "grants:\n  - id: parks-2026-096\n    employee: jlee\n    sites: [pinterest]\n"
        "    purpose: Share program flyers\n    approved_by: mnguyen\n"
        "    approved_on: 2026-02-02\n    expires: 2027-02-01\n"
    )
    return proxy_runner_factory([CityGate(), DecisionLog(), redirect_addon], {"citygate_config": str(config)})


def reached(proxy, user: str, url: str = LINKEDIN) -> tuple[int, str]:
    result = curl(proxy, url, proxy_user=f"{user}:{user}-pass")
    reason = next(
        (
            line.split("reason=")[1].split()[0]
            for line in reversed(proxy.log_lines())
            if f"user={user} " in line
        ),
        "",
    )
    return (result.connect_status if result.status == 0 else result.status), reason


def test_membership_changes_in_the_directory_decide_the_next_request_both_ways(
    proxy, fresh_slapd, tls_upstream
):
    assert reached(proxy, "mnguyen") == (200, "granted")

    fresh_slapd.remove_member(TEAM, person_dn("mnguyen"))
    time.sleep(TTL * 2)
    assert reached(proxy, "mnguyen") == (403, "no_grant")

    fresh_slapd.add_member(TEAM, person_dn("mnguyen"))
    time.sleep(TTL * 2)
    assert reached(proxy, "mnguyen") == (200, "granted")


def test_someone_outside_the_group_is_denied_no_grant(proxy, tls_upstream):
    assert reached(proxy, "dbrown") == (403, "no_grant")


def test_a_designee_s_approval_lasts_while_the_director_holds_the_role(proxy, fresh_slapd, tls_upstream):
    directors = f"cn=directors,{GROUPS_BASE}"
    assert reached(proxy, "jlee", PINTEREST) == (200, "granted")
    assert any("grant=parks-2026-096 approver=mnguyen(for ahernandez)" in line for line in proxy.log_lines())

    fresh_slapd.remove_member(directors, person_dn("ahernandez"))
    time.sleep(TTL * 2)
    assert reached(proxy, "jlee", PINTEREST) == (403, "approver_not_authorized")

    fresh_slapd.add_member(directors, person_dn("ahernandez"))
    time.sleep(TTL * 2)
    assert reached(proxy, "jlee", PINTEREST) == (200, "granted")


def test_a_group_grant_approved_by_another_department_s_director_is_refused(proxy, tls_upstream):
    status, reason = reached(proxy, "mnguyen", PINTEREST)

    assert (status, reason) == (403, "approver_not_authorized")
    assert any(
        "the approver directs Communications, not Parks (group parks-social-team)" in line
        for line in proxy.log_lines()
    )


@pytest.fixture
def proxy_by_attribute(proxy_runner_factory, redirect_addon, fresh_slapd, tmp_path):
    """The demo city where a group's department is its entry's businessCategory."""
    directory = {
        "backend": "ldap",
        **directory_options(fresh_slapd, tmp_path / "ldap", "openldap"),
        "cache": {"ttl": TTL, "negative_ttl": TTL, "grace": 0},
    }
    approval = {
        "director_groups": ["directors"],
        "executive_groups": ["city-managers"],
        "group_department_attribute": "businessCategory",
    }
    config = demo_config(tmp_path, directory=directory, approval=approval)
    return proxy_runner_factory([CityGate(), DecisionLog(), redirect_addon], {"citygate_config": str(config)})


def test_a_group_s_department_can_come_from_its_entry(proxy_by_attribute, fresh_slapd, tls_upstream):
    # Without the attribute the group has no department: only an executive could approve its grant.
    assert reached(proxy_by_attribute, "mnguyen") == (403, "approver_not_authorized")
    assert any(
        "the directory gives group parks-social-team no department" in line
        for line in proxy_by_attribute.log_lines()
    )

    fresh_slapd.replace(TEAM, "businessCategory", "Parks")
    time.sleep(TTL * 2)
    assert reached(proxy_by_attribute, "mnguyen") == (200, "granted")

    fresh_slapd.replace(TEAM, "businessCategory", "Communications")  # no longer the Director of Parks'
    time.sleep(TTL * 2)
    assert reached(proxy_by_attribute, "mnguyen") == (403, "approver_not_authorized")
