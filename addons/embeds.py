"""How a refusal is answered, from what the browser will do with the answer (`Sec-Fetch-Dest`).

A denied request inside an intercepted social tunnel is often not a page the employee opened but
something an ordinary page embeds: a video frame, an SDK script, a tracking pixel. A full block
page in their place would fill a frame with a page meant for a window, or land in a script or an
image where nothing can show it. The decision is the same whatever the form (the same 403, the
same records); only the body differs:

- a top-level navigation (`document`), or a client that sends no `Sec-Fetch-*` fields at all
  (curl, older clients): the full block page;
- a frame (`iframe`, `frame`, `embed`, `object`, `fencedframe`): a small panel that fits in it;
- anything else (`script`, `image`, `style`, `empty` for fetch/XHR, `video`, `worker`, ...):
  an empty body, nothing a page can render or run.

The fields are set by the browser and a page's scripts cannot forge them (fetch metadata, a
forbidden request-header prefix). A client that forges them itself only chooses which form of
its own refusal it sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class Form(Enum):
    PAGE = "page"
    PANEL = "panel"
    EMPTY = "empty"


_FRAMES = frozenset({"iframe", "frame", "embed", "object", "fencedframe"})


def refusal_form(dest: Sequence[str], mode: Sequence[str]) -> Form:
    """The form of a refusal, from the request's `Sec-Fetch-Dest` and `Sec-Fetch-Mode` values.

    Each is every value the request carries for that field. A field sent more than once is not
    something a browser does: its request gets the full page, which every client can show.
    """
    if len(dest) > 1 or len(mode) > 1:
        return Form.PAGE
    destination = dest[0].strip().lower() if dest else None
    if destination is None:
        # No destination: a client without fetch metadata, unless it says it is not navigating.
        navigating = not mode or mode[0].strip().lower() == "navigate"
        return Form.PAGE if navigating else Form.EMPTY
    if destination == "document":
        return Form.PAGE
    if destination in _FRAMES:
        return Form.PANEL
    return Form.EMPTY
