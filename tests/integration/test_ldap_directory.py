"""LdapDirectory and the caching gateway against a real private OpenLDAP (tests/slapd.py).

Tests that only read use the session `slapd`; tests that change entries, stop, pause or restart
the server use their own `fresh_slapd`. Time-dependent behaviour (TTL, grace) runs on a fake
clock given to the gateway; the network timeouts are real (1 s).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path

import pytest
from ldap3 import Connection, Server
from slapd import (
    AD_USERS_BASE,
    GROUPS_BASE,
    SERVICE_DN,
    Slapd,
    directory_options,
    group_dn,
    person_dn,
)

import citygate.directory.ldap as ldap_module
from citygate.directory.backends import open_directory
from citygate.directory.cache import CacheSettings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.ldap import LdapDirectory
from citygate.directory.ldap_config import ldap_settings
from citygate.directory.model import AccountState, BindOutcome, DirectoryUnavailable
from citygate.directory.settings import DirectorySettings
from citygate.proxy.decision import Identity, Reason, Result, decide_request, people_involved
from citygate.proxy.policy import Policy, load_policy

REPO = Path(__file__).resolve().parents[2]
TODAY = date(2026, 6, 15)
RECEIVE_TIMEOUT = 1  # seconds, as directory_options sets it
# A call on a hung server may cost the receive timeout; allow generous scheduling slack on top.
HUNG_BOUND = RECEIVE_TIMEOUT + 1.5


def open_ldap(server: Slapd, folder: Path, preset: str = "openldap", **overrides) -> LdapDirectory:
    options = directory_options(server, folder / "config", preset, **overrides)
    directory = open_directory(DirectorySettings("ldap", options, folder), str(folder / "citygate.yaml"))
    assert isinstance(directory, LdapDirectory)
    return directory


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "config" / "citygate.yaml", today=TODAY)


def decide_for(policy: Policy, gateway: DirectoryGateway, user: str, url_host: str, path: str = "/"):
    """The decision core's answer, with the directory facts fetched through the gateway."""
    hosts = [url_host]
    people = asyncio.run(gateway.people(people_involved(policy, user, hosts)))
    at = datetime(2026, 6, 15, 12, tzinfo=policy.timezone)
    return decide_request(Identity(user, "basic"), hosts, path, at, policy, people)


# Parks' grant: jlee may use facebook.com/CityOfExampleParks, approved by ahernandez (Parks).
FACEBOOK = ("www.facebook.com", "/CityOfExampleParks")


# --- passwords and disabled accounts ------------------------------------------------------------


def test_right_and_wrong_passwords(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path)
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.OK
    assert directory.authenticate("JLee", "jlee-pass") is BindOutcome.OK
    assert directory.authenticate("jlee", "jlee-pass2") is BindOutcome.WRONG_PASSWORD
    assert directory.authenticate("jlee", "mnguyen-pass") is BindOutcome.WRONG_PASSWORD
    assert directory.authenticate("nobody", "x") is BindOutcome.WRONG_PASSWORD


def test_an_empty_password_never_reaches_the_directory(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path)
    before = slapd.binds(person_dn("jlee"))
    assert directory.authenticate("jlee", "") is BindOutcome.WRONG_PASSWORD
    assert slapd.binds(person_dn("jlee")) == before


def test_passwords_are_checked_by_binding_never_by_reading_hashes(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path)
    before = slapd.binds(person_dn("mnguyen"))
    assert directory.authenticate("mnguyen", "mnguyen-pass") is BindOutcome.OK
    assert slapd.binds(person_dn("mnguyen")) == before + 1
    requested = [line for line in slapd.log_text().splitlines() if " SRCH attr=" in line]
    assert requested
    assert not any("userpassword" in line.lower() for line in requested)


