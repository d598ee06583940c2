"""Syslog over TCP (RFC 6587) and TLS (RFC 5425): the messages, their framing, and a connection
that knows how much of what it sent the collector has taken.

A message is RFC 5424 (`sinks.rfc5424`) whose MSG is the record's sealed JSON line and whose
structured data repeats the record's place in the chain, so a SIEM can check completeness and
drop a repeat without parsing the JSON:

    <190>1 2026-12-08T10:00:00.000000Z vm1 citygate 4242 audit [citygate@32473 seq="41" sha256="9c1f..." chain="vm1/worker-0"] {"@timestamp":...}

SD-ID `citygate@32473`: 32473 is the private enterprise number RFC 5612 sets aside for
documentation, which no organisation holds, so the ID can never collide with a registered one.
A published chain head (`audit-chain-head`) is no record of the chain and has no structured data
("-"). On the stream every message is octet-counted, `LEN SP MSG` (RFC 6587 section 3.4.1,
RFC 5425 section 4.3): a record never needs a newline or an escape to be framed.

`Connection` counts the bytes it gives the kernel (TLS records included) and reads how many the
collector's TCP acknowledged (Linux's `tcpi_bytes_acked`): a message whose last byte was
acknowledged reached the collector; the forwarder sends again only what was not (`forwarder.py`).
TLS runs over memory BIOs for that count: the byte at which each message's TLS record ends is
known exactly.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import struct
from collections.abc import Sequence

from citygate.proxy.audit.chain import Damaged, link
from citygate.proxy.audit.config import SyslogSettings, syslog_target

SD_ID = "citygate@32473"
# A frame's length field: a message up to 999,999,999 bytes; no record comes near it.
_LENGTH_DIGITS = 9
_RECV_BYTES = 65536
# `struct tcp_info` (linux/tcp.h): tcpi_bytes_acked, a u64 at byte 120 (Linux 4.1 and later).
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_OFFSET = 120
_TCP_INFO_LENGTH = 256
# Data the collector has not acknowledged for this long ends the connection (a collector that
# vanished without closing it: power cut, network), instead of the kernel's ~15 minutes.
_USER_TIMEOUT_MS = 30_000
_SD_ESCAPE = re.compile(r'(["\\\]])')


def chain_place(line: bytes) -> tuple[int, str, str | None] | None:
    """A sealed record's seq, hash and chain id; None for a line that is not one (a published head)."""
    try:
        _, head, chain = link(line.rstrip(b"\n") + b"\n")
    except Damaged:
        return None
    return head.seq, head.hash, chain


def structured_data(place: tuple[int, str, str | None] | None) -> str:
    """The SD-ELEMENT naming a record's place in the chain (RFC 5424 section 6.3), or "-"."""
    if place is None:
        return "-"
    seq, digest, chain = place
    if chain is None:  # a log from before chains had ids
        return f'[{SD_ID} seq="{seq}" sha256="{digest}"]'
    # PARAM-VALUE escapes '"', '\' and ']' (section 6.3.3): a chain id holds the machine's name,
    # which nothing checks.
    escaped = _SD_ESCAPE.sub(r"\\\1", chain)
    return f'[{SD_ID} seq="{seq}" sha256="{digest}" chain="{escaped}"]'


def octet_counted(message: bytes) -> bytes:
    """`LEN SP MSG`: one frame of the stream (RFC 6587 section 3.4.1)."""
    return b"%d %s" % (len(message), message)


def split_frames(data: bytes) -> tuple[list[bytes], int]:
    """The whole frames at the start of `data` (each with its length field) and the bytes they
    take; a frame cut off at the end is left for more data. ValueError where no frame starts."""
    frames: list[bytes] = []
    at = 0
    while at < len(data):
        space = data.find(b" ", at, at + _LENGTH_DIGITS + 1)
        if space < 0:
            if len(data) - at > _LENGTH_DIGITS:
                raise ValueError(f"no frame length at byte {at}")
            break
        digits = data[at:space]
        if not digits.isdigit() or digits.startswith(b"0"):
            raise ValueError(f"no frame length at byte {at}")
        end = space + 1 + int(digits)
        if end > len(data):
            break
        frames.append(data[at:end])
        at = end
    return frames, at


