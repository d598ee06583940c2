"""Rules of the layout that keep it true as the code grows (issue 15)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_addons_reach_the_gate_only_through_loaded():
    # One typed lookup (addons/loaded.py), not a name and getattr in each addon.
    lookups = [
        path.relative_to(REPO).as_posix()
        for folder in ("addons", "proxy", "directory")
        for path in (REPO / folder).rglob("*.py")
        if 'addons.get("citygate")' in path.read_text(encoding="utf-8")
    ]
    assert lookups == ["addons/loaded.py"]


def test_only_the_process_edge_of_proxy_imports_mitmproxy():
    importers = sorted(
        path.relative_to(REPO / "proxy").as_posix()
        for path in (REPO / "proxy").rglob("*.py")
        if any(
            line.strip().startswith(("import mitmproxy", "from mitmproxy"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    )
    assert importers, "proxy/cli and proxy/runtime start mitmproxy"
    assert all(name.startswith(("cli/", "runtime/")) for name in importers), importers


def test_the_top_of_proxy_holds_only_the_core():
    assert len(list((REPO / "proxy").glob("*.py"))) <= 15