def test_a_ppolicy_locked_account_is_disabled_and_cannot_log_in(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path)
    assert directory.lookup("bjones").state is AccountState.DISABLED  # locked for good: 000001010000Z
    assert directory.authenticate("bjones", "bjones-pass") is BindOutcome.DISABLED
    # Even if citygate did not look at the lock, slapd's ppolicy refuses the bind, and its
    # password policy control says why.
    unaware = open_ldap(slapd, tmp_path, disabled="filter", disabled_filter="(title=nobody)")
    assert unaware.lookup("bjones").disabled is False
    assert unaware.authenticate("bjones", "bjones-pass") is BindOutcome.LOCKED


def test_an_ad_disabled_account_is_refused_by_citygate_itself(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path, "active-directory")
    assert directory.lookup("bjones").state is AccountState.DISABLED
    assert directory.authenticate("bjones", "bjones-pass") is BindOutcome.DISABLED
    assert directory.authenticate("bjones", "wrong") is BindOutcome.WRONG_PASSWORD
    # This test directory (unlike AD) would accept his bind: userAccountControl 514 is what refuses.
    raw = Connection(Server(slapd.url), user=f"cn=Blake Jones,{AD_USERS_BASE}", password="bjones-pass")
    assert raw.bind()
    raw.unbind()


def test_a_configured_disabled_filter(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path, disabled_filter="(title=*Coordinator*)")
    assert directory.lookup("jlee").state is AccountState.DISABLED
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.DISABLED
    assert directory.lookup("mnguyen").disabled is False
    assert directory.lookup("bjones").disabled is True  # the ppolicy marker still counts


# --- hostile names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["*)(uid=*", "admin)(|(uid=*", "*", "jlee)(uid=*"])
def test_filter_injection_is_neutralized(slapd, tmp_path, name):
    directory = open_ldap(slapd, tmp_path)
    assert directory.lookup(name) is None
    assert directory.authenticate(name, "jlee-pass") is BindOutcome.WRONG_PASSWORD
    assert directory.group_members(name) == []
    log = slapd.log_text()
    assert "(uid=*)" not in log and "(uid=*" not in log.replace("\\2A", "")


@pytest.mark.parametrize("name", ["jlee\x00", "\x00*", "x" * 10_000, "jl\r\nee", "\u202ejlee"])
def test_impossible_names_are_refused_without_a_query(slapd, tmp_path, name):
    directory = open_ldap(slapd, tmp_path)
    searches = slapd.searches()
    assert directory.lookup(name) is None
    assert directory.authenticate(name, "jlee-pass") is BindOutcome.WRONG_PASSWORD
    assert directory.group_members(name) == []
    assert slapd.searches() == searches


def test_names_with_filter_characters_find_exactly_their_account(fresh_slapd, tmp_path):
    fresh_slapd.add(
        "dn: uid=o(brien)*,ou=people,dc=city,dc=example\n"
        "objectClass: inetOrgPerson\nuid: o(brien)*\ncn: Pat O'Brien\nsn: O'Brien\n"
        "departmentNumber: Parks\nuserPassword: obrien-pass\n"
    )
    directory = open_ldap(fresh_slapd, tmp_path)
    assert directory.lookup("o(brien)*").name == "Pat O'Brien"
    assert directory.authenticate("o(brien)*", "obrien-pass") is BindOutcome.OK
    for near in ("o*", "o(brien)", "o(*"):
        assert directory.lookup(near) is None


def test_non_ascii_names_and_passwords(fresh_slapd, tmp_path):
    fresh_slapd.add(
        "dn: uid=josé,ou=people,dc=city,dc=example\n"
        "objectClass: inetOrgPerson\nuid: josé\ncn: José Núñez\nsn: Núñez\n"
        "displayName: José Núñez\ndepartmentNumber: Bibliothèque\n"
        "userPassword: contraseña-ñandú\n"
    )
    fresh_slapd.add_member(group_dn("directors"), "uid=josé,ou=people,dc=city,dc=example")
    directory = open_ldap(fresh_slapd, tmp_path)
    person = directory.lookup("JOSÉ")
    assert (person.uid, person.name, person.department) == ("josé", "José Núñez", "Bibliothèque")
    assert "directors" in person.groups
    assert directory.authenticate("josé", "contraseña-ñandú") is BindOutcome.OK
    assert directory.authenticate("josé", "contrasena-nandu") is BindOutcome.WRONG_PASSWORD
    assert directory.lookup("jose") is None
    assert "josé" in {p.uid for p in directory.group_members("directors")}


