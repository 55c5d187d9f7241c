"""The main host's SQLite directory and the remote host's on-disk call records (B4)."""
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from upbx.host.directory import Directory, DirectoryError
from upbx.host.records import RecordStore

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def directory(tmp_path):
    with Directory(str(tmp_path / "main.sqlite")) as d:
        yield d


def record(uid, **extra):
    value = {"uid": uid, "origin": "north", "caller": "201", "callee": "301", "path": "direct",
             "started_ms": 1000, "answered_ms": 3000, "ended_ms": 63000, "cause": "normal", "setup_ms": 180}
    value.update(extra)
    return value


def test_sites_hosts_and_extensions_round_trip_through_the_file(tmp_path):
    path = str(tmp_path / "main.sqlite")
    with Directory(path) as d:
        d.add_site("north", uplink_kbps=512, local_call_quota=2)
        d.add_site("farm", local_calls=False)
        host_secret = d.add_remote_host("north-pi", "north")
        ext_secret = d.add_extension("201", "north", name="Front desk")
        d.add_extension("9", "farm")
    with Directory(path) as d:
        assert [(s.name, s.uplink_kbps, s.local_calls, s.local_call_quota) for s in d.sites()] == [
            ("farm", 0, False, 0), ("north", 512, True, 2)]
        host = d.remote_host("north-pi")
        assert (host.name, host.site, host.secret) == ("north-pi", "north", host_secret)
        assert len(host_secret) == 16 and len(ext_secret) == 16 and host_secret != ext_secret
        ext = d.extension("201")
        assert (ext.number, ext.site, ext.name, ext.secret, ext.barred) == ("201", "north", "Front desk",
                                                                            ext_secret, False)
        assert [e.number for e in d.extensions()] == ["9", "201"]
        assert [e.number for e in d.extensions("farm")] == ["9"]
        assert d.site_of_extension("201") == "north" and d.site_of_extension("555") is None
        assert d.remote_host_of_site("north").name == "north-pi" and d.remote_host_of_site("farm") is None
        assert d.remote_host("nope") is None and d.extension("555") is None
        assert d.remote_hosts()[0]._asdict()["site"] == "north"


def test_file_database_uses_wal(directory):
    assert directory.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_database():
    with Directory(":memory:") as d:
        d.add_site("a")
        assert d.sites()[0].name == "a"


def test_refusals_are_clear_and_change_nothing(directory):
    directory.add_site("north")
    directory.add_remote_host("pi", "north")
    directory.add_extension("201", "north")
    before = (directory.sites(), directory.remote_hosts(), directory.extensions(), directory.sysinfo())
    refusals = [
        (lambda: directory.add_site("north"), "site 'north' already exists"),
        (lambda: directory.add_site("bad name"), "bad site name 'bad name'"),
        (lambda: directory.add_site("x", uplink_kbps=-1), "bad uplink_kbps -1"),
        (lambda: directory.add_extension("201", "north"), "extension 201 already exists"),
        (lambda: directory.add_extension("20a", "north"), "bad extension number '20a'"),
        (lambda: directory.add_extension("301", "south"), "unknown site 'south'"),
        (lambda: directory.add_remote_host("pi2", "north"), "site 'north' already has remote host 'pi'"),
        (lambda: directory.add_remote_host("pi", "north"), "remote host 'pi' already exists"),
        (lambda: directory.add_remote_host("main", "north"), "remote host name 'main' is reserved"),
        (lambda: directory.remove_site("north"), "site 'north' still has 1 remote host(s) and 1 extension(s)"),
        (lambda: directory.remove_site("south"), "unknown site 'south'"),
        (lambda: directory.remove_extension("555"), "unknown extension '555'"),
        (lambda: directory.remove_remote_host("x"), "unknown remote host 'x'"),
        (lambda: directory.set_barred("555", True), "unknown extension '555'"),
    ]
    for change, message in refusals:
        with pytest.raises(DirectoryError) as info:
            change()
        assert str(info.value).startswith(message)
    assert (directory.sites(), directory.remote_hosts(), directory.extensions(), directory.sysinfo()) == before


def test_removing_in_order(directory):
    directory.add_site("north")
    directory.add_remote_host("pi", "north")
    directory.add_extension("201", "north")
    directory.remove_extension("201")
    directory.remove_remote_host("pi")
    directory.remove_site("north")
    assert directory.sites() == [] and directory.remote_hosts() == [] and directory.extensions() == []


def test_barring(directory):
    directory.add_site("north")
    directory.add_extension("201", "north")
    directory.set_barred("201", True)
    assert directory.extension("201").barred is True
    directory.set_barred("201", False)
    assert directory.extension("201").barred is False


def test_call_record_uploaded_twice_is_stored_once(directory):
    assert directory.add_call_record(record("u1")) is True
    assert directory.add_call_record(record("u1", cause="other")) is False
    assert directory.add_call_record(record("u2", origin="main", path="relay", answered_ms=None)) is True
    rows = directory.call_records()
    assert [(r.uid, r.origin, r.path, r.cause) for r in rows] == [("u2", "main", "relay", "normal"),
                                                                  ("u1", "north", "direct", "normal")]
    assert rows[0].answered_ms is None and rows[1].setup_ms == 180
    assert [r.uid for r in directory.call_records(limit=1)] == ["u2"]


