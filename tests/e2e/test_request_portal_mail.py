"""The portal's part in the access-request mail, as `citygate portal` runs: a request made in its
form is stored with its notice, and the mail due is sent in the background, from its start and
every 30 s, through a real SMTP server (tests/smtp.py) over STARTTLS."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

from demo_config import requests_city
from portal_server import form_value, request_id_of, running_portal
from smtp import PASSWORD, SmtpServer, email_settings

from citygate.directory.backends import open_directory
from citygate.proxy.policy import load_policy
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.model import AccessRequest
from citygate.proxy.requests.store import RequestStore
from citygate.proxy.requests.workflow import submit


def test_the_portal_queues_a_requests_mail_with_it_and_sends_the_mail_due(tmp_path: Path):
    with SmtpServer(tmp_path / "smtp") as server:
        email = email_settings(server, tmp_path)
        config = requests_city(tmp_path, portal_url="https://requests.city.example", email=email)
        policy = load_policy(config)
        store = RequestStore(policy.features.requests.database)
        store.migrate()
        directory = open_directory(policy.directory, str(config))
        now = datetime.now(policy.timezone)
        # Asked while no portal ran: its mail waits in the outbox for the portal to start.
        earlier = submit(
            store=store,
            policy=policy,
            directory=directory,
            person=directory.lookup("jlee"),
            draft=Draft(("facebook",), "Answer residents' questions", now.date() + timedelta(days=30)),
            now=now,
        )
        assert isinstance(earlier, AccessRequest)

        with running_portal(config) as portal:
            deadline = time.monotonic() + 15
            while not server.received and time.monotonic() < deadline:
                time.sleep(0.1)
            [waiting] = server.received
            assert waiting.recipients == ("ahernandez@city.example",) and earlier.id in waiting.body

            page = portal.call("mnguyen", "GET", "/request?site=www.instagram.com")[2]
            form = {
                "csrf": form_value(page, "csrf"),
                "sites": ["instagram"],
                "purpose": "Post the summer camp schedule",
                "pages": "",
                "until": form_value(page, "until"),
            }
            status, headers, _ = portal.call("mnguyen", "POST", "/request", form)
            assert status == 303
            request_id = request_id_of(headers["location"])

            [queued] = store.outbox(request_id)  # stored with the request, sent on the next round
            assert (queued.kind, queued.recipients) == ("new-request", ("ahernandez@city.example",))
        store.close()
    assert PASSWORD not in portal.output
