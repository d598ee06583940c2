"""An ordinary city page that embeds social content, for the browser tests.

The page (a YouTube frame, the Facebook SDK, a Facebook tracking pixel) is served by
`page_server` on 127.0.0.1; RedirectToUpstream sends the proxy's plain-HTTP upstream
connections there. `denials` reads the access log's refused requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import LOCALHOST

from citygate.proxy.audit.files import expand, open_log

PAGE_URL = "http://www.example.org/parks/summer-events"
IFRAME = "https://www.youtube.com/embed/x"
SCRIPT = "https://connect.facebook.net/en_US/sdk.js"
PIXEL = "https://www.facebook.com/tr?id=1"
PAGE = f"""<!DOCTYPE html>
<html><head><title>Summer events</title>
<script src="{SCRIPT}"></script></head>
<body><h1>Summer events in our parks</h1>
<iframe src="{IFRAME}" width="560" height="315"></iframe>
<img src="{PIXEL}" width="1" height="1" alt="">
</body></html>
""".encode()


#: A city page embedding the council meeting's video, which the demo's city-wide allowance
#: (city-2026-001) lets everyone see.
COUNCIL_URL = "http://www.example.org/council/2026-11-18"
COUNCIL_EMBED = "https://www.youtube.com/embed/council-2026-11-18"
COUNCIL_PAGE = f"""<!DOCTYPE html>
<html><head><title>Council meeting</title></head>
<body><h1>City Council, November 18</h1>
<iframe src="{COUNCIL_EMBED}" width="560" height="315"></iframe>
</body></html>
""".encode()


class _PageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        pages = {"/parks/": PAGE, "/council/": COUNCIL_PAGE}
        page = next((page for prefix, page in pages.items() if self.path.startswith(prefix)), None)
        body = page if page is not None else b"not here\n"
        self.send_response(200 if page is not None else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def page_server() -> Iterator[tuple[str, int]]:
    """The city's own web server, with an ordinary page that embeds social content."""
    server = ThreadingHTTPServer((LOCALHOST, 0), _PageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield (LOCALHOST, server.server_address[1])
    server.shutdown()
    server.server_close()


def decisions(log_dir: Path, count: int, timeout: float = 5.0, *, denied_only: bool = False) -> list[dict]:
    """The access log's decisions about requests (denials only, if asked), once `count` are written."""
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for path in expand([log_dir]):
            with open_log(path) as handle:
                records += [json.loads(line) for line in handle]
        found = [
            r
            for r in records
            if r["event.action"] == "http-request" and (r["event.type"] == "denied" or not denied_only)
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def denials(log_dir: Path, count: int, timeout: float = 5.0) -> list[dict]:
    """The access log's denials of requests, once `count` of them are written."""
    return decisions(log_dir, count, timeout, denied_only=True)


#: Where the page's three embeds go, as the access log records them: (host, path).
EMBED_TARGETS = frozenset(
    {("www.youtube.com", "/embed/x"), ("connect.facebook.net", "/en_US/sdk.js"), ("www.facebook.com", "/tr")}
)


def embed_denials(log_dir: Path) -> list[dict]:
    """The access log's denials of the page's three embeds (asserted: all three are there)."""
    seen = {(record["url.domain"], record["url.path"]): record for record in denials(log_dir, 3)}
    assert set(seen) >= EMBED_TARGETS, sorted(seen)
    return [seen[target] for target in sorted(EMBED_TARGETS)]
