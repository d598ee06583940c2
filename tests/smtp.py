"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a free port, in a thread of its own.

It speaks as a city's mail server would: STARTTLS required before anything is sent (a
submission server on port 587), TLS from the first byte (465), or plain without STARTTLS on
offer (to show citygate refuses it). Its certificate is signed by a throw-away CA
(tests/slapd.py's `write_pki`) that `requests.email.ca_file` names, as a city's own CA would be.
It signs in one account (AUTH PLAIN or LOGIN, only over TLS) and keeps what it received.

Typical use::

    with SmtpServer(tmp_path) as server:
        ...  # requests.email: {smtp_host: 127.0.0.1, smtp_port: server.port, ca_file: server.ca}
        [message] = server.received
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from slapd import write_pki

USER, PASSWORD = "citygate", "smtp-secret-7f3a"


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    encrypted: bool  # over TLS (STARTTLS or implicit)
    login: str | None  # the account signed in as

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return part.get_content().replace("\r\n", "\n")  # as sent over SMTP: CRLF


class _Mailbox:
    """The aiosmtpd handler and authenticator: keeps messages and sign-ins."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.logins: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), message, encrypted, login)
            )
        return "250 OK"

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            USER,
            PASSWORD,
        )
        if ok:
            with self.lock:
                self.logins.append(data.login.decode())
        # handled=False: aiosmtpd answers a refusal (535) itself.
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def email_settings(server: SmtpServer, folder: Path) -> dict[str, Any]:
    """A `requests.email:` section for `server`, signing in with a password file in `folder`."""
    password = folder / "smtp-password"
    password.write_text(PASSWORD + "\n")
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "sender": "citygate@city.example",
        "username": USER,
        "password_file": str(password),
        "ca_file": str(server.ca),
    }


class SmtpServer:
    """`tls`: "starttls" (required), "implicit", or "none" (STARTTLS not offered)."""

    def __init__(self, folder: Path, *, tls: str = "starttls", port: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = write_pki(folder)
        self.port = port or free_port()
        self.mailbox = _Mailbox()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        # AUTH only over TLS; aiosmtpd counts only STARTTLS as TLS, so not asked on implicit TLS.
        options: dict[str, Any] = {"authenticator": self.mailbox, "auth_require_tls": tls != "implicit"}
        if tls == "starttls":
            options |= {"tls_context": context, "require_starttls": True}
        elif tls == "implicit":
            options |= {"ssl_context": context}
        self.controller = Controller(
            self.mailbox, hostname="127.0.0.1", port=self.port, server_hostname="mail.test", **options
        )

    @property
    def received(self) -> list[Received]:
        with self.mailbox.lock:
            return list(self.mailbox.received)

    @property
    def logins(self) -> list[str]:
        with self.mailbox.lock:
            return list(self.mailbox.logins)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
