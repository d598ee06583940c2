"""Each decision reason in plain words, for the block page and `citygate explain`."""

from __future__ import annotations

from citygate.proxy.decision import Reason

PLAIN_REASONS: dict[Reason, str] = {
    Reason.NOT_SOCIAL_MEDIA: "This site is not in the social media catalog, so it is not restricted.",
    Reason.GRANTED: "A Director's grant allows you to use this site for its stated business purpose.",
    Reason.CREDENTIALS_REQUIRED: "Social media sites require you to sign in to the proxy with your City account.",
    Reason.CREDENTIALS_INVALID: "The user name or password you gave the proxy was not accepted.",
    Reason.NO_GRANT: "You do not have a grant for this site. Social media is blocked by default.",
    Reason.GRANT_EXPIRED: "Your grant for this site has expired.",
    Reason.GRANT_NOT_YET_VALID: "Your grant for this site has not started yet.",
    Reason.APPROVER_NOT_AUTHORIZED: (
        "Your grant's approver is no longer a Director (or higher) of your department, "
        "so the grant is not in force."
    ),
    Reason.SELF_APPROVAL: "A grant cannot be approved by the person it is for.",
    Reason.EMPLOYEE_DISABLED: "Your City account is disabled. Call the IT service desk if you think it should not be.",
    Reason.ACCOUNT_LOCKED: (
        "Your City account is locked after too many wrong passwords. Call the IT service desk to "
        "unlock it, or wait until the lock ends, then sign in again."
    ),
    Reason.ACCOUNT_EXPIRED: (
        "Your City account has expired. Call the IT service desk (or ask your manager) to have it extended."
    ),
    Reason.PASSWORD_EXPIRED: (
        "Your City password has expired. Change it (sign in to a City computer, or call the IT "
        "service desk), then sign in to the proxy with the new password."
    ),
    Reason.PASSWORD_MUST_CHANGE: (
        "Your City password was reset and must be changed before you can use it. Change it (sign "
        "in to a City computer, or call the IT service desk), then sign in with the new password."
    ),
    Reason.LOGON_NOT_PERMITTED: (
        "Your City account may not sign in at this time or from this device (its logon hours or "
        "allowed computers). Call the IT service desk if you need access now."
    ),
    Reason.UNKNOWN_EMPLOYEE: "Your account was not found in the City directory.",
    Reason.PATH_OUT_OF_SCOPE: "Your grant covers only certain pages of this site, and this page is not one of them.",
    Reason.OUTSIDE_HOURS: (
        "Your grant for this site allows access only at set hours, and this is outside them. "
        "The details below say when access resumes."
    ),
    Reason.DIRECTORY_UNAVAILABLE: (
        "The City directory could not be reached to confirm your grant, so access is refused "
        "for now. Try again in a few minutes."
    ),
    Reason.INTERNAL_ERROR: "The proxy could not make a decision, so access is refused. IT has been notified in the logs.",
    Reason.AUDIT_LOG_UNAVAILABLE: (
        "The proxy cannot record this visit in the City's access log right now, and social media "
        "is allowed only when it is recorded, so access is refused for now. Try again in a few minutes."
    ),
    Reason.MALFORMED_REQUEST: (
        "The request named its site in a way the proxy cannot check (for example two Host headers, "
        "or a Host header that is not a plain host name), so it was refused. Browsers never send "
        "such requests; if a program of yours does, contact the IT service desk."
    ),
    Reason.UNRECOGNIZED_PROTOCOL: (
        "The connection to this social media site was neither a web page (HTTPS or HTTP) nor "
        "anything else the proxy can check, so it was closed."
    ),
}


def plain_reason(reason: Reason) -> str:
    return PLAIN_REASONS[reason]
