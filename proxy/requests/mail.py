"""Sending the outbox's notices through the city's mail server, and trying again when it fails.

`deliver_due` takes each due notice from the store by a compare-and-set on its attempt count
(two hosts sharing one PostgreSQL never send one notice at once), sends it and marks it sent; a
send that fails records why and when it is tried again: 1 min, 5 min, 30 min, 2 h, then every
6 h, for as long as it takes (a message every recipient refused for good is not retried). The
request a notice reports is never touched. It blocks: callers run it off any event loop (the
portal in a thread every 30 s, `citygate requests advance` after queuing what is due).

STARTTLS is required unless the settings say otherwise: a server that does not offer it is sent
nothing, not even the sign-in. The password is read from its file at each run that sends, and
is never logged; the errors recorded are the server's answers and the network's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from types import TracebackType
from typing import NamedTuple

from citygate.proxy.requests.config import EmailSettings, SmtpSecurity
from citygate.proxy.requests.store import QueuedNotice, RequestStore

log = logging.getLogger("citygate.requests.mail")

RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))
RETRY_EVERY = timedelta(hours=6)
# A notice taken to be sent is not due to anyone else for this long: a sender that dies
# mid-send (after the server took it, or not) leaves it to the next run after that.
CLAIM_LEASE = timedelta(minutes=10)
BATCH = 100  # notices per run at most; the rest wait for the next run
DELIVERY_INTERVAL_SECONDS = 30.0


class Attempt(NamedTuple):
    """One notice's delivery in this run."""

    notice: QueuedNotice  # as taken: `attempts` counts this one
    error: str | None  # None: sent
    retry_at: datetime | None  # when it is tried again; None: sent, or refused for good
    note: str | None = None  # sent, but some recipients were refused

    @property
    def sent(self) -> bool:
        return self.error is None

    def described(self, timezone: tzinfo) -> str:
        """One line for a log or a terminal: what, to whom, and how it went (never a secret)."""
        what = f"{self.notice.request_id} {self.notice.kind} to {', '.join(self.notice.recipients)}"
        if self.sent:
            return f"mail sent: {what}" + (f" ({self.note})" if self.note else "")
        when = (
            f"next try {self.retry_at.astimezone(timezone):%Y-%m-%d %H:%M}"
            if self.retry_at is not None
            else "not retried"
        )
        return f"mail not sent (attempt {self.notice.attempts}, {when}): {what}: {self.error}"


