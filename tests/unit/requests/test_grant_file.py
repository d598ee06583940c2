"""An approval written into a department's grant file: comments kept, checked first, atomic, serialized."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citygate.proxy.policy import load_policy
from citygate.proxy.requests.grant_file import ApprovedGrant, GrantNotWritten, add_grant

REPO = Path(__file__).resolve().parents[3]
TODAY = datetime.now(ZoneInfo("America/Los_Angeles")).date()  # the demo city's day


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "directory", tmp_path / "directory")
    return tmp_path / "config" / "citygate.yaml"


def approved(grant_id: str = "parks-req-2026-0001", **changes) -> ApprovedGrant:
    values = {
        "id": grant_id,
        "employee": "mnguyen",
        "sites": ("instagram",),
        "purpose": "Post the summer camp schedule",
        "approved_by": "ahernandez",
        "approved_on": TODAY,
        "expires": TODAY + timedelta(days=90),
        "request_id": "req-2026-0001",
        "paths": {"instagram": ("/CityOfExampleParks",)},
    }
    return ApprovedGrant(**(values | changes))


def test_the_grant_is_appended_to_the_departments_file_and_its_comments_survive(config):
    parks = config.parent / "grants" / "parks.yaml"
    before = parks.read_text()

    written = add_grant(config, "parks", approved())

    assert written == parks
    after = parks.read_text()
    assert after.startswith(before.rstrip("\n"))  # nothing above it moved, every comment kept
    assert "# On Facebook, only the Parks page (and anything under it)." in after
    assert "    sites: [instagram]\n" in after
    new = {grant.id: grant for grant in load_policy(config).grants}["parks-req-2026-0001"]
    assert (new.employee, new.sites, new.request_id, new.department) == (
        "mnguyen",
        ("instagram",),
        "req-2026-0001",
        "Parks",
    )
    assert new.paths["instagram"] == ("/CityOfExampleParks",)


def test_a_department_without_a_file_gets_one_that_loads(config):
    written = add_grant(config, "Public Works", approved("pw-req-2026-0002", employee="kwilliams"))

    assert written.name == "public-works.yaml"
    assert written.read_text().startswith("# Public Works: grants approved through citygate's")
    grant = {g.id: g for g in load_policy(config).grants}["pw-req-2026-0002"]
    assert grant.department == "Public Works"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"sites": ("notasite",), "paths": {}}, 'unknown site "notasite"'),
        ({"id": "parks-2026-001"}, 'grant id "parks-2026-001" is already used'),
        ({"expires": TODAY + timedelta(days=400)}, "365"),
        ({"request_id": "REQ 1"}, "request id 'REQ 1' is not valid"),
    ],
)
def test_a_grant_the_check_would_refuse_is_not_written(config, changes, says):
    parks = config.parent / "grants" / "parks.yaml"
    before = parks.read_bytes()

    with pytest.raises(GrantNotWritten) as refused:
        add_grant(config, "Parks", approved(**changes))

    assert says in str(refused.value)
    assert all(problem.path == parks for problem in refused.value.problems)
    assert parks.read_bytes() == before
    assert sorted(p.name for p in parks.parent.iterdir() if p.name.startswith(".")) == [
        ".citygate-grants.lock"
    ]


APPROVE = """
import sys, time
from datetime import date
from pathlib import Path
from citygate.proxy.requests.grant_file import ApprovedGrant, add_grant
config, n, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
today, until = date.fromisoformat(sys.argv[4]), date.fromisoformat(sys.argv[5])
go.with_name(f"ready-{n}").touch()
while not go.exists():
    time.sleep(0.001)
grant = ApprovedGrant(f"parks-req-2026-{n:04d}", "mnguyen", ("instagram",), "Post the camp schedule",
                      "ahernandez", today, until, f"req-2026-{n:04d}")
add_grant(config, "Parks", grant)
"""


def test_directors_approving_at_the_same_moment_both_get_their_grant(config, tmp_path):
    # Separate processes (not forks of this threaded one), released together.
    go = tmp_path / "go"
    until = TODAY + timedelta(days=90)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                APPROVE,
                str(config),
                str(n),
                str(go),
                TODAY.isoformat(),
                until.isoformat(),
            ]
        )
        for n in range(10, 14)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(workers) and time.monotonic() < deadline:
        time.sleep(0.01)  # every interpreter up and waiting
    go.touch()
    assert [worker.wait(60) for worker in workers] == [0, 0, 0, 0]

    ids = {grant.id for grant in load_policy(config).grants}
    assert {f"parks-req-2026-{n:04d}" for n in range(10, 14)} <= ids
    assert {"parks-2026-001", "parks-2026-002"} <= ids