def frame_size(data: bytes) -> int | None:
    """The size of the frame starting `data` (length field included), if its length field is whole."""
    space = data.find(b" ", 0, _LENGTH_DIGITS + 1)
    if space < 1 or not data[:space].isdigit():
        return None
    return space + 1 + int(data[:space])


def tls_context(settings: SyslogSettings) -> ssl.SSLContext:
    """Trust only `ca_file` for the collector; show `cert_file` when one is given. Read at each
    connection, so a renewed certificate is used without a restart."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # 1.0 and 1.1 are broken (RFC 8996)
    if settings.cert_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


class Connection:
    """One stream to the collector, plain or TLS, that counts what it sent and what was taken."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._tls: ssl.SSLObject | None = None  # set by the handshake of a tls:// collector
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._written = 0  # bytes of the stream so far, the TLS handshake's included

    @classmethod
    def open(cls, settings: SyslogSettings, timeout: float) -> Connection:
        """Connect (and shake hands) within `timeout` seconds, or raise OSError (ssl.SSLError
        for a certificate refused: then nothing was sent but the handshake)."""
        target = syslog_target(settings.address)
        assert target is not None, "parsed settings hold a valid address"
        kind, address = target
        assert isinstance(address, tuple), "a tcp:// or tls:// address"
        host, port = address
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            with contextlib.suppress(AttributeError, OSError):  # Linux only; the default elsewhere
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _USER_TIMEOUT_MS)
            connection = cls(sock)
            connection.acknowledged()  # a kernel that cannot say is refused now, not mid-stream
            if kind == "tls":
                connection._handshake(tls_context(settings), settings.server_name or host)
        except BaseException:
            sock.close()
            raise
        return connection

    def _handshake(self, context: ssl.SSLContext, server_name: str) -> None:
        self._tls = tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_name)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self._sock.recv(_RECV_BYTES)
                if not data:
                    raise ConnectionError(
                        "the collector closed the connection in the TLS handshake"
                    ) from None
                self._incoming.write(data)
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()  # the alert that tells the collector why (e.g. unknown CA)
                raise
        self._flush()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._sock.sendall(data)
            self._written += len(data)

    def encode(self, frames: Sequence[bytes]) -> tuple[bytes, list[int]]:
        """The bytes that carry `frames` on this stream, and the stream offset at which each ends:
        a frame is delivered once `acknowledged()` reaches its end."""
        chunks, ends = [], []
        for frame in frames:
            if self._tls is not None:
                self._tls.write(frame)
                frame = self._outgoing.read()
            chunks.append(frame)
            self._written += len(frame)
            ends.append(self._written)
        return b"".join(chunks), ends

    def transmit(self, data: bytes) -> None:
        """Give `data` (from `encode`) to the kernel; OSError (a timeout too) ends the connection."""
        self._sock.sendall(data)

    def acknowledged(self) -> int:
        """How many bytes of the stream the collector's TCP has acknowledged."""
        info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
        if len(info) < _BYTES_ACKED_OFFSET + _BYTES_ACKED.size:
            raise OSError("this kernel does not report acknowledged bytes (tcpi_bytes_acked, Linux 4.1)")
        # The count includes the SYN, which is no byte of the stream.
        return max(0, _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_OFFSET)[0] - 1)

    def closed_by_peer(self) -> bool:
        """Whether the collector closed or reset the connection, seen without waiting. Checked
        before every send: a send after the collector's close is accepted by the kernel and then
        lost, so a stopped collector must be noticed before, not after."""
        # poll(), not MSG_DONTWAIT: a socket with a timeout waits for data before any recv.
        while self._readable.poll(0):
            try:
                data = self._sock.recv(_RECV_BYTES)
            except OSError:
                return True
            if not data or (self._tls is not None and self._tls_closed(data)):
                return True
        return False

    def _tls_closed(self, data: bytes) -> bool:
        """Take what a TLS collector sent (session tickets, its close_notify or an alert); a
        collector has no syslog data to send, so any is ignored."""
        assert self._tls is not None
        self._incoming.write(data)
        try:
            while self._tls.read(_RECV_BYTES):
                pass
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError:  # close_notify (SSLZeroReturnError) or a fatal alert
            return True
        return True  # read() answers b"" once the collector's close_notify was read

    def close(self) -> None:
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError, OSError):
                self._tls.unwrap()  # close_notify; the collector's answer is not awaited
            with contextlib.suppress(OSError):
                self._flush()
        self._sock.close()
