"""Which files form one hash chain when security staff name files and folders."""

from __future__ import annotations

from pathlib import Path

from citygate.proxy.audit.files import expand_chains


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_files_of_different_worker_folders_are_different_chains(tmp_path: Path):
    first = touch(tmp_path / "worker-0" / "citygate-audit.jsonl")
    second = touch(tmp_path / "worker-1" / "citygate-audit.jsonl")

    assert expand_chains([first, second]) == [[first], [second]]


def test_files_of_one_folder_given_in_a_row_are_one_chain(tmp_path: Path):
    older = touch(tmp_path / "citygate-audit-000001.jsonl.gz")
    active = touch(tmp_path / "citygate-audit.jsonl")

    assert expand_chains([older, active]) == [[older, active]]


def test_a_folder_adds_one_chain_per_worker(tmp_path: Path):
    first = touch(tmp_path / "worker-0" / "citygate-audit.jsonl")
    second = touch(tmp_path / "worker-1" / "citygate-audit.jsonl")

    assert expand_chains([tmp_path]) == [[first], [second]]
