"""The metrics recorder: decisions, bytes, flags, the directory and the access log as Prometheus metrics.

Add it after the gate, the flags addon and the access log: it counts what they decided (a
decision the access log vetoed is not counted, because the gate announces the refusal that
replaces it), the flags raised on it, and the body bytes of allowed requests.

On the event loop this addon only increments counters (microseconds, no I/O). Everything else
happens in threads of its own: the listener answers scrapes (proxy/runtime/metrics_http.py), and a
refresher brings the gauges read from other parts up to date every `metrics.refresh_seconds`
(grants in force and expiring, the access log's health and error counts, configuration loads).

Under `citygate run --workers N` the worker serves nothing itself: its metrics live in the
supervisor's shared folder, and the supervisor's listener serves every worker's together.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from citygate.addons.audit import AuditLog
from citygate.addons.body_bytes import count_streamed_body, message_body_bytes, response_body_bytes
from citygate.addons.ca import served_chain
from citygate.addons.configuration import Configuration
from citygate.addons.connection_limits import ConnectionLimits
from citygate.addons.events import DecisionEvent, Stage
from citygate.addons.fast_path import RELAYED, FastPath
from citygate.addons.loaded import loaded_gate
from citygate.directory.breaker import State
from citygate.proxy.metrics.config import MetricsSettings
from citygate.proxy.metrics.definitions import UNKNOWN, LabelGuard, MetricSet, grant_counts
from citygate.proxy.pki.expiry import first_to_expire
from citygate.proxy.runtime.health import Readiness, healthz, readyz, write_state
from citygate.proxy.runtime.metrics_http import (
    LISTEN_OPTION,
    MetricsServer,
    multiprocess_folder,
    use_multiprocess_values,
    with_listen,
)

log = logging.getLogger("citygate.metrics")

# Grant gauges walk every grant: recomputed when the configuration changes, and at most once a
# minute otherwise (a grant enters or leaves them only at midnight, city time).
GRANTS_REFRESH_SECONDS = 60.0
_COUNTED = "citygate.metrics.counted"


class Metrics:
    def __init__(self) -> None:
        self.settings: MetricsSettings | None = None
        self.metrics: MetricSet | None = None
        self.server: MetricsServer | None = None
        self._departments = LabelGuard(MetricsSettings().max_departments)
        self._config: Configuration | None = None
        self._audit: AuditLog | None = None
        self._limits: ConnectionLimits | None = None
        self._tls: object | None = None  # mitmproxy's tlsconfig addon, which holds the CA
        self._mirrored: dict[str, float] = {}
        self._grant_keys: set[tuple[str, str]] = set()
        self._grants_policy: object | None = None
        self._grants_time = 0.0
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._refresh_lock = threading.Lock()
        # Plain-HTTP client connections already counted as passed through.
        self._http_clients: set[str] = set()
        self._running = False

    # --- lifecycle ------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            LISTEN_OPTION,
            str,
            "",
            "HOST:PORT of the metrics listener, overriding metrics.listen in the citygate configuration.",
        )

    def configure(self, updated: set[str]) -> None:
        if not {"citygate_config", LISTEN_OPTION} & updated:
            return
        gate = loaded_gate()
        config = gate.config if gate is not None else None
        policy = config.policy if config is not None else None
        if config is None or policy is None:
            return  # the gate refuses to run without a configuration
        settings = policy.features.metrics
        try:
            settings = with_listen(settings, getattr(ctx.options, LISTEN_OPTION, ""))
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from exc
        previous, self.settings = self.settings, settings
        audit = ctx.master.addons.get("auditlog")
        self._config, self._audit = config, audit if isinstance(audit, AuditLog) else None
        self._tls = ctx.master.addons.get("tlsconfig")
        if not settings.enabled:
            self._stop_server()
            return
        if self.metrics is None:
            if multiprocess_folder() is not None:
                use_multiprocess_values()
            self.metrics = MetricSet()
        if previous is None or previous.max_departments != settings.max_departments:
            self._departments = LabelGuard(settings.max_departments)
        self._observe(config, self.metrics)
        if self._running:
            self._serve(settings)  # a reload that moved the listener
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh_forever, name="citygate-metrics-refresh", daemon=True
            )
            self._refresher.start()
        self._wake.set()  # bring the gauges up to date with this configuration now

    def _observe(self, config: Configuration, metrics: MetricSet) -> None:
        """Be told of directory calls, breaker changes and closed connections, as they happen."""
        if config.current is not None:
            gateway = config.current.directory  # a reload may bring a new gateway
            gateway.observer = self._directory_call
            gateway.breaker_observer = self._breaker_event
            gateway.bind_observer = self._bind
            gateway.refusal_observer = self._bind_refusal
            if gateway.breaker is not None:
                metrics.set_breaker_state(gateway.breaker.state)
            negotiate = config.current.identities.negotiate
            if negotiate is not None:
                negotiate.observer = self._negotiate_handshake
        fast = ctx.master.addons.get("fastpath")
        if isinstance(fast, FastPath):
            fast.observer = self._fast_path_connection
        limits = ctx.master.addons.get("connectionlimits")
        if isinstance(limits, ConnectionLimits):
            limits.observer = self._connections_closed
            self._limits = limits

    def running(self) -> None:
        # Listening only once every option is set: `citygate run --set citygate_metrics_listen=...`
        # arrives after the configuration, and the configured address must not be bound first.
        self._running = True
        if self.settings is not None and self.settings.enabled:
            self._serve(self.settings)
        self._wake.set()  # the access log is open by now: report its health at once

    async def done(self) -> None:
        self._stop.set()
        self._wake.set()
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.stop)

    def _serve(self, settings: MetricsSettings) -> None:
        """Listen on the configured address, unless a supervisor serves every worker's metrics."""
        if multiprocess_folder() is not None:
            return
        server = self.server
        if server is not None and (server.host, server.requested_port) == (settings.host, settings.port):
            return
        self._stop_server()
        self._start_server(settings)

    def _start_server(self, settings: MetricsSettings) -> None:
        assert self.metrics is not None
        server = MetricsServer(self.metrics.registry, settings.host, settings.port)
        server.routes["/healthz"] = healthz
        server.routes["/readyz"] = lambda query: readyz([self.readiness()], query)
        try:
            server.start()
        except OSError as exc:
            # A warning, not an error: mitmproxy stops at start-up on logged errors, and a proxy
            # without graphs serves the city better than no proxy.
            log.warning(
                "citygate: cannot serve metrics on %s: %s; running without /metrics", settings.listen, exc
            )
            return
        self.server = server
        log.info("citygate: metrics on %s", server.url)

    def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            # shutdown() waits for the listener's next poll: not on the event loop.
            threading.Thread(target=server.stop, name="citygate-metrics-stop", daemon=True).start()

    # --- decisions (on the event loop: counting only) -----------------------------------

    def citygate_decision(self, event: DecisionEvent) -> None:
        metrics = self.metrics
        if metrics is None or event.veto.reason is not None:
            return  # a vetoed decision is announced again as the refusal that replaces it
        decision = event.decision
        site = decision.site_id or UNKNOWN
        department = self._departments(decision.evidence.employee_department)
        metrics.decisions.labels(site, department, decision.result.value, decision.reason.value).inc()
        grant = decision.grant
        if grant is not None and decision.allowed:
            metrics.grant_uses.labels(site, grant.kind.value, grant.purpose_kind.value).inc()
        if event.decision_seconds is not None:
            metrics.decision_duration.observe(event.decision_seconds)
        for rule in event.flags:
            metrics.flags.labels(site, department, rule).inc()

    def _directory_call(self, operation: str, result: str, seconds: float) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        try:
            metrics.directory_requests.labels(operation, result).inc()
            metrics.directory_duration.labels(operation).observe(seconds)
        except Exception:  # the gateway calls this inside its own bookkeeping: never raise there
            log.exception("citygate: could not count a directory call")

    def _negotiate_handshake(self, result: str, seconds: float) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.negotiate_handshakes.labels(result).inc()
            metrics.negotiate_duration.observe(seconds)

    def _bind(self, result: str) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.binds.labels(result).inc()

    def _bind_refusal(self, reason: str) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.bind_refusals.labels(reason).inc()

    def _fast_path_connection(self, outcome: str) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.fast_path.labels(outcome).inc()
            if outcome == RELAYED:
                metrics.passthrough.labels("tunnel").inc()

    def _connections_closed(self, reason: str, count: int) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.connections_closed.labels(reason).inc(count)

    def _breaker_event(self, event: str, state: State) -> None:
        # On the event loop or the gateway's checker thread: prometheus_client is thread-safe.
        metrics = self.metrics
        if metrics is None:
            return
        if event == "rejected":
            metrics.breaker_rejections.inc()
            return
        if event == "opened":
            metrics.breaker_opens.inc()
        elif event in ("probe_ok", "probe_failed"):
            metrics.breaker_probes.labels("ok" if event == "probe_ok" else "failed").inc()
        metrics.set_breaker_state(state)
        if event in ("opened", "closed"):
            self._wake.set()  # readiness changed: publish it for the supervisor's /readyz now

    # --- bytes of allowed requests --------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if _relayed(flow):
            count_streamed_body(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._count_bytes(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._count_bytes(flow)

    def _count_bytes(self, flow: http.HTTPFlow) -> None:
        metrics = self.metrics
        if metrics is None or not _relayed(flow) or flow.metadata.get(_COUNTED):
            return
        flow.metadata[_COUNTED] = True
        event: DecisionEvent = flow.metadata["citygate.event"]
        site = event.decision.site_id or UNKNOWN
        department = self._departments(event.decision.evidence.employee_department)
        received = response_body_bytes(flow)
        for direction, count in (("request", message_body_bytes(flow.request)), ("response", received)):
            if count:
                metrics.bytes.labels(site, department, direction).inc(count)

    # --- ordinary connections passed through ----------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # After the gate: a social CONNECT has its event by now, a refused one its response.
        metrics = self.metrics
        if metrics is not None and "citygate.event" not in flow.metadata and flow.response is None:
            metrics.passthrough.labels("tunnel").inc()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        metrics = self.metrics
        client = flow.client_conn
        if (
            metrics is None
            or flow.request.method == "CONNECT"
            or "citygate.event" in flow.metadata
            or flow.response is not None
            or client.tls_established  # inside a tunnel citygate decrypted: social traffic
            or client.id in self._http_clients
        ):
            return
        self._http_clients.add(client.id)
        metrics.passthrough.labels("http").inc()

    def client_disconnected(self, client: connection.Client) -> None:
        self._http_clients.discard(client.id)

    # --- gauges, refreshed off the event loop ---------------------------------------------

    def _refresh_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("citygate: could not refresh the metrics")
            settings = self.settings
            self._wake.wait(settings.refresh_seconds if settings else 5.0)
            self._wake.clear()

    def refresh(self) -> None:
        """Bring the gauges read from other parts up to date (the refresher's thread calls it)."""
        metrics, config, settings = self.metrics, self._config, self.settings
        if metrics is None or config is None or settings is None:
            return
        with self._refresh_lock:
            policy = config.policy
            stale = time.monotonic() - self._grants_time >= GRANTS_REFRESH_SECONDS
            if policy is not None and (policy is not self._grants_policy or stale):
                active, expiring = grant_counts(
                    policy.grants, datetime.now(policy.timezone), settings.expiring_days
                )
                # Series that had grants and have none now go to 0 rather than vanish.
                self._grant_keys |= set(active)
                for key in self._grant_keys:
                    metrics.active_grants.labels(*key).set(active.get(key, 0))
                    metrics.grants_expiring.labels(*key).set(expiring.get(key, 0))
                self._grants_policy, self._grants_time = policy, time.monotonic()
            audit = self._audit
            if audit is not None:
                metrics.audit_healthy.set(1 if audit.audit_log_healthy else 0)
                self._mirror(metrics.audit_write_errors, "audit_write_errors", audit.audit_write_errors_total)
                self._mirror(metrics.audit_refusals, "audit_refusals", audit.audit_refusals_total)
                self._mirror(
                    metrics.audit_records_dropped, "audit_records_dropped", audit.audit_records_dropped_total
                )
                siem = audit.siem_metrics()
                metrics.siem_queued.set(siem["siem_records_queued"])
                metrics.siem_spool_bytes.set(siem["siem_spool_bytes"])
                metrics.siem_connected.set(siem["siem_connected"])
                self._mirror(metrics.siem_sent, "siem_sent", siem["siem_records_sent_total"])
                self._mirror(metrics.siem_spooled, "siem_spooled", siem["siem_records_spooled_total"])
                self._mirror(metrics.siem_dropped, "siem_dropped", siem["siem_records_dropped_total"])
            limits = self._limits
            if limits is not None:
                metrics.client_connections.set(limits.open_connections)
            for result, count in list(config.loads.items()):
                self._mirror(metrics.config_reloads.labels(result), f"config_loads:{result}", count)
            chain = served_chain(self._tls)
            if chain:
                metrics.ca_expiry.set(first_to_expire(chain).not_valid_after_utc.timestamp())
        folder = multiprocess_folder()
        if folder is not None:
            write_state(folder, self.readiness())  # the supervisor's /readyz reads it

    def readiness(self) -> Readiness:
        """Whether this process can make every decision it may be asked for (/readyz)."""
        loaded = self._config.current if self._config is not None else None
        audit = self._audit
        return Readiness(
            config_loaded=loaded is not None,
            directory_available=loaded is not None and loaded.directory.available(),
            audit_log_writable=audit is None or audit.audit_log_healthy,
        )

    def _mirror(self, counter: object, key: str, total: float) -> None:
        """Advance a Prometheus counter to another part's running total (which only grows,
        unless that part was replaced, e.g. a new access-log writer after a reload)."""
        seen = self._mirrored.get(key, 0)
        if total > seen:
            counter.inc(total - seen)  # type: ignore[attr-defined]
        self._mirrored[key] = total


def _relayed(flow: http.HTTPFlow) -> bool:
    """Whether this flow is a social-media request citygate forwarded to the site (allowed, or
    let through in report mode)."""
    event = flow.metadata.get("citygate.event")
    return (
        isinstance(event, DecisionEvent)
        and event.forwarded
        and event.stage is Stage.REQUEST
        and event.veto.reason is None
    )
