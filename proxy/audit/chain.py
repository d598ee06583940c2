"""Tamper evidence for the access log: a hash chain through every record, across every file.

Each record is one line of canonical JSON (sorted keys, no spaces, ASCII) carrying
`citygate.chain.seq` (1, 2, 3, ... across all files) and `citygate.chain.prev` (the previous
record's hash); the line ends with `"citygate.chain.hash"`, the SHA-256 of the line's bytes
without that field. The chain runs through rotation: every file begins with an
`audit-file-start` record that names the previous file, how many records it held and whether
it ended with an incomplete (torn) record, and chains to that file's last record.

Records the writer had to drop (the disk full for long; see `audit_writer`) are not hidden: their
sequence numbers are skipped, and an `audit-gap` record says which and why; a gap is reported as
a failure, and the records after it are still checked. Files removed by retention are named in an
`audit-retention` record: a folder's chain that starts after a file is accepted only when such a
record names that file, so a deleted active file or folder is found even with no file left before it.

What a chain that verifies proves: no record was edited (by even one byte), deleted, inserted
or moved, between the first and the last record checked, and no file in the middle was
truncated or swapped; a torn tail (the writer stopped mid-record) is found and named.

What it does not prove: that the log is the one citygate wrote. Hashes are not signatures:
someone who can rewrite the files can recompute the whole chain from the point of their edit,
or cut records off the end of the newest file. Anchoring closes that: the writer periodically
publishes the chain head (`seq` and hash; see `audit_writer`) outside the log, to syslog and
to the proxy's own log, which the same person cannot also rewrite. `verify(..., anchors=...)`
then checks the log against those published heads: a rewritten chain no longer has the
anchored hash at the anchored seq, and a cut-off log no longer reaches it.

Which chain a record belongs to: `citygate.chain.id`, `<host>/<worker>` (`vm1/worker-0`,
`vm1/main`, `vm1/requests-portal-8088`), in every record, so that an anchor names the chain it
was published for and is checked against that chain only. Logs gathered from several workers
and hosts verify together; a worker's restart continues its chain under the same id.

Pure: `seal` and `ChainVerifier` see bytes, never files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

GENESIS = "0" * 64
SEQ = "citygate.chain.seq"
PREV = "citygate.chain.prev"
HASH = "citygate.chain.hash"
CHAIN = "citygate.chain.id"
FILE_START = "audit-file-start"
GAP = "audit-gap"
RETENTION = "audit-retention"

_HASH_KEY = b',"citygate.chain.hash":"'
_SUFFIX_LENGTH = len(_HASH_KEY) + 64 + 2  # the key, the hash, '"}'
_HEX64 = re.compile(rb"[0-9a-f]{64}")
# Fast reads of the chain fields from a line whose hash matched (so it is what the writer wrote):
# canonical JSON escapes every quote inside a value, so these can only match the keys themselves.
_PREV_FIELD = re.compile(rb'"citygate\.chain\.prev":"([0-9a-f]{64})"')
_SEQ_FIELD = re.compile(rb'"citygate\.chain\.seq":(\d+)[,}]')
_CHAIN_FIELD = re.compile(rb'"citygate\.chain\.id":"([^"\\]*)"')
# The log's own bookkeeping records (gap, retention) are read whole; the same escaping argument.
_BOOKKEEPING = re.compile(rb'"event\.action":"audit-(?:gap|retention)"')


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its sequence number and hash (seq 0: nothing yet)."""

    seq: int = 0
    hash: str = GENESIS


class Damaged(ValueError):
    """A line that is not an intact record."""


def canonical(record: Mapping[str, object]) -> bytes:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def seal(record: Mapping[str, object], head: ChainHead, chain: str | None = None) -> tuple[bytes, ChainHead]:
    """The line for `record` following `head` (newline included) in the chain called `chain`, and
    the new head."""
    fields = (
        {SEQ: head.seq + 1, PREV: head.hash}
        if chain is None
        else {SEQ: head.seq + 1, PREV: head.hash, CHAIN: chain}
    )
    body = canonical({**record, **fields})
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"' + HASH.encode() + b'":"' + digest.encode() + b'"}\n', ChainHead(
        head.seq + 1, digest
    )


