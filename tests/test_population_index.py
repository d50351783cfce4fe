"""The fingerprint index: one SQLite file, versioned, atomic, many readers and one writer, portable by export/import."""

import multiprocessing
import os
import signal
import sqlite3
import time

import pytest
import torch

from solarforensics.errors import IndexFileError, NotFoundError
from solarforensics.population.index import SCHEMA_VERSION, Index
from solarforensics.population.record import Fingerprint


def fingerprint(spec: str, value: float = 1.0) -> Fingerprint:
    meta = {"source": {"repo": f"org/{spec}", "resolved_commit": "c" * 40, "endpoint": "http://127.0.0.1:1"},
            "arch": {"family": "llama", "num_layers": 2}, "hub": {"base_model": None}}
    return Fingerprint(spec, meta, {"embed": torch.full((4, 8), value, dtype=torch.float16)})


def test_a_new_index_records_its_schema_and_round_trips_a_fingerprint(tmp_path):
    path = tmp_path / "index.sqlite"
    with Index(path) as index:
        index.put([fingerprint("m1", 2.0).to_entry()])
    with Index(path) as index:
        (entry,) = index.entries()
        back = Fingerprint.from_entry(entry)
    assert back.spec == "m1" and back.meta["arch"]["family"] == "llama"
    assert torch.equal(back.arrays["embed"], torch.full((4, 8), 2.0, dtype=torch.float16))
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION


def test_an_index_from_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(IndexFileError, match="newer than this solarforensics"):
        Index(path)
    assert path.read_bytes() == before


def test_a_corrupt_or_foreign_file_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexFileError, match="unreadable"):
        Index(junk)
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(IndexFileError, match="not a solarforensics index"):
        Index(foreign)
    with pytest.raises(NotFoundError):
        Index(tmp_path / "absent.sqlite", create=False)


def test_a_truncated_index_fails_cleanly(tmp_path):
    path = tmp_path / "index.sqlite"
    with Index(path) as index:
        index.put([fingerprint(f"m{i}").to_entry() for i in range(20)])
        index.export(tmp_path / "copy.sqlite")
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 3])
    with pytest.raises(IndexFileError):
        with Index(copy) as index:
            index.entries()


def _hold_write_lock(path, ready, seconds):
    index = Index(path)
    with index.write() as db:
        db.execute("INSERT INTO fingerprints VALUES ('held', NULL, NULL, NULL, NULL, 1, 'now', '{}', x'00', x'')")
        ready.set()
        time.sleep(seconds)


def test_a_second_writer_waits_then_fails_with_one_line_and_readers_still_read(tmp_path, monkeypatch):
    path = tmp_path / "index.sqlite"
    with Index(path) as index:
        index.put([fingerprint("kept").to_entry()])
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_write_lock, args=(path, ready, 2.5))
    holder.start()
    try:
        assert ready.wait(10)
        monkeypatch.setattr("solarforensics.population.index.BUSY_TIMEOUT_S", 0.5)
        with Index(path) as reader:
            assert reader.specs() == ["kept"]  # WAL: readers are not blocked by the writer
        writer = Index(path)
        writer._db.execute("PRAGMA busy_timeout = 500")
        with pytest.raises(IndexFileError, match="being written by another process"):
            writer.put([fingerprint("second").to_entry()])
        writer.close()
    finally:
        holder.join()
    with Index(path) as index:
        assert index.specs() == ["held", "kept"]


def _killed_mid_write(path):
    index = Index(path)
    with index.write() as db:
        for i in range(200):
            e = fingerprint(f"half{i}").to_entry()
            db.execute("INSERT INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (e.spec, e.repo, e.commit, e.endpoint, e.family, e.version, e.created_at, "{}", e.data,
                        e.prefilter))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_writer_leaves_the_last_committed_state(tmp_path):
    path = tmp_path / "index.sqlite"
    with Index(path) as index:
        index.put([fingerprint("committed").to_entry()])
    child = multiprocessing.Process(target=_killed_mid_write, args=(path,))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    with Index(path) as index:
        assert index.specs() == ["committed"]
        assert index._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_export_is_one_file_that_import_merges_into_another_index(tmp_path):
    with Index(tmp_path / "team.sqlite") as team:
        team.put([fingerprint("base-a").to_entry(), fingerprint("base-b", 3.0).to_entry()])
        assert team.export(tmp_path / "shared.sqlite") == 2
    with Index(tmp_path / "mine.sqlite") as mine:
        mine.put([fingerprint("mine").to_entry(), fingerprint("base-b", 9.0).to_entry()])
        assert mine.import_from(tmp_path / "shared.sqlite") == 2
        assert mine.specs() == ["base-a", "base-b", "mine"]
        imported = Fingerprint.from_entry(mine.get("base-b"))
        assert float(imported.arrays["embed"][0, 0]) == 3.0  # the imported copy wins
    assert not list(tmp_path.glob(".*.tmp"))


def test_remove_is_all_or_nothing(tmp_path):
    with Index(tmp_path / "i.sqlite") as index:
        index.put([fingerprint("a").to_entry(), fingerprint("b").to_entry()])
        assert index.remove(["a", "nope"]) == ["nope"]
        assert index.specs() == ["a", "b"]
        assert index.remove(["a"]) == []
        assert index.specs() == ["b"]
