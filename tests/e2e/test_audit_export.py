"""A records request: one employee's records over a range, exported from a real proxy's log (two
workers) as a bundle that verifies offline, and fails naming the record once a byte is changed."""

from __future__ import annotations

import json

from test_audit_hosts import run_host
from test_audit_log import citygate


def test_an_employee_s_records_export_as_a_bundle_that_verifies_and_a_changed_byte_is_named(tmp_path):
    proxy_log = tmp_path / "proxy.log"
    log = run_host(tmp_path, "hosta", proxy_log)
    bundle = tmp_path / "mnguyen-today"

    exported = citygate(
        "audit",
        "export",
        str(log),
        "--user",
        "mnguyen",
        "--since",
        "1h",
        "--out",
        str(bundle),
        "--anchors-from",
        str(proxy_log),
    )

    assert exported.returncode == 0, exported.stdout + exported.stderr
    records = [json.loads(line) for line in (bundle / "records.jsonl").read_text().splitlines()]
    assert records and {r["user.name"] for r in records} == {"mnguyen"}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["query"]["user"] == "mnguyen" and manifest["records"] == len(records)
    links = (bundle / "chain.jsonl").read_text()
    assert "mnguyen" not in links  # the links disclose no record's content
    assert "audit chain head chain=hosta/worker-" in (bundle / "anchors.txt").read_text()

    verified = citygate("audit", "verify", str(bundle))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"bundle of {len(records)} record(s)" in verified.stdout and "OK:" in verified.stdout

    lines = (bundle / "records.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"Parks", b"Psrks", 1)
    (bundle / "records.jsonl").write_bytes(b"".join(lines))
    tampered = citygate("audit", "verify", str(bundle))

    assert tampered.returncode == 1
    assert f"FAILED: {bundle / 'records.jsonl'}:3: the record was edited" in tampered.stdout


def test_links_removed_from_a_bundle_are_found(tmp_path):
    log = run_host(tmp_path, "hosta", tmp_path / "proxy.log")
    bundle = tmp_path / "bundle"
    assert (
        citygate(
            "audit", "export", str(log), "--user", "mnguyen", "--since", "1h", "--out", str(bundle)
        ).returncode
        == 0
    )
    links = (bundle / "chain.jsonl").read_text().splitlines(keepends=True)
    (bundle / "chain.jsonl").write_text("".join(links[:3] + links[4:]))

    tampered = citygate("audit", "verify", str(bundle))

    assert tampered.returncode == 1
    assert "links were removed" in tampered.stdout or "does not follow" in tampered.stdout
