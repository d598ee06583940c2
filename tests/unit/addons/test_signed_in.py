"""The memory of client addresses that signed in: per method, timed, shared by workers through a file."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from citygate.addons.signed_in import SignedInClients
from citygate.directory.shared import SHARED_DIR_ENV


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def run(coroutine):
    return asyncio.run(coroutine)


def test_an_address_is_remembered_for_its_method_s_period():
    clock = Clock()
    memory = SignedInClients(clock=clock)
    run(memory.remember("10.0.0.5", "negotiate"))
    run(memory.remember("10.0.0.6", "basic"))

    clock.now += 301
    assert run(memory.recently("10.0.0.5")) is True
    assert run(memory.recently("10.0.0.6")) is False  # Basic: minutes, not a working day
    clock.now += 8 * 3600
    assert run(memory.recently("10.0.0.5")) is False
    assert run(memory.recently("10.0.0.7")) is False


@pytest.mark.parametrize(("address", "method"), [(None, "negotiate"), ("10.0.0.5", "bearer"), ("", "basic")])
def test_nothing_is_remembered_without_an_address_or_for_other_methods(address, method):
    memory = SignedInClients()
    run(memory.remember(address, method))
    assert run(memory.recently(address)) is False
    assert run(memory.recently("10.0.0.5")) is False


def test_workers_sharing_the_file_see_each_other_s_sign_ins(tmp_path):
    clock = Clock()
    first = SignedInClients(tmp_path / "signed-in.sqlite", clock=clock)
    second = SignedInClients(tmp_path / "signed-in.sqlite", clock=clock)

    run(first.remember("10.0.0.5", "negotiate"))

    assert run(second.recently("10.0.0.5")) is True
    assert run(second.recently("10.0.0.6")) is False
    clock.now += 8 * 3600 + 1
    assert run(second.recently("10.0.0.5")) is False
    first.close()
    second.close()


def test_a_shorter_sign_in_never_shortens_a_longer_one_in_the_file(tmp_path):
    clock = Clock()
    kerberos = SignedInClients(tmp_path / "signed-in.sqlite", clock=clock)
    password = SignedInClients(tmp_path / "signed-in.sqlite", clock=clock)
    run(kerberos.remember("10.0.0.5", "negotiate"))
    clock.now += 60
    run(password.remember("10.0.0.5", "basic"))

    reader = SignedInClients(tmp_path / "signed-in.sqlite", clock=clock)
    clock.now += 3600
    assert run(reader.recently("10.0.0.5")) is True


def test_the_file_holds_addresses_and_times_only(tmp_path):
    memory = SignedInClients(tmp_path / "signed-in.sqlite")
    run(memory.remember("10.0.0.5", "negotiate"))
    memory.close()
    with sqlite3.connect(tmp_path / "signed-in.sqlite") as connection:
        rows = connection.execute("SELECT * FROM signed_in").fetchall()
    assert [row[0] for row in rows] == ["10.0.0.5"] and isinstance(rows[0][1], float)


def test_an_unusable_file_leaves_the_worker_remembering_on_its_own(tmp_path, caplog):
    (tmp_path / "not-a-folder").write_text("")
    memory = SignedInClients(tmp_path / "not-a-folder" / "signed-in.sqlite")

    run(memory.remember("10.0.0.5", "negotiate"))

    assert run(memory.recently("10.0.0.5")) is True
    assert run(memory.recently("10.0.0.6")) is False
    warnings = [r.getMessage() for r in caplog.records if "sign-in memory" in r.getMessage()]
    assert len(warnings) == 1 and "remembers sign-ins on its own" in warnings[0]


def test_a_worker_of_a_run_shares_through_the_run_s_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    assert SignedInClients.for_this_process().path == tmp_path / "signed-in-clients.sqlite"
    monkeypatch.delenv(SHARED_DIR_ENV)
    assert SignedInClients.for_this_process().path is None
