"""Which event loop `citygate run` runs mitmproxy on: uvloop or the standard library's.

`--event-loop` chooses; without it, $CITYGATE_EVENT_LOOP, so that a container, a systemd unit or
a test run can switch every proxy it starts (the workers too: they inherit the environment and
the supervisor's arguments) without changing any command line. The standard loop stays as the
fallback should uvloop misbehave on a platform (BENCHMARKS.md, "uvloop").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"
EVENT_LOOP_ENV = "CITYGATE_EVENT_LOOP"


def chosen_event_loop(requested: str | None = None) -> str:
    """`requested` (from --event-loop), else $CITYGATE_EVENT_LOOP, else the default.

    ValueError names the accepted values when the environment asks for another loop.
    """
    name = requested or os.environ.get(EVENT_LOOP_ENV) or DEFAULT_EVENT_LOOP
    if name not in EVENT_LOOPS:
        raise ValueError(f"{EVENT_LOOP_ENV}={name!r}: the event loop is one of {', '.join(EVENT_LOOPS)}")
    return name


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What `asyncio.run(..., loop_factory=...)` takes to run on the loop `name`."""
    if name == "uvloop":
        import uvloop  # imported only when chosen: the fallback must work without it

        return uvloop.new_event_loop
    return asyncio.new_event_loop
