"""Workers of one host share their directory answers (directory/shared.py), against a real slapd.

Two gateways over two LDAP connections and one shared file stand for two workers of
`citygate run --workers 2`; slapd's own log counts the searches that reached it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest
from slapd import SERVICE_PASSWORD, Slapd, directory_options, person_dn

from citygate.directory.backends import open_directory
from citygate.directory.cache import CacheSettings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.model import BindOutcome
from citygate.directory.settings import DirectorySettings
from citygate.directory.shared import (
    FILE_NAME,
    SHARED_DIR_ENV,
    SharedAnswers,
    scope_of,
    shared_between_workers,
)
from citygate.directory.static import StaticDirectory

REPO = Path(__file__).resolve().parents[2]
SETTINGS = CacheSettings(ttl=60, negative_ttl=30)


class WallClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def settings_for(server: Slapd, folder: Path) -> DirectorySettings:
    return DirectorySettings("ldap", directory_options(server, folder / "config"), folder)


def worker(
    server: Slapd, folder: Path, clock: WallClock, settings: DirectorySettings | None = None
) -> SharedAnswers:
    """One worker's backend: its own LDAP connection, the run's shared file."""
    settings = settings or settings_for(server, folder)
    ldap = open_directory(settings, str(folder / "citygate.yaml"))
    return SharedAnswers(ldap, folder / FILE_NAME, scope_of(settings), SETTINGS, clock=clock)


def test_a_second_worker_takes_the_first_workers_answers_instead_of_asking_the_directory(
    fresh_slapd: Slapd, tmp_path: Path
):
    clock = WallClock()
    first, second = worker(fresh_slapd, tmp_path, clock), worker(fresh_slapd, tmp_path, clock)

    ana = first.lookup("ahernandez")
    directors = first.group_members("directors")
    searches = fresh_slapd.searches()

    assert second.lookup("ahernandez") == ana
    assert second.lookup("AHernandez") == ana  # uids are matched without regard to case
    assert sorted(p.uid for p in second.group_members("Directors")) == sorted(p.uid for p in directors)
    assert fresh_slapd.searches() == searches
    assert second.directory_calls == {}
    assert first.directory_calls == {"lookup": 1, "group_members": 1}


def test_shared_answers_age_like_cached_ones_and_a_change_in_the_directory_shows_after_the_ttl(
    fresh_slapd: Slapd, tmp_path: Path
):
    clock = WallClock()
    first, second = worker(fresh_slapd, tmp_path, clock), worker(fresh_slapd, tmp_path, clock)
    assert first.lookup("ahernandez").department == "Parks"  # type: ignore[union-attr]
    fresh_slapd.replace(person_dn("ahernandez"), "departmentNumber", "Police")

    clock.now += SETTINGS.ttl - 1
    assert second.lookup("ahernandez").department == "Parks"  # type: ignore[union-attr]
    clock.now += 2
    assert second.lookup("ahernandez").department == "Police"  # type: ignore[union-attr]
    assert second.directory_calls == {"lookup": 1}


def test_no_such_person_is_shared_for_the_negative_ttl(fresh_slapd: Slapd, tmp_path: Path):
    clock = WallClock()
    first, second = worker(fresh_slapd, tmp_path, clock), worker(fresh_slapd, tmp_path, clock)
    assert first.lookup("nobody") is None

    assert second.lookup("nobody") is None
    assert second.directory_calls == {}
    clock.now += SETTINGS.negative_ttl + 1
    assert second.lookup("nobody") is None
    assert second.directory_calls == {"lookup": 1}


def test_passwords_are_checked_by_each_worker_and_never_written_to_the_shared_file(
    fresh_slapd: Slapd, tmp_path: Path
):
    clock = WallClock()
    first, second = worker(fresh_slapd, tmp_path, clock), worker(fresh_slapd, tmp_path, clock)

    assert first.authenticate("jlee", "jlee-pass") is BindOutcome.OK
    assert second.authenticate("jlee", "jlee-pass") is BindOutcome.OK
    first.lookup("jlee")

    assert first.directory_calls["authenticate"] == second.directory_calls["authenticate"] == 1
    stored = b"".join(path.read_bytes() for path in tmp_path.glob(f"{FILE_NAME}*"))
    assert b"jlee" in stored  # the lookup was shared...
    assert b"jlee-pass" not in stored  # ...the password was not
    assert SERVICE_PASSWORD.encode() not in stored


def test_another_directory_configuration_does_not_reuse_the_answers(fresh_slapd: Slapd, tmp_path: Path):
    clock = WallClock()
    first = worker(fresh_slapd, tmp_path, clock)
    first.lookup("ahernandez")
    other = settings_for(fresh_slapd, tmp_path)
    other = DirectorySettings("ldap", {**other.options, "receive_timeout": 2}, other.base)

    changed = worker(fresh_slapd, tmp_path, clock, other)
    changed.lookup("ahernandez")

    assert changed.directory_calls == {"lookup": 1}


def test_a_shared_file_that_cannot_be_used_leaves_the_worker_asking_the_directory(
    fresh_slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    settings = settings_for(fresh_slapd, tmp_path)
    ldap = open_directory(settings, str(tmp_path / "citygate.yaml"))
    broken = SharedAnswers(ldap, tmp_path / "no-such-folder" / FILE_NAME, "scope", SETTINGS)

    with caplog.at_level(logging.WARNING):
        assert broken.lookup("ahernandez").uid == "ahernandez"  # type: ignore[union-attr]
        assert broken.lookup("ahernandez").uid == "ahernandez"  # type: ignore[union-attr]

    assert broken.directory_calls == {"lookup": 2}
    warnings = [r.getMessage() for r in caplog.records if "shared directory answers" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, not on every request
    assert "asks the directory on its own" in warnings[0]


def test_through_the_gateway_two_workers_cost_the_directory_one_lookup_per_person(
    fresh_slapd: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    settings = settings_for(fresh_slapd, tmp_path)
    gateways = [
        DirectoryGateway(
            shared_between_workers(open_directory(settings, str(tmp_path / "c.yaml")), settings, SETTINGS),
            SETTINGS,
        )
        for _ in range(2)
    ]
    uids = ["ahernandez", "jlee", "mnguyen", "tsmith"]

    async def one_after_the_other() -> list[dict]:
        return [await gateway.people(uids) for gateway in gateways]

    first, second = asyncio.run(one_after_the_other())
    for gateway in gateways:
        gateway.close()

    assert first == second and set(first) == set(uids)
    assert [g.backend.directory_calls for g in gateways] == [{"lookup": 4}, {}]  # type: ignore[attr-defined]


def test_a_single_process_or_an_in_memory_directory_shares_nothing(tmp_path: Path, monkeypatch):
    static = StaticDirectory.from_ldif(REPO / "directory" / "demo.ldif")
    settings = DirectorySettings("static", {"ldif": "demo.ldif"}, REPO / "directory")

    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    assert shared_between_workers(static, settings, SETTINGS) is static
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    assert shared_between_workers(static, settings, SETTINGS) is static  # nothing to save: in memory


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param('{"uid": "ahernandez"}', id="fields-missing"),
        pytest.param('["ahernandez"]', id="not-a-mapping"),
    ],
)
def test_a_shared_answer_that_cannot_be_read_is_asked_of_the_directory_again(
    fresh_slapd: Slapd, tmp_path: Path, stored: str, caplog: pytest.LogCaptureFixture
):
    # A damaged row, or one another version wrote, must not fail the request: it is a miss.
    clock = WallClock()
    first = worker(fresh_slapd, tmp_path, clock)
    assert first.lookup("ahernandez") is not None
    with sqlite3.connect(tmp_path / FILE_NAME) as connection:
        connection.execute("UPDATE answers SET answer = ? WHERE kind = 'person'", (stored,))
    second = worker(fresh_slapd, tmp_path, clock)

    with caplog.at_level(logging.WARNING, logger="citygate.directory.shared"):
        ana = second.lookup("ahernandez")

    assert ana is not None and ana.uid == "ahernandez"
    assert second.directory_calls == {"lookup": 1}
    assert "cannot be read" in caplog.text
    assert third_reads_the_repaired_answer(fresh_slapd, tmp_path, clock)


def third_reads_the_repaired_answer(server: Slapd, folder: Path, clock: WallClock) -> bool:
    third = worker(server, folder, clock)
    found = third.lookup("ahernandez")
    return found is not None and third.directory_calls == {}