# --- the directory changes: decisions follow within the TTL -------------------------------------


@pytest.mark.parametrize("change", ["moved to Police", "removed from directors"])
def test_an_approver_who_loses_authority_stops_the_grant_within_the_ttl(
    fresh_slapd, tmp_path, policy, change
):
    clock = Clock()
    gateway = DirectoryGateway(open_ldap(fresh_slapd, tmp_path), CacheSettings(ttl=10), clock=clock)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).result is Result.ALLOW

    if change == "moved to Police":
        fresh_slapd.replace(person_dn("ahernandez"), "departmentNumber", "Police")
    else:
        fresh_slapd.remove_member(group_dn("directors"), person_dn("ahernandez"))
    clock.advance(9)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).result is Result.ALLOW  # cached
    clock.advance(1)
    decision = decide_for(policy, gateway, "jlee", *FACEBOOK)
    assert (decision.result, decision.reason) == (Result.DENY, Reason.APPROVER_NOT_AUTHORIZED)


def test_a_disabled_employee_loses_access_within_the_ttl(fresh_slapd, tmp_path, policy):
    clock = Clock()
    directory = open_ldap(fresh_slapd, tmp_path)
    gateway = DirectoryGateway(directory, CacheSettings(ttl=10), clock=clock)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).allowed
    fresh_slapd.lock(person_dn("jlee"))
    clock.advance(10)
    decision = decide_for(policy, gateway, "jlee", *FACEBOOK)
    assert (decision.result, decision.reason) == (Result.DENY, Reason.EMPLOYEE_DISABLED)
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.DISABLED


# --- the directory fails ----------------------------------------------------------------------


def test_stopped_directory_is_unavailable_not_unknown(fresh_slapd, tmp_path):
    directory = open_ldap(fresh_slapd, tmp_path)
    assert directory.lookup("jlee") is not None
    fresh_slapd.stop()
    for call in (
        lambda: directory.lookup("jlee"),
        lambda: directory.lookup("nobody"),
        lambda: directory.authenticate("jlee", "jlee-pass"),
        lambda: directory.group_members("directors"),
    ):
        with pytest.raises(DirectoryUnavailable, match="no LDAP server answered"):
            call()


def test_slapd_stopped_mid_run_fails_closed_then_recovers(fresh_slapd, tmp_path, policy):
    clock = Clock()
    directory = open_ldap(fresh_slapd, tmp_path)
    gateway = DirectoryGateway(directory, CacheSettings(ttl=10, grace=0), clock=clock)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).allowed
    fresh_slapd.stop()
    clock.advance(10)
    decision = decide_for(policy, gateway, "jlee", *FACEBOOK)
    assert (decision.result, decision.reason) == (Result.DENY, Reason.DIRECTORY_UNAVAILABLE)
    assert decide_for(policy, gateway, "jlee", "www.example.org").reason is Reason.NOT_SOCIAL_MEDIA
    assert asyncio.run(gateway.authenticate("mnguyen", "mnguyen-pass")).outcome is BindOutcome.UNAVAILABLE
    fresh_slapd.start()  # same port, same data; same directory object and gateway
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).allowed
    assert asyncio.run(gateway.authenticate("mnguyen", "mnguyen-pass")).outcome is BindOutcome.OK


def test_grace_keeps_recent_answers_while_the_directory_is_down(fresh_slapd, tmp_path, policy):
    clock = Clock()
    gateway = DirectoryGateway(open_ldap(fresh_slapd, tmp_path), CacheSettings(ttl=10, grace=60), clock=clock)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).allowed
    fresh_slapd.stop()
    clock.advance(59)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).allowed
    assert (
        decide_for(policy, gateway, "mnguyen", *FACEBOOK).reason is Reason.DIRECTORY_UNAVAILABLE
    )  # never seen
    clock.advance(1)
    assert decide_for(policy, gateway, "jlee", *FACEBOOK).reason is Reason.DIRECTORY_UNAVAILABLE


