"""A records-request bundle: the records asked for, and the proof that they are the log's own.

`citygate audit export` writes a folder for a person (or a site, or a grant) and a time range:

- `records.jsonl`: the matching records, byte for byte as the log holds them, hashes included;
- `chain.jsonl`: the chain's links over the range, every record's `{chain, seq, prev, hash}`
  and nothing else of it: the records of other people are not disclosed, yet the links show
  the range has no hole (each record's `prev` is the hash before it, its seq the next);
- `anchors.txt`: the chain heads the proxy published within the range (when given);
- `manifest.json`: what was asked, each chain's segment, and the SHA-256 of each file.

`citygate audit verify BUNDLE` checks it offline, needing only citygate: every record's content
still hashes to its hash and sits in the links at its seq; the links run unbroken from the
segment's first record to its last; the anchors match the links; the files match the manifest.
Every problem is reported, each record by its line.

What it proves: each record is unaltered and is the one the chain holds at its place; no record
of the range was left out of the links. What it cannot prove on its own: that the links are the
log's (whoever holds the original log can run `citygate audit verify` on it; published anchors
inside the range tie the links to heads kept outside the log), or that a record left out of
`records.jsonl` was not the person's (the filter that chose them is in the manifest, and the
same export from the original log gives the same file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from citygate.proxy.audit.anchors import Anchor, anchors_in
from citygate.proxy.audit.chain import Damaged, link, unseal
from citygate.proxy.audit.files import open_log
from citygate.proxy.audit.query import LogFilter, LogQuery

FORMAT = "citygate-export-1"
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
LINKS = "chain.jsonl"
ANCHORS = "anchors.txt"
_TS_PREFIX = b'{"@timestamp":"'


def is_bundle(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


@dataclass(slots=True)
class Segment:
    """One chain's links over the range."""

    first_seq: int = 0
    last_seq: int = 0
    first_prev: str = ""
    last_hash: str = ""
    links: int = 0
    records: int = 0


@dataclass(slots=True)
class Exported:
    records: int = 0
    scanned: int = 0
    segments: dict[str, Segment] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # damaged lines met while exporting


def export_bundle(
    chains: Iterable[list[Path]], query: LogQuery, folder: Path, anchors: Iterable[Anchor] = ()
) -> Exported:
    """Write the bundle for `query` (its time range bounds the links) from `chains` into `folder`."""
    folder.mkdir(parents=True, exist_ok=False)
    wanted = LogFilter(query)
    in_range = LogFilter(LogQuery(since=query.since, until=query.until, ordinary=True))
    exported = Exported()
    with (folder / RECORDS).open("wb") as records, (folder / LINKS).open("wb") as links:
        for files in chains:
            _export_chain(files, wanted, in_range, records, links, exported)
    kept = [a for a in anchors if a.chain in exported.segments and _covers(exported.segments[a.chain], a.seq)]
    (folder / ANCHORS).write_text(
        "".join(f"audit chain head chain={a.chain} seq={a.seq} sha256={a.hash}\n" for a in kept),
        encoding="ascii",
    )
    manifest = {
        "format": FORMAT,
        "query": {
            key: _shown(value)
            for key, value in dataclasses.asdict(query).items()
            if value not in (None, False)
        },
        "records": exported.records,
        "chains": {
            chain: dataclasses.asdict(segment) for chain, segment in sorted(exported.segments.items())
        },
        "files": {name: _sha256(folder / name) for name in (RECORDS, LINKS, ANCHORS)},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="ascii")
    return exported


def _export_chain(
    files: list[Path],
    wanted: LogFilter,
    in_range: LogFilter,
    records: IO[bytes],
    links: IO[bytes],
    exported: Exported,
) -> None:
    """One chain's links from its first record in the range to its last, every record between
    included whatever its time (records are sealed in the order they were handed over, so a time
    can be a little out of order at the range's edges), and the wanted records among them."""
    segment: Segment | None = None
    name = ""
    held: list[tuple[bytes, int, str, bytes | None]] = []  # past the range so far: kept if it goes on
    for path in files:
        with open_log(path) as handle:
            for number, line in enumerate(handle, 1):
                exported.scanned += 1
                inside = line.endswith(b"\n") and in_range.match(line) is not None
                if segment is None and not inside:
                    continue
                try:
                    prev, place, chain = link(line)
                except Damaged as exc:
                    exported.problems.append(f"{path}:{number}: {exc}")
                    continue
                if segment is None:
                    name = chain or str(path.parent)
                    segment = exported.segments[name] = Segment(place.seq, place.seq - 1, prev)
                record = line if wanted.match(line) is not None else None
                held.append((_link_line(name, place.seq, prev, place.hash), place.seq, place.hash, record))
                if inside:
                    _flush(held, segment, links, records, exported, f"{path}:{number}")


def _flush(
    held: list[tuple[bytes, int, str, bytes | None]],
    segment: Segment,
    links: IO[bytes],
    records: IO[bytes],
    exported: Exported,
    where: str,
) -> None:
    """Write the links (and wanted records) held: the range goes on past them."""
    for link_line, seq, digest, record in held:
        if seq != segment.last_seq + 1:
            exported.problems.append(
                f"{where}: seq {seq} follows seq {segment.last_seq}: the log itself has a gap "
                "(run citygate audit verify on it)"
            )
        segment.last_seq, segment.last_hash = seq, digest
        segment.links += 1
        links.write(link_line)
        if record is not None:
            records.write(record)
            segment.records += 1
            exported.records += 1
    held.clear()


