"""Kerberos sign-in, the pure part: which employee a principal is, and why a token was refused.

The GSSAPI handshake itself (keytab, replay cache, threads) is negotiate.py's; this
module only reads what it produced: the client principal, or the library's error message.
"""

from __future__ import annotations


class PrincipalRefused(Exception):
    """A verified principal that names no employee of this city; `reason` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def principal_login(principal: str, realms: tuple[str, ...]) -> str:
    """The login name `alice@CITY.EXAMPLE` stands for (`alice`); PrincipalRefused when it names none.

    The realm must be one of `realms` (compared exactly: Kerberos realms are case-sensitive):
    a user of another realm that the city's realm trusts is somebody else's employee, whatever
    the name before the "@". A principal with an instance (`alice/admin@...`) is a different
    identity from `alice` and signs nobody in.
    """
    primary, at, realm = principal.rpartition("@")
    if not at or not primary:
        raise PrincipalRefused(f"the Kerberos principal {principal!r} names no realm")
    if realm not in realms:
        raise PrincipalRefused(
            f"the Kerberos principal is of realm {realm}, which is not accepted (accepted: {', '.join(realms)})"
        )
    if "/" in primary:
        raise PrincipalRefused(
            f"the Kerberos principal {principal!r} is a service or admin principal, not a person"
        )
    return primary.casefold()


# What MIT krb5 says (its minor status message, which never quotes the token), the reason
# citygate logs. The minor codes themselves are assigned per process, so the text is matched.
_REASONS = (
    ("replay", "a replayed Negotiate token (the replay cache has seen it)"),
    ("ticket expired", "the Kerberos ticket has expired"),
    # Checked before the ticket's end: a token kept past its ticket's life says this too.
    (
        "clock skew",
        "the token is outside the allowed clock skew (a stale token, or the client's clock is off)",
    ),
    ("not yet valid", "the Kerberos ticket is not yet valid (clock skew)"),
    ("cannot find key", "the keytab has no key for this ticket (wrong key version: export the keytab again)"),
    (
        "cannot decrypt",
        "the ticket is for another service principal or key (check the proxy's principal and keytab)",
    ),
    ("wrong principal", "the ticket is for another service principal"),
    ("no key table entry", "the keytab has no key for the proxy's principal"),
    ("key table", "the proxy's keytab cannot be used"),
    ("malformed", "a malformed Negotiate token"),
    ("corrupt", "a malformed Negotiate token"),
    ("invalid token", "a malformed Negotiate token"),
    ("defective", "a malformed Negotiate token"),
)


def replay_cache_problem(message: str) -> str | None:
    """Why the replay cache could not be used, when that is what the GSSAPI error says; else None.

    That is the proxy's fault, not the token's: every token fails the same way until it is fixed.
    """
    if ".rcache" not in message and "replay cache" not in message.casefold():
        return None
    detail = message.rpartition("Minor")[2].partition(":")[2].strip() or message
    return (
        f"the proxy cannot write its Kerberos replay cache ({detail}); set KRB5RCACHEDIR to a "
        "directory the proxy's user can write (the default is /var/tmp)"
    )


def refusal_reason(message: str) -> str:
    """A plain, token-free reason for a refused token, from the GSSAPI error message."""
    lowered = message.casefold()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    return "the Kerberos token was refused"
