"""The access requests' chains of the audit log: `requests-<writer>-<host>/`, beside the workers'.

A process that decides requests (the CLI, the portal) writes its evidence into its own chain
(two processes cannot append to one chain), one record at a time, and goes on only once the
record is on disk: a decision without its evidence must not look done. Two CLI runs on one
host share the CLI's chain one after the other (the log's lock). `citygate audit verify`
checks these chains with the others.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from datetime import tzinfo
from pathlib import Path
from types import TracebackType

from citygate.proxy.audit.config import AuditSettings
from citygate.proxy.audit.files import REQUESTS_FOLDER
from citygate.proxy.audit.writer import AuditUnavailable, AuditWriter

WRITE_TIMEOUT_SECONDS = 15.0


class EvidenceLog:
    def __init__(self, settings: AuditSettings, timezone: tzinfo, *, writer: str) -> None:
        folder = Path(settings.directory) / f"{REQUESTS_FOLDER}-{writer}-{socket.gethostname()}"
        syslog = settings.syslog
        if syslog is not None and syslog.spool_directory is not None:
            # A spool is one process's (its lock), like a chain: this chain's beside the proxy's.
            syslog = dataclasses.replace(syslog, spool_directory=syslog.spool_directory / folder.name)
        # Only the file: a copy on stdout would mix with the command's own output.
        self.writer = AuditWriter(
            dataclasses.replace(settings, directory=folder, stdout=False, syslog=syslog), timezone
        )

    def __enter__(self) -> EvidenceLog:
        self.writer.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.writer.close()

    def record(self, record: dict[str, object]) -> None:
        """Write `record`; raises AuditUnavailable when it could not be written in time."""
        done = threading.Event()
        written: list[bool] = []

        def told(ok: bool) -> None:
            written.append(ok)
            done.set()

        self.writer.submit(record, told, urgent=True)
        if not done.wait(WRITE_TIMEOUT_SECONDS) or not written[0]:
            raise AuditUnavailable(
                f"the request evidence could not be written to {self.writer.directory}: "
                f"{self.writer.last_error or 'it took too long'}"
            )