def _covers(segment: Segment, seq: int) -> bool:
    return segment.first_seq <= seq <= segment.last_seq


def _link_line(chain: str, seq: int, prev: str, digest: str) -> bytes:
    return (
        json.dumps({"chain": chain, "hash": digest, "prev": prev, "seq": seq}, sort_keys=True).encode()
        + b"\n"
    )


def _shown(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- verifying


@dataclass(slots=True)
class BundleReport:
    records: int = 0
    links: int = 0
    chains: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_bundle(folder: Path) -> BundleReport:
    """Every problem of the bundle in `folder` (none: it verifies)."""
    report = BundleReport()
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.problems.append(f"{folder / MANIFEST}: not a readable manifest ({exc})")
        return report
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.problems.append(f"{folder / MANIFEST}: not a {FORMAT} manifest")
        return report
    links = _read_links(folder / LINKS, report)
    _check_segments(manifest, links, folder / LINKS, report)
    _check_records(folder / RECORDS, links, report)
    _check_anchors(folder / ANCHORS, links, report)
    for name, expected in sorted(dict(manifest.get("files", {})).items()):
        path = folder / name
        if not path.is_file():
            report.problems.append(f"{path}: missing")
        elif _sha256(path) != expected:
            report.problems.append(f"{path}: its SHA-256 is not the manifest's: the file was changed")
    if manifest.get("records") != report.records:
        report.problems.append(
            f"{folder / RECORDS}: {report.records} record(s), but the manifest says {manifest.get('records')}"
        )
    return report


def _read_links(path: Path, report: BundleReport) -> dict[str, dict[int, tuple[str, str]]]:
    """Each chain's links by seq: (prev, hash)."""
    links: dict[str, dict[int, tuple[str, str]]] = {}
    for number, entry in _json_lines(path, report):
        chain, seq, prev, digest = entry.get("chain"), entry.get("seq"), entry.get("prev"), entry.get("hash")
        if not (
            isinstance(chain, str)
            and isinstance(seq, int)
            and isinstance(prev, str)
            and isinstance(digest, str)
        ):
            report.problems.append(f"{path}:{number}: not a link (chain, seq, prev, hash)")
            continue
        by_seq = links.setdefault(chain, {})
        if seq - 1 in by_seq and by_seq[seq - 1][1] != prev:
            report.problems.append(
                f"{path}:{number}: chain {chain} seq {seq} does not follow seq {seq - 1}: the links were changed"
            )
        by_seq[seq] = (prev, digest)
        report.links += 1
    return links


def _check_segments(
    manifest: dict[str, object],
    links: dict[str, dict[int, tuple[str, str]]],
    path: Path,
    report: BundleReport,
) -> None:
    segments = manifest.get("chains")
    if not isinstance(segments, dict):
        report.problems.append(f"{path}: the manifest names no chain segments")
        return
    report.chains = sorted(segments)
    for chain, segment in sorted(segments.items()):
        by_seq = links.get(chain, {})
        first, last = segment.get("first_seq"), segment.get("last_seq")
        missing = [seq for seq in range(first, last + 1) if seq not in by_seq]
        if missing:
            report.problems.append(
                f"{path}: chain {chain} has no link for seq {missing[0]}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: links were removed"
            )
        elif by_seq[first][0] != segment.get("first_prev") or by_seq[last][1] != segment.get("last_hash"):
            report.problems.append(f"{path}: chain {chain}'s ends are not the manifest's")


def _check_records(path: Path, links: dict[str, dict[int, tuple[str, str]]], report: BundleReport) -> None:
    for number, line in _numbered_lines(path, report):
        try:
            record, place = unseal(line)
        except Damaged as exc:
            report.problems.append(f"{path}:{number}: {exc}")
            continue
        chain = record.get("citygate.chain.id")
        link_found = links.get(str(chain), {}).get(place.seq)
        if link_found is None:
            report.problems.append(f"{path}:{number}: seq {place.seq} of chain {chain} is not in the links")
        elif link_found != (record.get("citygate.chain.prev"), place.hash):
            report.problems.append(
                f"{path}:{number}: the record is not the one the chain holds at seq {place.seq}"
            )
        report.records += 1


def _check_anchors(path: Path, links: dict[str, dict[int, tuple[str, str]]], report: BundleReport) -> None:
    try:
        with path.open(encoding="ascii", errors="replace") as lines:
            anchors = anchors_in(lines)
    except OSError:
        return  # the manifest check names a missing file
    for anchor in anchors:
        found = links.get(str(anchor.chain), {}).get(anchor.seq)
        if found is not None and found[1] != anchor.hash:
            report.problems.append(
                f"{path}: chain {anchor.chain} seq {anchor.seq}: the links differ from the published head"
            )


def _json_lines(path: Path, report: BundleReport) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in _numbered_lines(path, report):
        try:
            entry = json.loads(line)
        except ValueError:
            report.problems.append(f"{path}:{number}: not JSON")
            continue
        if isinstance(entry, dict):
            yield number, entry


def _numbered_lines(path: Path, report: BundleReport) -> Iterator[tuple[int, bytes]]:
    """The file's lines as bytes, numbered from 1; none (and the problem noted) if it cannot be read."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        report.problems.append(f"{path}: {exc.strerror}")
        return
    with handle:
        yield from enumerate(handle, 1)
