"""The access-log recorder: every social-media decision becomes one chained JSON line on disk.

When each record is written:
- a denial (403, 407), at once, and the gate waits for the write before it answers;
- an allowed request (plain HTTP, or inside a decrypted tunnel), when its response or error has
  passed, with the status and body sizes;
- an allowed tunnel that passes through undecrypted, when it is decided: mitmproxy relays such a
  connection without any hook seeing its bytes, so its byte counts are unknown (None).

When the log cannot be written and `audit.fail_closed` is on, an allowed social-media decision is
vetoed (reason `audit_log_unavailable`), so nothing is served unrecorded. Its refusal, and every
denial, is still answered while the writer keeps their records in memory to write later; once it
keeps no more (`PENDING_LIMIT` less a reserve), a social-media request gets no answer at all: its
connection is closed, because an answer whose record would be dropped is never sent. Ordinary
traffic never waits for the log and never depends on it; with `audit.log_ordinary_connections` it gets one
record per connection and host, when the connection closes: the host and byte counts, nothing else.

All file work happens in `AuditWriter`'s thread; the hooks here only build dicts and queue them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader

from citygate.addons.body_bytes import count_streamed_body, message_body_bytes, response_body_bytes
from citygate.addons.events import DecisionEvent, Stage
from citygate.addons.loaded import loaded_policy
from citygate.proxy.audit.config import AuditSettings
from citygate.proxy.audit.files import worker_directory
from citygate.proxy.audit.forwarder import SiemForwarder
from citygate.proxy.audit.record import Completion, connection_record, decision_record
from citygate.proxy.audit.writer import PENDING_LIMIT, AuditWriter
from citygate.proxy.decision import Reason
from citygate.proxy.runtime.worker_env import worker_index

log = logging.getLogger("citygate.audit")

# The SIEM copy's counts and gauges, by the names `metrics()` gives them (citygate_ in Prometheus).
SIEM_METRICS = (
    "siem_records_queued",
    "siem_records_sent_total",
    "siem_records_spooled_total",
    "siem_records_dropped_total",
    "siem_spool_bytes",
    "siem_connected",
)

# How long the proxy holds a denial while its record is written. The write normally takes well
# under a millisecond; a hung disk must not hold every denial forever.
DENIAL_WRITE_WAIT_SECONDS = 2.0
_RECORDED = "citygate.audit.recorded"


class AuditLog:
    def __init__(self, pending_limit: int = PENDING_LIMIT) -> None:
        # Records the writer keeps while the log cannot be written (smaller in tests).
        self.pending_limit = pending_limit
        self.settings: AuditSettings | None = None
        self.writer: AuditWriter | None = None
        self.refusals_total = 0
        self._timezone: tzinfo = UTC
        # Decisions whose record the writer could not take: their answer must not be sent. This
        # addon's own hook for the request (requestheaders, http_connect), which runs right after
        # the gate's, closes the connection instead and removes the id.
        self._unrecorded: set[str] = set()
        self._closing: asyncio.Future[None] | None = None
        # Ordinary connections being counted: client connection id -> host -> [started, in, out].
        self._ordinary: dict[str, dict[str, list]] = {}

    # --- what the metrics addon reads -----------------------------------------------------

    @property
    def audit_log_healthy(self) -> bool:
        return self.writer is not None and self.writer.healthy

    @property
    def audit_write_errors_total(self) -> int:
        return self.writer.write_errors_total if self.writer else 0

    @property
    def audit_records_written_total(self) -> int:
        return self.writer.records_written_total if self.writer else 0

    @property
    def audit_records_dropped_total(self) -> int:
        return self.writer.records_dropped_total if self.writer else 0

    @property
    def audit_sink_errors_total(self) -> int:
        return self.writer.sink_errors_total if self.writer else 0

    @property
    def audit_refusals_total(self) -> int:
        """Allowed social-media requests refused because the log could not be written."""
        return self.refusals_total

    @property
    def audit_last_error(self) -> str | None:
        """Why the log cannot be written (e.g. "[Errno 28] No space left on device"), or None."""
        return self.writer.last_error if self.writer else "the access log is not open"

    @property
    def audit_chain_head_seq(self) -> int:
        return self.writer.head.seq if self.writer else 0

    @property
    def siem(self) -> SiemForwarder | None:
        """The SIEM copy over TCP or TLS, once the writer has opened it (audit.syslog: tcp:// or tls://)."""
        sinks = self.writer.sinks if self.writer else []
        return next((sink for sink in sinks if isinstance(sink, SiemForwarder)), None)

    def siem_metrics(self) -> dict[str, float]:
        """The SIEM copy's counts and gauges (all zero without one)."""
        siem = self.siem
        if siem is None:
            return dict.fromkeys(SIEM_METRICS, 0.0)
        return {
            "siem_records_queued": siem.queued,
            "siem_records_sent_total": siem.sent_total,
            "siem_records_spooled_total": siem.spooled_total,
            "siem_records_dropped_total": siem.dropped_total,
            "siem_spool_bytes": siem.spool_bytes,
            "siem_connected": float(siem.connected),
        }

    def metrics(self) -> dict[str, float]:
        return {
            "audit_log_healthy": float(self.audit_log_healthy),
            "audit_write_errors_total": self.audit_write_errors_total,
            "audit_records_written_total": self.audit_records_written_total,
            "audit_records_dropped_total": self.audit_records_dropped_total,
            "audit_sink_errors_total": self.audit_sink_errors_total,
            "audit_refusals_total": self.audit_refusals_total,
            "audit_chain_head_seq": self.audit_chain_head_seq,
            **self.siem_metrics(),
        }

    # --- lifecycle ------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "citygate_audit_directory",
            str,
            "",
            "Folder of the access log, overriding audit.directory in the citygate configuration.",
        )

    def configure(self, updated: set[str]) -> None:
        if not {"citygate_config", "citygate_audit_directory"} & updated:
            return
        policy = loaded_policy()
        if policy is None:
            return  # the gate refuses to run without a configuration
        settings = policy.features.audit
        if ctx.options.citygate_audit_directory:
            settings = replace(settings, directory=Path(ctx.options.citygate_audit_directory))
        # Under `citygate run --workers N` each worker keeps its own chain, in its own subfolder,
        # and its own SIEM spool (by default inside that subfolder).
        settings = replace(settings, directory=worker_directory(settings.directory, worker_index()))
        if settings.syslog is not None and settings.syslog.spool_directory is not None:
            spool = worker_directory(settings.syslog.spool_directory, worker_index())
            settings = replace(settings, syslog=replace(settings.syslog, spool_directory=spool))
        if settings == self.settings and policy.timezone == self._timezone:
            return
        self.settings, self._timezone = settings, policy.timezone
        # Started here, not in `running`: the proxy may take connections before `running` has
        # run (a worker's inherited socket queues them), and a denial must find a writer. Only
        # a thread starts here; the writer does its file work in it.
        old, self.writer = (
            self.writer,
            AuditWriter(settings, policy.timezone, pending_limit=self.pending_limit),
        )
        self.writer.start()
        if old is not None:
            # A new configuration while serving: the old writer finishes off the event loop.
            self._closing = asyncio.get_running_loop().run_in_executor(None, old.close)

    async def running(self) -> None:
        writer = self.writer
        if writer is None:
            return
        await asyncio.to_thread(writer.wait_ready, 5.0)
        if writer.healthy:
            log.info("citygate: access log %s", writer.active_path)

    async def done(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            await asyncio.to_thread(writer.close)

    # --- decisions ------------------------------------------------------------------------

    async def citygate_decision(self, event: DecisionEvent) -> None:
        try:
            await self._record(event)
        except Exception:
            log.exception("citygate: could not record decision %s", event.id)
            self._veto(event, "the access log could not record this request")

    async def _record(self, event: DecisionEvent) -> None:
        writer, settings = self.writer, self.settings
        # A report-mode denial (would_deny) is let through: recorded like an allowed request.
        if event.forwarded:
            if writer is not None and not writer.ready:
                # Only in the first moments after a start: whether the log can be written is
                # known once the writer has opened its file.
                await asyncio.to_thread(writer.wait_ready, DENIAL_WRITE_WAIT_SECONDS)
            if writer is None or not writer.healthy:
                # The block page shows this; the cause (a path, an errno) is in the proxy log.
                self._veto(event, "the access log cannot be written right now")
                if event.veto.reason is not None or writer is None:
                    return
            if event.stage is Stage.CONNECT:
                # A tunnel: its record is all that will be known of it (see the module docstring).
                record = decision_record(event, include_query=settings.include_query)  # type: ignore[union-attr]
                if not writer.submit(record, refusable=self._fail_closed()):
                    self._veto(event, "the access log cannot take more records right now")
            # An allowed request is recorded when it completes (response or error hook).
            return
        if writer is None:
            return
        record = decision_record(event, include_query=settings.include_query)  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        written: asyncio.Future[bool] = loop.create_future()

        def done(ok: bool) -> None:  # runs in the writer's thread
            loop.call_soon_threadsafe(_settle, written, ok)

        if not writer.submit(record, done, urgent=True, refusable=self._fail_closed()):
            self._unanswerable(event)
            return
        try:
            await asyncio.wait_for(written, DENIAL_WRITE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("citygate: the audit record of denial %s is still being written", event.id)

    def _fail_closed(self) -> bool:
        return self.settings is None or self.settings.fail_closed

    def _unanswerable(self, event: DecisionEvent) -> None:
        if event.decision.reason is not Reason.AUDIT_LOG_UNAVAILABLE:  # a veto was counted already
            self.refusals_total += 1
        self._unrecorded.add(event.id)
        log.warning(
            "citygate: the access log keeps no more records (it cannot be written); request %s "
            "gets no answer, its connection is closed",
            event.id,
        )

    def _answer_unrecorded(self, flow: http.HTTPFlow) -> bool:
        """Close the connection instead of sending an answer whose record was not taken."""
        event = flow.metadata.get("citygate.event")
        if event is None or event.id not in self._unrecorded:
            return False
        self._unrecorded.discard(event.id)
        if flow.killable:
            flow.kill()
        return True

    def _veto(self, event: DecisionEvent, detail: str) -> None:
        settings = self.settings
        if event.forwarded and (settings is None or settings.fail_closed):
            self.refusals_total += 1
            event.veto.refuse(Reason.AUDIT_LOG_UNAVAILABLE, detail)

    # --- completing allowed requests ------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Runs after the gate's hook, which made the decision and set the answer.
        self._answer_unrecorded(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        event = flow.metadata.get("citygate.event")
        if event is not None and _completes(event):
            count_streamed_body(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._complete(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._complete(flow, flow.error.msg if flow.error else "error")

    def _complete(self, flow: http.HTTPFlow, error: str | None) -> None:
        event = flow.metadata.get("citygate.event")
        if event is None:
            self._count_ordinary(flow)
            return
        writer, settings = self.writer, self.settings
        if writer is None or settings is None or not _completes(event) or flow.metadata.get(_RECORDED):
            return
        flow.metadata[_RECORDED] = True
        response = flow.response
        response_bytes = response_body_bytes(flow)
        completion = Completion(
            end=datetime.now(UTC),
            status=response.status_code if response is not None else None,
            request_bytes=message_body_bytes(flow.request),
            response_bytes=response_bytes,
            error=error,
        )
        record = decision_record(event, completion, include_query=settings.include_query)
        if not writer.submit(record, refusable=settings.fail_closed):
            self._unanswerable(event)
            self._answer_unrecorded(flow)

    # --- ordinary connections (audit.log_ordinary_connections) ----------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Runs after the gate's hook: a social CONNECT has its event by now.
        if self._answer_unrecorded(flow):
            return
        if self._ordinary_on() and "citygate.event" not in flow.metadata and flow.response is None:
            self._connection_hosts(flow.client_conn).setdefault(
                flow.request.host, [datetime.now(UTC), None, None]
            )

    def _count_ordinary(self, flow: http.HTTPFlow) -> None:
        if not self._ordinary_on() or flow.request.method == "CONNECT":
            return
        counts = self._connection_hosts(flow.client_conn).setdefault(
            flow.request.host, [datetime.now(UTC), 0, 0]
        )
        counts[1] = (counts[1] or 0) + (message_body_bytes(flow.request) or 0)
        counts[2] = (counts[2] or 0) + (message_body_bytes(flow.response) or 0)

    def client_disconnected(self, client: connection.Client) -> None:
        hosts = self._ordinary.pop(client.id, None)
        writer = self.writer
        if not hosts or writer is None:
            return
        ended = datetime.now(UTC)
        for host, (started, sent, received) in hosts.items():
            writer.submit(connection_record(uuid.uuid4().hex, started, ended, host, sent, received))

    def _ordinary_on(self) -> bool:
        return self.settings is not None and self.settings.log_ordinary_connections

    def _connection_hosts(self, client: connection.Client) -> dict[str, list]:
        return self._ordinary.setdefault(client.id, {})


def _completes(event: DecisionEvent) -> bool:
    """Whether this event's record waits for the request to complete."""
    return event.forwarded and event.stage is Stage.REQUEST and event.veto.reason is None


def _settle(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)
