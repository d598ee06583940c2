"""Prometheus metrics: the `metrics:` section, the metric definitions and the pure helpers.

Every metric is registered on a private CollectorRegistry (never the global one), so a test or a
library importing prometheus_client cannot leak series into citygate's /metrics, and two proxies
in one process (the tests) keep separate counts.

No label names an employee. Labels take values from bounded sets only: site ids (the catalog),
departments (the directory's, capped by `max_departments`; the rest are counted as "other"),
decisions and reasons (fixed lists), flag rule ids (the configuration), directory operations and
results, bind outcomes and refusals (fixed lists). The largest metric, citygate_decisions_total,
has at most sites x (max_departments + 2) x 20 reason/decision pairs series; README "Dashboards"
states it.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from citygate.directory.breaker import State
from citygate.directory.gateway import RATE_LIMITED, REMEMBERED_FAILURE
from citygate.directory.model import BindOutcome
from citygate.proxy.flags import expires_within
from citygate.proxy.grants import Grant

#: Why citygate closed a client connection (citygate_connections_closed_total's `reason`).
CONNECTION_CLOSE_REASONS = ("header_timeout", "idle_timeout", "client_limit")
# How the fast path (addons/fast_path.py) ended with a connection.
FAST_PATH_OUTCOMES = ("relayed", "handed_off")
# How a Negotiate (Kerberos) handshake ended: a principal accepted, a token refused (replayed,
# expired, malformed, another realm), or the proxy's own keytab unusable.
NEGOTIATE_RESULTS = ("accepted", "refused", "error")
# A Kerberos accept takes ~0.1 ms warm, a few ms for the first in a process (timed in its
# worker thread; a busy proxy adds the wait for the interpreter lock).
NEGOTIATE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

UNKNOWN = "unknown"  # no department known: nobody signed in, or the directory has none
OTHER = "other"  # a department beyond max_departments (the cardinality bound)

# Decision latency is dominated by the directory: a cached answer takes well under a millisecond,
# an LDAP round trip milliseconds, a failing server up to its timeouts (seconds).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LabelGuard:
    """Keeps a label's values to a bounded set: the first `limit` seen, then "other"."""

    def __init__(self, limit: int, always: Iterable[str] = ()) -> None:
        self.limit = limit
        self._known: set[str] = set(always)
        self._admitted = 0

    def __call__(self, value: str | None) -> str:
        if not value:
            return UNKNOWN
        if value in self._known:
            return value
        if self._admitted >= self.limit:
            return OTHER
        self._admitted += 1
        self._known.add(value)
        return value


def grant_counts(
    grants: Iterable[Grant], at: datetime, expiring_days: int
) -> tuple[Tally[tuple[str, str]], Tally[tuple[str, str]]]:
    """Active grants, and those of them ending within `expiring_days`, by (site, department).

    The department is the grant file's `department:` (UNKNOWN without one): asking the directory
    for each grant's employee would cost one directory query per grant at every refresh.
    A grant naming two sites counts once for each.
    """
    active: Tally[tuple[str, str]] = Tally()
    expiring: Tally[tuple[str, str]] = Tally()
    for grant in grants:
        if not grant.valid_from <= at < grant.valid_until:
            continue
        ending = expires_within(grant.valid_until, at, expiring_days)
        for site in grant.sites:
            key = (site, grant.department or UNKNOWN)
            active[key] += 1
            if ending:
                expiring[key] += 1
    return active, expiring


def version() -> str:
    try:
        return metadata.version("citygate")
    except metadata.PackageNotFoundError:
        return "unknown"


