"""Reports as self-contained HTML pages a director can open from an email.

One file, nothing fetched: styles are inline, charts are inline SVG, there is no script, and a
Content-Security-Policy forbids loading anything at all, so the page looks the same offline, in
a mail client's viewer or printed. Every value from the logs or the configuration (names,
departments, purposes, grant ids) is HTML-escaped where it is written, in text and attributes
alike: a department called `<script>` shows as text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from html import escape

from citygate.proxy.grants import GrantKind
from citygate.proxy.reports.summary import GrantUse, Report, Review, days_left, last_day

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale print.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1d2433;margin:0;background:#f4f6f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 40px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:2px solid #e3e7ee;padding-bottom:4px}
.sub{color:#5b6578;margin:0 0 18px}
.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{flex:1 1 110px;border:1px solid #e3e7ee;border-radius:6px;padding:10px 14px;background:#fafbfd}
.tile b{display:block;font-size:24px;white-space:nowrap}.tile span{color:#5b6578;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e8ebf1;vertical-align:top}
th{background:#f0f3f8;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;white-space:nowrap;padding:0 6px;border-radius:9px;font-size:12px;background:#fdecea;color:#a3261a}
.ok{background:#e6f4ea;color:#1e6b34}.warn{background:#fff4e0;color:#8a5300}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.muted{color:#5b6578}.nw{white-space:nowrap}footer{margin-top:30px;font-size:12px;color:#5b6578}
footer dt{font-weight:600;color:#1d2433}footer dd{margin:0 0 6px}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#1d2433}
@media print{body{background:#fff}main{padding:0}}
"""


def e(value: object) -> str:
    """Text or attribute value, escaped (quotes included)."""
    return escape(str(value), quote=True)


def page(title: str, subtitle: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        # Nothing may be loaded: no script, no image, no font, no stylesheet from elsewhere.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{e(title)}</h1><p class="sub">{e(subtitle)}</p>{body}</main></body></html>\n'
    )


def bar_chart(rows: Sequence[tuple[str, Sequence[float]]], series: Sequence[str], *, unit: str = "") -> str:
    """Horizontal bars, stacked by series, one row per label; an inline SVG."""
    if not rows:
        return '<p class="muted">Nothing in this period.</p>'
    width, label_width, bar_height, gap = 1000, 210, 18, 8
    plot = width - label_width - 80
    largest = max((sum(values) for _, values in rows), default=0) or 1
    height = len(rows) * (bar_height + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}" role="img">'
    ]
    for index, (label, values) in enumerate(rows):
        y = gap + index * (bar_height + gap)
        parts.append(
            f'<text x="{label_width - 8}" y="{y + bar_height - 4}" text-anchor="end">{e(_clip(label, 30))}</text>'
        )
        x = float(label_width)
        for number, value in enumerate(values):
            if value <= 0:
                continue
            span = plot * value / largest
            name = series[number] if number < len(series) else ""
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(span, 1):.1f}" height="{bar_height}" '
                f'fill="{PALETTE[number % len(PALETTE)]}"><title>{e(label)}: {e(name)} {e(_number(value))}{e(unit)}</title></rect>'
            )
            x += span
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + bar_height - 4}">{e(_number(sum(values)))}{e(unit)}</text>'
        )
    parts.append("</svg>")
    if len(series) > 1:
        parts.append(
            '<div class="legend">'
            + "".join(
                f'<span><i style="background:{PALETTE[n % len(PALETTE)]}"></i>{e(name)}</span>'
                for n, name in enumerate(series)
            )
            + "</div>"
        )
    return "".join(parts)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; cells are HTML already (escape values with `e` when building them)."""
    if not rows:
        return '<p class="muted">None.</p>'
    head = "".join(f"<th{' class=n' if i in numeric else ''}>{e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(report: Report, generated: datetime) -> str:
    zone = report.zone
    rules = report.rules
    total_flags = sum(sum(d.flags.values()) for d in report.departments)
    tiles = [
        (sum(d.requests for d in report.departments), "requests"),
        (len([p for p in report.employees if p.requests]), "employees active"),
        (_duration(sum(p.active_minutes for p in report.employees)), "active time"),
        (sum(d.denied for d in report.departments), "denied"),
        (total_flags, "flags"),
        (sum(1 for g in report.grants if g.requests == 0), "grants unused"),
        (sum(1 for g in report.grants if g.expiring), f"grants ending in {report.expiring_days} days"),
    ]
    body = ['<div class="tiles">']
    body += [f'<div class="tile"><b>{e(value)}</b><span>{e(label)}</span></div>' for value, label in tiles]
    body.append("</div>")

    body.append("<h2>Requests by department</h2>")
    body.append(bar_chart([(d.department, [d.requests]) for d in report.departments], ["requests"]))

    body.append("<h2>Flags by department and rule</h2>")
    flagged = [d for d in report.departments if sum(d.flags.values())]
    body.append(bar_chart([(d.department, [d.flags.get(r, 0) for r in rules]) for d in flagged], rules))

    body.append("<h2>Departments</h2>")
    body.append(
        table(
            [
                "Department",
                "Employees",
                "Requests",
                "Denied",
                "Active time",
                "Flags",
                "Grants used",
                "Unused",
                "Ending soon",
            ],
            [
                [
                    e(d.department),
                    e(d.employees),
                    e(d.requests),
                    e(d.denied),
                    e(_duration(d.active_minutes)),
                    _flag_list(d.flags, rules),
                    e(d.grants_used),
                    e(d.grants_unused),
                    e(d.grants_expiring),
                ]
                for d in report.departments
            ],
            numeric=(1, 2, 3, 4, 6, 7, 8),
        )
    )

    busiest = sorted(report.employees, key=lambda p: (-p.active_minutes, p.user))[:15]
    body.append("<h2>Active time by employee (top 15)</h2>")
    body.append(
        bar_chart(
            [(f"{p.user} ({p.department})", [p.active_minutes]) for p in busiest if p.active_minutes],
            ["minutes"],
            unit=" min",
        )
    )

    body.append("<h2>Employees</h2>")
    body.append(
        table(
            [
                "Employee",
                "Department",
                "Requests",
                "Denied",
                "Active time",
                "Flags",
                "Grants used",
                "Grants unused",
                "Ending soon",
            ],
            [
                [
                    e(p.user),
                    e(p.department),
                    e(p.requests),
                    e(p.denied),
                    e(_duration(p.active_minutes)),
                    _flag_list(p.flags, rules),
                    e(", ".join(sorted(p.grants_used)) or "-"),
                    _badges(sorted(p.grants_unused), ""),
                    _badges(sorted(p.grants_expiring), " warn"),
                ]
                for p in report.employees
            ],
            numeric=(2, 3, 4),
        )
    )

    body.append(f"<h2>Grants ending within {e(report.expiring_days)} days of the period's end</h2>")
    body.append(_grant_table([g for g in report.grants if g.expiring], zone))
    body.append("<h2>Grants not used in this period</h2>")
    body.append(_grant_table([g for g in report.grants if g.requests == 0], zone))

    body.append(
        "<footer><dl>"
        "<dt>Requests</dt><dd>Allowed social-media requests; a tunnel passed through without decryption counts as one. "
        "Denied: refused requests and tunnels.</dd>"
        "<dt>Active time</dt><dd>Distinct minutes (city time) with at least one request. A tunnel passed through "
        "counts for the minute it opened only, so this is a lower bound for grants without a path scope.</dd>"
        "<dt>Flags</dt><dd>Non-business-use rules of the configuration. Per-request rules (business hours, path "
        "scope, grant ending) as recorded when each request was decided; daily budgets and repeated denials "
        "computed for this report over the merged logs of every proxy process.</dd>"
        f"<dt>Source</dt><dd>{e(report.decisions)} decision record(s) from the access log; generated "
        f"{e(_when(generated, zone))} by citygate report.</dd></dl></footer>"
    )
    subtitle = f"{report.city}: {_period(report.since, report.until, zone)} ({zone})"
    return page("Social-media use report", subtitle, "".join(body))


def review_html(review: Review, generated: datetime) -> str:
    zone = review.zone
    rows = [row for rows in review.approvers.values() for row in rows]
    unused = sum(1 for row in rows if row.unused)
    body = ['<div class="tiles">']
    for value, label in (
        (len(review.approvers), "approvers"),
        (len(rows), "grants in force"),
        (unused, "not used"),
    ):
        body.append(f'<div class="tile"><b>{e(value)}</b><span>{e(label)}</span></div>')
    body.append("</div>")
    since = f" since {_when(review.since, zone)}" if review.since else " in the logs kept"
    body.append(
        '<p class="muted">Please confirm each grant is still needed for its stated purpose. Grants marked '
        f'"not used" had no request{e(since)}: consider letting them end or removing them.</p>'
    )
    for approver, approved in review.approvers.items():
        body.append(f"<h2>Approved by {e(review.named(approver))}</h2>")
        body.append(
            table(
                ["Grant", "For", "Department", "Sites", "Purpose", "Expires", "Requests", "Last use"],
                [
                    [
                        _nowrap(row.grant.id),
                        e(review.whom(row.grant))
                        + (
                            f"<br><span class=muted>used by {e(', '.join(map(review.named, row.users)))}</span>"
                            if row.users and row.grant.kind is not GrantKind.PERSONAL
                            else ""
                        ),
                        e(row.department),
                        e(", ".join(row.grant.sites)),
                        e(row.grant.purpose),
                        f"{_nowrap(last_day(row.grant, zone).isoformat())}<br><span class=muted>{e(days_left(row.grant, review.at))} days left</span>",
                        e(row.requests),
                        '<span class="badge">not used</span>'
                        if row.unused
                        else _nowrap(_when(row.last_use, zone)),  # type: ignore[arg-type]
                    ]
                    for row in approved
                ],
                numeric=(6,),
            )
        )
    if not review.approvers:
        body.append('<p class="muted">No grant in force.</p>')
    body.append(
        f"<footer>Generated {e(_when(generated, zone))} by citygate grants review, from the grant files and the "
        "access log. Last use: the last allowed request through the grant.</footer>"
    )
    return page(
        "Grants review", f"{review.city}: grants in force on {_when(review.at, zone)} ({zone})", "".join(body)
    )


def _grant_table(grants: Sequence[GrantUse], zone: tzinfo) -> str:
    return table(
        ["Grant", "For", "Department", "Sites", "Approved by", "Expires", "Requests", "Last use"],
        [
            [
                e(g.grant.id),
                e(g.grant.whom),
                e(g.department),
                e(", ".join(g.grant.sites)),
                e(g.grant.approved_by),
                e(last_day(g.grant, zone).isoformat()),
                e(g.requests),
                e(_when(g.last_use, zone)) if g.last_use else "-",
            ]
            for g in grants
        ],
        numeric=(6,),
    )


def _flag_list(flags: Counter[str], rules: Sequence[str]) -> str:
    counts = [(rule, flags.get(rule, 0)) for rule in rules]
    shown = [f'<span class="badge warn">{e(rule)} {e(count)}</span>' for rule, count in counts if count]
    return " ".join(shown) or "-"


def _nowrap(value: object) -> str:
    return f'<span class="nw">{e(value)}</span>'


def _badges(values: Sequence[str], kind: str) -> str:
    return " ".join(f'<span class="badge{kind}">{e(v)}</span>' for v in values) or "-"


def _duration(minutes: int) -> str:
    return f"{minutes // 60}h {minutes % 60:02d}m"


def _number(value: float) -> str:
    return f"{value:g}"


def _when(at: datetime, zone: tzinfo) -> str:
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _period(since: datetime, until: datetime, zone: tzinfo) -> str:
    """ "2026-11-16 to 2026-11-20" for whole city days (the end is exclusive), else times."""
    start, end = since.astimezone(zone), until.astimezone(zone)
    if start.time() == end.time() == datetime.min.time():
        last = (end - timedelta(days=1)).date()
        return start.date().isoformat() if last == start.date() else f"{start.date()} to {last}"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "\u2026"
