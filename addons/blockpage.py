"""The page an employee sees when a social-media request is refused.

Self-contained HTML (no external CSS, images or scripts: the page is served in place of a
blocked site, so nothing it loads may come from elsewhere). Every value that came from a
request, the directory or a config file is escaped.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from citygate.directory.model import Person
from citygate.proxy.decision import STATE_REASONS, Decision, Reason
from citygate.proxy.policy import Policy
from citygate.proxy.wording import plain_reason

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:44rem;margin:3rem auto;background:#fff;border-top:6px solid #a4262c;padding:2rem 2.5rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.5rem;margin:0 0 .5rem}
.site{font-size:1.1rem;color:#4a5568}
.reason{background:#fdf3f3;border-left:4px solid #a4262c;padding:.75rem 1rem;margin:1.5rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;font-size:.9rem;color:#4a5568}
dt{font-weight:600}
dd{margin:0;min-width:0}
.site,dd{overflow-wrap:anywhere}
ul{padding-left:1.25rem}
footer{font-size:.8rem;color:#6b7280;margin-top:2rem}
@media (max-width:40rem){main{margin:0;padding:1.25rem 1rem;box-shadow:none}}
"""


def encode_page(page: str) -> bytes:
    """A rendered page as the bytes of its UTF-8 body.

    A value that came from the wire may hold lone surrogates (mitmproxy's stand-ins for bytes
    that are not UTF-8), which UTF-8 cannot encode: they are written as escapes rather than
    turning a refusal into a traceback.
    """
    return page.encode("utf-8", "backslashreplace")


def render_block_page(
    decision: Decision,
    policy: Policy,
    url: str,
    approvers: list[Person],
    event_id: str,
) -> str:
    site_name = decision.match.site.name if decision.match else decision.host
    evidence = decision.evidence
    # The detail only where it adds to the reason ("no grant for Facebook" says it again).
    said_again = evidence.detail == f"no grant for {site_name}"
    detail = f"<p>{escape(evidence.detail)}</p>" if evidence.detail and not said_again else ""
    if decision.reason is Reason.PATH_OUT_OF_SCOPE:
        title = f"This page of {site_name} is outside your grant"
        detail += _pages_granted(decision)
    else:
        title = f"{site_name} is blocked on the {policy.city} network"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Blocked: {escape(site_name)}</title><style>{_STYLE}</style></head>
<body><main>
<h1>{escape(title)}</h1>
<p class="site">{escape(url)}</p>
<div class="reason"><strong>Why:</strong> {escape(plain_reason(decision.reason))}{detail}</div>
<h2>The policy</h2>
<p><strong>{escape(policy.text.name)}</strong></p>
<p>{escape(policy.text.summary)}</p>
{_policy_link(policy)}
<h2>How to request access</h2>
{_how_to_request(decision, policy, approvers, site_name)}
<footer><dl>
<dt>Reason code</dt><dd>{escape(decision.reason.value)}</dd>
<dt>Account</dt><dd>{escape(evidence.employee or "not signed in")}</dd>
<dt>Reference</dt><dd>{escape(event_id)}</dd>
</dl><p>Use of City systems carries no expectation of privacy; access decisions are logged.</p></footer>
</main></body></html>
"""


def _pages_granted(decision: Decision) -> str:
    """The pages the employee's grant does cover, for a page outside them."""
    grant, match = decision.grant, decision.match
    pages = grant.paths.get(match.site.id, ()) if grant is not None and match is not None else ()
    if not pages:
        return ""
    items = "".join(
        f"<li>{escape(match.site.domains[0] if match and match.site.domains else '')}{escape(page)}</li>"
        for page in pages
    )
    return f"<p>Your grant ({escape(grant.id if grant else '')}) covers these pages:</p><ul>{items}</ul>"


def _policy_link(policy: Policy) -> str:
    if not policy.text.url:
        return ""
    return f'<p><a href="{escape(policy.text.url, quote=True)}">Read the full policy</a></p>'


def _mail_link(address: str, subject: str) -> str:
    href = f"mailto:{quote(address, safe='@')}?subject={subject}"
    return f' &lt;<a href="{escape(href, quote=True)}">{escape(address)}</a>&gt;'


def _request_form_link(decision: Decision, policy: Policy) -> str:
    """A link to the portal's request form for the blocked site, where the city runs the portal."""
    settings = policy.features.requests
    if not (settings.enabled and settings.portal_url and decision.match):
        return ""
    href = f"{settings.portal_url}/request?site={quote(decision.match.site.id)}"
    return f'<p><a class="request" href="{escape(href, quote=True)}">Request access</a> with the Social Media Request Form.</p>'