def test_restart_recovers_without_a_new_directory_object(fresh_slapd, tmp_path):
    directory = open_ldap(fresh_slapd, tmp_path)
    assert directory.lookup("jlee") is not None  # leaves a pooled connection behind
    fresh_slapd.restart()
    # The pooled connection died with the old process; the very next call still answers.
    assert directory.lookup("jlee") is not None
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.OK


def test_a_hung_server_costs_at_most_the_receive_timeout(fresh_slapd, tmp_path):
    directory = open_ldap(fresh_slapd, tmp_path)
    assert directory.lookup("jlee") is not None  # leaves a pooled connection
    fresh = open_ldap(fresh_slapd, tmp_path)  # has none: connects (the kernel accepts), then waits

    def timed(call):
        started = time.monotonic()
        try:
            call()
        except DirectoryUnavailable as exc:
            return time.monotonic() - started, str(exc)
        return time.monotonic() - started, "answered"

    calls = [
        lambda: directory.lookup("jlee"),
        lambda: directory.group_members("directors"),
        lambda: fresh.authenticate("jlee", "jlee-pass"),
    ]
    with fresh_slapd.paused(), ThreadPoolExecutor(len(calls)) as pool:
        outcomes = list(pool.map(timed, calls))
    for elapsed, outcome in outcomes:
        assert "timed out" in outcome
        assert elapsed < HUNG_BOUND
    assert directory.lookup("jlee") is not None  # and it recovers once the server answers


def test_a_hung_server_neither_stalls_the_event_loop_nor_queues_a_burst(fresh_slapd, tmp_path):
    directory = open_ldap(fresh_slapd, tmp_path)
    gateway = DirectoryGateway(directory, CacheSettings(grace=0))
    burst = [f"user{n}" for n in range(30)]  # all different: nothing cached, nothing shared

    async def timed(uids):
        ticks, started = 0, time.monotonic()
        call = asyncio.ensure_future(gateway.people(uids))
        while not call.done():
            await asyncio.sleep(0.01)
            ticks += 1
        return ticks, time.monotonic() - started, call.result()

    async def scenario():
        return await timed(["jlee", "ahernandez"]), await timed(burst)

    with fresh_slapd.paused():
        (ticks, elapsed, people), (_, burst_elapsed, burst_people) = asyncio.run(scenario())
    assert people == {} and burst_people == {}  # absent: directory_unavailable for social media
    assert elapsed < HUNG_BOUND
    assert ticks >= 20  # the loop kept running other work while the directory hung
    # 30 calls on 8 worker threads would take 4 timeouts if each waited its turn; after the first
    # timeout one call probes the server and the others fail at once.
    assert burst_elapsed < HUNG_BOUND
    assert directory.lookup("jlee") is not None  # the next probe finds the server back


def test_a_refused_service_account_is_unavailable(slapd, tmp_path):
    folder = tmp_path / "wrong"
    folder.mkdir()
    (folder / "pw").write_text("not-the-password", encoding="utf-8")
    directory = open_ldap(slapd, tmp_path, bind_password_file=str(folder / "pw"))
    with pytest.raises(DirectoryUnavailable, match="service account"):
        directory.lookup("jlee")


def test_a_missing_base_is_unavailable_not_empty(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path, user_base="ou=nowhere,dc=city,dc=example")
    with pytest.raises(DirectoryUnavailable, match="noSuchObject"):
        directory.lookup("jlee")


# --- failover --------------------------------------------------------------------------------


def settings_for(servers: list[Slapd], tmp_path: Path, **overrides):
    options = directory_options(servers[0], tmp_path / "config", **overrides)
    options["servers"] = [server.url for server in servers]
    return ldap_settings(options, tmp_path, "citygate.yaml")


