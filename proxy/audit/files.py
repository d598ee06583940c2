"""Where the access log's files are and in which order they were written.

The writer appends to `citygate-audit.jsonl`; rotation renames it to
`citygate-audit-YYYYMMDD-SEQ.jsonl` (the city-time day the file was started and the sequence
number of its first record, zero-padded so that name order is chain order) and may then
compress it to `.jsonl.gz`. Readers (`citygate logs`, `citygate audit verify`) list a folder
in chain order, the active file last, and open compressed files transparently.

Under `citygate run --workers N` every worker process writes its own chain in its own
subfolder, `worker-0` ... `worker-N-1` (two processes cannot append to one chain without a
lock on every record). A folder therefore holds one or more chains: its own files, and one per
worker subfolder.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import BinaryIO

ACTIVE_NAME = "citygate-audit.jsonl"
LOCK_NAME = ".citygate-audit.lock"
_ROTATED = re.compile(r"^citygate-audit-(\d{8})-(\d{12})\.jsonl(\.gz)?$")
_WORKER = re.compile(r"^worker-(\d+)$")
# The access requests' chains (proxy/requests/log.py), requests-<writer>-<host>: decisions on
# requests, as evidence.
REQUESTS_FOLDER = "requests"
_REQUESTS = re.compile(r"^requests-[A-Za-z0-9._-]+$")


def chain_id(directory: Path, host: str) -> str:
    """The name of the chain written in `directory` on `host`: `<host>/<worker>`, the worker
    being its folder's name (`worker-0`, `requests-portal-8088-vm1`) or `main` for a folder's own."""
    name = directory.name
    worker = name if _WORKER.match(name) or _REQUESTS.match(name) else "main"
    return f"{host}/{worker}"


def worker_directory(base: Path, worker: int | None) -> Path:
    """Where one process writes: the folder itself, or its worker's subfolder."""
    return base if worker is None else base / f"worker-{worker}"


def rotated_name(day: date, first_seq: int) -> str:
    return f"citygate-audit-{day:%Y%m%d}-{first_seq:012d}.jsonl"


def is_rotated(name: str) -> bool:
    return _ROTATED.match(name) is not None


def log_files(directory: Path) -> list[Path]:
    """Every log file in `directory`, oldest first, the active file last.

    While a rotated file is being compressed both forms exist: the uncompressed one is listed.
    """
    rotated: dict[int, Path] = {}
    for path in directory.iterdir():
        match = _ROTATED.match(path.name)
        if match is None:
            continue
        seq = int(match.group(2))
        if seq not in rotated or path.suffix != ".gz":
            rotated[seq] = path
    files = [rotated[seq] for seq in sorted(rotated)]
    active = directory / ACTIVE_NAME
    if active.exists():
        files.append(active)
    return files


def chains(directory: Path) -> list[list[Path]]:
    """Each chain in `directory`: its own files, each worker subfolder's in worker order, then
    the access requests' (`requests-<writer>-<host>/`)."""
    found = [log_files(directory)]
    workers = sorted(
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if path.is_dir() and (match := _WORKER.match(path.name))
    )
    found.extend(log_files(path) for _, path in workers)
    found.extend(
        log_files(path)
        for path in sorted(directory.iterdir())
        if path.is_dir() and _REQUESTS.match(path.name)
    )
    return [files for files in found if files]


def expand_chains(paths: Iterable[Path]) -> list[list[Path]]:
    """The chains named: files given one after another form one chain, each folder adds its own.

    A chain's files always share a folder (each worker writes its own), so a file from another
    folder starts another chain: `worker-*/citygate-audit.jsonl` verifies worker by worker.
    """
    result: list[list[Path]] = []
    given: list[Path] = []
    for path in paths:
        if given and (path.is_dir() or path.parent != given[-1].parent):
            result.append(given)
            given = []
        if path.is_dir():
            result.extend(chains(path))
        else:
            given.append(path)
    if given:
        result.append(given)
    return result


def expand(paths: Iterable[Path]) -> list[Path]:
    """Every file of every chain named."""
    return [path for files in expand_chains(paths) for path in files]


def open_log(path: Path) -> BinaryIO:
    """A log file for reading lines as bytes, decompressed if it is gzip (by content, not name)."""
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw
