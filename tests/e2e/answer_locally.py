"""Test-only mitmproxy script: answers every request the proxy lets through, naming the proxy.

Loaded with `citygate run --set scripts=...`; it runs in `request`, after citygate decided in
`requestheaders`, so refused requests keep citygate's answer and allowed ones need no upstream.
"""

from mitmproxy import ctx, http


class AnswerLocally:
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            body = f"answered by the proxy on port {ctx.options.listen_port}\n"
            flow.response = http.Response.make(200, body, {"Content-Type": "text/plain"})


addons = [AnswerLocally()]