def _how_to_request(decision: Decision, policy: Policy, approvers: list[Person], site_name: str) -> str:
    if decision.reason in (Reason.CREDENTIALS_REQUIRED, Reason.CREDENTIALS_INVALID):
        return "<p>Sign in to the proxy with your City account; your browser will ask for it.</p>"
    if decision.reason in (Reason.DIRECTORY_UNAVAILABLE, Reason.INTERNAL_ERROR, Reason.AUDIT_LOG_UNAVAILABLE):
        return "<p>This is a temporary problem. If it persists, contact the IT service desk.</p>"
    if decision.reason in STATE_REASONS.values():
        # Nothing a grant can change: the account itself cannot sign in until it is fixed.
        return (
            "<p>No grant helps while your account cannot sign in. Call the IT service desk and "
            "give them the reference below; once your account is fixed, sign in again.</p>"
        )
    if decision.reason is Reason.PATH_OUT_OF_SCOPE:
        return _request_form_link(decision, policy) + (
            "<p>If your work needs this page too, ask the Director who approved your grant to add it: "
            "name the page and the business purpose.</p>"
        )
    if decision.reason is Reason.OUTSIDE_HOURS:
        return (
            "<p>Your grant is in force, at its hours only: come back when access resumes (above). "
            "If your work needs other hours, ask the Director who approved it to change them.</p>"
        )
    form = _request_form_link(decision, policy)
    steps = form + (
        "<p>Ask a Director (or higher) of your department to grant you access. The request must "
        "<strong>name each site</strong> you need and <strong>state the business purpose</strong>; "
        "access to one site does not mean access to all.</p>"
    )
    if not approvers:
        return steps + "<p>Your department's Director can approve the request.</p>"
    subject = quote(f"Request for access to {site_name} for a business purpose")
    items = "".join(
        f"<li>{escape(person.name)}"
        f"{', ' + escape(person.title) if person.title else ''}"
        f"{_mail_link(person.mail, subject) if person.mail else ''}</li>"
        for person in approvers
    )
    return steps + f"<p>Who can approve it:</p><ul>{items}</ul>"


_PANEL_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:.75rem;
background:#f4f5f7;color:#1d2330;border-left:4px solid #a4262c;font-size:.9rem}
p{margin:0 0 .4rem}
"""


def render_embed_panel(decision: Decision, policy: Policy, url: str) -> str:
    """The small page a blocked frame shows in place of an embedded social site (addons/embeds.py).

    It fits in a video-sized frame: what is blocked and by whom, and a link that opens the
    blocked address in a new tab, where the top-level navigation gets the full block page (the
    reason, the policy, how to ask). Values are escaped as on the block page.
    """
    site_name = decision.match.site.name if decision.match else decision.host
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Blocked: {escape(site_name)}</title><style>{_PANEL_STYLE}</style></head>
<body>
<p><strong>Blocked by city policy: {escape(site_name)}</strong></p>
<p>{escape(policy.city)} blocks this embedded content.
<a href="{escape(url, quote=True)}" target="_blank" rel="noopener noreferrer">Why, and how to ask for access</a></p>
</body></html>
"""


def render_refusal_page(decision: Decision, policy: Policy, url: str, event_id: str) -> str:
    """The page for a request refused before any grant was looked at (a malformed request head).

    Not a block page: the request was not understood, so nothing about grants applies. It says
    what was wrong, in the words of `decision.evidence.detail`, escaped like every other value.
    """
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Request refused</title><style>{_STYLE}</style></head>
<body><main>
<h1>The {escape(policy.city)} proxy refused this request</h1>
<p class="site">{escape(url)}</p>
<div class="reason"><strong>Why:</strong> {escape(plain_reason(decision.reason))}
<p>{escape(decision.evidence.detail)}</p></div>
<footer><dl>
<dt>Reason code</dt><dd>{escape(decision.reason.value)}</dd>
<dt>Reference</dt><dd>{escape(event_id)}</dd>
</dl><p>Use of City systems carries no expectation of privacy; access decisions are logged.</p></footer>
</main></body></html>
"""


def render_sign_in_page(decision: Decision, policy: Policy, target: str, retry: str, password: bool) -> str:
    """The sign-in page's 407 body: what the browser shows when it could not sign in, or the
    employee cancelled the password dialog (proxy/identity/sign_in_page.py).

    `password` says whether Basic is offered, so the page only mentions a password prompt when
    there is one. Values are escaped as on the block page.
    """
    site_name = decision.match.site.name if decision.match else decision.host
    detail = f"<p>{escape(decision.evidence.detail)}</p>" if decision.evidence.detail else ""
    ways = (
        "with your Windows sign-in on a City computer, or, where that is not possible, with the City "
        "user name and password your browser asks for"
        if password
        else "with your Windows sign-in (Kerberos) on a City computer joined to the City's domain"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in: {escape(site_name)}</title><style>{_STYLE}</style></head>
<body><main>
<h1>Sign in to continue to {escape(site_name)}</h1>
<p class="site">{escape(target)}</p>
<div class="reason"><strong>Why:</strong> {escape(plain_reason(decision.reason))}{detail}</div>
<p>Your browser signs in to the {escape(policy.city)} proxy {ways}.</p>
<p><a href="{escape(retry, quote=True)}">Try again</a>. If this page comes back, call the IT service
desk: your computer may not be signed in to the City's network.</p>
<footer><p>Use of City systems carries no expectation of privacy; access decisions are logged.</p></footer>
</main></body></html>
"""