class MetricSet:
    """citygate's metrics, on one private registry.

    Gauges carry a `multiprocess_mode` for `citygate run --workers N`, where prometheus_client's
    multiprocess mode merges the workers' values: counters and histograms are summed; the grant
    gauges are the same in every worker (livemax); the access log is healthy only if it is in
    every live worker (livemin).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "citygate_decisions_total",
            "Social-media decisions, by site, the employee's department, decision and reason.",
            ["site", "department", "decision", "reason"],
            registry=r,
        )
        self.bytes = Counter(
            "citygate_bytes_total",
            "Body bytes of allowed social-media requests citygate relayed (request: to the site, "
            "response: to the employee); tunnels passed through undecrypted are not seen.",
            ["site", "department", "direction"],
            registry=r,
        )
        self.decision_duration = Histogram(
            "citygate_decision_duration_seconds",
            "Time from a social-media request reaching citygate to its decision: identity check, "
            "directory lookups and the policy decision.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_grants = Gauge(
            "citygate_active_grants",
            "Grants in force now, by site and the grant file's department.",
            ["site", "department"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.grants_expiring = Gauge(
            "citygate_grants_expiring",
            "Grants in force that end within metrics.expiring_days (14), by site and department.",
            ["site", "department"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.directory_requests = Counter(
            "citygate_directory_requests_total",
            "Calls to the directory backend, by operation and result (ok, unavailable, error).",
            ["operation", "result"],
            registry=r,
        )
        self.directory_duration = Histogram(
            "citygate_directory_request_duration_seconds",
            "Time a directory call took, waiting for a free worker thread included.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # --- password checks kept from locking accounts (directory/gateway.py) ---------------
        self.binds = Counter(
            "citygate_directory_binds_total",
            "Password checks that reached the directory (binds), by outcome: ok, wrong_password, "
            "disabled, locked, account_expired, password_expired, must_change_password, "
            "not_permitted_now, unavailable (no answer).",
            ["result"],
            registry=r,
        )
        self.bind_refusals = Counter(
            "citygate_bind_refusals_total",
            "Passwords refused without a bind, by reason: remembered_failure (refused within "
            "directory.cache.failed_credentials_ttl), rate_limited (over directory.bind_rate binds "
            "a minute for the account). Counted per worker process.",
            ["reason"],
            registry=r,
        )
        for bound in BindOutcome:
            if bound is not BindOutcome.RATE_LIMITED:
                self.binds.labels(bound.value)
        for refusal in (REMEMBERED_FAILURE, RATE_LIMITED):
            self.bind_refusals.labels(refusal)
        self.config_reloads = Counter(
            "citygate_config_reloads_total",
            "Configuration loads, the start-up one included, by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.audit_write_errors = Counter(
            "citygate_audit_write_errors_total",
            "Failed writes of the access log (disk full, permission denied, ...).",
            registry=r,
        )
        self.audit_refusals = Counter(
            "citygate_audit_refusals_total",
            "Social-media requests refused because the access log could not be written.",
            registry=r,
        )
        self.audit_healthy = Gauge(
            "citygate_audit_log_healthy",
            "1 while the access log can be written (in every worker), else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )
        # --- issue 16 (faults and load): records the access log lost -----------------------
        self.audit_records_dropped = Counter(
            "citygate_audit_records_dropped_total",
            "Access-log records dropped: the log could not be written for so long that the "
            "records waiting filled the memory kept for them, or the proxy stopped before it could "
            "write them. Each is marked in the chain (audit-gap) once writing works again.",
            registry=r,
        )
        # --- end of issue 16's access-log block ------------------------------------------
        # --- issue 21: the SIEM copy over TCP/TLS (audit.syslog, proxy/audit/forwarder.py) ----
        # Counted in messages: the records and the chain heads published to the collector.
        self.siem_queued = Gauge(
            "citygate_siem_records_queued",
            "Messages of the SIEM copy held in memory: waiting to be sent or spooled, or sent and "
            "not yet acknowledged by the collector.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.siem_sent = Counter(
            "citygate_siem_records_sent_total",
            "Messages of the SIEM copy the collector acknowledged (over TCP or TLS).",
            registry=r,
        )
        self.siem_spooled = Counter(
            "citygate_siem_records_spooled_total",
            "Messages of the SIEM copy written to the spool on disk, because the collector was not "
            "connected or older spooled messages were still waiting.",
            registry=r,
        )
        self.siem_spool_bytes = Gauge(
            "citygate_siem_spool_bytes",
            "Bytes the SIEM spool holds on disk (bounded by audit.syslog.spool_max_bytes); 0 once "
            "the collector has everything.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.siem_dropped = Counter(
            "citygate_siem_records_dropped_total",
            "Messages the SIEM copy lost because the spool was full; the local log keeps them, and an "
            "audit-siem-gap record in it names the records the SIEM's copy lacks.",
            registry=r,
        )
        self.siem_connected = Gauge(
            "citygate_siem_connected",
            "1 while the SIEM collector is connected (in every worker), else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )
        # --- end of issue 21's SIEM block ---------------------------------------------------
        self.passthrough = Counter(
            "citygate_passthrough_connections_total",
            "Ordinary (non-social) connections passed through untouched: CONNECT tunnels "
            "(kind=tunnel) and plain-HTTP client connections (kind=http).",
            ["kind"],
            registry=r,
        )
        # --- issue 17 (the fast path): connections decided before mitmproxy -------------------
        self.fast_path = Counter(
            "citygate_fast_path_connections_total",
            "Client connections the fast path took first (citygate_fast_path): ordinary HTTPS "
            "tunnels it relayed itself (outcome=relayed, also counted as passed through) and "
            "connections it handed to mitmproxy (outcome=handed_off).",
            ["outcome"],
            registry=r,
        )
        for outcome in FAST_PATH_OUTCOMES:
            self.fast_path.labels(outcome)
        # --- end of issue 17's fast-path block -------------------------------------------------
        # Kerberos (Negotiate) sign-in: how many tokens were checked, and what a check costs.
        self.negotiate_handshakes = Counter(
            "citygate_negotiate_handshakes_total",
            "Negotiate (Kerberos) sign-in handshakes, by result: accepted, refused (a replayed, "
            "expired, malformed or other-realm token), error (the proxy's keytab is unusable).",
            ["result"],
            registry=r,
        )
        for result in NEGOTIATE_RESULTS:
            self.negotiate_handshakes.labels(result)
        self.negotiate_duration = Histogram(
            "citygate_negotiate_seconds",
            "Time a Negotiate token took to check, timed in its worker thread (the wait for a free "
            "thread is not included; citygate_decision_duration_seconds has the whole decision).",
            buckets=NEGOTIATE_BUCKETS,
            registry=r,
        )
        # Which kind of grant let each allowed decision through: bounded labels (the kind and
        # the purpose, never a group's or a person's name), so dashboards keep business and
        # personal use apart.
        self.grant_uses = Counter(
            "citygate_grant_uses_total",
            "Allowed social-media decisions, by site, the kind of grant that allowed them "
            "(personal, group, department, city) and its purpose (business, personal).",
            ["site", "kind", "purpose"],
            registry=r,
        )
        self.flags = Counter(
            "citygate_nonbusiness_flags_total",
            "Non-business-use flags raised, by site, department and rule id. Windowed rules "
            "(daily budgets, repeated denials) are counted per proxy process: an early warning; "
            "`citygate report` over the merged logs is authoritative.",
            ["site", "department", "rule"],
            registry=r,
        )
        # --- Client connections: the limits that keep idle and slow clients from exhausting
        # file descriptors (addons/connection_limits.py). `reason` is a fixed list.
        self.connections_closed = Counter(
            "citygate_connections_closed_total",
            "Client connections citygate closed itself, by reason: header_timeout (no whole "
            "request head, or tunnel start, in time), idle_timeout (no next request on a "
            "kept-alive connection), client_limit (refused: its address held too many).",
            ["reason"],
            registry=r,
        )
        self.client_connections = Gauge(
            "citygate_client_connections",
            "Client connections open now (all workers together).",
            registry=r,
            multiprocess_mode="livesum",
        )
        for reason in CONNECTION_CLOSE_REASONS:
            self.connections_closed.labels(reason)
        self.build_info = Gauge(
            "citygate_build_info",
            "Always 1; the version of citygate running.",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(version()).set(1)
        # --- the directory's circuit breaker (directory/breaker.py) ---------------------------
        # One series per state, 1 for the current one (a state set), so a dashboard can show
        # "open" without decoding numbers; under --workers N a state is 1 if any live worker is in it.
        self.breaker_state = Gauge(
            "citygate_directory_breaker_state",
            "The directory circuit breaker: 1 for the state it is in (closed, open, half_open), "
            "0 for the others; open means directory calls fail at once without contacting it.",
            ["state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.breaker_opens = Counter(
            "citygate_directory_breaker_opens_total",
            "Times the directory circuit breaker opened (failed calls in a row, or a failed health check).",
            registry=r,
        )
        self.breaker_probes = Counter(
            "citygate_directory_breaker_probes_total",
            "Health checks and probes of the directory, by result (ok, failed): one per "
            "check_interval while it answers, one per backoff interval while it does not.",
            ["result"],
            registry=r,
        )
        self.breaker_rejections = Counter(
            "citygate_directory_breaker_rejections_total",
            "Directory calls failed at once, without contacting the directory, while the breaker was open.",
            registry=r,
        )
        # --- the proxy's CA (issue 22): when the chain it serves stops working ----------------
        # livemin: every worker loads the same CA; one not loaded yet shows 0, which alerts skip.
        self.ca_expiry = Gauge(
            "citygate_ca_expiry_timestamp_seconds",
            "When the proxy's CA stops working, as Unix time: the earliest notAfter of its "
            "certificate and the chain it serves (0 until mitmproxy has loaded it); the alerts "
            "CitygateCAExpiringSoon and CitygateCAExpired read it.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.set_breaker_state(State.CLOSED)
        for result in ("ok", "failed"):
            self.breaker_probes.labels(result)
        # Series that exist from the start, so dashboards and alerts see 0 rather than nothing.
        for kind in ("tunnel", "http"):
            self.passthrough.labels(kind)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)

    def set_breaker_state(self, current: State) -> None:
        for state in State:
            self.breaker_state.labels(state.value).set(1 if state is current else 0)
