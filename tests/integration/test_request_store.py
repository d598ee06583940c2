"""The access-request store against real databases: a SQLite file and a private PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from postgres import Postgres

from citygate.directory.model import Person
from citygate.proxy.requests.config import RequestSettings, Stage
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.model import StageDecision, Status
from citygate.proxy.requests.notices import Notice, NoticeKind
from citygate.proxy.requests.routing import with_decision
from citygate.proxy.requests.store import AlreadyOpen, RequestStore

LA = ZoneInfo("America/Los_Angeles")
AT = datetime(2026, 6, 15, 9, 30, tzinfo=LA)
MINH = Person("MNguyen", "Minh Nguyen", "Parks", "Recreation Specialist")
KIM = Person("kwilliams", "Kim Williams", "Communications", "PIO")
CAMP = Draft(
    ("facebook",), "Post the summer camp schedule", date(2026, 9, 30), {"facebook": ("/CityOfExampleParks",)}
)
TWO_STAGES = RequestSettings(
    enabled=True, stages=(Stage("Director"), Stage("Communications", "communications-office"))
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RequestStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'var' / 'requests.sqlite'}"
    else:
        server: Postgres = request.getfixturevalue("postgres")
        url = server.url
        engine = sa.create_engine(url)
        with engine.begin() as db:  # each test starts from an empty database
            db.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    store = RequestStore(url)
    store.migrate()
    yield store
    store.close()


def decision(approver: str, stage: int = 0, approved: bool = True, minutes: int = 60) -> StageDecision:
    return StageDecision(
        stage,
        approver,
        "negotiate",
        approved,
        "" if approved else "No",
        AT + timedelta(minutes=minutes),
        "10.0.0.7",
    )


def test_a_request_is_stored_as_submitted_and_read_back(store):
    submitted = store.submit(MINH, CAMP, AT)

    assert submitted.id == "req-2026-0001"
    assert (submitted.employee, submitted.name, submitted.department, submitted.title) == (
        "mnguyen",
        "Minh Nguyen",
        "Parks",
        "Recreation Specialist",
    )
    assert (submitted.sites, submitted.purpose, submitted.until) == (CAMP.sites, CAMP.purpose, CAMP.until)
    assert dict(submitted.paths) == {"facebook": ("/CityOfExampleParks",)}
    assert submitted.submitted_at == AT and submitted.submitted_at.tzinfo is not None
    assert submitted.status is Status.PENDING
    assert store.get("req-2026-0001") == submitted
    assert store.of_employee("mnguyen") == [submitted]
    assert store.get("req-2026-0002") is None
    assert store.get("'; DROP TABLE access_requests; --") is None


def test_one_open_request_per_employee_and_site(store):
    first = store.submit(MINH, CAMP, AT)

    assert store.submit(MINH, dataclasses.replace(CAMP, sites=("instagram", "facebook")), AT) == AlreadyOpen(
        first.id, "facebook"
    )
    other_site = store.submit(MINH, dataclasses.replace(CAMP, sites=("instagram",), paths={}), AT)
    assert other_site.id == "req-2026-0002"
    assert store.submit(KIM, CAMP, AT).id == "req-2026-0003"  # someone else's request is theirs

    denied = with_decision(first, decision("ahernandez", approved=False), TWO_STAGES)
    assert store.save(first, denied)
    again = store.submit(MINH, CAMP, AT + timedelta(days=1))
    assert again.id == "req-2026-0004"  # closed requests leave the site free


def test_requests_submitted_at_the_same_moment_for_one_site_store_one(store):
    results = []
    start = threading.Barrier(6)

    def submit() -> None:
        start.wait()
        results.append(store.submit(MINH, CAMP, AT))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    stored = [r for r in results if not isinstance(r, AlreadyOpen)]
    assert len(results) == 6 and len(stored) == 1
    assert all(r == AlreadyOpen(stored[0].id, "facebook") for r in results if isinstance(r, AlreadyOpen))
    assert len(store.of_employee("mnguyen")) == 1


def test_every_stages_decision_is_kept_in_order(store):
    submitted = store.submit(MINH, CAMP, AT)
    recommended = with_decision(submitted, decision("ahernandez"), TWO_STAGES)
    assert store.save(submitted, recommended)
    read = store.get(submitted.id)
    approved = with_decision(read, decision("kwilliams", stage=1, minutes=120), TWO_STAGES)
    assert store.save(read, approved)

    final = store.get(submitted.id)
    assert final.status is Status.APPROVED
    assert [(d.stage, d.approver, d.approved) for d in final.decisions] == [
        (0, "ahernandez", True),
        (1, "kwilliams", True),
    ]
    assert final.decisions[1].at == AT + timedelta(minutes=120)
    assert final.decisions[1].at.astimezone(UTC).tzinfo is UTC
    assert final.closed_at == AT + timedelta(minutes=120)
    assert store.pending() == []


def test_two_approvers_deciding_the_same_request_at_once_save_one_decision(store):
    submitted = store.submit(MINH, CAMP, AT)
    by_director = with_decision(submitted, decision("ahernandez"), TWO_STAGES)
    by_executive = with_decision(submitted, decision("tsmith", approved=False), TWO_STAGES)

    assert store.save(submitted, by_director)
    assert not store.save(submitted, by_executive)  # read before the other's save: refused
    assert [d.approver for d in store.get(submitted.id).decisions] == ["ahernandez"]


def test_pending_requests_by_department(store):
    parks = store.submit(MINH, CAMP, AT)
    comms = store.submit(KIM, CAMP, AT)

    assert [r.id for r in store.pending()] == [comms.id, parks.id]  # newest first
    assert store.pending(["Parks"]) == [parks]
    assert store.pending([]) == []


def test_migrating_again_changes_nothing(store):
    store.submit(MINH, CAMP, AT)
    store.migrate()

    assert len(store.of_employee("mnguyen")) == 1


def test_the_sqlite_file_is_in_wal_mode(tmp_path):
    store = RequestStore(f"sqlite:///{tmp_path / 'requests.sqlite'}")
    store.migrate()
    with store.engine.connect() as db:
        assert db.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
    store.close()


# ---------------------------------------------------------------------- the mail outbox


def notice(key: str, request_id: str, recipients: tuple[str, ...] = ("ahernandez@city.example",)) -> Notice:
    return Notice(key, NoticeKind.NEW_REQUEST, request_id, recipients, "A request", "Decide it.\n")


def test_a_requests_notice_is_queued_with_it_and_each_key_once(store):
    submitted = store.submit(
        MINH, CAMP, AT, notices=lambda stored: [notice(f"{stored.id}:stage-0:new", stored.id)]
    )

    [queued] = store.outbox(submitted.id)
    assert (queued.key, queued.kind, queued.request_id, queued.recipients) == (
        "req-2026-0001:stage-0:new",
        "new-request",
        submitted.id,
        ("ahernandez@city.example",),
    )
    assert (queued.queued_at, queued.next_attempt_at, queued.attempts, queued.sent_at) == (AT, AT, 0, None)
    assert store.queue([notice(queued.key, submitted.id)], AT) == []  # queued again: kept once
    assert store.queued_keys([queued.key, "req-2026-0001:denied"]) == {queued.key}

    denied = with_decision(submitted, decision("ahernandez", approved=False), TWO_STAGES)
    assert store.save(submitted, denied, notices=[notice("req-2026-0001:denied", submitted.id)], at=AT)
    # Saved onto a stale read: neither the change nor its notice is kept.
    assert not store.save(submitted, denied, notices=[notice("req-2026-0001:lost", submitted.id)], at=AT)
    assert [q.key for q in store.outbox(submitted.id)] == [queued.key, "req-2026-0001:denied"]


def test_a_request_whose_notice_cannot_be_composed_is_not_stored(store):
    def broken(stored):
        raise RuntimeError("no notice")

    with pytest.raises(RuntimeError):
        store.submit(MINH, CAMP, AT, notices=broken)

    assert store.of_employee("mnguyen") == [] and store.outbox() == []
    assert store.submit(MINH, CAMP, AT).id  # nor is the site held open


def test_a_due_notice_is_taken_by_one_sender_until_sent(store):
    submitted = store.submit(MINH, CAMP, AT, notices=lambda stored: [notice("k", stored.id)])
    assert store.due_notices(AT - timedelta(seconds=1)) == []
    [due] = store.due_notices(AT)

    assert store.claim(due, AT + timedelta(minutes=10))
    assert not store.claim(due, AT + timedelta(minutes=10))  # another host had read it too
    assert store.due_notices(AT + timedelta(minutes=5)) == []  # taken, not due to anyone else
    store.mark_failed(due.id, "127.0.0.1:587: Connection refused", AT + timedelta(minutes=1))
    [again] = store.due_notices(AT + timedelta(minutes=1))
    assert (again.attempts, again.last_error, again.request_id) == (
        1,
        "127.0.0.1:587: Connection refused",
        submitted.id,
    )

    assert store.claim(again, AT + timedelta(minutes=11))
    store.mark_sent(again.id, AT + timedelta(minutes=2))
    assert store.due_notices(AT + timedelta(days=1)) == []
    [sent] = store.outbox()
    assert (sent.attempts, sent.sent_at, sent.next_attempt_at, sent.last_error) == (
        2,
        AT + timedelta(minutes=2),
        None,
        None,
    )


def test_senders_on_several_hosts_take_a_notice_once(store):
    store.submit(MINH, CAMP, AT, notices=lambda stored: [notice("k", stored.id)])
    [due] = store.due_notices(AT)
    taken = []
    start = threading.Barrier(6)

    def claim() -> None:
        start.wait()
        taken.append(store.claim(due, AT + timedelta(minutes=10)))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(taken) == [False] * 5 + [True]


def test_a_notice_for_nobody_is_kept_saying_so_and_never_due(store):
    submitted = store.submit(MINH, CAMP, AT)
    nobody = Notice("k", NoticeKind.DECISION, submitted.id, (), "Decided", "Body\n", ("mnguyen",))

    assert store.queue([nobody], AT) == [nobody]

    [kept] = store.outbox()
    assert (kept.next_attempt_at, kept.last_error) == (
        None,
        "nobody to send it to: the directory has no mail address for mnguyen",
    )
    assert store.due_notices(AT + timedelta(days=1)) == []


def test_approved_and_recently_closed_requests(store):
    first = store.submit(MINH, CAMP, AT)
    second = store.submit(KIM, CAMP, AT)
    one_stage = RequestSettings(enabled=True)
    approved = with_decision(first, decision("ahernandez"), one_stage)
    assert store.save(first, approved)

    assert [r.id for r in store.approved_until_from(CAMP.until)] == [first.id]
    assert store.approved_until_from(CAMP.until + timedelta(days=1)) == []
    assert [r.id for r in store.closed_since(AT)] == [first.id]
    assert store.closed_since(AT + timedelta(hours=2)) == []
    assert second.id not in {r.id for r in store.closed_since(AT)}


def test_every_host_of_a_store_shares_one_secret_drawn_once(store):
    other_host = RequestStore(str(store.engine.url.render_as_string(hide_password=False)))
    try:
        first = store.shared_secret("form-tokens")

        assert len(first) == 32
        assert other_host.shared_secret("form-tokens") == first == store.shared_secret("form-tokens")
        assert store.shared_secret("another") != first
    finally:
        other_host.close()
