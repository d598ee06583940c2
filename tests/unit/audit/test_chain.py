"""The hash chain: an intact log verifies; each kind of tampering fails and names the place.

Logs are built here the way the writer builds them (a file-start record heading each file,
records sealed one after another) and written to real files, which `verify_files` reads.
"""

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from citygate.proxy.audit.chain import FILE_START, GAP, RETENTION, ChainHead, Damaged, seal, unseal
from citygate.proxy.audit.files import ACTIVE_NAME, log_files, rotated_name
from citygate.proxy.audit.record import state_record
from citygate.proxy.cli.audit import verify_files

AT = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)


def build_log(folder: Path, counts: list[int]) -> list[Path]:
    """Files holding `counts` records each (after their file-start record); the last is active."""
    folder.mkdir(parents=True, exist_ok=True)
    head, previous, paths = ChainHead(), None, []
    for index, count in enumerate(counts):
        header = state_record(
            FILE_START,
            AT,
            previous_file=previous[0] if previous else None,
            previous_records=previous[1] if previous else None,
            previous_torn=False,
            reason="size" if previous else "start",
        )
        first_seq = head.seq + 1
        line, head = seal(header, head)
        lines = [line]
        for n in range(count):
            record = {"@timestamp": "2026-11-21T17:00:00.000000Z", "event.action": "http-request", "n": n}
            line, head = seal(record, head)
            lines.append(line)
        last = index == len(counts) - 1
        name = ACTIVE_NAME if last else rotated_name(date(2026, 11, 21), first_seq)
        path = folder / name
        path.write_bytes(b"".join(lines))
        paths.append(path)
        previous = (name, len(lines))
    return paths


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


@pytest.fixture
def log(tmp_path):
    return build_log(tmp_path / "log", [5, 5, 5])


def test_an_intact_log_verifies_across_files(log):
    report = verify_files(log)

    assert report.ok, report.failure
    assert report.records == 18
    assert report.head is not None and report.head.seq == 18
    assert [f.records for f in report.files] == [6, 6, 6]
    assert any("starts at its very first record" in note for note in report.notes)


def test_a_folder_lists_its_files_in_chain_order(log):
    assert log_files(log[0].parent) == log


def test_editing_one_byte_names_the_record(log):
    lines = lines_of(log[1])
    lines[3] = lines[3].replace(b'"n":2', b'"n":7')
    write_lines(log[1], lines)

    report = verify_files(log)

    assert not report.ok
    assert (report.failure.path, report.failure.line) == (str(log[1]), 4)
    assert "edited" in report.failure.problem
    assert report.records == 6 + 3  # everything before it verifies


def test_deleting_a_line_names_the_line_after_the_gap(log):
    lines = lines_of(log[0])
    del lines[2]
    write_lines(log[0], lines)

    failure = verify_files(log).failure

    assert (failure.path, failure.line) == (str(log[0]), 3)
    assert "deleted or moved" in failure.problem


def test_swapping_two_lines_names_the_first_out_of_place(log):
    lines = lines_of(log[2])
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(log[2], lines)

    failure = verify_files(log).failure

    assert (failure.path, failure.line) == (str(log[2]), 3)


def test_an_inserted_record_with_a_valid_hash_of_its_own_is_found(log):
    lines = lines_of(log[1])
    _, place = unseal(lines[2])
    forged, _ = seal({"event.action": "http-request", "n": 99}, ChainHead(place.seq - 1, "f" * 64))
    lines.insert(3, forged)
    write_lines(log[1], lines)

    failure = verify_files(log).failure

    assert (failure.path, failure.line) == (str(log[1]), 4)
    assert "out of order, or a record was inserted" in failure.problem


def test_a_rewritten_and_rehashed_record_breaks_the_link_to_the_next(log):
    lines = lines_of(log[1])
    record = unseal(lines[2])[0]
    previous = unseal(lines[1])[1]
    body = {k: v for k, v in record.items() if not k.startswith("citygate.chain.")} | {"n": 42}
    lines[2], _ = seal(body, previous)  # a consistent hash of its own...
    write_lines(log[1], lines)

    failure = verify_files(log).failure

    # ...but the next record still names the original's hash.
    assert (failure.path, failure.line) == (str(log[1]), 4)
    assert "does not chain" in failure.problem


def test_a_torn_tail_is_named_and_everything_before_it_verifies(log):
    data = log[2].read_bytes()
    log[2].write_bytes(data[: len(data) - 40])

    report = verify_files(log)

    assert not report.ok
    assert (report.failure.path, report.failure.line) == (str(log[2]), 6)
    assert "torn tail" in report.failure.problem
    assert report.records == 6 + 6 + 5


def test_records_cut_from_the_end_of_a_rotated_file_are_found(log):
    write_lines(log[0], lines_of(log[0])[:-2])

    failure = verify_files(log).failure

    assert (failure.path, failure.line) == (str(log[0]), 5)
    assert "missing from the end" in failure.problem


def test_removing_the_first_records_of_a_file_is_found(log):
    write_lines(log[1], lines_of(log[1])[2:])

    failure = verify_files(log).failure

    assert (failure.path, failure.line) == (str(log[1]), 1)
    assert "does not begin with its audit-file-start record" in failure.problem


def test_a_missing_file_in_the_middle_is_found(log):
    failure = verify_files([log[0], log[2]]).failure

    assert (failure.path, failure.line) == (str(log[2]), 1)
    assert "a file is missing" in failure.problem


