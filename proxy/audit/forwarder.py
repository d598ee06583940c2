"""The SIEM copy over TCP or TLS (`audit.syslog.address: tls://...`): every record delivered, in
order, while the collector is away and after it is back.

Threads. The writer's thread calls `send` (the Sink protocol) for each line it wrote, as for the
other copies: the message is framed there and put on an in-memory queue; nothing waits on the
network or the disk. The forwarder's own thread ("citygate-siem") takes the queue. While the
collector is connected and nothing is spooled it sends the messages at once; while it is not
(refused, unreachable, its certificate refused), or while spooled messages still wait, it
appends them to the spool (spool.py), so the order stays the records' order. Once connected
again it sends the spool, oldest first, then goes on live. A lost collector is tried again after
0.5 s, then after twice as long each time, up to 5 s.

What "delivered" means. A syslog collector sends nothing back, so delivery is judged from TCP: a
message is delivered once the collector's TCP has acknowledged its last byte (with TLS, the last
byte of the TLS record carrying it; syslog_transport.Connection). When a connection ends, what
was sent on it and not acknowledged is sent again on the next one; what was acknowledged is not.
Before every send the forwarder looks, without waiting, whether the collector has closed the
connection: a send after the collector's close is accepted by the local kernel and then lost to
a reset. So a collector that is stopped (rsyslog reads what it has been sent, then closes) and
started again receives every message exactly once.

What can still go wrong, and how a SIEM tells:
- duplicates: the spool's delivered place is saved without fsync, so after a crash or power cut
  of the proxy the last messages before it are sent again; and a connection cut in the middle of
  a message may leave the collector a cut message (which fails the chain check) before the whole
  one is sent again. Every record carries its place in the chain in structured data,
  `[citygate@32473 seq="41" sha256="..." chain="vm1/worker-0"]`: a SIEM keeps one message per
  chain and seq, and checks that each chain's seqs run without a hole.
- loss: a collector that acknowledges data and dies before reading it (killed, crashed, its
  machine cut off) loses what was in its socket buffer; no RFC 5425 sender can know. The SIEM
  sees the hole in the seqs, `citygate audit verify` on its copy names it, and the local log,
  the source of truth, still holds the records.
- the spool full (`spool_max_bytes`): the newest messages that do not fit are dropped and the
  oldest kept, so that what reaches the SIEM has one hole rather than a moving one. They are
  counted (citygate_siem_records_dropped_total), the first of a spell is logged as an error, and
  as soon as a record is kept again the spell is written into the local log as an
  `audit-siem-gap` record (the seq range, the count and why), which reaches the SIEM like any
  record: the hole in its copy is explained by a record after it. The in-memory queue has a
  limit too (MEMORY_LIMIT_BYTES), reached only if this thread were stuck for minutes; beyond it
  the same accounting applies.

At stop the forwarder sends what it can for up to CLOSE_SECONDS; the rest stays in the spool and
is sent after the next start, before that run's records.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from citygate.proxy.audit.config import SyslogSettings
from citygate.proxy.audit.record import state_record
from citygate.proxy.audit.sinks import rfc5424
from citygate.proxy.audit.spool import Place, Spool
from citygate.proxy.audit.syslog_transport import Connection, chain_place, octet_counted, structured_data

log = logging.getLogger("citygate.audit")

SIEM_GAP = "audit-siem-gap"  # the local log's record of messages the SIEM's copy lost
MEMORY_LIMIT_BYTES = 64 << 20
TIMEOUT_SECONDS = 5.0  # to connect, to shake hands, to hand one batch to the kernel
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
IDLE_CHECK_SECONDS = 1.0  # a collector that goes away is noticed this soon, even with no traffic
ACK_CHECK_SECONDS = 0.05  # how often acknowledgements are read while messages await them
CLOSE_SECONDS = 2.0
SEND_BATCH_BYTES = 256 << 10
_NEVER = 1 << 62  # the stream offset of a message not (yet) sent: never acknowledged

Submit = Callable[[dict[str, object]], object]  # AuditWriter.submit


@dataclass(slots=True)
class _Message:
    frame: bytes  # octet-counted RFC 5424
    seq: int | None  # the record's seq; None for a published chain head
    spooled: tuple[Place, Place] | None = None  # where it starts and ends in the spool, if read from there
    end: int = _NEVER  # the offset of its last byte on the connection it was sent on


@dataclass(slots=True)
class _Spell:
    """Messages dropped since the last one that was kept."""

    dropped: int = 0
    records: int = 0  # of them, records (not chain heads)
    first_seq: int = 0
    last_seq: int = 0
    reason: str = ""


class SiemForwarder:
    """A Sink that delivers every line to a TCP or TLS syslog collector (see the module docstring)."""

    def __init__(
        self, settings: SyslogSettings, spool_directory: Path, submit: Submit, clock: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.spool = Spool(spool_directory, settings.spool_max_bytes)
        self._submit = submit
        self._clock = clock
        self._hostname = socket.gethostname()
        self._procid = os.getpid()
        # Read by the metrics; written by the forwarder's thread, `dropped_total` also by `send`.
        self.sent_total = 0
        self.spooled_total = 0
        self.dropped_total = 0
        self.connected = False
        # Shared with the writer's thread, under `_lock`: the queue, the spell, `dropped_total`.
        self._lock = threading.Lock()
        self._queue: deque[_Message] = deque()
        self._queue_bytes = 0
        self._spell = _Spell()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # The forwarder's thread's own.
        self._connection: Connection | None = None
        self._unconfirmed: deque[_Message] = deque()  # sent, not yet acknowledged, in order
        self._unconfirmed_live = 0  # of them, those not from the spool (held only in memory)
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_SECONDS
        self._trouble: str | None = None  # why the collector is not connected, as last logged
        self._thread = threading.Thread(target=self._run, name="citygate-siem", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Messages held in memory: waiting, or sent and not yet acknowledged."""
        return len(self._queue) + self._unconfirmed_live

    @property
    def spool_bytes(self) -> int:
        return self.spool.held_bytes

    # --- the writer's thread --------------------------------------------------------------

    def send(self, line: bytes, severity: int) -> None:
        place = chain_place(line)
        message = rfc5424(
            line,
            facility=self.settings.facility_code,
            severity=severity,
            app_name=self.settings.app_name,
            hostname=self._hostname,
            procid=self._procid,
            structured=structured_data(place),
        )
        queued = _Message(octet_counted(message), place[0] if place else None)
        with self._lock:
            if self._queue_bytes + len(queued.frame) > MEMORY_LIMIT_BYTES:
                self._dropped([queued], f"{self._queue_bytes} bytes of messages were waiting in memory")
                return
            self._queue.append(queued)
            self._queue_bytes += len(queued.frame)
        self._wake.set()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(CLOSE_SECONDS + 2 * TIMEOUT_SECONDS)

    # --- the forwarder's thread -----------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:
                # A bug, not the network: the thread must live on. What was sent is judged by
                # what the collector acknowledged, as when a connection is lost.
                log.exception("citygate: the SIEM copy failed")
                self._disconnect("an internal error")
            self._wake.wait(self._pause())
            self._wake.clear()
        try:
            self._finish()
        except Exception:
            log.exception("citygate: the SIEM copy failed while stopping")
        finally:
            self.spool.close()

    def _step(self, *, connect: bool = True) -> None:
        if self._connection is not None and self._connection.closed_by_peer():
            self._disconnect("the collector closed the connection")
        if self._connection is None and connect and time.monotonic() >= self._retry_at:
            self._connect()
        messages = self._take()
        if self._connection is None or self.spool.unread:
            self._to_spool(messages)  # behind what waits there
        else:
            self._transmit(messages)
        if self._connection is not None and self.spool.unread:
            spooled = self.spool.read(SEND_BATCH_BYTES)
            self._transmit([_Message(s.frame, None, (s.start, s.end)) for s in spooled])
        if self._connection is not None:
            try:
                acknowledged = self._connection.acknowledged()
            except OSError as exc:
                self._disconnect(str(exc))
            else:
                self._confirm(acknowledged)

    def _pause(self) -> float:
        if self._connection is None:
            return max(0.0, self._retry_at - time.monotonic())  # new messages wake it to spool them
        if self.spool.unread:
            return 0.0
        return ACK_CHECK_SECONDS if self._unconfirmed else IDLE_CHECK_SECONDS

    def _take(self) -> list[_Message]:
        with self._lock:
            messages = list(self._queue)
            self._queue.clear()
            self._queue_bytes = 0
        return messages

    def _to_spool(self, messages: list[_Message]) -> None:
        if not messages:
            return
        kept, reason = self.spool.append([message.frame for message in messages])
        self.spooled_total += kept
        if any(message.seq is not None for message in messages[:kept]):
            self._end_spell()
        if kept < len(messages):
            with self._lock:
                self._dropped(messages[kept:], reason or "")

    def _transmit(self, messages: list[_Message]) -> None:
        connection = self._connection
        if not messages or connection is None:
            return
        # Unconfirmed before anything is sent: a failure sends them again (or spools them).
        self._unconfirmed.extend(messages)
        live = sum(1 for message in messages if message.spooled is None)
        self._unconfirmed_live += live
        try:
            data, ends = connection.encode([message.frame for message in messages])
            for message, end in zip(messages, ends, strict=True):
                message.end = end
                if message.spooled is not None:
                    message.frame = b""  # on disk: read from there if it must be sent again
            connection.transmit(data)
        except OSError as exc:
            self._disconnect(f"sending failed: {exc}")
            return
        if any(message.seq is not None for message in messages if message.spooled is None):
            self._end_spell()

    def _confirm(self, acknowledged: int) -> None:
        """The messages whose last byte the collector acknowledged are delivered."""
        delivered: Place | None = None
        while self._unconfirmed and self._unconfirmed[0].end <= acknowledged:
            message = self._unconfirmed.popleft()
            self.sent_total += 1
            if message.spooled is None:
                self._unconfirmed_live -= 1
            else:
                delivered = message.spooled[1]
        if delivered is not None:
            self.spool.delivered(delivered)

    def _connect(self) -> None:
        try:
            connection = Connection.open(self.settings, TIMEOUT_SECONDS)
        except ssl.SSLCertVerificationError as exc:
            self._unreachable(f"its certificate is refused: {exc.verify_message}", logging.ERROR)
            return
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._unreachable(str(exc) or type(exc).__name__, logging.WARNING)
            return
        self._connection = connection
        self.connected = True
        self._retry_delay = RETRY_FIRST_SECONDS
        if self._trouble is not None:
            log.warning(
                "citygate: the SIEM collector %s is connected again; %d bytes of spooled records are sent first",
                self.settings.address,
                self.spool.held_bytes,
            )
            self._trouble = None
        else:
            log.info("citygate: SIEM copy of the access log to %s", self.settings.address)

    def _disconnect(self, reason: str) -> None:
        self._close_connection()
        self._unreachable(reason, logging.WARNING)

    def _close_connection(self) -> None:
        """End the connection: what the collector acknowledged is delivered, the rest is put back
        in front, in order, to be sent on the next connection."""
        connection, self._connection = self._connection, None
        self.connected = False
        if connection is not None:
            try:
                acknowledged = connection.acknowledged()
            except OSError:
                acknowledged = 0  # not known: all of it is sent again (at least once)
            connection.close()
            self._confirm(acknowledged)
        messages = list(self._unconfirmed)
        self._unconfirmed.clear()
        self._unconfirmed_live = 0
        # Spooled messages were sent only before live ones (live ones only once nothing was left
        # unread), so reading the spool again from the first of them, then appending the live
        # ones, keeps the order.
        spooled = [message.spooled for message in messages if message.spooled is not None]
        if spooled:
            self.spool.rewind(spooled[0][0])
        self._to_spool([message for message in messages if message.spooled is None])

    def _unreachable(self, reason: str, level: int) -> None:
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)
        if reason != self._trouble:  # each new reason once, not at every retry
            log.log(
                level,
                "citygate: the SIEM collector %s is not connected (%s); records wait in %s (up to "
                "%d bytes) and are sent, oldest first, once it is back",
                self.settings.address,
                reason,
                self.spool.directory,
                self.spool.max_bytes,
            )
            self._trouble = reason

    def _finish(self) -> None:
        """Deliver what can be delivered in CLOSE_SECONDS; spool the rest for the next start."""
        deadline = time.monotonic() + CLOSE_SECONDS
        while self._connection is not None and time.monotonic() < deadline:
            self._step(connect=False)
            if not (self._queue or self.spool.unread or self._unconfirmed):
                break
            if not self.spool.unread:
                time.sleep(ACK_CHECK_SECONDS)  # the collector's acknowledgements
        self._close_connection()
        self._to_spool(self._take())
        with self._lock:
            spell, self._spell = self._spell, _Spell()
        if spell.dropped:
            log.error(
                "citygate: the SIEM copy lost %d message(s) (%s), records seq %d-%d among them; the "
                "proxy is stopping, so no audit-siem-gap record says so: the local log has them",
                spell.dropped,
                spell.reason,
                spell.first_seq,
                spell.last_seq,
            )
        if self.spool.held_bytes:
            log.warning(
                "citygate: %d bytes of the SIEM copy wait in %s; they are sent after the next start",
                self.spool.held_bytes,
                self.spool.directory,
            )

    # --- loss -------------------------------------------------------------------------------

    def _dropped(self, messages: list[_Message], reason: str) -> None:
        """Count messages lost; the first of a spell is logged at once (called under `_lock`)."""
        spell = self._spell
        if not spell.dropped:
            spell.reason = reason
            log.error(
                "citygate: the SIEM copy is dropping messages: %s; the local log keeps every record, "
                "and an audit-siem-gap record will name those missing from the SIEM's copy "
                "(citygate_siem_records_dropped_total counts them)",
                reason,
            )
        spell.dropped += len(messages)
        self.dropped_total += len(messages)
        for message in messages:
            if message.seq is not None:
                spell.first_seq = message.seq if not spell.records else min(spell.first_seq, message.seq)
                spell.last_seq = max(spell.last_seq, message.seq)
                spell.records += 1

    def _end_spell(self) -> None:
        """A record was kept after some were dropped: the local log says which the SIEM lacks."""
        with self._lock:
            spell, self._spell = self._spell, _Spell()
        if not spell.dropped:
            return
        log.error(
            "citygate: the SIEM copy lost %d message(s) (%s); %d record(s), seq %d-%d, are in the "
            "local log only, and an audit-siem-gap record says so",
            spell.dropped,
            spell.reason,
            spell.records,
            spell.first_seq,
            spell.last_seq,
        )
        if spell.records:
            self._submit(
                state_record(
                    SIEM_GAP,
                    self._clock(),
                    missing_first=spell.first_seq,
                    missing_last=spell.last_seq,
                    missing_records=spell.records,
                    reason=spell.reason,
                    siem=self.settings.address,
                )
            )
