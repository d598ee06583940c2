"""The SIEM spool on real files: oldest first, bounded, emptied once delivered, sent again from
where delivery stopped (in the same run and after a restart), and a torn tail cut off."""

import logging

import pytest

from citygate.proxy.audit.spool import POSITION_NAME, Spool
from citygate.proxy.audit.syslog_transport import octet_counted


def frames(first: int, count: int, size: int = 100) -> list[bytes]:
    return [
        octet_counted(f"<134>1 - - - - - - {n:06d}".encode().ljust(size, b"x"))
        for n in range(first, first + count)
    ]


def segments(spool: Spool) -> list[str]:
    return sorted(path.name for path in spool.directory.glob("*.spool"))


def drain(spool: Spool) -> list[bytes]:
    """Read everything and deliver it."""
    sent = []
    while spool.unread:
        batch = spool.read(1000)
        sent += [item.frame for item in batch]
        spool.delivered(batch[-1].end)
    return sent


def test_frames_come_back_oldest_first_and_the_folder_empties_once_all_are_delivered(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.append(frames(0, 30))
    spool.append(frames(30, 30))

    assert spool.held_bytes == 60 * 104 and spool.unread
    assert drain(spool) == frames(0, 60)
    assert spool.held_bytes == 0 and not spool.unread
    assert segments(spool) == [] and not (spool.directory / POSITION_NAME).exists()
    spool.append(frames(60, 2))  # and it fills again
    assert drain(spool) == frames(60, 2)
    spool.close()


def test_the_folder_is_private(tmp_path):
    spool = Spool(tmp_path / "audit" / "syslog-spool", max_bytes=1 << 20)
    spool.append(frames(0, 1))

    assert (tmp_path / "audit").stat().st_mode & 0o777 == 0o750  # made here, before the writer
    assert spool.directory.stat().st_mode & 0o777 == 0o750
    assert all(path.stat().st_mode & 0o777 == 0o640 for path in spool.directory.glob("*.spool"))
    spool.close()


def test_beyond_its_limit_the_newest_frames_are_refused_and_delivery_makes_room(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=64 * 1024)

    kept, why = spool.append(frames(0, 1000))

    assert kept == 64 * 1024 // 104 and spool.held_bytes <= 64 * 1024
    assert why is not None and "is full" in why and "spool_max_bytes" in why
    assert spool.append(frames(1000, 1)) == (0, why)
    first = spool.read(8 * 1024)  # a segment (4 KiB here) wholly delivered is deleted
    spool.delivered(first[-1].end)
    assert spool.held_bytes < 64 * 1024 - 4096
    assert spool.append(frames(1000, 1)) == (1, None)
    assert drain(spool) == frames(len(first), kept - len(first)) + frames(1000, 1)
    spool.close()


def test_frames_not_delivered_are_read_again_from_where_delivery_stopped(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.append(frames(0, 20))
    batch = spool.read(10_000)
    spool.delivered(batch[4].end)  # the collector took five, the connection then ended

    spool.rewind(batch[5].start)

    assert drain(spool) == frames(5, 15)
    spool.close()


def test_after_a_restart_delivery_goes_on_from_the_saved_place(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.append(frames(0, 20))
    batch = spool.read(10_000)
    spool.delivered(batch[9].end)
    spool.close()

    again = Spool(tmp_path / "spool", max_bytes=1 << 20)
    again.append(frames(20, 5))  # a new run appends to a segment of its own

    assert len(segments(again)) == 2
    assert drain(again) == frames(10, 15)
    again.close()


def test_a_second_process_cannot_use_the_same_spool(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)

    with pytest.raises(OSError, match="another process is using the SIEM spool"):
        Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.close()


def test_a_tail_a_crash_cut_short_is_cut_off_and_named(tmp_path, caplog):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.append(frames(0, 3))
    spool.close()
    [segment] = (tmp_path / "spool").glob("*.spool")
    with segment.open("ab") as handle:
        handle.write(frames(3, 1)[0][:50])  # the write a crash interrupted

    again = Spool(tmp_path / "spool", max_bytes=1 << 20)
    with caplog.at_level(logging.WARNING, logger="citygate.audit"):
        assert drain(again) == frames(0, 3)

    assert "the last 50 bytes" in caplog.text and segment.name in caplog.text
    assert again.held_bytes == 0 and segments(again) == []
    again.close()
