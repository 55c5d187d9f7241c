"""`upbx admin`: the operator's commands against a real SQLite file."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from upbx.host.config import load_remote_config
from upbx.host.directory import Directory
from upbx.tools.cli import main as upbx

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def admin(tmp_path, capsys):
    """Run `upbx admin --database DB ...`; returns (exit code, stdout, stderr)."""
    database = str(tmp_path / "main.sqlite")

    def run(*argv):
        code = upbx(["admin", "--database", database] + list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    run.database = database
    return run


def ok(result):
    code, out, err = result
    assert code == 0, err
    return out


def test_real_command_line_provisions_a_site_and_its_remote_host(tmp_path):
    """The installed entry point, as an operator types it; the printed secret works in remote.toml."""
    (tmp_path / "main.toml").write_text('[main]\ndatabase = "db.sqlite"\n')
    command = [sys.executable, "-m", "upbx.tools.cli", "admin", "--config", str(tmp_path / "main.toml")]
    run = lambda *a: subprocess.run(command + list(a), cwd=ROOT, capture_output=True, text=True)
    assert run("site", "add", "north", "--uplink-kbps", "512").returncode == 0
    done = run("host", "add", "north-pi", "--site", "north")
    assert done.returncode == 0 and "shown only this once" in done.stderr
    secret = done.stdout.strip()
    (tmp_path / "remote.toml").write_text('[remote]\nname = "north-pi"\nsecret = "%s"\nmain = "198.18.0.1:4569"\n'
                                          % secret)
    with Directory(str(tmp_path / "db.sqlite")) as d:
        assert d.remote_host("north-pi").secret == load_remote_config(str(tmp_path / "remote.toml")).secret
    refused = run("ext", "add", "201", "--site", "south")
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", "upbx admin: unknown site 'south'\n")


def test_sites(admin):
    ok(admin("site", "add", "north", "--uplink-kbps", "512", "--local-call-quota", "3"))
    ok(admin("site", "add", "farm", "--no-local-calls"))
    out = ok(admin("site", "list"))
    assert out.splitlines()[0].split() == ["SITE", "UPLINK_KBPS", "LOCAL_CALLS", "QUOTA", "REMOTE_HOST",
                                           "EXTENSIONS"]
    assert out.splitlines()[1].split() == ["farm", "0", "no", "0", "-", "0"]
    assert out.splitlines()[2].split() == ["north", "512", "yes", "3", "-", "0"]
    rows = json.loads(ok(admin("site", "list", "--json")))
    assert rows[1] == {"name": "north", "uplink_kbps": 512, "local_calls": True, "local_call_quota": 3,
                       "remote_host": None, "extensions": 0}
    assert ok(admin("site", "remove", "farm")) == "site 'farm' removed\n"
    assert [r["name"] for r in json.loads(ok(admin("site", "list", "--json")))] == ["north"]


def test_site_without_remote_host_takes_extensions(admin):
    """Phones of a site with no remote host register straight to the main host."""
    ok(admin("site", "add", "kiosk"))
    secret = ok(admin("ext", "add", "700", "--site", "kiosk")).strip()
    assert len(bytes.fromhex(secret)) == 16
    assert Directory(admin.database).extension("700").secret.hex() == secret


def test_hosts_and_extensions(admin):
    ok(admin("site", "add", "north"))
    added = json.loads(ok(admin("host", "add", "pi", "--site", "north", "--json")))
    assert added["name"] == "pi" and len(added["secret"]) == 32
    ext = json.loads(ok(admin("ext", "add", "201", "--site", "north", "--name", "Front desk", "--json")))
    assert ext["number"] == "201" and ext["name"] == "Front desk"
    with Directory(admin.database) as d:
        assert d.remote_host("pi").secret.hex() == added["secret"]
        assert d.extension("201").secret.hex() == ext["secret"]
    assert json.loads(ok(admin("host", "list", "--json"))) == [{"name": "pi", "site": "north"}]
    assert ok(admin("host", "list")).split() == ["REMOTE_HOST", "SITE", "pi", "north"]
    ok(admin("ext", "add", "202", "--site", "north"))
    ok(admin("ext", "bar", "202"))
    listed = ok(admin("ext", "list", "--site", "north"))
    assert [line.split() for line in listed.splitlines()] == [
        ["NUMBER", "SITE", "NAME", "BARRED"], ["201", "north", "Front", "desk", "no"], ["202", "north", "yes"]]
    assert secret_free(listed + ok(admin("host", "list")) + ok(admin("ext", "list", "--json")), added, ext)
    ok(admin("ext", "unbar", "202"))
    assert json.loads(ok(admin("ext", "list", "--json")))[1]["barred"] is False
    ok(admin("ext", "remove", "202"))
    ok(admin("host", "remove", "pi"))
    assert json.loads(ok(admin("host", "list", "--json"))) == []
    assert [e["number"] for e in json.loads(ok(admin("ext", "list", "--json")))] == ["201"]


def secret_free(text, *issued):
    return all(item["secret"] not in text for item in issued)


@pytest.mark.parametrize("argv, message", [
    (["ext", "add", "301", "--site", "south"], "unknown site 'south'"),
    (["ext", "add", "201", "--site", "north"], "extension 201 already exists"),
    (["ext", "add", "2x1", "--site", "north"], "bad extension number '2x1': use 1 to 15 digits"),
    (["host", "add", "pi2", "--site", "north"], "site 'north' already has remote host 'pi'"),
    (["site", "add", "north"], "site 'north' already exists"),
    (["site", "add", "west", "--uplink-kbps", "-5"], "bad uplink_kbps -5: use a whole number >= 0"),
    (["site", "remove", "north"], "site 'north' still has 1 remote host(s) and 1 extension(s); remove them first"),
    (["ext", "bar", "999"], "unknown extension '999'"),
    (["ext", "list", "--site", "south"], "unknown site 'south'"),
    (["sysinfo", "set", "time", "now"], "unknown sysinfo key 'time': use announcement, dial_plan, "
                                        "firmware_version or settings.NAME"),
    (["calls", "--limit", "0"], "bad --limit 0: use a number >= 1"),
])
def test_errors_are_one_line_exit_1_and_change_nothing(admin, argv, message):
    ok(admin("site", "add", "north"))
    ok(admin("host", "add", "pi", "--site", "north"))
    ok(admin("ext", "add", "201", "--site", "north"))
    before = dump(admin.database)
    code, out, err = admin(*argv)
    assert (code, out, err) == (1, "", "upbx admin: %s\n" % message)
    assert dump(admin.database) == before


def dump(path):
    db = Directory(path)
    try:
        return (db.sites(), db.remote_hosts(), db.extensions(), db.sysinfo(), db.call_records())
    finally:
        db.close()


def test_calls(admin):
    with Directory(admin.database) as d:
        d.add_call_record({"uid": "a", "origin": "north", "caller": "201", "callee": "301", "path": "direct",
                           "started_ms": 1700000000000, "answered_ms": 1700000002000,
                           "ended_ms": 1700000062500, "cause": "normal", "setup_ms": 150})
        d.add_call_record({"uid": "b", "origin": "main", "caller": "700", "callee": "201", "path": "relay",
                           "started_ms": 1700000100000, "cause": "no answer", "setup_ms": 90})
    lines = ok(admin("calls")).splitlines()
    assert lines[0].split() == ["STARTED", "(UTC)", "ORIGIN", "CALLER", "CALLEE", "PATH", "SETUP_MS", "TALK_S",
                                "CAUSE", "DIALLED", "UID", "LINKED"]
    assert lines[1].split() == ["2023-11-14", "22:15:00", "main", "700", "201", "relay", "90", "-", "no", "answer",
                                "-", "b", "-"]
    assert lines[2].split() == ["2023-11-14", "22:13:20", "north", "201", "301", "direct", "150", "60.5", "normal",
                                "-", "a", "-"]
    records = json.loads(ok(admin("calls", "--limit", "1", "--json")))
    assert len(records) == 1 and records[0]["uid"] == "b" and records[0]["answered_ms"] is None


def test_sysinfo(admin):
    assert ok(admin("sysinfo", "show")) == "version 0\n"
    assert ok(admin("sysinfo", "set", "announcement", "Closed on Monday")) == \
        "announcement set; sysinfo version 1\n"
    ok(admin("sysinfo", "set", "firmware_version", "0.1.0"))
    ok(admin("sysinfo", "set", "settings.ring_volume", "5"))
    assert ok(admin("sysinfo", "show")) == ("version 3\nannouncement = Closed on Monday\n"
                                            "firmware_version = 0.1.0\nsettings.ring_volume = 5\n")
    ok(admin("sysinfo", "unset", "announcement"))
    assert json.loads(ok(admin("sysinfo", "show", "--json"))) == {
        "version": 4, "data": {"firmware_version": "0.1.0", "settings": {"ring_volume": "5"}}}


def test_config_file_selects_the_database_and_config_errors_are_reported(tmp_path, capsys):
    (tmp_path / "main.toml").write_text('[main]\ndatabase = "x.sqlite"\n')
    assert upbx(["admin", "--config", str(tmp_path / "main.toml"), "site", "add", "north"]) == 0
    assert Directory(str(tmp_path / "x.sqlite")).site("north").name == "north"
    (tmp_path / "bad.toml").write_text("[main]\nlisten = 4569\n")
    capsys.readouterr()
    assert upbx(["admin", "--config", str(tmp_path / "bad.toml"), "site", "list"]) == 1
    assert capsys.readouterr().err == ("upbx admin: %s: key 'main.listen': expected \"HOST:PORT\", got 4569\n"
                                       % (tmp_path / "bad.toml"))
    (tmp_path / "mem.toml").write_text('[main]\ndatabase = ":memory:"\n')
    assert upbx(["admin", "--config", str(tmp_path / "mem.toml"), "site", "list"]) == 1


def test_unopenable_database_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")   # a missing directory is made (0700); under a file it cannot be
    assert upbx(["admin", "--database", str(tmp_path / "file" / "dir.sqlite"), "site", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("upbx admin: cannot open database ") and err.count("\n") == 1


def test_installed_upbx_script_when_present(tmp_path):
    script = shutil.which("upbx", path=str(pathlib.Path(sys.executable).parent))
    if not script:
        pytest.skip("upbx console script not installed; run `make test`")  # a failure under CI (conftest.py)
    done = subprocess.run([script, "admin", "--database", str(tmp_path / "d.sqlite"), "site", "list", "--json"],
                          capture_output=True, text=True)
    assert (done.returncode, json.loads(done.stdout)) == (0, [])


def test_forward_dnd_and_features_of_an_extension(admin):
    ok(admin("site", "add", "a"))
    for number in ("101", "102"):
        ok(admin("ext", "add", number, "--site", "a"))
    assert ok(admin("ext", "forward", "101", "noanswer", "102", "--after", "20")).strip() == \
        "extension 101: forward noanswer to 102 after 20 s"
    assert ok(admin("ext", "dnd", "102", "on")).strip() == "extension 102: do not disturb on"
    shown = json.loads(ok(admin("ext", "features", "101", "--json")))
    assert shown == {"number": "101", "dnd": False, "always": None, "busy": None, "noanswer": "102", "noanswer_s": 20,
                     "waiting": True, "voicemail": False}
    for argv, error in ((("101", "busy"), "which extension?"), (("101", "always", "999"), "unknown extension '999'"),
                        (("101", "always", "101"), "cannot forward to itself"),
                        (("101", "noanswer", "102", "--after", "2"), "bad no-answer time 2: 5 to 120 seconds"),
                        (("101", "busy", "102", "--after", "9"), "--after is for noanswer only"),
                        (("101", "off", "102"), "takes no target"), (("999", "always", "102"), "unknown extension")):
        code, out, err = admin("ext", "forward", *argv)
        assert code == 1 and error in err and not out, (argv, err)
    ok(admin("ext", "forward", "101", "off"))
    with Directory(admin.database) as d:
        assert d.features("101")["noanswer"] is None and d.features("102")["dnd"] is True


def test_music_on_hold_is_set_from_a_wav_and_a_bad_wav_is_refused(admin, tmp_path):
    import wave
    good, stereo = tmp_path / "good.wav", tmp_path / "stereo.wav"
    for path, channels, seconds in ((good, 1, 1.0), (stereo, 2, 0.1)):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x10\x00" * int(8000 * seconds * channels))
    assert ok(admin("moh", "show")).strip() == "music on hold: default (1.6 s), version 0"
    assert "good.wav (1.0 s), version 1" in ok(admin("moh", "set", str(good)))
    code, out, err = admin("moh", "set", str(stereo))
    assert code == 1 and "stereo.wav: music on hold must be 8000 Hz, mono, 16-bit" in err
    with Directory(admin.database) as d:
        assert d.music_on_hold()[:2] == (1, "good.wav") and len(d.music_on_hold()[2]) == 8000
    assert "the generated default, version 2" in ok(admin("moh", "unset"))
