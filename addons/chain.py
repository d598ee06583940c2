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
    same order as with separate entries, names stay registered (`addons.get(name)` finds each),
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
    if isinstance(manager, HookSkippingAddonManager):
        entries = manager.entries_taking(event.name)
    else:
        entries = _entries_taking(manager.chain, event.name)
    for entry in entries:
        try:
            with safecall():
                await manager.invoke_addon(entry, event)
        except exceptions.AddonHalt:
            return


def _entries_taking(chain: list[object], name: str) -> tuple[object, ...]:
    # An entry with children (a script loader, an AddonGroup) is always offered the event: its
    # children can change (a script reloaded), and mitmproxy walks them itself.
    return tuple(
        entry for entry in chain if hasattr(entry, "addons") or getattr(entry, name, None) is not None
    )


class HookSkippingAddonManager(AddonManager):
    """mitmproxy's addon manager, offering each event only to the chain entries that can take it.

    Every proxy event (a request's headers, its response, a connection opening...) reaches
    mitmproxy's whole chain of ~35 entries, at a few microseconds each even when the entry has
    no hook for it, and `handle_lifecycle` sends an `update` event after each flow event: most
    of a denied request's cost was offers to addons that ignore them (BENCHMARKS.md). Behaviour
    is mitmproxy's: same addons, same order, same error handling (`trigger_where_handled`).
    Which entries take an event is worked out once per event name, and again whenever an addon
    is added or removed.
    """

    async def trigger_event(self, event: hooks.Hook) -> None:
        await trigger_where_handled(self, event)

    def entries_taking(self, name: str) -> tuple[object, ...]:
        # Kept in the instance's dict, created on first use: the class is switched onto a live
        # manager (skip_entries_without_hooks), whose __init__ has already run.
        known: dict[str, tuple[object, ...]] = self.__dict__.setdefault("_entries_by_event", {})
        entries = known.get(name)
        if entries is None:
            entries = known[name] = _entries_taking(self.chain, name)
        return entries

    def add(self, *addons: object) -> None:
        try:
            super().add(*addons)
        finally:
            self.__dict__.pop("_entries_by_event", None)

    def remove(self, addon: object) -> None:
        try:
            super().remove(addon)
        finally:
            self.__dict__.pop("_entries_by_event", None)

    def clear(self) -> None:
        try:
            super().clear()
        finally:
            self.__dict__.pop("_entries_by_event", None)


def skip_entries_without_hooks(manager: AddonManager) -> None:
    """Make a master's existing addon manager a `HookSkippingAddonManager`, addons and all.

    mitmproxy's masters build their manager themselves, with no way to pass another class; the
    subclass adds no state of its own to set up, so switching the class of the live object keeps
    everything added.
    """
    manager.__class__ = HookSkippingAddonManager
