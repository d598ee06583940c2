"""Where access requests are kept: SQLite (one file, WAL) by default, PostgreSQL by URL.

Several proxy hosts behind a load balancer share one PostgreSQL: every rule that must hold
across them is the database's (one open request per employee and site is a primary key; a
decision is saved only if nobody saved another since it was read, by a version number), not
a process's memory. Calls block: the web app and the CLI run them off their event loops.
Times are stored in UTC and returned as aware datetimes.

The mail outbox is kept here too, so a notice is queued in the transaction that stores what it
reports (a crash cannot leave a request without its notice), and a failed send never touches
the request: mail.py takes each notice by a compare-and-set on its attempt count, so two
hosts never send one notice at once.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row

from citygate.directory.model import Person
from citygate.proxy.grants import REQUEST_ID
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.model import AccessRequest, StageDecision, Status, Terms
from citygate.proxy.requests.notices import Notice

MIGRATIONS = Path(__file__).with_name("migrations")

_metadata = sa.MetaData()
_requests = sa.Table(
    "access_requests",
    _metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("year", sa.Integer),
    sa.Column("employee", sa.String),
    sa.Column("name", sa.String),
    sa.Column("department", sa.String),
    sa.Column("title", sa.String),
    sa.Column("sites", sa.JSON),
    sa.Column("paths", sa.JSON),
    sa.Column("purpose", sa.Text),
    sa.Column("until", sa.Date),
    sa.Column("submitted_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String),
    sa.Column("stage", sa.Integer),
    sa.Column("escalated", sa.Boolean),
    sa.Column("grant_id", sa.String),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("version", sa.Integer),
)
_decisions = sa.Table(
    "request_decisions",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request", sa.Integer),
    sa.Column("stage", sa.Integer),
    sa.Column("approver", sa.String),
    sa.Column("method", sa.String),
    sa.Column("approved", sa.Boolean),
    sa.Column("reason", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("address", sa.String),
    sa.Column("delegated_by", sa.String),
    sa.Column("narrowed", sa.JSON),
)
_open = sa.Table(
    "open_requests",
    _metadata,
    sa.Column("employee", sa.String, primary_key=True),
    sa.Column("site", sa.String, primary_key=True),
    sa.Column("request", sa.Integer),
)
_secrets = sa.Table(
    "shared_secrets",
    _metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("value", sa.String),
)
_outbox = sa.Table(
    "mail_outbox",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String),
    sa.Column("kind", sa.String),
    sa.Column("request", sa.Integer),
    sa.Column("recipients", sa.JSON),
    sa.Column("subject", sa.String),
    sa.Column("body", sa.Text),
    sa.Column("queued_at", sa.DateTime(timezone=True)),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
)
ComposeNotices = Callable[[AccessRequest], Sequence[Notice]]


class AlreadyOpen(NamedTuple):
    """The employee has an open request for the site: one at a time."""

    request_id: str
    site: str


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedNotice:
    """A notice in the outbox, and how its delivery went so far."""

    id: int
    key: str
    kind: str
    request_id: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    queued_at: datetime
    # When it is (next) to be sent; None: never again (sent, refused for good, or nobody to send to).
    next_attempt_at: datetime | None
    attempts: int
    last_error: str | None
    sent_at: datetime | None


def request_number(request_id: str) -> int | None:
    """42 for req-2026-0042; None for anything that is not a request id."""
    return int(request_id.rsplit("-", 1)[1]) if REQUEST_ID.fullmatch(request_id) else None


class RequestStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            Path(self.engine.url.database or "").parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (a no-op when it is there)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def shared_secret(self, name: str) -> bytes:
        """The secret called `name` that every host of this store uses: drawn by the first host
        that asks, read by the others (so a form shown by one portal host posts to another)."""
        with self.engine.begin() as db:
            dialect = postgresql if db.dialect.name == "postgresql" else sqlite
            db.execute(
                dialect.insert(_secrets)
                .values(name=name, value=secrets.token_hex(32))
                .on_conflict_do_nothing(index_elements=["name"])
            )
            value = db.execute(sa.select(_secrets.c.value).where(_secrets.c.name == name)).scalar_one()
        return bytes.fromhex(value)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ requests

    def submit(
        self, person: Person, draft: Draft, at: datetime, notices: ComposeNotices | None = None
    ) -> AccessRequest | AlreadyOpen:
        """Store a new request, unless the employee has one open for one of its sites, with the
        notices `notices` composes from it (queued in the same transaction)."""
        employee = person.uid.casefold()
        try:
            with self.engine.begin() as db:
                taken = self._open_for(db, employee, draft.sites)
                if taken is not None:
                    return taken
                key = db.execute(
                    _requests.insert().values(
                        year=at.year,
                        employee=employee,
                        name=person.name,
                        department=person.department,
                        title=person.title,
                        sites=list(draft.sites),
                        paths={site: list(scope) for site, scope in draft.paths.items()},
                        purpose=draft.purpose,
                        until=draft.until,
                        submitted_at=_utc(at),
                        status=Status.PENDING.value,
                        stage=0,
                        escalated=False,
                        version=0,
                    )
                ).inserted_primary_key
                assert key is not None, "an autoincrement key"
                number = key[0]
                rows = [{"employee": employee, "site": site, "request": number} for site in draft.sites]
                db.execute(_open.insert(), rows)
                if notices is not None:
                    _queue(db, notices(self._load(db, _requests.c.number == number)[0]), at)
        except sa.exc.IntegrityError:
            # Another request for the site was stored between our check and our insert.
            with self.engine.connect() as db:
                taken = self._open_for(db, employee, draft.sites)
            if taken is None:
                raise
            return taken
        found = self.get(_request_id(at.year, number))
        assert found is not None, "just stored"
        return found

    def get(self, request_id: str) -> AccessRequest | None:
        number = request_number(request_id)
        if number is None:
            return None
        with self.engine.connect() as db:
            found = self._load(db, _requests.c.number == number)
        return found[0] if found else None

    def requests(self, request_ids: Iterable[str]) -> dict[str, AccessRequest]:
        """The requests of these ids that exist, by id."""
        numbers = [n for n in map(request_number, request_ids) if n is not None]
        if not numbers:
            return {}
        with self.engine.connect() as db:
            return {request.id: request for request in self._load(db, _requests.c.number.in_(numbers))}

    def of_employee(self, uid: str) -> list[AccessRequest]:
        """The employee's requests, newest first."""
        with self.engine.connect() as db:
            return self._load(db, _requests.c.employee == uid.casefold())

    def every(self) -> list[AccessRequest]:
        """Every request, newest first."""
        with self.engine.connect() as db:
            return self._load(db, sa.true())

    def pending(self, departments: Iterable[str] | None = None) -> list[AccessRequest]:
        """Open requests (of these departments), newest first."""
        condition = _requests.c.status == Status.PENDING.value
        if departments is not None:
            condition = condition & _requests.c.department.in_(list(departments))
        with self.engine.connect() as db:
            return self._load(db, condition)

    def save(
        self,
        before: AccessRequest,
        after: AccessRequest,
        *,
        notices: Sequence[Notice] = (),
        at: datetime | None = None,
    ) -> bool:
        """Store `after` (a decision, an escalation, an expiry...) if the request is still as
        `before` was read, with the `notices` that report it (queued at `at`, in the same
        transaction); False when someone else changed it first (nothing is stored)."""
        number = request_number(before.id)
        assert number is not None and after.id == before.id, "the same request"
        new_decisions = after.decisions[len(before.decisions) :]
        assert after.decisions[: len(before.decisions)] == before.decisions, "decisions are only added"
        with self.engine.begin() as db:
            changed = db.execute(
                _requests.update()
                .where(
                    _requests.c.number == number,
                    _requests.c.version == before.version,
                )
                .values(
                    status=after.status.value,
                    stage=after.stage,
                    escalated=after.escalated,
                    grant_id=after.grant_id,
                    closed_at=_utc(after.closed_at) if after.closed_at else None,
                    version=before.version + 1,
                )
            ).rowcount
            if changed != 1:
                return False
            if new_decisions:
                db.execute(_decisions.insert(), [_decision_row(number, d) for d in new_decisions])
            if not after.status.open:
                db.execute(_open.delete().where(_open.c.request == number))
            if notices:
                assert at is not None, "when the notices are queued"
                _queue(db, notices, at)
        return True

    def approved_until_from(self, first: date) -> list[AccessRequest]:
        """Approved requests asked until `first` or later (their grants may still be in force)."""
        condition = (_requests.c.status == Status.APPROVED.value) & (_requests.c.until >= first)
        with self.engine.connect() as db:
            return self._load(db, condition)

    def closed_since(self, at: datetime) -> list[AccessRequest]:
        """Requests decided (or expired) at `at` or later, newest first."""
        condition = (_requests.c.status != Status.PENDING.value) & (_requests.c.closed_at >= _utc(at))
        with self.engine.connect() as db:
            return self._load(db, condition)

    # ------------------------------------------------------------------ the mail outbox

    def queue(self, notices: Iterable[Notice], at: datetime) -> list[Notice]:
        """Queue `notices`, to be sent from `at`: those queued now (a key queued before is not)."""
        with self.engine.begin() as db:
            return _queue(db, notices, at)

    def queued_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are in the outbox (sent or not)."""
        wanted = list(keys)
        if not wanted:
            return set()
        with self.engine.connect() as db:
            return set(db.execute(sa.select(_outbox.c.key).where(_outbox.c.key.in_(wanted))).scalars())

    def outbox(self, request_id: str | None = None) -> list[QueuedNotice]:
        """The notices (of a request), oldest first."""
        condition = sa.true() if request_id is None else _outbox.c.request == request_number(request_id)
        with self.engine.connect() as db:
            return _queued(db, condition)

    def due_notices(self, now: datetime, limit: int = 100) -> list[QueuedNotice]:
        """Unsent notices whose time to be sent has come, the longest waiting first."""
        condition = _outbox.c.sent_at.is_(None) & (_outbox.c.next_attempt_at <= _utc(now))
        with self.engine.connect() as db:
            return _queued(db, condition, _outbox.c.next_attempt_at, limit)

    def claim(self, notice: QueuedNotice, until: datetime) -> bool:
        """Take `notice` to send it now, as read: one more attempt, and not due to anyone else
        before `until` (a sender that dies mid-send leaves it to the next after that). False
        when another process took it first."""
        with self.engine.begin() as db:
            changed = db.execute(
                _outbox.update()
                .where(
                    _outbox.c.id == notice.id,
                    _outbox.c.attempts == notice.attempts,
                    _outbox.c.sent_at.is_(None),
                )
                .values(attempts=notice.attempts + 1, next_attempt_at=_utc(until))
            ).rowcount
        return bool(changed == 1)

    def mark_sent(self, notice_id: int, at: datetime, note: str | None = None) -> None:
        """Sent at `at`; `note`: what went wrong all the same (recipients the server refused)."""
        with self.engine.begin() as db:
            db.execute(
                _outbox.update()
                .where(_outbox.c.id == notice_id)
                .values(sent_at=_utc(at), next_attempt_at=None, last_error=note)
            )

    def mark_failed(self, notice_id: int, error: str, retry_at: datetime | None) -> None:
        """Not sent: why, and when to try again (None: never, the server refused it for good)."""
        with self.engine.begin() as db:
            db.execute(
                _outbox.update()
                .where(_outbox.c.id == notice_id)
                .values(last_error=error, next_attempt_at=_utc(retry_at) if retry_at else None)
            )

    # ------------------------------------------------------------------ reading rows

    def _open_for(self, db: Connection, employee: str, sites: Sequence[str]) -> AlreadyOpen | None:
        taken = db.execute(
            sa.select(_open.c.site, _requests.c.year, _requests.c.number)
            .join(_requests, _requests.c.number == _open.c.request)
            .where(_open.c.employee == employee, _open.c.site.in_(list(sites)))
        ).first()
        return AlreadyOpen(_request_id(taken.year, taken.number), taken.site) if taken is not None else None

    def _load(self, db: Connection, condition: sa.ColumnElement[bool]) -> list[AccessRequest]:
        rows = db.execute(sa.select(_requests).where(condition).order_by(_requests.c.number.desc())).all()
        if not rows:
            return []
        decisions: dict[int, list[StageDecision]] = {}
        for row in db.execute(
            sa.select(_decisions)
            .where(_decisions.c.request.in_([row.number for row in rows]))
            .order_by(_decisions.c.id)
        ):
            decisions.setdefault(row.request, []).append(_decision_of(row))
        return [_request_of(row, decisions.get(row.number, [])) for row in rows]


def _queue(db: Connection, notices: Iterable[Notice], at: datetime) -> list[Notice]:
    """Insert the notices whose key is new: those inserted. One without recipients is kept, never
    due, saying why: the outbox shows that nobody could be told."""
    queued = []
    for notice in notices:
        nobody = (
            f"nobody to send it to: the directory has no mail address for {', '.join(notice.unreachable)}"
            if not notice.recipients
            else None
        )
        row = {
            "key": notice.key,
            "kind": notice.kind.value,
            "request": request_number(notice.request_id),
            "recipients": list(notice.recipients),
            "subject": notice.subject,
            "body": notice.body,
            "queued_at": _utc(at),
            "next_attempt_at": None if nobody else _utc(at),
            "attempts": 0,
            "last_error": nobody,
        }
        # INSERT ... ON CONFLICT DO NOTHING, in each database's words: a key queued twice is kept
        # once. RETURNING says whether it was inserted (rowcount does not, with psycopg).
        dialect = postgresql if db.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(_outbox).values(row).on_conflict_do_nothing(index_elements=["key"])
        if db.execute(statement.returning(_outbox.c.id)).first() is not None:
            queued.append(notice)
    return queued


def _queued(
    db: Connection,
    condition: sa.ColumnElement[bool],
    order: sa.ColumnElement[Any] = _outbox.c.id,
    limit: int | None = None,
) -> list[QueuedNotice]:
    rows = db.execute(
        sa.select(_outbox, _requests.c.year)
        .join(_requests, _requests.c.number == _outbox.c.request)
        .where(condition)
        .order_by(order, _outbox.c.id)
        .limit(limit)
    ).all()
    return [
        QueuedNotice(
            id=row.id,
            key=row.key,
            kind=row.kind,
            request_id=_request_id(row.year, row.request),
            recipients=tuple(row.recipients),
            subject=row.subject,
            body=row.body,
            queued_at=_aware(row.queued_at),
            next_attempt_at=_aware(row.next_attempt_at) if row.next_attempt_at else None,
            attempts=row.attempts,
            last_error=row.last_error,
            sent_at=_aware(row.sent_at) if row.sent_at else None,
        )
        for row in rows
    ]


def _request_id(year: int, number: int) -> str:
    return f"req-{year:04d}-{number:04d}"


def _request_of(row: Row[Any], decisions: Sequence[StageDecision]) -> AccessRequest:
    return AccessRequest(
        id=_request_id(row.year, row.number),
        employee=row.employee,
        name=row.name,
        department=row.department,
        title=row.title,
        sites=tuple(row.sites),
        purpose=row.purpose,
        until=row.until,
        submitted_at=_aware(row.submitted_at),
        paths=MappingProxyType({site: tuple(scope) for site, scope in row.paths.items()}),
        status=Status(row.status),
        stage=row.stage,
        escalated=row.escalated,
        decisions=tuple(decisions),
        grant_id=row.grant_id,
        closed_at=_aware(row.closed_at) if row.closed_at else None,
        version=row.version,
    )


def _decision_row(number: int, decision: StageDecision) -> dict[str, object]:
    narrowed = decision.narrowed
    return {field.name: getattr(decision, field.name) for field in dataclasses.fields(decision)} | {
        "request": number,
        "at": _utc(decision.at),
        "narrowed": None
        if narrowed is None
        else {
            "sites": list(narrowed.sites),
            "until": narrowed.until.isoformat(),
            "paths": {site: list(pages) for site, pages in narrowed.paths.items()},
        },
    }


def _terms_of(stored: dict[str, Any] | None) -> Terms | None:
    if stored is None:
        return None
    return Terms(
        tuple(stored["sites"]),
        date.fromisoformat(stored["until"]),
        MappingProxyType({site: tuple(pages) for site, pages in stored["paths"].items()}),
    )


def _decision_of(row: Row[Any]) -> StageDecision:
    return StageDecision(
        row.stage,
        row.approver,
        row.method,
        row.approved,
        row.reason,
        _aware(row.at),
        row.address,
        row.delegated_by,
        _terms_of(row.narrowed),
    )


def _utc(at: datetime) -> datetime:
    assert at.tzinfo is not None, "an aware time"
    return at.astimezone(UTC)


def _aware(at: datetime) -> datetime:
    """SQLite keeps no zone: what it returns is the UTC time that was stored."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _sqlite_pragmas(connection: Any, _record: object) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")  # another process's write: wait, do not fail
    cursor.close()
