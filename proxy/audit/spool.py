"""The SIEM copy's spool: messages waiting on disk, oldest first, while the collector is away.

A folder of segment files (`000000000001.spool`, ...) holding frames exactly as they go on the
stream (`LEN SP MSG`, see syslog_transport), so a segment needs no format of its own. Frames are
appended to the newest segment and read from the oldest. Three places in the spool:
- the end, where the next frame is appended;
- the read place: the next frame to send;
- the delivered place: every frame before it reached the collector. Segments wholly before it
  are deleted, it is saved in `position` so that a restart sends on from there, and once every
  frame is delivered the folder is emptied.
The forwarder moves the read place back to the first frame the collector did not take when a
connection ends (`rewind`).

Bounded: the segment files never hold more than `max_bytes`; `append` takes the frames that fit
and the forwarder counts the rest as lost: the newest are lost, the oldest kept.

After a crash: a segment may end in a frame cut short. Every start appends to a new segment, so
an old segment is only read; a torn tail is cut off when the reader reaches it, and named in the
proxy log. `position` is written without fsync: after a power cut it may lag behind, and the
frames after it are sent again (their seq tells the collector).

Used from one thread (the forwarder's), and by one process per folder (`lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from citygate.proxy.audit.syslog_transport import frame_size, split_frames

log = logging.getLogger("citygate.audit")

POSITION_NAME = "position"
LOCK_NAME = "lock"
_SEGMENT = re.compile(r"^(\d{12})\.spool$")
_SEGMENT_MAX_BYTES = 16 << 20
_READ_BYTES = 256 << 10


class Place(NamedTuple):
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Spooled:
    """A frame read from the spool, and where it starts and ends there."""

    frame: bytes
    start: Place
    end: Place


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # Small enough that a delivered segment soon frees its room, large enough to keep the files few.
        self.segment_bytes = max(4096, min(_SEGMENT_MAX_BYTES, max_bytes // 16))
        _make_private(directory)
        self._lock_fd = _lock(directory / LOCK_NAME)
        self._sizes: dict[int, int] = {}  # segment -> bytes, oldest first
        self._writer: tuple[int, int] | None = None  # (segment, fd) being appended to
        self._reader: tuple[int, int] | None = None  # (segment, fd) being read
        try:
            for name in sorted(os.listdir(directory)):
                match = _SEGMENT.match(name)
                if match is not None:
                    self._sizes[int(match.group(1))] = os.stat(directory / name).st_size
            self.held_bytes = sum(self._sizes.values())  # what `max_bytes` bounds; read by the metrics
            self._next = max(self._sizes, default=0) + 1  # never appended to an old segment
            self._delivered = self._saved_position()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._read = self._delivered
        if self._sizes and not self.unread:  # all delivered, and a crash came before the files went
            self.delivered(self._delivered)

    @property
    def unread(self) -> bool:
        """Whether a frame waits to be sent."""
        at, offset = self._read
        return any(
            size > (offset if segment == at else 0) for segment, size in self._sizes.items() if segment >= at
        )

    # --- appending --------------------------------------------------------------------------

    def append(self, frames: Sequence[bytes]) -> tuple[int, str | None]:
        """Append the frames that fit, in order: how many, and why not the rest (None: all fit)."""
        taken = 0
        while taken < len(frames):
            room = self.max_bytes - self.held_bytes
            if len(frames[taken]) > room:
                full = f"the spool in {self.directory} is full ({self.held_bytes} bytes, audit.syslog.spool_max_bytes)"
                return taken, full
            try:
                segment, fd = self._writable()
                fill = self._sizes[segment]
                end = taken + 1
                used = len(frames[taken])
                while end < len(frames) and used + len(frames[end]) <= min(room, self.segment_bytes - fill):
                    used += len(frames[end])
                    end += 1
                _write_all(fd, b"".join(frames[taken:end]), fill)
            except OSError as exc:
                self._close_writer()  # the next append starts a new segment ...
                for empty in [segment for segment, size in self._sizes.items() if not size]:
                    self._remove(empty)  # ... and a disk that stays full leaves no trail of empty ones
                return taken, f"the spool in {self.directory} cannot be written ({exc})"
            self._sizes[segment] = fill + used
            self.held_bytes += used
            taken = end
        return taken, None

    def _writable(self) -> tuple[int, int]:
        if self._writer is not None and self._sizes[self._writer[0]] >= self.segment_bytes:
            self._close_writer()
        if self._writer is None:
            segment, self._next = self._next, self._next + 1
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._writer = (segment, os.open(self._path(segment), flags, 0o640))
            self._sizes[segment] = 0
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                os.close(self._writer[1])
            self._writer = None

    # --- reading ----------------------------------------------------------------------------

    def read(self, budget: int = _READ_BYTES) -> list[Spooled]:
        """The next frames to send, oldest first, about `budget` bytes of them."""
        found: list[Spooled] = []
        taken = 0
        while taken < budget and self.unread:
            segment, offset = self._read
            size = self._sizes.get(segment, 0)
            if offset >= size:
                self._read = Place(min(s for s in self._sizes if s > segment), 0)
                continue
            data = self._pread(segment, offset, min(size - offset, max(budget - taken, 4096)))
            try:
                frames, used = split_frames(data)
                whole = frame_size(data)
                if not frames and whole is not None and whole <= size - offset:
                    # One frame larger than what was read.
                    frames, used = split_frames(self._pread(segment, offset, whole))
            except ValueError:
                frames = []
            if not frames:
                self._cut_torn_tail(segment, offset)
                continue
            for frame in frames:
                found.append(Spooled(frame, Place(segment, offset), Place(segment, offset + len(frame))))
                offset += len(frame)
            taken += used
            self._read = Place(segment, offset)
        return found

    def _pread(self, segment: int, offset: int, size: int) -> bytes:
        if self._reader is None or self._reader[0] != segment:
            self._close_reader()
            self._reader = (segment, os.open(self._path(segment), os.O_RDONLY | os.O_CLOEXEC))
        return os.pread(self._reader[1], size, offset)

    def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(OSError):
                os.close(self._reader[1])
            self._reader = None

    def _cut_torn_tail(self, segment: int, offset: int) -> None:
        """Bytes that are no whole frame up to the segment's end: a write a crash cut short (or
        damage). Cut off, so that the reader and the delivered place can pass them."""
        size = self._sizes[segment]
        log.warning(
            "citygate: %s: the last %d bytes (from byte %d) are no whole syslog message (a write cut "
            "short by a crash); removed from the SIEM spool",
            self._path(segment),
            size - offset,
            offset,
        )
        os.truncate(self._path(segment), offset)
        self._sizes[segment] = offset
        self.held_bytes -= size - offset

    # --- delivery ---------------------------------------------------------------------------

    def rewind(self, place: Place) -> None:
        """Send again from `place`: the frames from there on did not reach the collector."""
        self._read = place

    def delivered(self, place: Place) -> None:
        """Every frame before `place` reached the collector."""
        self._delivered = place
        for segment in [s for s in self._sizes if s < place.segment]:
            self._remove(segment)
        if self._sizes.get(place.segment, 0) == place.offset and not any(
            size for segment, size in self._sizes.items() if segment > place.segment
        ):
            # Everything delivered: the folder is emptied, and the gauge back at zero.
            for segment in list(self._sizes):
                self._remove(segment)
            self._read = self._delivered = Place(self._next, 0)
            with contextlib.suppress(OSError):
                os.unlink(self.directory / POSITION_NAME)
            return
        try:
            self._save_position()
        except OSError as exc:  # e.g. the disk full: a restart would send some frames twice, no more
            log.warning("citygate: the SIEM spool's position cannot be saved in %s: %s", self.directory, exc)

    def _remove(self, segment: int) -> None:
        if self._writer is not None and self._writer[0] == segment:
            self._close_writer()
        if self._reader is not None and self._reader[0] == segment:
            self._close_reader()
        with contextlib.suppress(OSError):  # left behind, it is only sent again after a restart
            os.unlink(self._path(segment))
        self.held_bytes -= self._sizes.pop(segment)

    def _save_position(self) -> None:
        temporary = self.directory / (POSITION_NAME + ".tmp")
        temporary.write_text(f"{self._delivered.segment} {self._delivered.offset}\n", encoding="ascii")
        os.replace(temporary, self.directory / POSITION_NAME)

    def _saved_position(self) -> Place:
        """Where the last run's delivery ended; before the first segment if it is not known."""
        first = Place(min(self._sizes, default=self._next), 0)
        try:
            segment, offset = map(int, (self.directory / POSITION_NAME).read_text(encoding="ascii").split())
        except (FileNotFoundError, ValueError):
            return first
        if offset > self._sizes.get(segment, -1):
            return first  # not one of these segments: everything left is sent
        for older in [s for s in self._sizes if s < segment]:  # delivered, not yet deleted
            self._remove(older)
        return Place(segment, offset)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.spool"

    def close(self) -> None:
        """Close the files; what is left is sent after the next start."""
        self._close_writer()
        self._close_reader()
        if self._sizes:
            with contextlib.suppress(OSError):
                self._save_position()
        os.close(self._lock_fd)  # releases the lock


def _write_all(fd: int, data: bytes, size_before: int) -> None:
    """Append `data`, or leave the file as it was (no torn frame for the reader to meet)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size_before)
        raise


def _make_private(directory: Path) -> None:
    """Create `directory` and every missing parent with mode 0750: a parent may be the audit
    directory itself, which the writer would have made private, and the frames are records."""
    missing = []
    path = directory
    while not path.exists():
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o750)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"another process is using the SIEM spool in {path.parent}") from None
    return fd