def retry_delay(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt a notice is tried again."""
    return RETRY_DELAYS[attempts - 1] if attempts <= len(RETRY_DELAYS) else RETRY_EVERY


def deliver_due(store: RequestStore, settings: EmailSettings, now: datetime) -> list[Attempt]:
    """Send the notices due at `now`, over one connection: what became of each."""
    attempts = []
    with _Sender(settings) as sender:
        for due in store.due_notices(now, BATCH):
            if not store.claim(due, now + CLAIM_LEASE):
                continue  # another host took it
            notice = dataclasses.replace(due, attempts=due.attempts + 1)
            outcome = sender.send(notice, now)
            if outcome.error is None:
                store.mark_sent(notice.id, now, outcome.note)
                attempts.append(Attempt(notice, None, None, outcome.note))
            else:
                retry_at = None if outcome.permanent else now + retry_delay(notice.attempts)
                store.mark_failed(notice.id, outcome.error, retry_at)
                attempts.append(Attempt(notice, outcome.error, retry_at))
    return attempts


class Courier:
    """The portal's mail round: every `every` seconds, and at once when woken (a request was just
    stored or decided, so its mail goes now rather than at the next round)."""

    def __init__(self) -> None:
        self._due = asyncio.Event()

    def wake(self) -> None:
        self._due.set()

    async def rest(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._due.wait(), seconds)
        self._due.clear()


@contextlib.asynccontextmanager
async def delivering(
    store: RequestStore,
    settings: EmailSettings | None,
    clock: Callable[[], datetime],
    every: float = DELIVERY_INTERVAL_SECONDS,
) -> AsyncIterator[Courier]:
    """While the body runs (the portal's lifespan), deliver the due notices every `every`
    seconds, and when the courier is woken, in a thread; nothing without `requests.email`."""
    courier = Courier()
    if settings is None:
        yield courier
        return
    task = asyncio.create_task(_deliver_every(store, settings, clock, every, courier))
    try:
        yield courier
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _deliver_every(
    store: RequestStore,
    settings: EmailSettings,
    clock: Callable[[], datetime],
    every: float,
    courier: Courier,
) -> None:
    while True:
        try:
            now = clock()
            for attempt in await asyncio.to_thread(deliver_due, store, settings, now):
                log.log(
                    logging.INFO if attempt.sent else logging.WARNING,
                    "citygate: %s",
                    attempt.described(now.tzinfo or UTC),
                )
        except Exception as exc:  # the store is down, say: the next round tries again
            log.warning("citygate: the access-request mail could not be delivered: %s", exc)
        await courier.rest(every)


# ---------------------------------------------------------------------- SMTP


class _Outcome(NamedTuple):
    error: str | None = None
    permanent: bool = False  # refused for good: not retried
    note: str | None = None


class NoStartTls(Exception):
    """The server does not offer STARTTLS, which the settings require."""


class _Sender:
    """One connection for a run, opened at the first notice; once the server fails, the run's
    other notices fail with the same error without asking it again."""

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None
        self.broken: str | None = None

    def __enter__(self) -> _Sender:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._close()

    def send(self, notice: QueuedNotice, now: datetime) -> _Outcome:
        if self.broken is not None:
            return _Outcome(self.broken)
        try:
            message = _message(notice, self.settings, now)
        except ValueError as exc:  # a header the email package refuses: it never will take it
            return _Outcome(f"the message could not be made: {exc}", permanent=True)
        try:
            if self.smtp is None:
                self.smtp = _connect(self.settings)
            refused = self.smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:  # every recipient: the connection still serves
            permanent = all(500 <= code < 600 for code, _ in exc.recipients.values())
            return _Outcome(_refusals(exc.recipients), permanent)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:  # this message only
            return _Outcome(self._where(_said(exc)))
        except (OSError, smtplib.SMTPException, NoStartTls) as exc:
            self.broken = self._where(_said(exc))
            self._close()
            return _Outcome(self.broken)
        return _Outcome(note=_refusals(refused) if refused else None)

    def _where(self, error: str) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}: {error}"

    def _close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.smtp.quit()
            self.smtp.close()
            self.smtp = None


def _connect(settings: EmailSettings) -> smtplib.SMTP:
    """A connection ready to send: encrypted as the settings say, signed in when they say so."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    timeout = settings.timeout_seconds
    smtp: smtplib.SMTP
    if settings.security is SmtpSecurity.TLS:
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    try:
        smtp.ehlo()
        if settings.security is SmtpSecurity.STARTTLS:
            if not smtp.has_extn("starttls"):
                raise NoStartTls(
                    "the server does not offer STARTTLS, so nothing was sent (security: starttls)"
                )
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.username is not None:
            smtp.login(settings.username, _password(settings))
    except BaseException:
        smtp.close()
        raise
    return smtp


def _password(settings: EmailSettings) -> str:
    """The password, read now from its file (rotated there without a restart): its one line."""
    assert settings.password_file is not None, "a username comes with a password_file"
    try:
        return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        # An OSError: _Sender records it as the run's error, without the file's content.
        raise OSError(f"the password_file {settings.password_file} could not be read: {why}") from None


def _message(notice: QueuedNotice, settings: EmailSettings, now: datetime) -> EmailMessage:
    """The notice as a message. EmailMessage refuses a line break in a header value."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = ", ".join(notice.recipients)
    message["Subject"] = notice.subject
    message["Date"] = format_datetime(now)
    domain = parseaddr(settings.sender)[1].rpartition("@")[2]
    # The same id every time it is sent (a retry after a crash mid-send): mail clients see one message.
    message["Message-ID"] = f"<{notice.key.replace(':', '.')}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to it
    message.set_content(notice.body)
    return message


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "refused by the mail server: " + "; ".join(
        f"{address} ({code} {answer.decode(errors='replace')})" for address, (code, answer) in refused.items()
    )


def _said(exc: BaseException) -> str:
    """What went wrong, in the server's words where it answered."""
    if isinstance(exc, smtplib.SMTPResponseException):
        answer = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        return f"the mail server answered {exc.smtp_code} {answer}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the mail server's certificate is not trusted ({exc.verify_message}): see requests.email.ca_file"
        )
    return str(exc) or type(exc).__name__
