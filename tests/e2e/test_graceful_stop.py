"""A graceful stop (SIGTERM) under load: every answer a client got is in the access log.

A real `citygate run` process serves concurrent clients on keep-alive connections: sign-in
challenges (407), denials (403) and ordinary requests to a local server. It is stopped with
SIGTERM while they are under way, ten times over one log folder, as a single process and with
two workers under the supervisor. Every social-media answer a
client received is then looked up in the log by its unique path and status.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import signal
import threading
from pathlib import Path

import pytest
from test_audit_faults import records
from test_audit_log import MNGUYEN, citygate, free_port, start_citygate_run, wait_until

STOPS = 10
CLIENTS = 6


class Client(threading.Thread):
    """Requests one after another on a keep-alive connection, reconnecting until refused."""

    def __init__(self, port: int, upstream: tuple[str, int], name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.upstream, self.tag, self.stop = port, upstream, name, stop
        self.answers: list[tuple[str, str, int]] = []  # (kind, path, status)

    def run(self) -> None:
        token = base64.b64encode(MNGUYEN.encode()).decode()
        host, port = self.upstream
        kinds = {
            "407": ("http://www.facebook.com", {}),
            "403": ("http://www.facebook.com", {"Proxy-Authorization": f"Basic {token}"}),
            "ordinary": (f"http://{host}:{port}", {}),
        }
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        for n in itertools.count():
            if self.stop.is_set():
                return
            kind = list(kinds)[n % 3]
            base, headers = kinds[kind]
            path = f"/stop-{self.tag}-{n}"
            try:
                connection.request("GET", base + path, headers=headers)
                response = connection.getresponse()
                response.read()
            except ConnectionRefusedError:
                return  # the proxy no longer listens
            except (OSError, http.client.HTTPException):
                connection.close()  # closed by the proxy: no answer to this one; reconnect
                continue
            self.answers.append((kind, path, response.status))
            if response.will_close:
                connection.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_answers_nothing_it_does_not_log(tmp_path: Path, plain_upstream, workers):
    log = tmp_path / "log"
    total: dict[int, int] = {}
    for round_ in range(STOPS):
        port = free_port()
        # With workers, the supervisor passes SIGTERM on to each, and each stops gracefully.
        process = start_citygate_run(port, log, tmp_path / "ca", workers=workers)
        stop = threading.Event()
        clients = [Client(port, plain_upstream.address, f"{round_}.{c}", stop) for c in range(CLIENTS)]
        for client in clients:
            client.start()
        wait_until(lambda clients=clients: sum(len(c.answers) for c in clients) > 60, timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stop.set()
        for client in clients:
            client.join(20)
            assert not client.is_alive()

        logged = {(r.get("url.path"), r.get("http.response.status_code")) for r in records(log)}
        answers = [answer for client in clients for answer in client.answers]
        unlogged = [
            (kind, path, status)
            for kind, path, status in answers
            if kind != "ordinary" and (path, status) not in logged
        ]
        assert unlogged == [], f"stop {round_ + 1}: answered but not in the log: {unlogged}"
        assert {kind for kind, _, _ in answers} == {"407", "403", "ordinary"}
        assert all(status == 200 for kind, _, status in answers if kind == "ordinary")
        assert all(str(status) == kind for kind, _, status in answers if kind != "ordinary")
        for _, _, status in answers:
            total[status] = total.get(status, 0) + 1

    verify = citygate("audit", "verify", str(log))
    assert verify.returncode == 0, verify.stdout
    assert total[407] > STOPS and total[403] > STOPS and total[200] > STOPS
