"""A reload reads only the grant files that changed, and its result is a fresh load's."""

from __future__ import annotations

import random
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from citygate.directory.problems import ConfigError
from citygate.proxy.policy import Policy, load_policy

REPO = Path(__file__).resolve().parents[2]
TODAY = date(2026, 6, 15)
SITES = ["facebook", "instagram", "x", "youtube", "linkedin", "nextdoor"]


def city(tmp_path: Path, files: int = 4, per_file: int = 5) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    for stale in (tmp_path / "config" / "grants").iterdir():
        stale.unlink()
    for n in range(files):
        write_grants(tmp_path, n, [grant(f"d{n}-{k}", f"emp{n}{k}") for k in range(per_file)])
    return tmp_path / "config" / "citygate.yaml"


def grant(grant_id: str, employee: str, *, site: str = "facebook", days: int = 100, ago: int = 10) -> dict:
    return {
        "id": grant_id,
        "employee": employee,
        "sites": [site],
        "purpose": "Post the department's notices",
        "approved_by": "ahernandez",
        "approved_on": (TODAY - timedelta(days=ago)).isoformat(),
        "expires": (TODAY - timedelta(days=ago) + timedelta(days=days)).isoformat(),
    }


def grants_file(tmp_path: Path, n: int) -> Path:
    return tmp_path / "config" / "grants" / f"dept{n}.yaml"


def write_grants(tmp_path: Path, n: int, grants: list[dict]) -> None:
    grants_file(tmp_path, n).write_text(yaml.safe_dump({"department": f"Dept {n}", "grants": grants}))


def read_grants(tmp_path: Path, n: int) -> list[dict]:
    return yaml.safe_load(grants_file(tmp_path, n).read_text())["grants"]


def outcome(config: Path, today: date, previous: Policy | None = None) -> tuple[str, object, Policy | None]:
    """What a load gives: its grants and warnings, or its errors, in comparable form."""
    try:
        policy = load_policy(config, today=today, previous=previous)
    except ConfigError as exc:
        return "error", str(exc), None
    return "ok", (policy.grants, policy.warnings, policy._index), policy


def test_a_reload_reads_again_only_the_grant_file_that_changed(tmp_path: Path):
    config = city(tmp_path)
    first = load_policy(config, today=TODAY)
    changed = [*read_grants(tmp_path, 2), grant("d2-new", "newcomer")]
    write_grants(tmp_path, 2, changed)

    second = load_policy(config, today=TODAY, previous=first)

    by_id = {g.id: g for g in first.grants}
    for kept in second.grants:
        if kept.source == grants_file(tmp_path, 2):
            assert kept is not by_id.get(kept.id)  # read again
        else:
            assert kept is by_id[kept.id]  # taken from the previous load, not read again
    assert "d2-new" in {g.id for g in second.grants}
    assert outcome(config, TODAY, first)[:2] == outcome(config, TODAY)[:2]


def test_a_duplicate_id_in_a_changed_file_is_reported_as_a_fresh_load_reports_it(tmp_path: Path):
    config = city(tmp_path)
    first = load_policy(config, today=TODAY)
    write_grants(tmp_path, 0, [*read_grants(tmp_path, 0), grant("d3-1", "someone")])  # d3-1 is dept3's

    incremental, fresh = outcome(config, TODAY, first), outcome(config, TODAY)

    assert incremental[0] == fresh[0] == "error"
    assert incremental[1] == fresh[1]
    assert 'grant id "d3-1" is already used' in str(fresh[1])


@pytest.mark.parametrize("change", ["catalog", "max_grant_days", "today", "timezone"])
def test_a_change_the_checks_depend_on_reads_every_file_again(tmp_path: Path, change: str):
    config = city(tmp_path)
    first = load_policy(config, today=TODAY)
    today = TODAY
    if change == "catalog":
        catalog = config.parent / "sites.yaml"
        catalog.write_text(catalog.read_text() + "\n# reviewed\n")
    elif change == "today":
        today = TODAY + timedelta(days=200)  # every grant has expired: warnings, not errors
    else:
        value = {"max_grant_days": "max_grant_days: 30", "timezone": "timezone: America/New_York"}[change]
        key = value.split(":")[0]
        text = "\n".join(
            value if line.startswith(f"{key}:") else line for line in config.read_text().splitlines()
        )
        config.write_text(text + "\n")

    incremental = outcome(config, today, first)

    assert incremental[:2] == outcome(config, today)[:2]
    if incremental[2] is not None:
        assert not {id(g) for g in incremental[2].grants} & {id(g) for g in first.grants}


EDITS = ["add", "remove", "expire", "bad_site", "duplicate", "touch", "day", "drop_file"]


def edit_grants(
    rng: random.Random, tmp_path: Path, n: int, step: int, action: str, grants: list[dict]
) -> None:
    """What a director might do to grant file n (in `grants`, its grants as read)."""
    if action == "add":
        grants.append(grant(f"s{step}", f"new{step}", site=rng.choice(SITES)))
    elif action == "remove" and grants:
        grants.pop(rng.randrange(len(grants)))
    elif action == "expire" and grants:
        grants[rng.randrange(len(grants))].update(grant("x", "x", ago=400, days=30) | {"id": grants[0]["id"]})
    elif action == "bad_site" and grants:
        grants[rng.randrange(len(grants))]["sites"] = ["facebok"]
    elif action == "duplicate":
        other = read_grants(tmp_path, (n + 1) % 5) if grants_file(tmp_path, (n + 1) % 5).exists() else []
        if other:
            grants.append(dict(other[0]))


def fix_the_mistakes(tmp_path: Path, previous: Policy) -> None:
    """Rewrite every grant file from its valid grants, as a director fixing an error would."""
    for k in range(5):
        if grants_file(tmp_path, k).exists():
            kept, ids = [], {g.id for g in previous.grants}
            for entry in read_grants(tmp_path, k):
                if entry["sites"] != ["facebok"] and entry["id"] not in {e["id"] for e in kept}:
                    kept.append(entry)
            write_grants(tmp_path, k, [e for e in kept if e["id"] in ids or e["id"].startswith("s")])


def test_through_random_edits_an_incremental_reload_equals_a_fresh_load(tmp_path: Path):
    rng = random.Random(8)
    config = city(tmp_path, files=5, per_file=4)
    previous = load_policy(config, today=TODAY)
    today = TODAY
    reused = loaded = 0
    for step in range(60):
        n = rng.randrange(5)
        grants = read_grants(tmp_path, n) if grants_file(tmp_path, n).exists() else []
        action = rng.choice(EDITS)
        if action == "day":
            today += timedelta(days=rng.choice([0, 1, 40]))
        edit_grants(rng, tmp_path, n, step, action, grants)
        if action == "drop_file":
            grants_file(tmp_path, n).unlink(missing_ok=True)
        else:
            write_grants(tmp_path, n, grants)

        incremental, fresh = outcome(config, today, previous), outcome(config, today)

        assert incremental[:2] == fresh[:2], (step, action)
        if incremental[2] is not None:
            reused += bool({id(g) for g in incremental[2].grants} & {id(g) for g in previous.grants})
            loaded += 1
            previous = incremental[2]
        elif rng.random() < 0.7:
            fix_the_mistakes(tmp_path, previous)  # mostly, the director fixes the mistake

    assert loaded >= 20 and reused >= 10, (loaded, reused)  # the reuse was exercised, not bypassed
