"""When the proxy's CA stops working: the first expiry among its certificate and its chain.

Browsers refuse a chain as soon as any certificate in it has expired (the city's root included),
so what matters is the earliest notAfter of the chain the proxy serves. `citygate check`, the
proxy log and the alert rules (CitygateCAExpiringSoon, CitygateCAExpired) warn WARN_DAYS before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509

from citygate.proxy.pki.certfiles import name

WARN_DAYS = 30

_RENEW = (
    "have the city's CA issue a new one (citygate ca request, then citygate ca install --replace, "
    'README "A CA the city can trust") and restart citygate'
)


def first_to_expire(chain: Sequence[x509.Certificate]) -> x509.Certificate:
    return min(chain, key=lambda certificate: certificate.not_valid_after_utc)


def expiry_warning(chain: Sequence[x509.Certificate], now: datetime) -> tuple[bool, str] | None:
    """(expired, message) when the chain's first expiry is within WARN_DAYS of `now`, else None.

    `chain` is the CA's certificate first, then the certificates that issued it.
    """
    first = first_to_expire(chain)
    left = first.not_valid_after_utc - now
    if left >= timedelta(days=WARN_DAYS):  # as the alert CitygateCAExpiringSoon: under 30 days
        return None
    which = (
        "the proxy's CA certificate" if first is chain[0] else f"{name(first)}, which issued the proxy's CA"
    )
    when = first.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    if left <= timedelta(0):
        return True, (
            f"{which} ({name(first)}) expired on {when}: browsers show a certificate error instead of "
            f"every HTTPS block page; {_renew(chain)}"
        )
    days = left.days
    within = f"in {days} day{'s' if days != 1 else ''}" if days else "within a day"
    return False, (
        f"{which} ({name(first)}) expires {within}, on {when}: browsers will then show a certificate "
        f"error instead of every HTTPS block page; {_renew(chain)}"
    )


def _renew(chain: Sequence[x509.Certificate]) -> str:
    if len(chain) == 1 and chain[0].subject == chain[0].issuer:
        # A self-signed CA alone: mitmproxy's own, made at the first start.
        return (
            'replace it with a CA from the city\'s PKI (README "A CA the city can trust"), or remove '
            "mitmproxy-ca*.pem from the confdir so that the next start makes a new one (and distribute that)"
        )
    return _RENEW
