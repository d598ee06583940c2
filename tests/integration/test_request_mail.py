"""Access-request mail, end to end on the demo city: the workflow queues each notice in the store
with what it reports, and it is sent to a real SMTP server (aiosmtpd, tests/smtp.py) over
STARTTLS, signed in, with the city's own CA; the people come from the demo directory (its LDIF,
read by the static backend), as the portal and the CLI see them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from demo_config import REPO, requests_city, with_sections
from slapd import write_pki
from smtp import PASSWORD, USER, SmtpServer, free_port

from citygate.directory.backends import open_directory
from citygate.proxy.policy import load_policy
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.mail import deliver_due, delivering
from citygate.proxy.requests.model import AccessRequest, Status
from citygate.proxy.requests.store import RequestStore
from citygate.proxy.requests.workflow import Approver, Decided, advance, decide, queue_missed, remind, submit

LA = ZoneInfo("America/Los_Angeles")
NOW = datetime.now(LA).replace(microsecond=0)
MONDAY = datetime(2026, 6, 15, 9, 0, tzinfo=LA)
PORTAL = "https://requests.city.example"
PURPOSE = "Post the summer camp schedule"
DIRECTORS_OF_PARKS = {"ahernandez@city.example"}


class City:
    """The demo city with requests and mail on: its store, directory and the workflow's steps."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.policy = load_policy(config)
        self.store = RequestStore(self.policy.features.requests.database)
        self.store.migrate()
        self.directory = open_directory(self.policy.directory, str(config))
        self.records: list[dict] = []

    def submit(self, uid: str = "mnguyen", at: datetime = NOW, until: date | None = None) -> AccessRequest:
        draft = Draft(("instagram",), PURPOSE, until or at.date() + timedelta(days=60))
        person = self.directory.lookup(uid)
        stored = submit(
            store=self.store, policy=self.policy, directory=self.directory, person=person, draft=draft, now=at
        )
        assert isinstance(stored, AccessRequest), stored
        return stored

    def decide(
        self, request: AccessRequest, uid: str, approved: bool = True, reason: str = ""
    ) -> AccessRequest:
        outcome = decide(
            store=self.store,
            policy=load_policy(self.config),  # as each CLI run and a reloaded portal load it
            config_path=self.config,
            directory=self.directory,
            request_id=request.id,
            approver=Approver(uid, "basic", "10.0.0.7"),
            approved=approved,
            reason=reason,
            now=NOW,
            record=self.records.append,
        )
        assert isinstance(outcome, Decided), outcome
        return outcome.request

    def advance(self, at: datetime) -> list[str]:
        done = advance(
            store=self.store, policy=self.policy, directory=self.directory, now=at, record=self.records.append
        )
        return [action.value for _, action in done]

    def remind(self, at: datetime = NOW) -> list[str]:
        return [n.key for n in remind(store=self.store, policy=self.policy, directory=self.directory, now=at)]

    def deliver(self, at: datetime = NOW):
        email = self.policy.features.requests.email
        assert email is not None
        return deliver_due(self.store, email, at)


def mail_city(folder: Path, server: SmtpServer, *, security: str = "starttls", **requests) -> Path:
    """The demo city sending through `server`, signed in with a password from a file."""
    password = folder / "smtp-password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    email = {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "security": security,
        "sender": "City of Example <citygate@city.example>",
        "username": USER,
        "password_file": str(password),
        "ca_file": str(server.ca),
    }
    return requests_city(folder, portal_url=PORTAL, email=email, **requests)


@pytest.fixture
def smtp(tmp_path: Path):
    with SmtpServer(tmp_path / "smtp") as server:
        yield server


@pytest.fixture
def city(tmp_path: Path, smtp: SmtpServer):
    city = City(mail_city(tmp_path, smtp))
    yield city
    city.store.close()


def add_designee(config: Path, line: str) -> None:
    parks = config.parent / "grants" / "parks.yaml"
    parks.write_text(
        parks.read_text().replace("department: Parks\n", f"department: Parks\ndesignees:\n{line}\n")
    )


