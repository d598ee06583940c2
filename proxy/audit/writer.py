"""The access log on disk: buffered, chained, rotated, compressed, pruned, and self-healing.

The proxy's event loop only ever calls `submit`, which appends to an in-memory list under a
lock and returns. One worker thread does every piece of file I/O: it seals the records into the
hash chain (`audit_chain`), appends them, fsyncs, rotates, and copies lines to the sinks
(stdout, syslog). Compression runs in a second thread so a large file never delays a write.

Loss window: a record reaches the file within `flush_interval_ms`, or at once when
`max_buffered_records` are waiting or when the caller asks for it (`urgent`, used for denials,
which the proxy awaits before it answers). A `kill -9` loses at most the records submitted
since the last flush; with `fsync: flush`, so does a power cut. A write cut short leaves a torn
last line, which `citygate audit verify` names, and which the next start leaves in place as
evidence: the file is set aside as rotated and the new file's first record says so.

Failure and recovery: when a write fails (disk full, permission denied, the folder deleted,
another process holding the log) the file is cut back to its last complete record, the records
stay queued, `healthy` turns False and `write_errors_total` counts the attempt; the worker
retries every half second, recreating the folder and file if they are gone, and `healthy` turns
True again on the first write that succeeds. No restart is needed.

Never a silent loss: a record that was queued is never dropped while the proxy runs. A record
that backs an answer not yet sent (`refusable`) is not queued once `PENDING_LIMIT` less a reserve
are waiting: `submit` says so and the caller refuses the request instead of answering it. Only a
record nobody can refuse (bookkeeping, ordinary connections) finding the queue full is dropped:
counted in `records_dropped_total`, named in the proxy log, and, once writing works again, marked
in the chain by an `audit-gap` record that holds the missing records' sequence numbers, so that
`citygate audit verify` reports them. Records still waiting when the proxy stops with the log
unwritable are counted and named in the proxy log (the chain cannot be written to say so).

Rotation: by size (`rotate_bytes`; a file may pass it by one flush) and at midnight in the
city's timezone (`rotate_daily`), which also names the day in the rotated file's name.
Retention: rotated files whose last write is older than `retention_days` are deleted, checked at
start, after each rotation and hourly; the active file is never deleted.

Anchors: every `anchor_interval_s`, if the chain grew, the chain head (seq and hash) is logged
to the proxy's own log (logger `citygate.audit`) and sent to the sinks as an
`audit-chain-head` line, so that the head is kept somewhere the log's own files are not.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path

from citygate.proxy.audit.chain import FILE_START, GAP, RETENTION, ChainHead, Damaged, canonical, seal, unseal
from citygate.proxy.audit.config import SPOOL_FOLDER, AuditSettings, Fsync
from citygate.proxy.audit.files import (
    ACTIVE_NAME,
    LOCK_NAME,
    chain_id,
    is_rotated,
    log_files,
    open_log,
    rotated_name,
)
from citygate.proxy.audit.forwarder import SiemForwarder
from citygate.proxy.audit.record import state_record, timestamp
from citygate.proxy.audit.sinks import SEVERITY_INFO, SEVERITY_NOTICE, Sink, StdoutSink, SyslogSink

log = logging.getLogger("citygate.audit")

# Records kept while the log cannot be written; beyond this, new records are refused or dropped
# (see the module docstring). About 20,000 records is tens of megabytes of memory at most.
PENDING_LIMIT = 20_000
# The part of PENDING_LIMIT only records nobody can refuse may fill: answers that need a record
# are refused while it is left, so that they are refused before any record is dropped.
RESERVE_FRACTION = 0.1
RETRY_SECONDS = 0.5
RETENTION_CHECK_SECONDS = 3600.0

Callback = Callable[[bool], None]


class AuditUnavailable(OSError):
    """The log cannot be written for a reason that is not an OSError of its own."""


@dataclass(slots=True)
class _Pending:
    record: dict[str, object]
    callback: Callback | None


@dataclass(frozen=True, slots=True)
class _Scan:
    """What a log file on disk holds, for carrying the chain on after a restart."""

    records: int  # complete lines
    head: ChainHead | None  # the last complete line's place, None if it is not a record
    first_seq: int | None
    first_at: datetime | None
    torn: bool  # ends with an incomplete line


class AuditWriter:
    def __init__(
        self,
        settings: AuditSettings,
        timezone: tzinfo,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pending_limit: int = PENDING_LIMIT,
    ) -> None:
        self.settings = settings
        self.pending_limit = pending_limit
        self.timezone = timezone
        self.sinks: list[Sink] = []  # opened by the worker: a syslog host name may need DNS
        self.clock = clock
        self.directory = Path(settings.directory)
        # Named in every record and anchor: logs of several workers and hosts verify together.
        self.chain = chain_id(self.directory, settings.host_name or socket.gethostname())
        self.active_path = self.directory / ACTIVE_NAME
        # Read by the proxy (health, metrics); written by the worker, `dropped` also by submit.
        self.healthy = False
        self.last_error: str | None = None
        self.records_written_total = 0
        self.write_errors_total = 0
        self.records_dropped_total = 0
        self.sink_errors_total = 0
        self.head = ChainHead()

        self._reserve = max(1, int(pending_limit * RESERVE_FRACTION))
        # Records dropped and not yet marked in the chain, and why; written by `submit` and the
        # worker under `_lock`.
        self._unmarked_drops = 0
        self._drop_reason = ""
        self._pending: list[_Pending] = []
        self._flushing = 0  # records taken from `_pending` by the worker: still counted as waiting
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._compressor = ThreadPoolExecutor(1, thread_name_prefix="citygate-audit-gzip")
        # File state, touched by the worker thread only.
        self._state_known = False
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self._records = 0
        self._file_day: date | None = None
        self._file_first_seq = 1
        self._needs_header = False
        self._previous: tuple[str, int, bool] | None = None  # name, records, torn
        self._open_reason = "start"
        self._next_retention = 0.0
        self._next_anchor = 0.0
        self._anchored = ChainHead()

    # --- called from the proxy ------------------------------------------------------------

    def start(self) -> None:
        self.submit(state_record("audit-start", self.clock(), pid=os.getpid()), urgent=True)
        self._thread = threading.Thread(target=self._run, name="citygate-audit", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first write was attempted (so `healthy` means something)."""
        return self._ready.wait(timeout)

    def submit(
        self,
        record: dict[str, object],
        callback: Callback | None = None,
        *,
        urgent: bool = False,
        refusable: bool = False,
    ) -> bool:
        """Queue a record; `callback(written)` runs in the worker once it is written (or not).

        Never blocks on I/O. False when the record was not queued: a `refusable` one (it backs an
        answer the caller can still refuse) when the queue is nearly full, then nothing else
        happens; any other when the queue is full, then it is dropped (counted, logged, marked).
        """
        with self._lock:
            waiting = len(self._pending) + self._flushing
            room = self.pending_limit - waiting - (self._reserve if refusable else 0)
            queued = room > 0
            if queued:
                self._pending.append(_Pending(record, callback))
                urgent = urgent or len(self._pending) >= self.settings.max_buffered_records
            elif not refusable:
                self._count_drops(
                    1, f"the log could not be written and {self.pending_limit} records were waiting"
                )
        if not queued:
            _notify(None if refusable else callback, False)
            return False
        if urgent:
            self._wake.set()
        return True

    def _count_drops(self, count: int, reason: str) -> None:
        """Count records lost; the first of a spell is logged at once (called under `_lock`)."""
        if not self._unmarked_drops:
            self._drop_reason = f"{reason} ({self.last_error or 'no error recorded'})"
            log.error(
                "citygate: dropping access-log records: %s; the chain will mark them as a gap "
                "once writing works again (citygate_audit_records_dropped_total counts them)",
                self._drop_reason,
            )
        self.records_dropped_total += count
        self._unmarked_drops += count

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, close the file; the records of a log that cannot be written are lost."""
        if self._thread is None:
            return
        self.submit(state_record("audit-stop", self.clock(), pid=os.getpid()))
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._compressor.shutdown(wait=True)
        self._thread = None

    # --- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        self.sinks = self._open_sinks()
        try:
            self._housekeeping_at_start()
        except OSError as exc:
            log.warning("citygate: audit log housekeeping failed: %s", exc)
        while True:
            interval = self.settings.flush_interval_ms / 1000
            self._wake.wait(interval if self.healthy else max(interval, RETRY_SECONDS))
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, []
                self._flushing = len(batch)
                stopping = self._stopping
            try:
                if batch or self._unmarked_drops:  # a gap is marked as soon as it can be
                    self._flush(batch)
                self._periodic()
            except Exception as exc:
                # A bug, not the disk: the thread must live on, and the log count as broken, so
                # that social media is refused rather than served unrecorded.
                log.exception("citygate: the audit writer failed")
                self._failed(exc)
                with self._lock:
                    self._pending[:0] = batch  # queued records are never dropped while running
            with self._lock:
                self._flushing = 0
            self._ready.set()
            if stopping:
                with self._lock:
                    left = len(self._pending)
                if not left or not self.healthy:
                    if left:
                        self._lost_at_stop(left)
                    break
        self._anchor(force=True)
        self._close_file()
        self._release_lock()
        for sink in self.sinks:
            with contextlib.suppress(OSError):
                sink.close()

    def _lost_at_stop(self, left: int) -> None:
        first = self.head.seq + 1
        log.error(
            "citygate: %d access-log record(s) lost: the log in %s could not be written before "
            "stopping (%s); they would have been seq %d-%d, and the chain will continue without them",
            left,
            self.directory,
            self.last_error,
            first,
            first + left - 1,
        )
        with self._lock:
            self.records_dropped_total += left

    def _flush(self, batch: list[_Pending]) -> None:
        try:
            self._ensure_open()
            now = self.clock()
            if self._fd is not None and self._rotation_due(now):
                self._rotate(now)
            if self._fd is None:
                self._open_new(now)
            lines, head, marked = self._opening_lines(now)
            marker = head  # the gap marker's place, when there is one
            sealable = []
            for pending in batch:
                try:
                    line, head = seal(pending.record, head, self.chain)
                except (TypeError, ValueError):  # a bug, not a disk problem: never retried
                    log.exception("citygate: an audit record could not be serialized; dropped")
                    self._drop([pending])
                    continue
                lines.append(line)
                sealable.append(pending)
            batch = sealable
            data = b"".join(lines)
            self._write_all(data)
        except OSError as exc:
            self._failed(exc)
            for pending in batch:
                _notify(pending.callback, False)
                pending.callback = None  # told once; the record itself waits for a retry
            with self._lock:
                self._pending[:0] = batch  # queued records are never dropped while running
            return
        if marked:
            self._gap_written(marked, marker)
        self.head = head
        self._size += len(data)
        self._records += len(lines)
        self._needs_header = False
        self.records_written_total += len(batch)
        synced = True
        if self.settings.fsync is Fsync.FLUSH:
            try:
                os.fsync(self._fd)  # type: ignore[arg-type]
            except OSError as exc:
                # Written, but perhaps not durable: counted, and not written a second time.
                self._failed(exc)
                synced = False
        if synced:
            self._succeeded()
        for pending in batch:
            _notify(pending.callback, True)
        self._copy_to_sinks(lines, batch)

    def _open_sinks(self) -> list[Sink]:
        sinks: list[Sink] = [StdoutSink()] if self.settings.stdout else []
        syslog = self.settings.syslog
        if syslog is not None:
            try:
                if syslog.transport in ("tcp", "tls"):
                    # Delivers every record, through a spool on disk while the collector is away;
                    # what its copy loses is recorded here (an audit-siem-gap record).
                    spool = syslog.spool_directory or self.directory / SPOOL_FOLDER
                    sinks.append(SiemForwarder(syslog, spool, self.submit, self.clock))
                else:
                    sinks.append(SyslogSink(syslog))
            except OSError as exc:
                log.warning("citygate: audit syslog %s unusable: %s", syslog.address, exc)
        return sinks

    def _drop(self, batch: list[_Pending]) -> None:
        with self._lock:
            self._count_drops(len(batch), "a record could not be serialized")
        for pending in batch:
            _notify(pending.callback, False)

    def _opening_lines(self, now: datetime) -> tuple[list[bytes], ChainHead, int]:
        """The lines that go before the batch: a new file's header, a gap marker; the head after
        them; how many dropped records the marker accounts for."""
        lines: list[bytes] = []
        head = self.head
        if self._needs_header:
            name, records, torn = self._previous or (None, None, False)
            header = state_record(
                FILE_START,
                now,
                previous_file=name,
                previous_records=records,
                previous_torn=torn,
                reason=self._open_reason,
            )
            line, head = seal(header, head, self.chain)
            lines.append(line)
        with self._lock:
            dropped, reason = self._unmarked_drops, self._drop_reason
        if dropped:
            # The dropped records' sequence numbers are skipped, so that the chain itself shows
            # where and how many records are missing; the marker chains to the last one written.
            gap = state_record(
                GAP,
                now,
                missing_first=head.seq + 1,
                missing_last=head.seq + dropped,
                missing_records=dropped,
                reason=reason,
            )
            line, head = seal(gap, ChainHead(head.seq + dropped, head.hash), self.chain)
            lines.append(line)
        return lines, head, dropped

    def _gap_written(self, marked: int, head: ChainHead) -> None:
        with self._lock:
            self._unmarked_drops -= marked
        log.error(
            "citygate: %d access-log record(s) were dropped (%s): seq %d-%d are missing from the "
            "chain; the audit-gap record at seq %d says so",
            marked,
            self._drop_reason,
            head.seq - marked,
            head.seq - 1,
            head.seq,
        )

    def _copy_to_sinks(self, lines: list[bytes], batch: list[_Pending]) -> None:
        """Every line written, the log's own (a file's header, a gap marker) included: a copy
        without them would have holes in its seqs where the local log has none."""
        if not self.sinks:
            return
        opening = len(lines) - len(batch)
        for line in lines[:opening]:
            self._send(line, SEVERITY_INFO)
        for line, pending in zip(lines[opening:], batch, strict=True):
            severity = SEVERITY_NOTICE if pending.record.get("event.type") == "denied" else SEVERITY_INFO
            self._send(line, severity)

    def _send(self, line: bytes, severity: int) -> None:
        for sink in self.sinks:
            try:
                sink.send(line, severity)
            except Exception:  # a copy that fails never stops the file being written
                self.sink_errors_total += 1

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            # Cut the file back to its last complete record, so a failed write leaves no torn
            # line in the middle of the log; if even that fails, rediscover the state later.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._close_file()
                self._state_known = False
            raise

    def _failed(self, exc: BaseException) -> None:
        self.write_errors_total += 1
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)
        if self.healthy or self.last_error != message:
            log.warning(
                "citygate: the audit log in %s cannot be written (%s); social media is refused "
                "while audit.fail_closed is on; retrying",
                self.directory,
                message,
            )
        self.healthy = False
        self.last_error = message

    def _succeeded(self) -> None:
        if not self.healthy and self.last_error is not None:
            log.warning("citygate: the audit log in %s is writable again", self.directory)
        self.healthy = True
        self.last_error = None

    # --- files ----------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)  # a security log: not world-readable
        self._ensure_lock()
        if not self._state_known:
            self._load_state()
        if self._fd is None:
            return
        # Still writing the file that is in the folder? (The folder or file may have been
        # deleted or moved: the descriptor would go on writing into a file nobody can read.)
        try:
            on_disk = os.stat(self.active_path)
            same = (on_disk.st_dev, on_disk.st_ino) == _identity(os.fstat(self._fd))
        except FileNotFoundError:
            same = False
        if not same:
            log.warning("citygate: %s disappeared; starting a new audit file", self.active_path)
            self._close_file()
            self._previous = (ACTIVE_NAME, self._records, False)
            self._open_reason = "previous file disappeared"
        elif on_disk.st_size < self._size:
            self._set_cut_file_aside(on_disk.st_size)

    def _set_cut_file_aside(self, size: int) -> None:
        """Someone cut the file being written: keep what is left as evidence, go on in a new file
        whose header says how many records the cut one held (so `audit verify` names the loss).
        Appending to it would also let a failed write's cut-back (`_write_all`) pad it with zeros."""
        assert self._file_day is not None
        name = rotated_name(self._file_day, self._file_first_seq)
        log.warning(
            "citygate: %s was cut from %d to %d bytes; kept as %s, starting a new audit file",
            self.active_path,
            self._size,
            size,
            name,
        )
        self._close_file()
        os.rename(self.active_path, self.directory / name)
        self._sync_directory()
        self._previous = (name, self._records, False)
        self._open_reason = "previous file was cut"

    def _ensure_lock(self) -> None:
        path = self.directory / LOCK_NAME
        if self._lock_fd is not None:
            try:
                if _identity(os.stat(path)) == _identity(os.fstat(self._lock_fd)):
                    return
            except FileNotFoundError:
                pass
            self._release_lock()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditUnavailable(f"another process is writing the audit log in {self.directory}") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _load_state(self) -> None:
        """Carry the chain on from what is on disk (after a start, or a failure of unknown extent)."""
        self._close_file()
        active = _scan(self.active_path) if self.active_path.exists() else None
        if active is not None and active.records == 0 and not active.torn:
            active = None  # created an instant before a crash: reuse it, header first
        if active is not None and not active.torn and active.head is not None:
            self.head = active.head
            self._open_active()
            self._records = active.records
            self._file_day = self._today(active.first_at or self.clock())
            self._file_first_seq = active.first_seq or active.head.seq
            self._state_known = True
            return
        if active is not None:
            # A torn or damaged end: leave the file as it is, as evidence, and go on in a new one.
            first = active.first_seq or (active.head.seq if active.head else self.head.seq + 1)
            name = rotated_name(self._today(active.first_at or self.clock()), first)
            os.rename(self.active_path, self.directory / name)
            self._sync_directory()
            log.warning("citygate: %s ended with an incomplete record; kept as %s", ACTIVE_NAME, name)
            if active.head is not None:
                self.head = active.head
            self._previous = (name, active.records, True)
            self._open_reason = "previous file ended with an incomplete record"
        else:
            rotated = [path for path in log_files(self.directory) if path.name != ACTIVE_NAME]
            if rotated:
                last = _scan(rotated[-1])
                if last.head is not None:
                    self.head = last.head
                self._previous = (rotated[-1].name.removesuffix(".gz"), last.records, last.torn)
            self._open_reason = "start"
        self._state_known = True

    def _open_active(self) -> None:
        self._fd = os.open(self.active_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _open_new(self, now: datetime) -> None:
        self._open_active()
        self._records = 0
        self._file_day = self._today(now)
        self._file_first_seq = self.head.seq + 1
        self._needs_header = True
        self._sync_directory()

    def _rotation_due(self, now: datetime) -> bool:
        if self._size >= self.settings.rotate_bytes:
            self._open_reason = "size"
            return True
        if self.settings.rotate_daily and self._file_day is not None and self._today(now) != self._file_day:
            self._open_reason = "day"
            return True
        return False

    def _rotate(self, now: datetime) -> None:
        assert self._fd is not None and self._file_day is not None
        if self.settings.fsync is not Fsync.NEVER:
            os.fsync(self._fd)
        self._close_file()
        name = rotated_name(self._file_day, self._file_first_seq)
        try:
            os.rename(self.active_path, self.directory / name)
        except OSError:
            self._state_known = False  # the active file is still there: carried on next time
            raise
        self._sync_directory()
        self._previous = (name, self._records, False)
        if self.settings.compress:
            self._compressor.submit(_compress, self.directory / name)
        self._next_retention = 0.0

    def _close_file(self) -> None:
        if self._fd is None:
            return
        if self.settings.fsync is not Fsync.NEVER:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def _sync_directory(self) -> None:
        if self.settings.fsync is Fsync.NEVER:
            return
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _today(self, now: datetime) -> date:
        return now.astimezone(self.timezone).date()

    # --- housekeeping ---------------------------------------------------------------------

    def _housekeeping_at_start(self) -> None:
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name.endswith(".gz.tmp"):
                path.unlink(missing_ok=True)  # a compression cut short; the original is intact
            elif is_rotated(path.name) and path.suffix == ".jsonl":
                compressed = path.with_name(path.name + ".gz")
                if compressed.exists():
                    path.unlink()  # compressed and renamed, but not yet removed
                elif self.settings.compress:
                    self._compressor.submit(_compress, path)

    def _periodic(self) -> None:
        now = time.monotonic()
        if self.settings.retention_days is not None and now >= self._next_retention:
            self._next_retention = now + RETENTION_CHECK_SECONDS
            try:
                self._apply_retention()
            except OSError as exc:
                log.warning("citygate: audit retention could not remove old files: %s", exc)
        if now >= self._next_anchor:
            self._next_anchor = now + self.settings.anchor_interval_s
            self._anchor()

    def _apply_retention(self) -> None:
        assert self.settings.retention_days is not None
        cutoff = time.time() - self.settings.retention_days * 86400
        removed = []
        try:
            for path in sorted(self.directory.iterdir()):
                if is_rotated(path.name) and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.name.removesuffix(".gz"))
                    log.info("citygate: audit retention removed %s", path.name)
        finally:
            if removed:
                # Recorded in the chain: `audit verify` accepts a chain that starts after a file
                # only when a retention record names that file.
                self.submit(state_record(RETENTION, self.clock(), removed_files=removed))

    def _anchor(self, *, force: bool = False) -> None:
        head = self.head
        if head.seq == 0 or (head == self._anchored and not force):
            return
        self._anchored = head
        log.info("citygate: audit chain head chain=%s seq=%d sha256=%s", self.chain, head.seq, head.hash)
        line = canonical(
            {
                "@timestamp": timestamp(self.clock()),
                "event.kind": "state",
                "event.action": "audit-chain-head",
                "citygate.chain.id": self.chain,
                "citygate.chain.seq": head.seq,
                "citygate.chain.hash": head.hash,
                "citygate.audit.directory": str(self.directory),
            }
        )
        self._send(line + b"\n", SEVERITY_INFO)


