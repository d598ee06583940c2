"""A real headless Chromium for the tests, driven through the DevTools protocol (CDP).

Debian's `chromium` (tools/system-deps installs it; no browser is ever downloaded) is started with
a temporary profile and `--remote-debugging-port=0`; the port it picked is read from
`<profile>/DevToolsActivePort` and one websocket (the `websockets` package's sync client) carries
every command, with flat sessions for the tabs. A reader thread answers commands and records
events.

Typical use (sync)::

    with Browser(proxy=runner.address, trusted_spki=[spki_of(runner.ca_pem)]) as browser:
        load = browser.open("http://www.example.org/page")
        assert load.status == 200 and load.loaded
        assert browser.auth_challenges == []      # no credentials dialog would have opened
        for response in load.responses: ...       # URL, status, resource type, Sec-Fetch-Dest
        browser.body(response)                     # the body the browser received

What "no credentials dialog" means here: `Fetch.enable` with `handleAuthRequests: true` on the
browser target (every tab and frame) turns each 401/407 challenge the browser would have shown
a dialog for into a `Fetch.authRequired` event; it is recorded in `auth_challenges` and answered
`CancelAuth`, and every paused request is continued unchanged. JavaScript dialogs
(`Page.javascriptDialogOpening`) are recorded in `dialogs` and dismissed.

Certificates: `trusted_spki` is passed as `--ignore-certificate-errors-spki-list`, so only chains
holding one of those keys are accepted (mitmproxy signs every leaf with its CA's key, so the CA's
SPKI covers the proxy; a test upstream's leaf key covers that upstream); any other certificate
error still fails the load. `trusted_roots` makes Chromium trust those root certificates as the
city's devices do: a managed policy (`CACertificates`, Chromium 131+) lists them, and chains are
verified for real up to one of them, so a missing intermediate or a wrong usage still fails. It
is the policy a city pushes by GPO or MDM; it needs no NSS database (certutil) in the profile.
`negotiate_policy=True` writes the managed policy Chromium needs to
ask for `HTTP@<proxy name>` rather than a canonicalized name (`DisableAuthNegotiateCnameLookup`,
`AuthServerAllowlist: *`) for the browser's lifetime, and removes it at close. `env` adds
variables to the browser's environment (`KRB5_CONFIG`, `KRB5CCNAME`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import ClientConnection, connect

CHROMIUM = Path("/usr/bin/chromium")
POLICY_DIR = Path("/etc/chromium/policies/managed")
START_SECONDS = 20.0

#: Flags that keep Chromium quiet: no first-run pages, no update checks, no background fetches.
QUIET_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root, where Chromium refuses its sandbox
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
)


#: A JavaScript expression: the text of the document, shadow roots included (WebUI pages such
#: as chrome://policy render into them, where `innerText` does not look).
DEEP_TEXT = (
    "(function text(node) { let s = '';"
    " for (const child of node.childNodes) s += child.nodeType === 3 ? child.textContent : text(child);"
    " if (node.shadowRoot) s += text(node.shadowRoot); return s; })(document.body)"
)


def spki_of(cert_pem: Path) -> str:
    """The base64 SHA-256 of a PEM certificate's public key, as `--ignore-certificate-errors-spki-list` takes it."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _der_base64(cert_pem: Path) -> str:
    """A PEM certificate as the CACertificates policy takes it: its DER, in base64."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


class BrowserError(RuntimeError):
    pass


@dataclass
class Response:
    """One network response a tab received (a document, a frame, a script, an image...)."""

    request_id: str
    url: str
    status: int
    resource_type: str  # CDP's: Document, Script, Image, Fetch, ...
    frame_id: str | None
    request_headers: dict[str, str]
    headers: dict[str, str]
    session: str = field(repr=False)

    def request_header(self, name: str) -> str | None:
        return _get(self.request_headers, name)

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)


@dataclass
class AuthChallenge:
    """A challenge the browser would have asked the user about (a credentials dialog)."""

    url: str
    source: str  # "Server" or "Proxy"
    scheme: str
    realm: str
    origin: str


@dataclass
class Load:
    """What opening a URL in a new tab gave."""

    url: str
    loaded: bool  # the `load` event fired
    status: int | None  # the main document's HTTP status (None: no response, e.g. a network error)
    text: str  # the main document's text as rendered (document.body.innerText)
    html: str  # the main document's markup (document.documentElement.outerHTML)
    error: str | None  # Page.navigate's errorText (net::ERR_...), if any
    responses: list[Response]
    failures: list[dict[str, Any]]  # Network.loadingFailed events
    ready: bool | None = None  # whether `open(wait_for=...)` came true (None: nothing to wait for)
    value: str | None = None  # the value of `open(read=...)`

    def responses_for(self, url_prefix: str) -> list[Response]:
        return [response for response in self.responses if response.url.startswith(url_prefix)]


class Browser:
    """A headless Chromium with its own temporary profile; close it (or use `with`) to stop it."""

    def __init__(
        self,
        *,
        proxy: tuple[str, int] | str | None = None,
        host_resolver_rules: str | None = None,
        trusted_spki: Iterable[str] = (),
        trusted_roots: Iterable[Path] = (),
        negotiate_policy: bool = False,
        env: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self._args = [*QUIET_FLAGS, "--auth-server-allowlist=*"]
        if proxy is not None:
            address = proxy if isinstance(proxy, str) else f"{proxy[0]}:{proxy[1]}"
            self._args.append(f"--proxy-server=http://{address}")
        if host_resolver_rules:
            self._args.append(f"--host-resolver-rules={host_resolver_rules}")
        spki = list(trusted_spki)
        if spki:
            self._args.append(f"--ignore-certificate-errors-spki-list={','.join(spki)}")
        self._args += list(extra_args)
        self._env = {**os.environ, **(env or {})}
        self._negotiate_policy = negotiate_policy
        self._trusted_roots = [_der_base64(root) for root in trusted_roots]
        self._policy_file: Path | None = None
        self._profile: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._connection = contextlib.ExitStack()
        self._reader: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        # Each tab's sessions (its page, its cross-site frames) and the queue of their events.
        self._sessions: dict[str, queue.Queue[dict[str, Any]]] = {}
        #: Every credentials challenge the browser met, in every tab, since it started.
        self.auth_challenges: list[AuthChallenge] = []
        #: Every JavaScript dialog (alert, confirm, prompt, beforeunload) a page opened.
        self.dialogs: list[dict[str, Any]] = []
        self._bodies: dict[str, bytes | None] = {}
        self._stderr: BinaryIO | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Self:
        if self._process is not None:  # a second Chromium would outlive close()
            raise BrowserError(
                "this browser is started already (use `with Browser(...)` or start(), not both)"
            )
        if not CHROMIUM.exists():
            raise BrowserError(f"{CHROMIUM} is missing: run tools/system-deps (Debian package chromium)")
        if self._negotiate_policy or self._trusted_roots:
            self._write_policy()
        self._profile = Path(tempfile.mkdtemp(prefix="citygate-chromium-"))
        self._stderr = (self._profile / "chromium.log").open("wb")
        self._process = subprocess.Popen(
            [
                str(CHROMIUM),
                *self._args,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        try:
            self._ws = self._connection.enter_context(
                connect(self._debugger_url(), max_size=None, open_timeout=START_SECONDS)
            )
            self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
            self._reader.start()
            # The browser target sees every tab's and frame's requests, so no challenge escapes.
            self.send("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]})
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self._connection.close()
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
        finally:
            # The policy applies to every Chromium on the machine: it must not outlive this one.
            if self._policy_file is not None:
                self._policy_file.unlink(missing_ok=True)
                self._policy_file = None
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
            if self._profile is not None:
                shutil.rmtree(self._profile, ignore_errors=True)
                self._profile = None

    def log(self) -> str:
        """Chromium's own stderr (for a failing test's message)."""
        if self._profile is None:
            return ""
        return (self._profile / "chromium.log").read_text(errors="replace")

    def _write_policy(self) -> None:
        policy: dict[str, Any] = {}
        if self._negotiate_policy:
            policy |= {"DisableAuthNegotiateCnameLookup": True, "AuthServerAllowlist": "*"}
        if self._trusted_roots:
            policy["CACertificates"] = self._trusted_roots
        POLICY_DIR.mkdir(parents=True, exist_ok=True)
        self._policy_file = POLICY_DIR / f"citygate-test-{uuid.uuid4().hex}.json"
        self._policy_file.write_text(json.dumps(policy))

    def _debugger_url(self) -> str:
        assert self._profile is not None and self._process is not None
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}:\n{self.log()}")
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise BrowserError(
            f"chromium did not open its DevTools port within {START_SECONDS:g} s:\n{self.log()}"
        )

    # --- the protocol --------------------------------------------------------------------------

    def send(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """Send one CDP command and wait for its result; an error answer raises BrowserError."""
        assert self._ws is not None, "the browser is not started"
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            message_id = next(self._ids)
            self._pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": dict(params or {})}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        answer = future.result(timeout=timeout)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    def _post(self, method: str, params: Mapping[str, Any], session: str | None = None) -> None:
        """Send a command from the reader thread, without waiting for its answer."""
        assert self._ws is not None
        with self._lock:
            message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": dict(params)}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))

    def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(Exception):
            for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        future = self._pending.pop(message["id"], None)
                    if future is not None:
                        future.set_result(message)
                    continue
                self._on_event(message)
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(BrowserError("the DevTools connection closed"))

    def _on_event(self, message: dict[str, Any]) -> None:
        method, params, session = message["method"], message.get("params", {}), message.get("sessionId")
        # Answered here, at once: a paused request or an open dialog would stall the page.
        if method == "Fetch.requestPaused":
            self._post("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
        elif method == "Fetch.authRequired":
            challenge = params["authChallenge"]
            self.auth_challenges.append(
                AuthChallenge(
                    url=params["request"]["url"],
                    source=challenge.get("source", ""),
                    scheme=challenge.get("scheme", ""),
                    realm=challenge.get("realm", ""),
                    origin=challenge.get("origin", ""),
                )
            )
            self._post(
                "Fetch.continueWithAuth",
                {"requestId": params["requestId"], "authChallengeResponse": {"response": "CancelAuth"}},
                session,
            )
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params)
            self._post("Page.handleJavaScriptDialog", {"accept": False}, session)
        events = self._sessions.get(session) if session is not None else None
        if events is None:
            return
        if method == "Target.attachedToTarget":
            self._attach_frame(params["sessionId"], events)
        events.put(message)

    def _attach_frame(self, child: str, events: queue.Queue[dict[str, Any]]) -> None:
        """Watch a cross-site frame's own process (site isolation) as part of its tab, then let it run."""
        with self._lock:
            self._sessions[child] = events
        self._post(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
            child,
        )
        for domain in ("Page", "Network", "Runtime"):
            self._post(f"{domain}.enable", {}, child)
        self._post("Runtime.runIfWaitingForDebugger", {}, child)

    # --- tabs ----------------------------------------------------------------------------------

    def open(
        self, url: str, *, timeout: float = 20.0, wait_for: str | None = None, read: str | None = None
    ) -> Load:
        """Open `url` in a new tab, wait for its `load` event (or a failure), and close the tab.

        `wait_for` is a JavaScript expression the page must make true after its load (a page that
        renders later, from scripts) before it is read; the wait ends at the same timeout. `read`
        is an expression whose value (as a string) is kept in `Load.value`.
        """
        with self.tab() as tab:
            return tab.goto(url, timeout=timeout, wait_for=wait_for, read=read)

    @contextlib.contextmanager
    def tab(self, *, width: int | None = None, height: int = 900) -> Iterator[Tab]:
        """A tab that stays open across loads, for a person's steps through pages: follow a link,
        fill in and submit a form, take a screenshot (at `width` CSS pixels, or the browser's
        default window). Closed, with its frames' sessions, when the block ends."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._sessions[session] = events
        try:
            for domain in ("Page", "Network", "Runtime"):
                self.send(f"{domain}.enable", session=session)
            self.send(
                "Target.setAutoAttach",
                {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
                session=session,
            )
            frame = self.send("Page.getFrameTree", session=session)["frameTree"]["frame"]["id"]
            tab = Tab(self, session, events, frame)
            if width is not None:
                tab.resize(width, height)
            yield tab
        finally:
            self.send("Target.closeTarget", {"targetId": target})
            for name in self._tab_sessions(events):
                with self._lock:
                    del self._sessions[name]

    def _collect(
        self,
        url: str,
        session: str,
        events: queue.Queue[dict[str, Any]],
        navigated: dict[str, Any],
        timeout: float,
        wait_for: str | None,
    ) -> Load:
        main_frame, error = navigated.get("frameId"), navigated.get("errorText") or None
        requests: dict[str, dict[str, Any]] = {}
        extra_headers: dict[str, dict[str, str]] = {}
        responses: list[Response] = []
        failures: list[dict[str, Any]] = []
        loaded = False
        deadline = time.monotonic() + timeout
        while not loaded and error is None and time.monotonic() < deadline:
            try:
                message = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            method, params = message["method"], message.get("params", {})
            if method == "Page.loadEventFired":
                loaded = True
            elif method == "Network.requestWillBeSent":
                requests[params["requestId"]] = params
            elif method == "Network.requestWillBeSentExtraInfo":
                # The headers as sent on the wire, Sec-Fetch-* included (requestWillBeSent omits them).
                extra_headers[params["requestId"]] = params.get("headers", {})
            elif method == "Network.responseReceived":
                response = params["response"]
                request_id = params["requestId"]
                sent = requests.get(request_id, {}).get("request", {}).get("headers", {})
                responses.append(
                    Response(
                        request_id=request_id,
                        url=response["url"],
                        status=int(response["status"]),
                        resource_type=params.get("type", ""),
                        frame_id=params.get("frameId"),
                        request_headers=dict(sent),
                        headers=dict(response.get("headers", {})),
                        session=session,
                    )
                )
            elif method == "Network.loadingFailed":
                failures.append(params)
        ready = None if wait_for is None else False
        while wait_for and loaded and time.monotonic() < deadline:
            ready = self._evaluate(session, f"Boolean({wait_for})") == "True"
            if ready:
                break
            time.sleep(0.05)
        for response in responses:
            response.request_headers.update(extra_headers.get(response.request_id, {}))
        status = next(
            (r.status for r in responses if r.frame_id == main_frame and r.resource_type == "Document"), None
        )
        text = self._evaluate(session, "document.body ? document.body.innerText : ''")
        html = self._evaluate(session, "document.documentElement ? document.documentElement.outerHTML : ''")
        sessions = self._tab_sessions(events)
        self._bodies.update({r.request_id: self._body(r, sessions) for r in responses})
        return Load(url, loaded, status, text, html, error, responses, failures, ready)

    def _tab_sessions(self, events: queue.Queue[dict[str, Any]]) -> list[str]:
        """The sessions of one tab: its page and its cross-site frames (they share its event queue)."""
        with self._lock:
            return [name for name, queue_ in self._sessions.items() if queue_ is events]

    def _evaluate(self, session: str, expression: str) -> str:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        return str(result.get("result", {}).get("value", ""))

    def _body(self, response: Response, sessions: list[str]) -> bytes | None:
        # A frame's document may be kept by the frame's own process, not the one that reported it.
        for session in sorted(sessions, key=lambda name: name != response.session):
            try:
                answer = self.send(
                    "Network.getResponseBody", {"requestId": response.request_id}, session=session
                )
            except BrowserError:
                continue
            body = answer.get("body", "")
            return base64.b64decode(body) if answer.get("base64Encoded") else body.encode()
        return None  # no body kept (a redirect, an empty answer)

    def body(self, response: Response) -> bytes | None:
        """The body the browser received for `response` (read before its tab closed)."""
        return self._bodies.get(response.request_id)


class Tab:
    """One open tab (`Browser.tab()`): each step waits for the page it leads to and returns its Load."""

    def __init__(
        self, browser: Browser, session: str, events: queue.Queue[dict[str, Any]], frame: str
    ) -> None:
        self._browser, self._session, self._events, self._frame = browser, session, events, frame

    def goto(
        self, url: str, *, timeout: float = 20.0, wait_for: str | None = None, read: str | None = None
    ) -> Load:
        """Navigate to `url` and wait for its load (`Browser.open` says what `wait_for` and `read` do)."""
        self._drain()
        navigated = self._browser.send("Page.navigate", {"url": url}, session=self._session)
        load = self._browser._collect(url, self._session, self._events, navigated, timeout, wait_for)
        if read is not None:
            load.value = self.evaluate(read)
        return load

    def act(self, script: str, *, timeout: float = 20.0) -> Load:
        """Run `script` (it clicks a link, submits a form...) and wait for the page it loads."""
        self._drain()
        self.evaluate(script)
        return self._browser._collect(
            script, self._session, self._events, {"frameId": self._frame}, timeout, None
        )

    def evaluate(self, expression: str) -> str:
        return self._browser._evaluate(self._session, expression)

    def fill(self, fields: Mapping[str, str | list[str]]) -> None:
        """Set the current page's form fields by name, as a person would type and tick them."""
        for name, value in fields.items():
            script = (
                "(function(name, value) { for (const el of document.getElementsByName(name)) {"
                " if (el.type === 'checkbox' || el.type === 'radio') el.checked = value.includes(el.value);"
                " else el.value = value; } })"
                f"({json.dumps(name)}, {json.dumps(value)})"
            )
            self.evaluate(script)

    def resize(self, width: int, height: int) -> None:
        """The viewport a screen of `width` CSS pixels shows (a phone below 600: a mobile viewport)."""
        self._browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
            session=self._session,
        )

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG at the current width (taller than the screen: all of it)."""
        size = self._browser.send("Page.getLayoutMetrics", session=self._session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        answer = self._browser.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session=self._session,
        )
        path.write_bytes(base64.b64decode(answer["data"]))
        return path

    def _drain(self) -> None:
        """Forget the events of earlier pages, so that a step waits for its own page's load."""
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                return


def _get(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)
