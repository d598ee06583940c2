"""The form of a refusal, from what the browser will do with it (addons/embeds.py), and the panel."""

from __future__ import annotations

import pytest

from citygate.addons.blockpage import render_embed_panel
from citygate.addons.embeds import Form, refusal_form
from citygate.proxy.decision import Decision, Reason, Result
from citygate.proxy.hosts import normalize_host


@pytest.mark.parametrize(
    ("dest", "mode", "form"),
    [
        # A top-level navigation, and clients without fetch metadata (curl, old browsers).
        (["document"], ["navigate"], Form.PAGE),
        ([], [], Form.PAGE),
        ([], ["navigate"], Form.PAGE),
        (["Document "], [], Form.PAGE),
        # Frames: the small panel.
        (["iframe"], ["navigate"], Form.PANEL),
        (["frame"], ["navigate"], Form.PANEL),
        (["embed"], ["no-cors"], Form.PANEL),
        (["object"], ["no-cors"], Form.PANEL),
        (["fencedframe"], ["navigate"], Form.PANEL),
        # Everything else: nothing to render.
        (["script"], ["no-cors"], Form.EMPTY),
        (["image"], ["no-cors"], Form.EMPTY),
        (["style"], ["no-cors"], Form.EMPTY),
        (["font"], ["cors"], Form.EMPTY),
        (["empty"], ["cors"], Form.EMPTY),
        (["video"], ["no-cors"], Form.EMPTY),
        (["audio"], ["no-cors"], Form.EMPTY),
        (["worker"], ["same-origin"], Form.EMPTY),
        (["something-new"], ["no-cors"], Form.EMPTY),
        ([], ["cors"], Form.EMPTY),  # no destination, but surely not a navigation
        # Sent twice is no browser's doing: the full page, which every client can show.
        (["iframe", "script"], ["navigate"], Form.PAGE),
        (["image"], ["no-cors", "navigate"], Form.PAGE),
    ],
)
def test_the_form_follows_the_destination(dest, mode, form):
    assert refusal_form(dest, mode) is form


def test_the_panel_names_the_site_links_to_the_full_explanation_and_escapes_what_it_shows(policy_files):
    policy = policy_files.load()
    host = normalize_host("www.youtube.com")
    assert host is not None
    decision = Decision(Result.DENY, Reason.NO_GRANT, "www.youtube.com", policy.catalog.match(host))
    url = 'https://www.youtube.com/embed/"><script>alert(1)</script>'

    panel = render_embed_panel(decision, policy, url)

    assert "Blocked by city policy: YouTube" in panel
    assert "Testville" in panel
    assert "<script>" not in panel
    assert 'href="https://www.youtube.com/embed/&quot;&gt;&lt;script&gt;' in panel
    assert 'target="_blank" rel="noopener noreferrer"' in panel
    assert "How to request access" not in panel  # the full page's sections stay on the full page
