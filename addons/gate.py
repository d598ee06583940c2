"""The citygate mitmproxy addon: proxy hooks in, decisions out.

Each hook gathers what the decision needs (hosts, path, identity, directory facts), calls the
pure `decide_request`, and acts on the result. Hooks are async so directory work never blocks
the event loop, and every hook is guarded: mitmproxy forwards a request whose hook raised, so
on any error a social-media request is refused instead (403, recorded as `internal_error`).

Encrypted traffic is decided on the CONNECT authority and the TLS SNI, before a byte goes
upstream: a tunnel's start is read whole first (addons/tunnel_start.py), so how a client splits
its bytes changes nothing. A social tunnel is decrypted, so that each request inside it is
decided on its own host and path (a front end that serves several brands would otherwise serve
any of them inside a granted tunnel), unless its catalog entry says `pass_through_when_granted`.
A denial is a 403 whose body fits what the browser will do with it (addons/embeds.py): the block
page for a page, a small panel for a frame, nothing for a script or a pixel. Ordinary tunnels,
and all non-social traffic, pass through untouched. A request head that names its host
ambiguously is refused with 400 (proxy/request_head.py), whatever its host.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from mitmproxy import connection, ctx, exceptions, hooks, http, tls
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import commands, context, events, layer, layers
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.layers.tls import ClientTLSLayer, ServerTLSLayer

from citygate.addons.blockpage import (
    encode_page,
    render_block_page,
    render_embed_panel,
    render_refusal_page,
    render_sign_in_page,
)
from citygate.addons.chain import trigger_where_handled
from citygate.addons.configuration import Configuration, Loaded
from citygate.addons.credentials import strip_proxy_headers
from citygate.addons.embeds import Form, refusal_form
from citygate.addons.events import CitygateDecisionHook, DecisionEvent, Stage, Veto
from citygate.addons.identity import Presented
from citygate.addons.signed_in import SignedInClients
from citygate.addons.tunnel_start import AnyClientHello, Kind, classify, server_names, sni_readable
from citygate.directory.problems import ConfigError
from citygate.proxy.audit.record import shown_url
from citygate.proxy.catalog import SiteMatch
from citygate.proxy.decision import (
    Decision,
    Evidence,
    Identity,
    Reason,
    Result,
    decide_request,
    facts_needed,
    people_for_sites,
    sites_named,
)
from citygate.proxy.enforcement import Mode
from citygate.proxy.hosts import normalize_host
from citygate.proxy.identity.sign_in_page import (
    SIGN_IN_PATH,
    Target,
    TargetProblem,
    is_browser,
    read_target,
    sign_in_location,
)
from citygate.proxy.outcomes import passes_through
from citygate.proxy.request_head import head_problem
from citygate.proxy.wording import plain_reason

log = logging.getLogger("citygate")
_STARTED = "citygate.started"
_BLOCK_PAGE_HEADERS = ((b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"no-store"))
# A refused script, image or fetch: nothing to render, run or keep (mitmproxy adds Content-Length: 0).
_EMPTY_REFUSAL_HEADERS = ((b"Cache-Control", b"no-store"),)
# How long a tunnel's start (a ClientHello, a request head) may take to arrive whole. Checked
# when bytes arrive; a client that sends nothing more is the idle timeout's business.
START_SECONDS = 10.0
# The detail of a refusal after an error: the traceback is in the proxy log, never in a record.
_INTERNAL_ERROR = "an internal error; see the proxy log"


@dataclass(slots=True)
class Tunnel:
    """What a CONNECT established, remembered for the TLS handshake and requests inside it.

    The CONNECT's credentials count inside its tunnel and nowhere else. An ordinary CONNECT's
    are checked only if something inside turns out to be social (a social SNI or Host), so
    ordinary traffic never costs a directory call.
    """

    authority: str
    presented: Presented
    identity: Identity | None = None
    resolved: bool = False
    #: A browser's social tunnel opened without an identity, so that only a top-level navigation
    #: inside it asks for sign-in (proxy/identity/sign_in_page.py).
    signing_in: bool = False


class CityGate:
    def __init__(self) -> None:
        self.config = Configuration()
        self.tunnels: weakref.WeakKeyDictionary[connection.Client, Tunnel] = weakref.WeakKeyDictionary()
        # When each tunnel still waiting for its whole start (next_layer) sent its first bytes.
        self._starts: weakref.WeakKeyDictionary[connection.Client, float] = weakref.WeakKeyDictionary()
        # Kept across reloads: a reload must not send every signed-in browser to sign in again.
        self.signed_in = SignedInClients.for_this_process()
        #: The time decisions are made at, in the city's time zone (tests set another clock).
        self.clock: Callable[[tzinfo], datetime] = datetime.now

    # --- lifecycle -------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "citygate_config",
            str,
            "",
            "Path of the citygate configuration file (e.g. config/citygate.yaml).",
        )

    def configure(self, updated: set[str]) -> None:
        path = ctx.options.citygate_config
        # Empty while options are being set up, or rolled back after a failed update;
        # `running` refuses to serve without it.
        if not path or not {"connection_strategy", "citygate_config"} & updated:
            return
        if ctx.options.connection_strategy != "lazy":
            raise exceptions.OptionsError(
                "citygate needs connection_strategy=lazy, so that no upstream connection is "
                "opened before a request is decided; start it with `citygate run`, or pass "
                "--set connection_strategy=lazy"
            )
        if "citygate_config" in updated:
            try:
                self.config.switch(path)
            except ConfigError as exc:
                raise exceptions.OptionsError(f"citygate config is invalid:\n{exc}") from exc

    async def reload(self) -> bool:
        """Load the configuration again, off the event loop, and switch to it if it is valid.

        The switch goes through mitmproxy's configure hook, so every addon (access log, flags,
        metrics) sees the new policy at the same moment. An invalid configuration changes
        nothing: the error is logged with its file and line, counted, and the last good policy
        keeps serving. Open connections are not touched.
        """
        if not await self.config.preload(ctx.options.citygate_config):
            return False
        ctx.master.addons.trigger(hooks.ConfigureHook({"citygate_config"}))
        return True

    def done(self) -> None:
        self.config.close()
        self.signed_in.close()

    def running(self) -> None:
        if self.config.current is None:
            # Logged at error level, mitmproxy's startup check stops the proxy.
            log.error(
                "citygate_config is not set; point it at the config file, e.g. --set citygate_config=config/citygate.yaml"
            )

    def _loaded(self) -> Loaded:
        loaded = self.config.current
        assert loaded is not None, "citygate_config was never loaded"
        return loaded

    # --- hooks -----------------------------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self._guarded(flow, [flow.request.host], self._on_connect, Stage.CONNECT)

    async def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """Choose a tunnel's next layer only once its start is whole, so nothing goes upstream undecided.

        mitmproxy picks the layer from the bytes that have arrived so far: given a ClientHello
        one byte at a time, or bytes that are neither TLS nor HTTP, it would relay raw TCP that no
        hook sees. Its choice stands only where it is safe by itself: the proxy's own front door
        (no server yet) and an HTTP layer (every request is decided in `requestheaders`). Any
        other tunnel waits for its start to be whole (`tunnel_start.classify`), and then: a
        request head gets an HTTP layer; a ClientHello naming only ordinary hosts is passed
        through, one naming a social host goes to mitmproxy's TLS layers (`tls_clienthello`
        decides); bytes that are neither go raw only where every host named is ordinary; a
        social tunnel that would have gone raw is closed, and recorded.
        """
        context = nextlayer.context
        chosen = nextlayer.layer
        if not context.server.address or chosen is None or isinstance(chosen, layers.HttpLayer):
            return
        try:
            await self._choose_for_start(nextlayer)
        except Exception:
            log.exception("citygate: error reading the start of a tunnel to %s", context.server.address)
            # Its hosts are not known (the SNI may not have been read), so nothing may go raw: a
            # TLS start still meets `tls_clienthello`, which decides (and fails closed) itself.
            if not isinstance(chosen, ServerTLSLayer):
                await self._close_after_error(nextlayer)

    async def _close_after_error(self, nextlayer: layer.NextLayer) -> None:
        """Close a tunnel whose start could not be read; record it when its CONNECT named a social host."""
        nextlayer.layer = _Close(nextlayer.context)
        try:
            await self._refuse_tunnel(nextlayer, _INTERNAL_ERROR, None, Reason.INTERNAL_ERROR)
        except Exception:
            log.exception(
                "citygate: could not record closing a tunnel to %s", nextlayer.context.server.address
            )

    async def _choose_for_start(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        start = classify(nextlayer.data_client())
        if start.kind is Kind.WAIT:
            began = self._starts.setdefault(context.client, time.monotonic())
            if time.monotonic() - began <= START_SECONDS:
                nextlayer.layer = None  # mitmproxy asks again when more bytes arrive
                return
            problem = f"the tunnel's first bytes did not form a ClientHello or request head within {START_SECONDS:g} s"
            await self._refuse_tunnel(nextlayer, problem, None)
            return
        self._starts.pop(context.client, None)
        if start.kind is Kind.HTTP:
            # Every request in it is decided in `requestheaders`, on every host it names.
            nextlayer.layer = layers.HttpLayer(context, HTTPMode.transparent)
            return
        if start.kind is Kind.MALFORMED:
            await self._refuse_tunnel(nextlayer, start.problem, None)
            return
        hello = start.hello
        if hello is not None and not sni_readable(hello):
            # mitmproxy would see no SNI at all, and a lenient server might read a social name in
            # it. No conforming client sends one (RFC 6066 §3: one host name, no IP literal).
            await self._refuse_tunnel(nextlayer, "a server name that is not one host name", hello)
            return
        social = self._social(_tunnel_hosts(context, hello))
        if start.kind is Kind.TLS and start.standard_record:
            if not social:
                # Passed through now, as mitmproxy's allow_hosts would: its bytes cross one TCP
                # layer for the tunnel's whole life instead of two TLS layers that, after
                # `tls_clienthello` ignored the connection, would only pass them on.
                nextlayer.layer = layers.TCPLayer(context, ignore=not ctx.options.show_ignored_hosts)
            elif not isinstance(nextlayer.layer, ServerTLSLayer):
                # mitmproxy meant to relay it (its ignore_hosts or tcp_hosts): it is decided first.
                server_tls = ServerTLSLayer(context)
                server_tls.child_layer = ClientTLSLayer(context)
                nextlayer.layer = server_tls
            return
        if not social:
            return  # ordinary: mitmproxy's own choice (raw TCP, DNS) stands
        if start.kind is Kind.TLS:
            version = nextlayer.data_client()[1:3].hex()
            problem = f"a ClientHello in a TLS record of version {version}, which mitmproxy does not take"
        else:
            problem = "bytes that are neither TLS nor HTTP"
        await self._refuse_tunnel(nextlayer, problem, hello)

    async def _refuse_tunnel(
        self,
        nextlayer: layer.NextLayer,
        problem: str,
        hello: AnyClientHello | None,
        reason: Reason = Reason.UNRECOGNIZED_PROTOCOL,
    ) -> None:
        """Close a tunnel whose start cannot be decided; record it when it names a social host."""
        context = nextlayer.context
        nextlayer.layer = _Close(context)
        hosts = _tunnel_hosts(context, hello)
        client_ip = context.client.peername[0] if context.client.peername else None
        if not self._social(hosts):
            # Not a decision about social media: the proxy log says why the connection was closed.
            log.info("citygate: closed a tunnel from %s to %s: %s", client_ip, hosts[0], problem)
            return
        tunnel = self.tunnels.get(context.client)
        identity = await self._tunnel_identity(tunnel) if tunnel else None
        decision = self._refusal(reason, hosts, identity, problem)
        host, port = context.server.address  # type: ignore[misc]
        await self._announce_event(
            decision, Stage.CONNECT, client_ip=client_ip, method="CONNECT", url=f"{host}:{port}", status=None
        )

    async def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        hosts = _tunnel_hosts(data.context, data.client_hello)
        try:
            if not self._social(hosts):
                data.ignore_connection = True
                return
            tunnel = self.tunnels.get(data.context.client)
            identity = await self._tunnel_identity(tunnel) if tunnel else None
            decision = await self._decide(identity, hosts, None)
            # Decrypted, so that each request inside is decided on its own host and path, unless
            # every social site named accepts passing through (catalog: pass_through_when_granted).
            # In report mode a denial shows no block page, so it is treated like an allowed one.
            forwarded = decision.allowed or self._report_only(decision)
            data.ignore_connection = forwarded and self._all_pass_through(hosts, decision)
        except Exception:
            log.exception("citygate: error deciding a TLS handshake for %s", hosts)
            data.ignore_connection = not self._might_be_social(hosts)

    def tls_start_client(self, data: tls.TlsData) -> None:
        """Speak HTTP/1.1 in a tunnel opened for signing in, so that it can be closed after its answer.

        The browser keeps a tunnel for later requests to the same host; one without an identity
        must not serve the requests that follow the sign-in. HTTP/1.1's `Connection: close`
        ends it; HTTP/2 has no such answer for one stream. Runs after mitmproxy's tlsconfig,
        which made the connection; choosing the protocol is a dictionary write.
        """
        tunnel = self.tunnels.get(data.context.client)
        if tunnel is not None and tunnel.signing_in and data.ssl_conn is not None:
            data.ssl_conn.get_app_data()["client_alpn"] = b"http/1.1"

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        # Every host the request names: where mitmproxy sends it, its Host (or HTTP/2 :authority),
        # an absolute-form target's authority (kept in a tunnel), the tunnel's SNI and CONNECT.
        names = (request.host, request.host_header, request.authority, flow.client_conn.sni)
        hosts = [host for host in names if host]
        tunnel = self.tunnels.get(flow.client_conn)
        if tunnel is not None:
            hosts.append(tunnel.authority)
        await self._guarded(flow, hosts, self._on_request, Stage.REQUEST)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """End a tunnel opened for signing in after each answer, even one it let through (a
        city-wide page): the requests after the sign-in must come on a new CONNECT."""
        tunnel = self.tunnels.get(flow.client_conn)
        if tunnel is not None and tunnel.signing_in and flow.response is not None:
            flow.response.headers["Connection"] = "close"

    # --- hook bodies -----------------------------------------------------------------------

    async def _on_connect(self, flow: http.HTTPFlow, hosts: Sequence[str]) -> None:
        if await self._refused_as_malformed(flow, hosts, Stage.CONNECT):
            return
        presented = _presented(flow)
        identities = self._loaded().identities
        # Ordinary traffic is never asked for credentials and never costs a directory call; its
        # credentials are kept for what the tunnel may turn out to carry (a social SNI or Host),
        # and so is the connection's Negotiate sign-in when it presents none.
        if not self._social(hosts):
            held = None if presented.authorization else identities.held(flow.client_conn)
            self.tunnels[flow.client_conn] = Tunnel(
                flow.request.host, presented, held, resolved=held is not None
            )
            return
        # A CONNECT retried on its connection after a 407, now with a token (as Chromium does),
        # is resolved like the first: the 407 left no tunnel behind.
        identity = await identities.resolve_on(flow.client_conn, presented)
        await self._remember_sign_in(presented, identity)
        decision = await self._decide(identity, hosts, None)
        # Report mode: a denial (or a missing sign-in) is announced as the denial it is, then
        # the tunnel opens as for an allowed decision: no 407, no block page.
        report = self._report_only(decision)
        signing_in = False
        if not report and (identity is None or decision.result is Result.AUTH_REQUIRED):
            # Credentials that did not verify always get the 407 again (the body says why).
            challenge = True
            if identity is None:
                signing_in, challenge = await self._without_sign_in(flow, decision)
            if challenge:
                await self._respond_auth_required(flow, decision.as_sign_in_required(), Stage.CONNECT)
                return
        event = await self._announce(flow, decision, Stage.CONNECT, None, would_deny=report)
        # A veto (the audit log cannot be written) is honoured in report mode too: it is not
        # about the decision but about serving a request without its record, so it fails closed.
        if event.veto.reason is not None:
            await self._refuse_vetoed_connect(flow, _vetoed(decision, event.veto))
            return
        # Allowed or denied, the tunnel opens: a denial is shown as a block page inside it,
        # because browsers display nothing for a refused CONNECT.
        self.tunnels[flow.client_conn] = Tunnel(
            flow.request.host, presented, identity, resolved=True, signing_in=signing_in
        )

    async def _without_sign_in(self, flow: http.HTTPFlow, decision: Decision) -> tuple[bool, bool]:
        """How a social CONNECT that presented no identity opens: (signing in, 407 instead).

        - A browser from an address that has not signed in recently: a tunnel opened for signing
          in (sign_in_page.py), whatever the decision.
        - A browser that signed in recently: the 407, which it answers without a dialog, even
          where a city-wide allowance lets everyone see some pages (its own grants may give more).
        - Anything else: the 407 when a sign-in is required; a tunnel without an identity where a
          city-wide allowance lets everyone see some of the site's pages.
        """
        needs_sign_in = decision.result is Result.AUTH_REQUIRED
        if not needs_sign_in and not decision.allowed:
            return False, False
        if not is_browser(flow.request.headers.get_all("User-Agent")):
            return False, needs_sign_in
        peer = flow.client_conn.peername
        if await self.signed_in.recently(peer[0] if peer else None):
            return False, True
        return True, False

    async def _remember_sign_in(self, presented: Presented, identity: Identity | None) -> None:
        """Remember the address of a client whose credentials were accepted (sign_in_page.py)."""
        if presented.authorization and identity is not None and identity.authenticated:
            await self.signed_in.remember(presented.client_ip, identity.method)

    async def _on_request(self, flow: http.HTTPFlow, hosts: Sequence[str]) -> None:
        if flow.error is not None:
            await self._record_protocol_error(flow, hosts, flow.error.msg)
            return
        if await self._refused_as_malformed(flow, hosts, Stage.REQUEST):
            return
        tunnel = self.tunnels.get(flow.client_conn)
        in_tunnel = tunnel is not None or flow.client_conn.tls_established
        if not in_tunnel and self._is_sign_in_page(flow):
            await self._on_sign_in_page(flow)
            return
        if not self._social(hosts):
            strip_proxy_headers(flow.request.headers)
            return
        # Inside a tunnel only the CONNECT's credentials count: a Proxy-Authorization header
        # sent inside it is meant for nobody and is removed like any other.
        if tunnel is not None:
            identity = await self._tunnel_identity(tunnel)
        else:
            identity = await self._loaded().identities.resolve(flow)
            await self._remember_sign_in(_presented(flow), identity)
        strip_proxy_headers(flow.request.headers)
        decision = await self._decide(identity, hosts, flow.request.path)
        # Report mode: announced as the denial it is, then forwarded as if allowed; an audit
        # veto still refuses (fail closed: nothing is served unrecorded).
        report = self._report_only(decision)
        if decision.allowed or report:
            event = await self._announce(flow, decision, Stage.REQUEST, None, would_deny=report)
            if event.veto.reason is not None:
                await self._respond_blocked(flow, _vetoed(decision, event.veto))
        elif decision.result is Result.AUTH_REQUIRED and not in_tunnel:
            await self._respond_auth_required(flow, decision, Stage.REQUEST)
        elif tunnel is not None and tunnel.signing_in:
            await self._respond_sign_in_needed(flow, decision)
        else:
            await self._respond_blocked(flow, decision)

    # --- the sign-in page (proxy/identity/sign_in_page.py) ---------------------------------

    def _is_sign_in_page(self, flow: http.HTTPFlow) -> bool:
        host = normalize_host(flow.request.host)
        return host is not None and host.name == self._loaded().identities.settings.sign_in_host

    async def _on_sign_in_page(self, flow: http.HTTPFlow) -> None:
        """Sign a browser in (407 until it has), then send it back to the social page it wanted.

        Never forwarded. The page it returns to must be a social one, so the page cannot be used
        to send anyone anywhere else. A sign-in the directory refuses for the account's state
        (disabled, locked, ...) or cannot check gets its 403 page here: sending the browser back
        would only bring it here again.
        """
        request = flow.request
        try:
            target = _sign_in_target(request, self._social)
        except TargetProblem as exc:
            flow.response = http.Response.make(
                400,
                f"citygate sign-in: {exc}. Open the social media page again to get a new sign-in link.\n",
                {
                    "Content-Type": "text/plain; charset=utf-8",
                    "Cache-Control": "no-store",
                    "X-Content-Type-Options": "nosniff",  # it quotes the request's path
                },
            )
            return
        identity = await self._loaded().identities.resolve(flow)
        presented = _presented(flow)
        strip_proxy_headers(request.headers)
        decision = await self._decide(identity, [target.host], target.path)
        if decision.result is Result.AUTH_REQUIRED:
            # Shown by the browser when it could not sign in or the password dialog was cancelled.
            loaded = self._loaded()
            page = render_sign_in_page(
                decision,
                loaded.policy,
                target.url,
                request.pretty_url,
                loaded.identities.settings.basic_enabled,
            )
            await self._respond_auth_required(flow, decision, Stage.REQUEST, url=target.url, page=page)
            return
        if identity is not None and identity.authenticated:
            await self._remember_sign_in(presented, identity)
            log.info(
                "citygate: %s signed in (%s) from %s; back to %s",
                identity.user,
                identity.method,
                presented.client_ip or "-",
                shown_url(target.url),
            )
            flow.response = http.Response.make(
                302, b"", {"Location": target.url, "Cache-Control": "no-store"}
            )
            return
        await self._respond_blocked(flow, decision, url=target.url)

    async def _respond_sign_in_needed(self, flow: http.HTTPFlow, decision: Decision) -> None:
        """Answer a request in a tunnel opened for signing in, then close the tunnel.

        A top-level navigation goes to the sign-in page (302); an embed is refused quietly, as
        for an employee without a grant (addons/embeds.py). The tunnel is closed after either
        answer (HTTP/1.1, see `tls_start_client`), so that the browser's next request to the
        host opens a new CONNECT, which the 407 answers once it has signed in.
        """
        headers = flow.request.headers
        form = refusal_form(headers.get_all("Sec-Fetch-Dest"), headers.get_all("Sec-Fetch-Mode"))
        if form is not Form.PAGE:
            await self._respond_blocked(flow, decision)
        else:
            await self._announce(flow, decision, Stage.REQUEST, 302)
            settings = self._loaded().identities.settings
            location = sign_in_location(settings.sign_in_host, flow.request.pretty_url)
            flow.response = http.Response.make(302, b"", {"Location": location, "Cache-Control": "no-store"})
        assert flow.response is not None
        flow.response.headers["Connection"] = "close"

    async def _refused_as_malformed(self, flow: http.HTTPFlow, hosts: Sequence[str], stage: Stage) -> bool:
        """Answer 400 to a head that names its host ambiguously (RFC 9112 §3.2), and record it."""
        request = flow.request
        authority = request.authority
        if not authority and request.method != "CONNECT" and flow.client_conn not in self.tunnels:
            # At the proxy's front door mitmproxy has already moved an absolute-form target's
            # authority into host and port (and cleared it): that is where it will connect.
            host = request.host
            authority = f"[{host}]:{request.port}" if ":" in host else f"{host}:{request.port}"
        problem = head_problem(
            method=request.method,
            scheme=request.scheme,
            http_version=request.http_version,
            authority=authority,
            host_fields=request.headers.get_all("Host"),
            field_values=[value for _, value in request.headers.fields],
        )
        if problem is None:
            return False
        decision = self._refusal(Reason.MALFORMED_REQUEST, hosts, None, problem)
        event = await self._announce(flow, decision, stage, 400)
        page = render_refusal_page(decision, self._loaded().policy, event.url, event.id)
        flow.response = http.Response.make(400, encode_page(page), http.Headers(_BLOCK_PAGE_HEADERS))
        return True

    async def _record_protocol_error(self, flow: http.HTTPFlow, hosts: Sequence[str], problem: str) -> None:
        """Record a social request mitmproxy refuses itself (its 400 follows this hook whatever it sets).

        mitmproxy runs this hook for a request it found invalid (a scheme other than http or
        https, a CONNECT inside a tunnel) only to show it, then answers 400 itself: a decision
        made here would be recorded with an answer the client never gets.
        """
        if not self._social(hosts):
            return
        await self._announce(
            flow, self._refusal(Reason.MALFORMED_REQUEST, hosts, None, problem), Stage.REQUEST, 400
        )

    # --- deciding --------------------------------------------------------------------------

    def _social(self, hosts: Sequence[str]) -> bool:
        catalog = self._loaded().policy.catalog
        return any(catalog.match(normalized) for host in hosts if (normalized := normalize_host(host)))

    def _matches(self, hosts: Sequence[str]) -> list[SiteMatch]:
        catalog = self._loaded().policy.catalog
        found = (catalog.match(normalized) for host in hosts if (normalized := normalize_host(host)))
        return [match for match in found if match is not None]

    def _all_pass_through(self, hosts: Sequence[str], decision: Decision) -> bool:
        """Whether an allowed social tunnel may be relayed undecrypted: every social site named agrees."""
        return passes_through(decision) and all(
            match.site.pass_through_when_granted for match in self._matches(hosts)
        )

    def _report_only(self, decision: Decision) -> bool:
        """Whether a refusal is only reported (its department is in report mode), not enforced."""
        return not decision.allowed and self._loaded().policy.enforcement.mode_for(decision) is Mode.REPORT

    def _refusal(
        self, reason: Reason, hosts: Sequence[str], identity: Identity | None, problem: str
    ) -> Decision:
        """A denial the shell makes before any grant is looked at (a malformed head, an undecidable tunnel).

        It names the first social host among `hosts` (so logs and metrics count it for that
        site), or else the first host.
        """
        catalog = self._loaded().policy.catalog
        named: list[tuple[str, SiteMatch | None]] = []
        for raw in hosts:
            normalized = normalize_host(raw)
            named.append((normalized.name, catalog.match(normalized)) if normalized else (raw, None))
        host, match = next((pair for pair in named if pair[1] is not None), named[0] if named else ("", None))
        evidence = Evidence(
            employee=identity.user if identity and identity.user else None,
            identity_method=identity.method if identity else None,
            detail=problem,
        )
        return Decision(Result.DENY, reason, host, match, evidence=evidence)

    async def _tunnel_identity(self, tunnel: Tunnel) -> Identity | None:
        if not tunnel.resolved:
            tunnel.identity = await self._loaded().identities.resolve_presented(tunnel.presented)
            tunnel.resolved = True
        return tunnel.identity

    def _might_be_social(self, hosts: Sequence[str]) -> bool:
        """Whether to fail closed after an error: yes unless every host is surely not social."""
        try:
            return self._social(hosts)
        except Exception:
            return True

    async def _decide(self, identity: Identity | None, hosts: Sequence[str], path: str | None) -> Decision:
        loaded = self._loaded()
        policy, directory = loaded.policy, loaded.directory
        # A shared role (source address) is nobody in the directory: nothing to look up.
        user = identity.user if identity and identity.authenticated and not identity.shared_role else None
        site_ids = sites_named(policy, hosts)
        people = await directory.people(people_for_sites(policy, user, site_ids))
        groups: dict[str, frozenset[str]] = {}
        person = people.get(user) if user is not None else None
        if person is not None:
            # The grants of the person's department and groups, and who approved them.
            facts = facts_needed(policy, person, site_ids)
            missing = facts.approvers - people.keys()
            if missing:
                people |= await directory.people(missing)
            if facts.groups:
                groups = await directory.group_departments(
                    facts.groups, policy.approval.group_department_attribute
                )
        return decide_request(identity, hosts, path, self.clock(policy.timezone), policy, people, groups)

    async def _guarded(
        self,
        flow: http.HTTPFlow,
        hosts: Sequence[str],
        body: Callable[[http.HTTPFlow, Sequence[str]], Awaitable[None]],
        stage: Stage,
    ) -> None:
        # When the request reached citygate: `_announce` reports the decision's latency from it.
        flow.metadata[_STARTED] = time.perf_counter()
        try:
            await body(flow, hosts)
        except Exception:
            log.exception(
                "citygate: error deciding %s %s", flow.request.method, shown_url(flow.request.pretty_url)
            )
            if self._might_be_social(hosts):
                await self._refuse_after_error(flow, hosts, stage)

    async def _refuse_after_error(self, flow: http.HTTPFlow, hosts: Sequence[str], stage: Stage) -> None:
        """Refuse a social request whose hook failed (fail closed), with a record of the refusal.

        A request whose decision was already announced has its record (the 403 keeps its
        status); any other gets one now, with reason `internal_error`. Recording may fail too
        (the error that got us here may be in the configuration): the 403 goes out regardless.
        """
        reference = ""
        event = flow.metadata.get("citygate.event")
        try:
            if event is None:
                decision = self._refusal(Reason.INTERNAL_ERROR, hosts, None, _INTERNAL_ERROR)
                event = await self._announce(flow, decision, stage, 403)
            reference = f" (reference {event.id})"
        except Exception:
            log.exception("citygate: could not record the refusal of %s", ",".join(hosts))
        flow.response = http.Response.make(
            403,
            f"citygate could not decide this request, so it is refused. IT has the details in the proxy log{reference}.\n",
            {"Content-Type": "text/plain; charset=utf-8"},
        )
        log.warning(
            "citygate: refused %s after an internal error (%s)", ",".join(hosts), Reason.INTERNAL_ERROR.value
        )

    # --- acting ----------------------------------------------------------------------------

    async def _announce(
        self,
        flow: http.HTTPFlow,
        decision: Decision,
        stage: Stage,
        status: int | None,
        *,
        would_deny: bool = False,
        url: str | None = None,
    ) -> DecisionEvent:
        """Tell the recorders (logs, metrics) about a decision, before the proxy acts on it.

        A recorder may veto an allowed decision, or a report-mode denial (`would_deny`) that is
        about to be let through, when the audit log cannot be written; the caller then refuses
        instead of serving. The event's mode is the employee's department's (proxy/enforcement.py).
        """
        started = flow.metadata.get(_STARTED)
        event = await self._announce_event(
            decision,
            stage,
            client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            method=flow.request.method,
            url=shown_url(url if url is not None else flow.request.pretty_url),
            status=status,
            would_deny=would_deny,
            started=started,
        )
        flow.metadata["citygate.event"] = event
        return event

    async def _announce_event(
        self,
        decision: Decision,
        stage: Stage,
        *,
        client_ip: str | None,
        method: str,
        url: str,
        status: int | None,
        would_deny: bool = False,
        started: float | None = None,
    ) -> DecisionEvent:
        event = DecisionEvent(
            id=uuid.uuid4().hex,
            timestamp=datetime.now(UTC),
            decision=decision,
            stage=stage,
            client_ip=client_ip,
            method=method,
            url=url,
            status=status,
            mode=self._loaded().policy.enforcement.mode_for(decision).value,
            would_deny=would_deny,
            decision_seconds=None if started is None else time.perf_counter() - started,
        )
        # Only to the addons that take it: offering it to all thirty cost ~90 us (addons/chain.py).
        await trigger_where_handled(ctx.master.addons, CitygateDecisionHook(event))
        return event

    async def _respond_auth_required(
        self,
        flow: http.HTTPFlow,
        decision: Decision,
        stage: Stage,
        *,
        url: str | None = None,
        page: str | None = None,
    ) -> None:
        """407 with citygate's challenges; its body is `page` (HTML) when given, else a line of text."""
        await self._announce(flow, decision, stage, 407, url=url)
        # One Proxy-Authenticate per scheme citygate accepts (identity.sign_in, and Bearer when
        # SSO issuers are configured), so each client picks the first one it can answer.
        challenges = [
            (b"Proxy-Authenticate", challenge.encode()) for challenge in self._loaded().identities.challenges
        ]
        if page is not None:
            flow.response = http.Response.make(
                407, encode_page(page), http.Headers([*challenges, *_BLOCK_PAGE_HEADERS])
            )
            return
        site = decision.match.site.name if decision.match else "this site"
        # The decision's detail says what was wrong with credentials that were given (a password
        # not accepted, too many attempts); it never holds a password or a token.
        why = (
            f"{plain_reason(decision.reason)} ({decision.evidence.detail})\n"
            if decision.reason is Reason.CREDENTIALS_INVALID and decision.evidence.detail
            else ""
        )
        flow.response = http.Response.make(
            407,
            f"Proxy authentication required: {site} is social media; sign in with your City account.\n{why}",
            http.Headers([*challenges, (b"Content-Type", b"text/plain; charset=utf-8")]),
        )

    async def _respond_blocked(
        self, flow: http.HTTPFlow, decision: Decision, *, url: str | None = None
    ) -> None:
        """Refuse with 403, in the form the browser can use where the request came from (addons/embeds.py).

        The decision is announced (logs, metrics) the same way whatever the form. `url` is the
        page the decision is about, when it is not the request's own (the sign-in page's).
        """
        event = await self._announce(flow, decision, Stage.REQUEST, 403, url=url)
        loaded = self._loaded()
        headers = flow.request.headers
        form = refusal_form(headers.get_all("Sec-Fetch-Dest"), headers.get_all("Sec-Fetch-Mode"))
        if form is Form.EMPTY:
            flow.response = http.Response.make(403, b"", http.Headers(_EMPTY_REFUSAL_HEADERS))
            return
        if form is Form.PANEL:
            panel = render_embed_panel(decision, loaded.policy, event.url)
            flow.response = http.Response.make(403, encode_page(panel), http.Headers(_BLOCK_PAGE_HEADERS))
            return
        department = decision.evidence.employee_department
        candidates = await loaded.directory.members(loaded.policy.approver_groups) if department else []
        approvers = loaded.policy.approval.approvers_for(department, candidates)
        page = render_block_page(decision, loaded.policy, event.url, approvers, event.id)
        flow.response = http.Response.make(403, encode_page(page), http.Headers(_BLOCK_PAGE_HEADERS))

    async def _refuse_vetoed_connect(self, flow: http.HTTPFlow, decision: Decision) -> None:
        # A tunnel that would pass through cannot show a block page (its requests are never
        # seen), so the CONNECT itself is refused; the refusal is announced like any denial.
        await self._announce(flow, decision, Stage.CONNECT, 403)
        flow.response = http.Response.make(
            403,
            f"citygate refused this connection: {plain_reason(decision.reason)}\n",
            {"Content-Type": "text/plain; charset=utf-8"},
        )