def test_a_torn_tail_the_next_file_acknowledges_verifies_with_a_note(tmp_path):
    # What the writer does after a crash: the torn file is set aside, the new one says so.
    folder = tmp_path / "log"
    first, _ = build_log(folder, [3, 0])
    data = first.read_bytes()
    first.write_bytes(data + data.splitlines(keepends=True)[1][:30])  # a record cut mid-write
    last_line = lines_of(first)[-2]
    head = unseal(last_line)[1]
    header = state_record(
        FILE_START, AT, previous_file=first.name, previous_records=4, previous_torn=True, reason="torn"
    )
    line, _ = seal(header, head)
    (folder / ACTIVE_NAME).write_bytes(line)

    report = verify_files(log_files(folder))

    assert report.ok, report.failure
    assert any("incomplete record the writer left" in note for note in report.notes)


def test_a_rewritten_chain_is_found_only_against_a_published_anchor(log):
    # Rewrite from seq 8 on: every hash recomputed, so the chain alone still holds.
    lines = [line for path in log for line in lines_of(path)]
    anchor = unseal(lines[-1])[1]  # the head, as syslog received it
    head = unseal(lines[6])[1]
    rewritten = lines[:7]
    for line in lines[7:]:
        record = {k: v for k, v in unseal(line)[0].items() if not k.startswith("citygate.chain.")}
        if record.get("n") == 3:
            record["n"] = 33
        if record.get("event.action") == FILE_START:
            record["citygate.audit.previous_records"] = 6
        new, head = seal(record, head)
        rewritten.append(new)
    write_lines(log[0], rewritten[:6])
    write_lines(log[1], rewritten[6:12])
    write_lines(log[2], rewritten[12:])

    assert verify_files(log).ok
    report = verify_files(log, {None: {anchor.seq: anchor.hash}})

    assert not report.ok
    assert "anchor" in report.failure.problem


def test_records_cut_from_the_end_of_the_newest_file_are_found_against_an_anchor(log):
    anchor = unseal(lines_of(log[2])[-1])[1]
    write_lines(log[2], lines_of(log[2])[:-2])

    assert verify_files(log).ok  # the limit the README states: nothing follows to notice
    failure = verify_files(log, {None: {anchor.seq: anchor.hash}}).failure

    assert failure is not None and "removed from the end" in failure.problem


def test_a_line_that_is_not_a_record_is_damaged():
    with pytest.raises(Damaged):
        unseal(b'{"hello":"world"}\n')


# --- gaps the writer marked, and chains that start late ---------------------------------------


def append_sealed(path: Path, record: dict, head: ChainHead) -> ChainHead:
    line, head = seal(record, head)
    path.write_bytes(path.read_bytes() + line)
    return head


def last_head(path: Path) -> ChainHead:
    return unseal(lines_of(path)[-1])[1]


def test_a_gap_the_writer_marked_fails_with_its_range_and_the_chain_is_checked_on_past_it(tmp_path):
    (active,) = build_log(tmp_path / "log", [3])
    head = last_head(active)  # seq 4
    gap = state_record(
        GAP, AT, missing_first=5, missing_last=7, missing_records=3, reason="the disk was full"
    )
    head = append_sealed(active, gap, ChainHead(head.seq + 3, head.hash))  # seq 8
    append_sealed(active, {"event.action": "http-request", "n": 9}, head)

    report = verify_files([active], whole=True)

    assert not report.ok and report.failure is None
    assert [str(gap) for gap in report.gaps] == [
        f"{active}:5: seq 5-7 are missing: 3 record(s) the writer dropped (the disk was full)"
    ]
    assert report.records == 6 and report.head is not None and report.head.seq == 9


def test_a_gap_record_that_does_not_match_the_skipped_numbers_fails(tmp_path):
    (active,) = build_log(tmp_path / "log", [3])
    head = last_head(active)
    gap = state_record(GAP, AT, missing_first=5, missing_last=6, missing_records=2, reason="x")
    append_sealed(active, gap, ChainHead(head.seq + 3, head.hash))  # skips 3 numbers, names 2

    report = verify_files([active], whole=True)

    assert report.failure is not None and "does not follow seq 4" in report.failure.problem


def test_a_folder_whose_chain_starts_after_a_file_nobody_removed_fails_naming_the_range(tmp_path):
    files = build_log(tmp_path / "log", [5, 5])
    files[0].unlink()  # the old active file or folder deleted: the writer went on in a new one

    whole = verify_files(log_files(tmp_path / "log"), whole=True)
    named = verify_files(log_files(tmp_path / "log"))

    assert whole.failure is not None
    assert str(whole.failure) == (
        f"{files[1]}:1: seq 1-6 are missing: the chain starts at seq 7, after {files[0].name}, "
        "which is not here and which no retention record says was removed (the file or its "
        "folder was deleted, or the file was cut)"
    )
    assert named.ok  # files named one by one may start anywhere: noted, not failed
    assert any("(not checked)" in note for note in named.notes)


def test_a_chain_that_starts_after_files_retention_removed_verifies(tmp_path):
    files = build_log(tmp_path / "log", [5, 5])
    files[0].unlink()
    retention = state_record(RETENTION, AT, removed_files=[files[0].name])
    append_sealed(files[1], retention, last_head(files[1]))

    report = verify_files(log_files(tmp_path / "log"), whole=True)

    assert report.ok, report.failure
    assert any("a retention record says was removed" in note for note in report.notes)


def test_a_file_emptied_and_written_on_names_the_records_missing_from_its_beginning(tmp_path):
    (active,) = build_log(tmp_path / "log", [5])
    write_lines(active, lines_of(active)[3:])  # seq 1-3 cut off

    report = verify_files([active], whole=True)

    assert report.failure is not None and report.failure.line == 1
    assert "seq 1-3 are missing" in report.failure.problem
