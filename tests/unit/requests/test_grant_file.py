"""An approval written into a department's grant file: comments kept, checked first, atomic, serialized."""

from __future__ import annotations

import multiprocessing
import shutil
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


def _approve(config: Path, n: int, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    add_grant(config, "Parks", approved(f"parks-req-2026-{n:04d}", request_id=f"req-2026-{n:04d}"))


def test_directors_approving_at_the_same_moment_both_get_their_grant(config):
    start = multiprocessing.get_context("fork").Barrier(4)
    workers = [
        multiprocessing.get_context("fork").Process(target=_approve, args=(config, n, start))
        for n in range(10, 14)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0

    ids = {grant.id for grant in load_policy(config).grants}
    assert {f"parks-req-2026-{n:04d}" for n in range(10, 14)} <= ids
    assert {"parks-2026-001", "parks-2026-002"} <= ids