def _checked_body(line: bytes) -> tuple[bytes, str]:
    """The line's body (without the hash field) and its hash, if the hash matches; else Damaged."""
    end = len(line) - 1 if line.endswith(b"\n") else len(line)
    start = end - _SUFFIX_LENGTH
    digest = line[start + len(_HASH_KEY) : end - 2]
    if start < 1 or line[start : start + len(_HASH_KEY)] != _HASH_KEY or line[end - 2 : end] != b'"}':
        raise Damaged("not a sealed citygate record (no chain hash at the end of the line)")
    if _HEX64.fullmatch(digest) is None:
        raise Damaged("not a sealed citygate record (the chain hash is not 64 hex digits)")
    body = line[:start] + b"}"
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise Damaged("the record was edited: its content no longer matches its hash")
    return body, digest.decode()


def unseal(line: bytes) -> tuple[dict[str, object], ChainHead]:
    """The record in `line` (chain fields included) and its place in the chain; Damaged if not intact."""
    body, digest = _checked_body(line)
    try:
        record = json.loads(body)
    except ValueError as exc:  # only a record forged with a matching hash gets here
        raise Damaged(f"not valid JSON: {exc}") from None
    seq = record.get(SEQ) if isinstance(record, dict) else None
    prev = record.get(PREV) if isinstance(record, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(prev, str):
        raise Damaged("the record has no valid chain fields")
    return record, ChainHead(seq, digest)


def link(line: bytes) -> tuple[str, ChainHead, str | None]:
    """What `line` chains to, its own place and its chain's id (None: a log from before chains
    had ids): `unseal` without parsing the JSON (verify's pace)."""
    body, digest = _checked_body(line)
    prev, seq = _PREV_FIELD.search(body), _SEQ_FIELD.search(body)
    if prev is None or seq is None or int(seq.group(1)) < 1:
        raise Damaged("the record has no valid chain fields")
    chain = _CHAIN_FIELD.search(body)
    return (
        prev.group(1).decode(),
        ChainHead(int(seq.group(1)), digest),
        chain.group(1).decode() if chain else None,
    )


def chain_of(line: bytes) -> str | None:
    """The chain id a record's line names, read without checking it (sorting a copy's lines)."""
    found = _CHAIN_FIELD.search(line)
    return found.group(1).decode() if found else None


def base_name(path: str) -> str:
    """A log file's name as the next file's header records it (before compression)."""
    return path.rsplit("/", 1)[-1].removesuffix(".gz")


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


@dataclass(slots=True)
class FileSummary:
    path: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    torn_line: int | None = None  # an incomplete last line (no newline)


@dataclass(slots=True)
class Report:
    files: list[FileSummary] = field(default_factory=list)
    records: int = 0  # records that verified
    start: ChainHead | None = None  # what the first record chains to
    head: ChainHead | None = None  # the last record that verified
    failure: Finding | None = None
    # Records the writer dropped, each range named by its audit-gap record: failures too, but
    # the chain is checked on past them.
    gaps: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The ids its records carry (`<host>/<worker>`; none in logs from before chains had ids).
    chains: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.gaps


class ChainVerifier:
    """Feed files in order, line by line; `finish()` says whether the chain holds and where not.

    Constant memory: only the running head and the current file's counts are kept. `anchors`
    maps a chain's id to the hashes published for its sequence numbers (see the module
    docstring); under None, those published without an id, for a chain whichever it is. `whole`:
    the files are all a folder holds of the chain, so it must start at its first record, or after
    files that a retention record says were removed.
    """

    def __init__(
        self,
        anchors: Mapping[str | None, Mapping[int, str]] | None = None,
        *,
        whole: bool = False,
        copy: bool = False,
    ) -> None:
        self.anchors = {chain: dict(by_seq) for chain, by_seq in (anchors or {}).items()}
        self._unnamed = self.anchors.get(None, {})
        # A copy of one chain's records (the SIEM's), taken from lines among other chains': it
        # may start anywhere, and its line numbers are the copy's.
        self.copy = copy
        self._fed = 0
        self.whole = whole
        self.report = Report()
        self._file: FileSummary | None = None
        self._line = 0
        self._last_good_line = 0
        # A whole chain starting after a file: (its first seq, the file named), until a retention
        # record names that file; the names retention records gave.
        self._late_start: tuple[int, str] | None = None
        self._removed: set[str] = set()

    @property
    def failed(self) -> bool:
        return self.report.failure is not None

    def begin_file(self, path: str) -> None:
        if self._file is not None:
            self._end_file()
        self._file = FileSummary(path)
        self.report.files.append(self._file)
        self._line = 0
        self._fed = 0
        self._last_good_line = 0

    def _end_file(self) -> None:
        current = self._file
        if current is not None and self._fed == 0 and not self.failed:
            # A file the writer created an instant before it stopped, or one emptied by hand.
            self.report.notes.append(f"{current.path}: empty")
        self._file = None

    def feed(self, line: bytes, number: int | None = None) -> bool:
        """Check the next line of the current file (at line `number` of a copy); False once the
        chain has failed."""
        current = self._file
        assert current is not None, "begin_file() first"
        if self.failed:
            return False
        self._fed += 1
        self._line = self._line + 1 if number is None else number
        first = self._fed == 1
        if current.torn_line is not None:
            return self._fail(
                current.path, current.torn_line, "an incomplete record in the middle of the file"
            )
        if not line.endswith(b"\n"):
            # Only the last line of a file can lack its newline: judged when the chain goes on.
            current.torn_line = self._line
            return True
        try:
            record, prev, place, chain = self._read(line, first)
        except Damaged as exc:
            return self._fail(current.path, self._line, str(exc))
        if first and self.copy:
            self.report.notes.append(f"{current.path}: the copy starts at seq {place.seq}")
        elif first and not self._check_file_start(record or {}, place):
            return False
        if not first and not self._check_follows(place, prev, record):
            return False
        if record is not None:
            self._note_removed(record)
        anchored = self._anchored(chain, place.seq)
        if anchored is not None and anchored != place.hash:
            return self._fail(
                current.path,
                self._line,
                f"seq {place.seq} has hash {place.hash[:16]}..., but the anchor published {anchored[:16]}...: "
                "the chain was rewritten from here or earlier",
            )
        report = self.report
        if report.start is None:
            report.start = ChainHead(place.seq - 1, prev)
        report.head = place
        report.records += 1
        current.records += 1
        current.last_seq = place.seq
        if current.first_seq is None:
            current.first_seq = place.seq
        self._last_good_line = self._line
        return True

    def _read(self, line: bytes, first: bool) -> tuple[dict[str, object] | None, str, ChainHead, str | None]:
        """The line's record (when it is read whole), what it chains to, its place and chain id."""
        if first or _BOOKKEEPING.search(line):  # read whole
            record, place = unseal(line)
            chain = record.get(CHAIN)
            return record, str(record[PREV]), place, chain if isinstance(chain, str) else None
        prev, place, chain = link(line)
        return None, prev, place, chain

    def _anchored(self, chain: str | None, seq: int) -> str | None:
        """The hash published for `seq` of this chain, if one was."""
        if chain is not None and chain not in self.report.chains:
            self.report.chains.add(chain)
        anchored = self._unnamed.get(seq)
        if anchored is None and chain is not None:
            anchored = self.anchors.get(chain, {}).get(seq)
        return anchored

    def finish(self) -> Report:
        if self._file is not None:
            self._end_file()
        report = self.report
        if self._late_start is not None and not self.failed and report.files:
            first_seq, named = self._late_start
            if named in self._removed:
                report.notes.append(
                    f"{report.files[0].path}: the chain starts at seq {first_seq}, after {named}, "
                    "which a retention record says was removed"
                )
            else:
                self._fail(
                    report.files[0].path,
                    1,
                    f"seq 1-{first_seq - 1} are missing: the chain starts at seq {first_seq}, after "
                    f"{named}, which is not here and which no retention record says was removed "
                    "(the file or its folder was deleted, or the file was cut)",
                )
        if not self.failed and report.files:
            last = report.files[-1]
            if last.torn_line is not None:
                self._fail(
                    last.path,
                    last.torn_line,
                    "torn tail: the last record is incomplete (the writer was stopped mid-write, "
                    f"or the file was cut); the {last.records} record(s) before it in this file verify",
                )
        if not self.failed:
            reached = report.head.seq if report.head else 0
            anchored = [
                *self._unnamed,
                *(seq for chain in report.chains for seq in self.anchors.get(chain, {})),
            ]
            missing = sorted(seq for seq in anchored if seq > reached)
            if missing and report.files:
                last = report.files[-1]
                self._fail(
                    last.path,
                    self._last_good_line + 1,
                    f"the log ends at seq {reached}, but an anchor was published for seq {missing[0]}: "
                    "records were removed from the end",
                )
        return report

    # --- checks ---------------------------------------------------------------------------

    def _check_file_start(self, record: Mapping[str, object], place: ChainHead) -> bool:
        current = self._file
        assert current is not None
        if record.get("event.action") != FILE_START:
            before = (self.report.head.seq if self.report.head else 0) + 1
            missing = f"seq {before}-{place.seq - 1} are missing, " if place.seq > before else ""
            return self._fail(
                current.path,
                1,
                f"the file does not begin with its audit-file-start record: {missing}records were "
                "removed from its beginning (the file was cut or emptied), or it is not a citygate "
                "audit log",
            )
        previous = self.report.files[-2] if len(self.report.files) > 1 else None
        prev_hash = str(record["citygate.chain.prev"])
        if previous is None:
            if place.seq == 1 and prev_hash == GENESIS:
                self.report.notes.append(f"{current.path}: the chain starts at its very first record")
            elif self.whole:
                # Judged at the end: a retention record may say the file before was removed.
                self._late_start = (place.seq, str(record.get("citygate.audit.previous_file")))
            else:
                named = record.get("citygate.audit.previous_file") or "a file not given"
                self.report.notes.append(
                    f"{current.path}: the chain starts at seq {place.seq}, after {named} (not checked)"
                )
            return True
        head = self.report.head or ChainHead()
        said_file = record.get("citygate.audit.previous_file")
        said_records = record.get("citygate.audit.previous_records")
        said_torn = bool(record.get("citygate.audit.previous_torn"))
        if said_file != base_name(previous.path):
            missing = f" (seq {head.seq + 1}-{place.seq - 1})" if place.seq > head.seq + 1 else ""
            return self._fail(
                current.path,
                1,
                f"this file follows {said_file}, not {base_name(previous.path)}: a file is missing "
                f"between them{missing}, or the files are out of order (give every file, oldest first)",
            )
        if previous.torn_line is not None and not said_torn:
            return self._fail(
                previous.path,
                previous.torn_line,
                "an incomplete record, and the next file does not record that the writer left it",
            )
        if said_records != previous.records or prev_hash != head.hash or place.seq != head.seq + 1:
            missing = f"seq {head.seq + 1}-{place.seq - 1} are missing: " if place.seq > head.seq + 1 else ""
            return self._fail(
                previous.path,
                previous.records + 1,
                f"{missing}records are missing from the end of this file: it ends after "
                f"{previous.records} record(s) at seq {head.seq}, but {base_name(current.path)} says "
                f"it held {said_records} and continues at seq {place.seq}",
            )
        if said_torn and previous.torn_line is not None:
            self.report.notes.append(
                f"{previous.path}:{previous.torn_line}: an incomplete record the writer left when it "
                f"stopped; {base_name(current.path)} records it and the chain goes on"
            )
        return True

    def _check_follows(self, place: ChainHead, prev: str, record: Mapping[str, object] | None) -> bool:
        current = self._file
        assert current is not None
        head = self.report.head or ChainHead()
        expected = head.seq + 1
        if place.seq > expected and record is not None and record.get("event.action") == GAP:
            return self._gap(place, prev, record)
        if place.seq > expected:
            return self._fail(
                current.path,
                self._line,
                f"seq {place.seq} where {expected} was expected: seq {expected}-{place.seq - 1} "
                f"({place.seq - expected} record(s)) before this line were deleted or moved",
            )
        if place.seq < expected:
            return self._fail(
                current.path,
                self._line,
                f"seq {place.seq} after seq {head.seq}: records out of order, or a record was inserted",
            )
        if prev != head.hash:
            return self._fail(
                current.path,
                self._line,
                f"this record does not chain to the one before it (line {self._last_good_line}): "
                "one of the two was rewritten",
            )
        return True

    def _note_removed(self, record: Mapping[str, object]) -> None:
        removed = record.get("citygate.audit.removed_files")
        if record.get("event.action") == RETENTION and isinstance(removed, list):
            self._removed.update(str(name) for name in removed)

    def _gap(self, place: ChainHead, prev: str, record: Mapping[str, object]) -> bool:
        """An audit-gap record: the writer dropped the records it names, and says why."""
        current = self._file
        assert current is not None
        head = self.report.head or ChainHead()
        first, last = record.get("citygate.audit.missing_first"), record.get("citygate.audit.missing_last")
        if first != head.seq + 1 or last != place.seq - 1 or prev != head.hash:
            return self._fail(
                current.path,
                self._line,
                f"an audit-gap record for seq {first}-{last} that does not follow seq {head.seq}: "
                "records around it were deleted, moved or rewritten",
            )
        reason = record.get("citygate.audit.reason") or "no reason given"
        self.report.gaps.append(
            Finding(
                current.path,
                self._line,
                f"seq {first}-{last} are missing: {place.seq - head.seq - 1} record(s) the writer "
                f"dropped ({reason})",
            )
        )
        return True

    def _fail(self, path: str, line: int, problem: str) -> bool:
        if self.report.failure is None:
            self.report.failure = Finding(path, line, problem)
        return False
