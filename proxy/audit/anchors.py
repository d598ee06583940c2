"""Published chain heads ("anchors"), as people give them to `citygate audit verify`.

The proxy publishes each chain's head in its own log (`citygate: audit chain head
chain=vm1/worker-0 seq=18233 sha256=9c1f...`) and, with syslog on, as an `audit-chain-head`
JSON record. An anchor is given on the command line as `CHAIN:SEQ:SHA256` (or `SEQ:SHA256`
when only one chain is verified), or read from a file of such lines: the proxy's log as
journald or a log collector kept it, or the SIEM's copy. Pure: text in, anchors out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import NamedTuple

_GIVEN = re.compile(r"^(?:(?P<chain>[^\s:]+/[^\s:]+):)?(?P<seq>\d+):(?P<hash>[0-9a-fA-F]{64})$")
_LOGGED = re.compile(
    r"audit chain head (?:chain=(?P<chain>\S+) )?seq=(?P<seq>\d+) sha256=(?P<hash>[0-9a-f]{64})"
)


class Anchor(NamedTuple):
    chain: str | None  # `<host>/<worker>`; None: published before chains had names
    seq: int
    hash: str

    @property
    def host(self) -> str | None:
        return self.chain.partition("/")[0] if self.chain else None


def parse_anchor(text: str) -> Anchor | None:
    """`vm1/worker-0:18233:9c1f...` or `18233:9c1f...`; None if it is neither."""
    match = _GIVEN.match(text.strip())
    if match is None:
        return None
    return Anchor(match["chain"], int(match["seq"]), match["hash"].lower())


def anchors_in(lines: Iterable[str]) -> list[Anchor]:
    """Every anchor published in `lines`: the proxy's log lines, or the syslog copy's records."""
    found = []
    for line in lines:
        logged = _LOGGED.search(line)
        if logged is not None:
            found.append(Anchor(logged["chain"], int(logged["seq"]), logged["hash"]))
            continue
        if '"audit-chain-head"' in line and "{" in line:
            anchor = _from_record(line[line.index("{") :])
            if anchor is not None:
                found.append(anchor)
    return found


def _from_record(text: str) -> Anchor | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event.action") != "audit-chain-head":
        return None
    chain, seq, digest = (
        record.get("citygate.chain.id"),
        record.get("citygate.chain.seq"),
        record.get("citygate.chain.hash"),
    )
    if not isinstance(seq, int) or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None
    return Anchor(chain if isinstance(chain, str) else None, seq, digest)