def test_a_new_request_mails_its_departments_directors_and_their_designees_once(tmp_path, smtp):
    config = mail_city(tmp_path, smtp)
    add_designee(config, "  - {designee: jlee, director: ahernandez}")
    city = City(config)

    request = city.submit()
    [attempt] = city.deliver()

    assert attempt.sent and attempt.described(LA).startswith(f"mail sent: {request.id} new-request to ")
    [mail] = smtp.received
    # The Director and her designee; not the employee, nor other departments' Directors, nor
    # the executives (asked only on escalation).
    assert set(mail.recipients) == DIRECTORS_OF_PARKS | {"jlee@city.example"}
    assert (mail.encrypted, mail.login, mail.sender) == (True, USER, "citygate@city.example")
    message = mail.message
    assert message["From"] == "City of Example <citygate@city.example>"
    assert message["Subject"] == (
        f"[City of Example] Social media request {request.id} from Minh Nguyen awaits your decision"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"] == f"<{request.id}.stage-0.new@city.example>"
    assert PURPOSE not in str(message["Subject"])  # the free text is in the body only
    body = mail.body
    assert f"Decide: {PORTAL}/approvals/{request.id}" in body
    assert PURPOSE in body and "Minh Nguyen (mnguyen, Recreation Specialist, Parks)" in body
    assert "Sites: Instagram" in body

    [queued] = city.store.outbox(request.id)
    assert (queued.kind, queued.attempts, queued.sent_at, queued.last_error) == ("new-request", 1, NOW, None)
    assert city.deliver(NOW + timedelta(hours=1)) == []
    assert len(smtp.received) == 1


def test_a_request_is_mailed_only_to_its_own_departments_director(city, smtp):
    request = city.submit("kwilliams")  # Communications

    city.deliver()

    [mail] = smtp.received
    assert mail.recipients == ("rpatel@city.example",)
    assert request.id in mail.body


@pytest.mark.parametrize("approved", [True, False])
def test_the_decision_is_mailed_to_the_employee(city, smtp, approved):
    request = city.submit(until=NOW.date() + timedelta(days=60))
    city.deliver()

    decided = city.decide(
        request, "ahernandez", approved, "" if approved else "Use the Parks page on Facebook"
    )
    [attempt] = city.deliver()

    assert attempt.sent
    [mail] = smtp.to("mnguyen@city.example")
    assert mail.recipients == ("mnguyen@city.example",)
    if approved:
        assert (
            mail.message["Subject"] == f"[City of Example] Your social media request {request.id} is approved"
        )
        assert f"Grant: {decided.grant_id}" in mail.body
        assert "Sites: Instagram" in mail.body
        assert f"Until: {request.until.isoformat()} (the last day)" in mail.body
        assert f"approved by ahernandez on {NOW:%Y-%m-%d}" in mail.body
    else:
        assert (
            mail.message["Subject"] == f"[City of Example] Your social media request {request.id} is denied"
        )
        assert "Why:\n  Use the Parks page on Facebook" in mail.body
    assert len(smtp.received) == 2  # the Directors' and the employee's


def test_with_two_stages_the_next_stages_approvers_are_mailed_once_the_first_approves(tmp_path, smtp):
    ldif = tmp_path / "people.ldif"
    ldif.write_text(
        (REPO / "directory" / "demo.ldif").read_text()
        + "\ndn: cn=communications-office,ou=groups,dc=city,dc=example\nobjectClass: groupOfNames\n"
        "cn: communications-office\nmember: uid=kwilliams,ou=people,dc=city,dc=example\n"
    )
    config = mail_city(
        tmp_path,
        smtp,
        stages=[
            {"name": "Department Director recommends", "approvers": "department-directors"},
            {"name": "Communications decides", "approvers": {"group": "communications-office"}},
        ],
    )
    with_sections(config, directory={"backend": "static", "ldif": str(ldif)})
    city = City(config)

    request = city.submit()
    city.deliver()
    [first] = smtp.received
    assert (
        set(first.recipients) == DIRECTORS_OF_PARKS
        and "Stage: Department Director recommends (1 of 2)" in first.body
    )

    city.decide(request, "ahernandez")
    city.deliver()
    [second] = smtp.received[1:]
    assert second.recipients == ("kwilliams@city.example",)
    assert second.message["Message-ID"] == f"<{request.id}.stage-1.new@city.example>"
    assert "Stage: Communications decides (2 of 2)" in second.body
    assert f"Department Director recommends: approved by ahernandez on {NOW:%Y-%m-%d}" in second.body
    assert smtp.to("mnguyen@city.example") == []  # nothing is decided yet

    city.decide(request, "kwilliams")
    city.deliver()
    [decision] = smtp.to("mnguyen@city.example")
    assert "is approved" in decision.message["Subject"]


def test_an_escalation_is_mailed_to_the_executives_and_an_expiry_to_the_employee(city, smtp):
    request = city.submit(at=MONDAY)
    city.deliver(MONDAY)

    assert city.advance(datetime(2026, 6, 18, 8, 0, tzinfo=LA)) == ["escalate"]  # 3 business days
    city.deliver(datetime(2026, 6, 18, 8, 0, tzinfo=LA))
    [escalation] = smtp.received[1:]
    assert escalation.recipients == ("tsmith@city.example",)
    assert "is waiting for a decision" in escalation.message["Subject"]
    assert f"{PORTAL}/approvals/{request.id}" in escalation.body
    assert len(smtp.to("ahernandez@city.example")) == 1  # the Directors are not asked twice

    assert city.advance(datetime(2026, 6, 29, 8, 0, tzinfo=LA)) == ["expire"]  # 10 business days
    city.deliver(datetime(2026, 6, 29, 8, 0, tzinfo=LA))
    [expired] = smtp.to("mnguyen@city.example")
    assert "expired undecided" in expired.message["Subject"]
    assert f"{PORTAL}/request?site=instagram" in expired.body


def test_reminders_are_mailed_once_before_the_grant_ends_with_a_link_to_ask_again(city, smtp):
    ending = city.submit(until=NOW.date() + timedelta(days=5))
    lasting = city.submit("jlee", until=NOW.date() + timedelta(days=60))
    city.decide(ending, "ahernandez")
    city.decide(lasting, "ahernandez")
    city.deliver()
    before = len(smtp.received)

    assert city.remind() == [f"{ending.id}:reminder:employee", f"{ending.id}:reminder:approvers"]
    assert city.remind() == []  # queued once, however often advance runs
    assert len(city.deliver()) == 2

    [to_employee] = [r for r in smtp.received[before:] if r.recipients == ("mnguyen@city.example",)]
    assert to_employee.message["Subject"] == (
        f"[City of Example] Your access to Instagram ends on {ending.until.isoformat()}"
    )
    assert f"  {PORTAL}/request?site=instagram" in to_employee.body
    [to_approver] = [r for r in smtp.received[before:] if r.recipients == ("ahernandez@city.example",)]
    assert "The access you approved for Minh Nguyen (mnguyen" in to_approver.body
    assert city.remind(NOW + timedelta(days=1)) == [] and city.deliver(NOW + timedelta(days=1)) == []


def test_no_reminder_once_the_employee_has_asked_again(city, smtp):
    ending = city.submit(until=NOW.date() + timedelta(days=5))
    city.decide(ending, "ahernandez")
    city.submit(until=NOW.date() + timedelta(days=90))  # the renewal, waiting for its decision

    assert city.remind() == []


def test_with_the_mail_server_down_the_request_is_kept_and_its_mail_sent_later(tmp_path):
    server = SmtpServer(tmp_path / "smtp", port=free_port())  # its certificate now; started later
    city = City(mail_city(tmp_path, server))

    request = city.submit()
    [attempt] = city.deliver(NOW)

    assert city.store.get(request.id).status is Status.PENDING
    assert not attempt.sent and "Connection refused" in attempt.error
    assert attempt.retry_at == NOW + timedelta(minutes=1)
    assert attempt.described(LA).startswith(
        f"mail not sent (attempt 1, next try {NOW + timedelta(minutes=1):%Y-%m-%d %H:%M}): "
    )
    [queued] = city.store.outbox(request.id)
    assert (queued.attempts, queued.sent_at, queued.next_attempt_at) == (1, None, NOW + timedelta(minutes=1))
    assert f"127.0.0.1:{server.port}: " in queued.last_error and "Connection refused" in queued.last_error
    assert PASSWORD not in queued.last_error

    assert city.deliver(NOW + timedelta(seconds=30)) == []  # not due yet
    [again] = city.deliver(NOW + timedelta(minutes=1))
    assert again.retry_at == NOW + timedelta(minutes=6)  # then 5 minutes

    with server:
        [sent] = city.deliver(NOW + timedelta(minutes=6))
        assert sent.sent and len(server.received) == 1
    [queued] = city.store.outbox(request.id)
    assert (queued.attempts, queued.sent_at, queued.next_attempt_at) == (3, NOW + timedelta(minutes=6), None)


def test_a_server_without_starttls_is_sent_nothing_not_even_the_password(tmp_path):
    with SmtpServer(tmp_path / "smtp", tls="none") as server:
        city = City(mail_city(tmp_path, server))
        request = city.submit()

        [attempt] = city.deliver()

        assert not attempt.sent and "does not offer STARTTLS, so nothing was sent" in attempt.error
        assert server.received == [] and server.logins == []
        [queued] = city.store.outbox(request.id)
        assert queued.next_attempt_at == NOW + timedelta(minutes=1)  # tried again: the server may be fixed


def test_a_certificate_the_citys_ca_did_not_sign_is_refused(tmp_path, smtp):
    (tmp_path / "other").mkdir()
    other_ca, _, _ = write_pki(tmp_path / "other")
    city = City(mail_city(tmp_path, smtp))
    city.submit()
    email = city.policy.features.requests.email
    assert email is not None

    attempts = deliver_due(city.store, dataclasses.replace(email, ca_file=other_ca), NOW)

    assert [a.sent for a in attempts] == [False]
    assert "certificate is not trusted" in attempts[0].error and smtp.received == []


def test_implicit_tls(tmp_path):
    with SmtpServer(tmp_path / "smtp", tls="implicit") as server:
        city = City(mail_city(tmp_path, server, security="tls"))
        city.submit()

        [attempt] = city.deliver()

        assert attempt.sent
        [mail] = server.received
        assert mail.encrypted and mail.login == USER


def test_someone_without_a_mail_address_is_not_mailed_and_the_outbox_says_so(tmp_path, smtp):
    ldif = tmp_path / "people.ldif"
    ldif.write_text(
        (REPO / "directory" / "demo.ldif").read_text().replace("mail: mnguyen@city.example\n", "")
    )
    config = mail_city(tmp_path, smtp)
    with_sections(config, directory={"backend": "static", "ldif": str(ldif)})
    city = City(config)
    request = city.submit()
    city.decide(request, "ahernandez", approved=False, reason="Use the Parks page")

    city.deliver()

    assert [r.recipients for r in smtp.received] == [("ahernandez@city.example",)]
    decision = next(q for q in city.store.outbox(request.id) if q.kind == "decision")
    assert decision.last_error == "nobody to send it to: the directory has no mail address for mnguyen"
    assert (decision.next_attempt_at, decision.attempts) == (None, 0)


def test_without_email_settings_no_mail_is_queued(tmp_path):
    city = City(requests_city(tmp_path))
    request = city.submit()
    city.decide(request, "ahernandez")

    assert city.store.outbox() == []
    assert city.remind() == []


def test_requests_stored_before_mail_was_set_up_are_mailed_by_the_next_advance(tmp_path, smtp):
    config = requests_city(tmp_path)
    before = City(config)
    request = before.submit()  # no email: section yet: nothing queued
    (tmp_path / "again").mkdir()
    city = City(mail_city(tmp_path / "again", smtp, database=str(tmp_path / "requests.sqlite")))

    queued = queue_missed(store=city.store, policy=city.policy, directory=city.directory, now=NOW)

    assert [n.key for n in queued] == [f"{request.id}:stage-0:new"]
    assert queue_missed(store=city.store, policy=city.policy, directory=city.directory, now=NOW) == []
    city.deliver()
    [mail] = smtp.received
    assert set(mail.recipients) == DIRECTORS_OF_PARKS


def test_the_portal_delivers_in_the_background(city, smtp):
    city.submit()
    email = city.policy.features.requests.email

    async def serve() -> None:
        async with delivering(city.store, email, lambda: datetime.now(LA), every=0.05):
            deadline = time.monotonic() + 10
            while not smtp.received and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    asyncio.run(serve())

    assert len(smtp.received) == 1


def test_the_password_is_read_from_its_file_at_each_send(city, smtp, tmp_path):
    password_file = tmp_path / "smtp-password"
    password_file.write_text("not-the-password\n")
    request = city.submit()

    [refused] = city.deliver(NOW)

    assert not refused.sent and "the mail server answered 535" in refused.error
    assert "not-the-password" not in refused.error and smtp.received == []
    password_file.write_text(PASSWORD + "\n")  # corrected (or rotated): no restart, no reload
    [sent] = city.deliver(NOW + timedelta(minutes=1))
    assert sent.sent and smtp.logins == [USER]
    assert [q.attempts for q in city.store.outbox(request.id)] == [2]


def test_a_relay_on_this_machine_may_take_the_mail_in_clear(tmp_path):
    with SmtpServer(tmp_path / "smtp", tls="none") as server:
        email = {
            "smtp_host": "localhost",
            "smtp_port": server.port,
            "security": "none",
            "sender": "citygate@city.example",
        }
        city = City(requests_city(tmp_path, portal_url=PORTAL, email=email))
        city.submit()

        [attempt] = city.deliver()

        assert attempt.sent
        [mail] = server.received
        assert (mail.encrypted, mail.login) == (False, None)