def _notify(callback: Callback | None, written: bool) -> None:
    """Tell a waiting caller; its failure (e.g. a loop already closed) must not stop the writer."""
    if callback is None:
        return
    try:
        callback(written)
    except Exception:
        log.exception("citygate: an audit write callback failed")


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return (stat.st_dev, stat.st_ino)


def _scan(path: Path) -> _Scan:
    """Count a file's complete lines and find its first and last records; one pass, any size."""
    records, first, last, rest = 0, b"", b"", b""
    with open_log(path) as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                rest = line
                break
            records += 1
            if records == 1:
                first = line
            last = line
    first_seq = first_at = head = None
    with contextlib.suppress(Damaged, ValueError):
        record, place = unseal(first)
        first_seq = place.seq
        first_at = datetime.fromisoformat(str(record["@timestamp"]))
    with contextlib.suppress(Damaged):
        head = unseal(last)[1]
    return _Scan(records, head, first_seq, first_at, bool(rest))


def _compress(path: Path) -> None:
    """gzip a rotated file: write aside, sync, rename, then remove the original."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(path.name + ".gz.tmp")
    try:
        with path.open("rb") as source, partial.open("wb") as raw:
            with gzip.GzipFile(
                filename=path.name, mode="wb", fileobj=raw, compresslevel=6, mtime=0
            ) as packed:
                shutil.copyfileobj(source, packed, 1 << 20)
            raw.flush()
            os.fsync(raw.fileno())
        modified = path.stat().st_mtime
        os.replace(partial, target)
        os.utime(target, (modified, modified))  # retention counts from the last record, not from now
        path.unlink()
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.warning("citygate: could not compress %s (kept uncompressed): %s", path.name, exc)
