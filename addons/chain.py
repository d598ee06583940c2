"""citygate's addons as one entry of mitmproxy's addon chain."""

from __future__ import annotations


class AddonGroup:
    """Several addons that mitmproxy visits as one entry of its chain, in the order given.

    mitmproxy offers every event to every entry of its chain, and each offer costs a few
    microseconds even when the addon has no hook for it (a context manager and a coroutine per
    entry): with the ~30 built-in addons that is a third of the proxy's time per request, and
    each citygate addon added ~2.5 us to every event (bench/throughput.py, BENCHMARKS.md).
    The children of one entry are found by a plain attribute walk instead. Hooks run in the
    same order as with separate entries, names stay registered (`addons.get("citygate")`),
    and options load as before: grouping changes nothing but the cost.
    """

    def __init__(self, *addons: object) -> None:
        self.addons = list(addons)