def _sign_in_target(request: http.Request, social: Callable[[Sequence[str]], bool]) -> Target:
    """The social page a request to the sign-in page returns to; TargetProblem when there is none."""
    path = request.path.partition("?")[0]
    if path != SIGN_IN_PATH:
        raise TargetProblem(f"there is no page at {path}; the sign-in page is {SIGN_IN_PATH}")
    target = read_target(request.query.get_all("to"))
    if not social([target.host]):
        raise TargetProblem("the page to return to is not a social media site")
    return target


def _presented(flow: http.HTTPFlow) -> Presented:
    peer = flow.client_conn.peername
    return Presented(tuple(flow.request.headers.get_all("Proxy-Authorization")), peer[0] if peer else None)


def _tunnel_hosts(context: context.Context, hello: AnyClientHello | None) -> list[str]:
    """The hosts a tunnel names: the CONNECT authority, the SNI of a TLS session already opened
    around it (a tunnel inside a decrypted one), and every name the ClientHello at hand asks for."""
    server = context.server.address
    hosts = [host for host in (server[0] if server else None, context.client.sni) if host]
    if hello is not None:
        hosts += server_names(hello)
    return hosts


class _Close(layer.Layer):
    """A tunnel's next layer that closes it at once: no byte of it is relayed upstream."""

    closed = False

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if not self.closed:
            self.closed = True
            yield commands.CloseConnection(self.context.client)


def _vetoed(decision: Decision, veto: Veto) -> Decision:
    """An allowed decision turned into a denial because a recorder vetoed it."""
    assert veto.reason is not None
    return decision._replace(
        result=Result.DENY,
        reason=veto.reason,
        evidence=decision.evidence._replace(detail=veto.detail),
        needs_path=False,
    )