def test_failover_first_strategy(slapd_factory, tmp_path):
    first, second = slapd_factory(), slapd_factory()
    clock = Clock()
    directory = LdapDirectory(settings_for([first, second], tmp_path, exhaust=30), clock=clock)
    base = first.searches(), second.searches()
    for _ in range(3):
        assert directory.lookup("jlee") is not None
    assert first.searches() > base[0] and second.searches() == base[1]

    first.stop()
    assert directory.lookup("jlee") is not None  # answered by the second server
    answered_by_second = second.searches()
    assert answered_by_second > base[1]
    first.start()
    assert directory.lookup("mnguyen") is not None
    assert second.searches() > answered_by_second  # the first one is still cooling down
    clock.advance(30)
    before = first.searches()
    assert directory.lookup("mnguyen") is not None
    assert first.searches() > before  # back to the first server


def test_round_robin_spreads_calls(slapd_factory, tmp_path):
    first, second = slapd_factory(), slapd_factory()
    directory = LdapDirectory(settings_for([first, second], tmp_path, strategy="round_robin"))
    base = first.searches(), second.searches()
    for _ in range(4):
        assert directory.lookup("jlee") is not None
    assert first.searches() > base[0] and second.searches() > base[1]


def test_a_hung_server_is_skipped_after_one_timeout(slapd_factory, tmp_path):
    hung, healthy = slapd_factory(), slapd_factory()
    directory = LdapDirectory(settings_for([hung, healthy], tmp_path))
    with hung.paused():
        started = time.monotonic()
        assert directory.lookup("jlee") is not None  # timed out on the first, answered by the second
        assert time.monotonic() - started < HUNG_BOUND
        started = time.monotonic()
        for _ in range(5):
            assert directory.lookup("jlee") is not None
        assert time.monotonic() - started < RECEIVE_TIMEOUT  # never waited on the hung one again


def test_no_retries_means_one_server_per_call(slapd_factory, tmp_path):
    down, up = slapd_factory(), slapd_factory()
    directory = LdapDirectory(settings_for([down, up], tmp_path, retries=0))
    down.stop()
    with pytest.raises(DirectoryUnavailable):
        directory.lookup("jlee")
    assert directory.lookup("jlee") is not None  # the next call goes to the other server


# --- TLS -------------------------------------------------------------------------------------


def test_ldaps_with_the_ca_file(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path, servers=[slapd.ldaps_url], ca_file=str(slapd.ca_file))
    assert directory.lookup("jlee").department == "Parks"
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.OK


def test_start_tls_with_the_ca_file(slapd, tmp_path):
    server = f"ldap://localhost:{slapd.port}"
    directory = open_ldap(slapd, tmp_path, servers=[server], start_tls=True, ca_file=str(slapd.ca_file))
    mark = len(slapd.log_text())
    assert directory.lookup("jlee").department == "Parks"
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.OK
    log = slapd.log_text()[mark:]
    assert log.count("oid=1.3.6.1.4.1.1466.20037") == 2  # StartTLS, for the service and for jlee
    binds = [line for line in log.splitlines() if "mech=SIMPLE" in line]
    assert len(binds) == 2
    assert all(" ssf=0" not in line for line in binds)  # both binds went over TLS


