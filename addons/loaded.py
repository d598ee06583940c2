"""How the other addons reach what the gate has loaded: one typed lookup, not a name and getattr.

The gate (`CityGate`, registered as "citygate") loads the configuration (`gate.config`,
addons/configuration.py); the access log, the flags, the metrics and the configuration watcher
read what it loaded when their own `configure` runs (after the gate's: they come later in the
chain).
"""

from __future__ import annotations

from mitmproxy import ctx

from citygate.addons.gate import CityGate
from citygate.proxy.policy import Policy


def loaded_gate() -> CityGate | None:
    """The running gate, or None when this proxy runs without one (an addon used on its own)."""
    gate = ctx.master.addons.get("citygate")
    return gate if isinstance(gate, CityGate) else None


def loaded_policy() -> Policy | None:
    """The policy the gate has loaded; None before the configuration is set, or without a gate."""
    gate = loaded_gate()
    return gate.config.policy if gate is not None else None
