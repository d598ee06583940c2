"""Test-only mitmproxy script: http://worker.test/ answers with the worker that served it.

Loaded with `citygate run --set scripts=...`; citygate passes the request (not social media)
and this script answers it in `request`, after citygate's `requestheaders`, without any upstream.
"""

import os

from mitmproxy import http


class WorkerEcho:
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and flow.request.pretty_host == "worker.test":
            body = f"worker={os.environ.get('CITYGATE_WORKER', '-')} pid={os.getpid()}\n"
            flow.response = http.Response.make(200, body, {"Content-Type": "text/plain"})


addons = [WorkerEcho()]