def test_tls_refuses_an_unknown_ca(slapd, tmp_path):
    directory = open_ldap(slapd, tmp_path, servers=[slapd.ldaps_url])  # system CAs only
    with pytest.raises(DirectoryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        directory.lookup("jlee")
    start_tls = open_ldap(slapd, tmp_path, servers=[f"ldap://localhost:{slapd.port}"], start_tls=True)
    with pytest.raises(DirectoryUnavailable):
        start_tls.authenticate("jlee", "jlee-pass")


def test_tls_refuses_a_certificate_for_another_name(slapd, tmp_path):
    directory = open_ldap(
        slapd, tmp_path, servers=[slapd.ldaps_url_not_in_certificate], ca_file=str(slapd.ca_file)
    )
    with pytest.raises(DirectoryUnavailable, match=r"(?i)hostname|IP address mismatch"):
        directory.lookup("jlee")


# --- the gateway over LDAP ---------------------------------------------------------------------


def test_a_cached_password_needs_no_second_bind(fresh_slapd, tmp_path):
    settings = CacheSettings(credentials_ttl=60, failed_credentials_ttl=0)
    gateway = DirectoryGateway(open_ldap(fresh_slapd, tmp_path), settings)
    binds = fresh_slapd.binds(person_dn("jlee"))
    assert asyncio.run(gateway.authenticate("jlee", "jlee-pass")).outcome is BindOutcome.OK
    assert asyncio.run(gateway.authenticate("jlee", "jlee-pass")).outcome is BindOutcome.OK
    assert fresh_slapd.binds(person_dn("jlee")) == binds + 1
    assert asyncio.run(gateway.authenticate("jlee", "wrong")).outcome is BindOutcome.WRONG_PASSWORD
    assert asyncio.run(gateway.authenticate("jlee", "wrong")).outcome is BindOutcome.WRONG_PASSWORD
    assert fresh_slapd.binds(person_dn("jlee")) == binds + 3  # failures are asked every time
    fresh_slapd.stop()
    assert asyncio.run(gateway.authenticate("jlee", "jlee-pass")).outcome is BindOutcome.OK
    assert asyncio.run(gateway.authenticate("jlee", "other")).outcome is BindOutcome.UNAVAILABLE


class RecordingLdapDirectory(LdapDirectory):
    """The real LdapDirectory, noting which thread each directory call runs on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads: list[threading.Thread] = []

    def lookup(self, uid):
        self.threads.append(threading.current_thread())
        return super().lookup(uid)

    def authenticate(self, uid, password):
        self.threads.append(threading.current_thread())
        return super().authenticate(uid, password)

    def group_members(self, group):
        self.threads.append(threading.current_thread())
        return super().group_members(group)


def test_no_directory_call_runs_on_the_event_loop_thread(slapd, tmp_path, policy):
    settings = ldap_settings(directory_options(slapd, tmp_path / "config"), tmp_path, "c.yaml")
    directory = RecordingLdapDirectory(settings)
    gateway = DirectoryGateway(directory)

    async def requests():
        for user in ("jlee", "kwilliams", "mnguyen"):
            assert (await gateway.authenticate(user, f"{user}-pass")).outcome is BindOutcome.OK
            await gateway.people(people_involved(policy, user, ["www.facebook.com"]))
        await gateway.members(policy.approver_groups)
        return threading.current_thread()

    loop_thread = asyncio.run(requests())
    assert len(directory.threads) >= 9
    assert loop_thread not in directory.threads
    assert threading.main_thread() not in directory.threads


def test_group_members_across_pages(slapd, tmp_path, monkeypatch):
    monkeypatch.setattr(ldap_module, "PAGE_SIZE", 3)
    directory = open_ldap(slapd, tmp_path)
    assert [p.uid for p in directory.group_members("directors")] == [
        "ahernandez",
        "lgarcia",
        "pkim",
        "rpatel",
    ]


def test_groups_outside_the_group_base_grant_nothing(fresh_slapd, tmp_path):
    fresh_slapd.add(
        "dn: ou=clubs,dc=city,dc=example\nobjectClass: organizationalUnit\nou: clubs\n\n"
        "dn: cn=directors,ou=clubs,dc=city,dc=example\nobjectClass: groupOfNames\ncn: directors\n"
        f"member: {person_dn('mnguyen')}\n"
    )
    directory = open_ldap(fresh_slapd, tmp_path, group_base=GROUPS_BASE)
    assert "directors" not in directory.lookup("mnguyen").groups
    assert "mnguyen" not in {p.uid for p in directory.group_members("directors")}


def test_service_account_dn_is_the_one_configured(slapd, tmp_path):
    before = slapd.binds(SERVICE_DN)
    open_ldap(slapd, tmp_path).lookup("jlee")
    assert slapd.binds(SERVICE_DN) == before + 1
