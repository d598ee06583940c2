"""Offering mitmproxy's events to citygate's addons at less cost per event."""

from __future__ import annotations

from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager, safecall


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


async def trigger_where_handled(manager: AddonManager, event: hooks.Hook) -> None:
    """`manager.trigger_event(event)`, without offering the event to addons that cannot take it.

    The same addons run in the same order, each guarded as mitmproxy guards them (an error is
    logged, AddonHalt stops the rest); only chain entries without children and without a hook
    for the event are skipped, which mitmproxy would have offered it to for nothing, at a few
    microseconds each. citygate announces every social-media decision this way.
    """
    name = event.name
    for entry in manager.chain:
        if not hasattr(entry, "addons") and getattr(entry, name, None) is None:
            continue
        try:
            with safecall():
                await manager.invoke_addon(entry, event)
        except exceptions.AddonHalt:
            return
