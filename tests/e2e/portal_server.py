"""`citygate portal` run as a city runs it (uvicorn, its own process) on a free 127.0.0.1 port,
and a plain HTTP client for its pages that signs in with a password (Basic) or a given header."""

from __future__ import annotations

import base64
import contextlib
import http.client
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from slapd import free_port

CITYGATE = str(Path(sys.executable).parent / "citygate")
START_SECONDS = 30


class Portal:
    def __init__(self, config: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.config, self.port, self.process = config, port, process
        self.output = ""  # what the portal printed, once it has stopped

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self,
        uid: str | None,
        method: str,
        path: str,
        form: dict | None = None,
        password: str | None = None,
        authorization: str | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """(status, headers by lower-case name, body) of one request, signed in as `uid` with a
        password (theirs in the demo directory unless given), or with `authorization` as given."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        elif uid is not None:
            secret = password if password is not None else f"{uid}-pass"
            headers["Authorization"] = "Basic " + base64.b64encode(f"{uid}:{secret}".encode()).decode()
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
        # Repeated headers (WWW-Authenticate) joined as one, the way RFC 9110 §5.3 allows.
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return response.status, merged, text

    def csrf(self, uid: str | None, path: str, authorization: str | None = None) -> str:
        status, _, page = self.call(uid, "GET", path, authorization=authorization)
        assert status == 200, page
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, page
        return found.group(1)


@contextlib.contextmanager
def running_portal(config: Path, port: int | None = None) -> Iterator[Portal]:
    """`citygate portal --config config` (on `port`, or a free one), until the block ends; its
    output is then in `.output`."""
    port = port or free_port()
    process = subprocess.Popen(
        [CITYGATE, "portal", "--config", str(config), "--listen-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, f"the portal did not listen within {START_SECONDS} s"
            time.sleep(0.1)
    portal = Portal(config, port, process)
    try:
        yield portal
    finally:
        process.terminate()
        portal.output = process.communicate(timeout=30)[0].decode()


def request_id_of(location: str) -> str:
    """The request id a submit redirects to (`/requests/mine?submitted=req-...`)."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["submitted"][0]


def form_value(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, page
    return found.group(1)