def test_call_record_validation(directory):
    for bad, message in [({"uid": "x"}, "without origin"), (record(""), "without uid"),
                         (record("x", path="teleport"), "path 'teleport'"),
                         (record("x", colour="red"), "unknown call record field(s): colour")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            directory.add_call_record(bad)
    assert directory.call_records() == []


def test_sysinfo_is_versioned_and_directory_changes_bump_it(directory):
    assert directory.sysinfo() == (0, {})
    assert directory.set_sysinfo("announcement", "Closed Monday") == 1
    directory.set_sysinfo("settings.ring_volume", "5")
    assert directory.sysinfo() == (2, {"announcement": "Closed Monday", "settings": {"ring_volume": "5"}})
    directory.add_site("north")
    directory.add_extension("201", "north")
    version, data = directory.sysinfo()
    assert version == 4 and data["announcement"] == "Closed Monday"
    directory.set_sysinfo("settings.ring_volume", None)
    assert directory.sysinfo() == (5, {"announcement": "Closed Monday"})
    with pytest.raises(DirectoryError, match="unknown sysinfo key 'directory'"):
        directory.set_sysinfo("directory", "x")


def test_admin_change_seen_by_a_daemon_holding_the_database_open(tmp_path):
    path = str(tmp_path / "main.sqlite")
    daemon = Directory(path)
    admin = Directory(path)
    version = daemon.sysinfo()[0]
    admin.add_site("north")
    admin.add_extension("201", "north")
    assert daemon.sysinfo()[0] == version + 2
    assert daemon.extension("201").site == "north"
    daemon.close()
    admin.close()


# The remote host's RecordStore

def test_record_store_pending_until_uploaded(tmp_path):
    path = str(tmp_path / "remote.sqlite")
    with RecordStore(path) as store:
        assert store.add(record("a")) is True
        assert store.add(record("b")) is True
        assert store.add(record("a")) is False
        assert [r["uid"] for r in store.pending()] == ["a", "b"]
        store.mark_uploaded(["a", "nonexistent"])
    with RecordStore(path) as store:
        assert [r["uid"] for r in store.pending()] == ["b"]
        assert store.all() == [record("a"), record("b")]
        assert len(store) == 2
        with pytest.raises(ValueError):
            store.add({"caller": "1"})


def test_records_uploaded_twice_reach_the_main_host_once(tmp_path):
    """A remote host that loses the acknowledgement uploads again; the main host keeps one copy."""
    store = RecordStore(str(tmp_path / "remote.sqlite"))
    main = Directory(str(tmp_path / "main.sqlite"))
    for i in range(3):
        store.add(record("north-%d" % i))
    for r in store.pending():  # upload, acknowledgement lost
        main.add_call_record(dict(r, origin="north"))
    stored = [r["uid"] for r in store.pending() if main.add_call_record(dict(r, origin="north"))]
    assert stored == []
    store.mark_uploaded(r["uid"] for r in store.pending())
    assert store.pending() == [] and len(main.call_records()) == 3
    store.close()
    main.close()


WRITER = """
import sys, time
sys.path.insert(0, %r)
from host.records import RecordStore
store = RecordStore(sys.argv[1])
i = 0
while True:
    store.add({"uid": "rec-%%d" %% i, "caller": "201", "callee": "202", "path": "local"})
    print(i, flush=True)
    i += 1
    time.sleep(0.002)
"""


def test_record_store_survives_kill_9_of_its_writer(tmp_path):
    path = str(tmp_path / "remote.sqlite")
    writer = subprocess.Popen([sys.executable, "-c", WRITER % str(ROOT), path], stdout=subprocess.PIPE, text=True)
    try:
        acknowledged = -1
        deadline = time.monotonic() + 20
        while acknowledged < 50 and time.monotonic() < deadline:
            acknowledged = int(writer.stdout.readline())
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert acknowledged >= 50
    with RecordStore(path) as store:
        uids = [r["uid"] for r in store.pending()]
    # every record the writer reported as added is there, in order, and nothing is torn
    assert len(uids) >= acknowledged + 1
    assert uids == ["rec-%d" % i for i in range(len(uids))]
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_call_record_upload_fits_one_message_and_comes_back_whole():
    from upbx.host.records import decode_upload, encode_upload
    record = {"uid": "0123456789abcdef", "origin": "site-a", "caller": "123456789012345",
              "callee": "987654321098765", "path": "local", "started_ms": 1795000000000,
              "answered_ms": 1795000000300, "ended_ms": 1795003600000, "cause": "unknown extension",
              "setup_ms": 65535, "dialled": "123456789012346", "linked": "fedcba9876543210"}
    data = encode_upload(record)
    assert len(data) <= 255
    sites = {"123456789012345": "a"}.get    # the callee is no longer in the directory: accepted
    now = 1795003600000
    assert decode_upload(data, "site-a", "a", sites, now) == record
    for bad in (b"{}", b"[1,2]", b"not json", b'["zz",1,2,3,4,5,6,7,8]'):
        try:
            decode_upload(bad, "site-a", "a", sites, now)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted %r" % bad)
