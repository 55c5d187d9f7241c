"""Over-the-air updates without a network (docs/operations.md, "Over-the-air updates"): the bundle
`upbx admin firmware add` stores, the rollout in the system information, and the handset's side of a
download (firmware/ota.py's TreeWriter, firmware/otaboot.py's slot choice and roll-back) run under the
MicroPython unix port on a directory standing in for its flash. The whole path through hosts and
phones is tests/test_netlab_ota.py.
"""
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from tests import esp32_images
from tests.support import ROOT, micropython_binary
from upbx.host import firmware
from upbx.host.directory import Directory


def tree(path, files):
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
        with open(os.path.join(path, rel), "wb") as f:
            f.write(data)
    return str(path)


FILES = {"common/wire.mpy": b"M\x06" + bytes(range(256)) * 3, "firmware/app.mpy": b"M\x06app" * 200,
         "firmware/audio/dsp.mpy": b"", "main.py": b"from firmware.otaboot import select\n",
         ".upbx-build": b"made by upbx build\n", "VERSION": b"3.1.4\n"}


def admin(db, *args):
    return subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-m", "upbx.tools.cli", "admin",
                           "--database", db, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_tree_is_packed_as_a_deterministic_ustar_without_what_stays_on_the_handset(tmp_path):
    """main.py stays (it chooses the slot), and the build's marker is not firmware."""
    kind, data = firmware.pack(tree(tmp_path / "a", FILES))
    again = firmware.pack(tree(tmp_path / "b", FILES))[1]
    assert kind == "files" and data == again     # no times, owners or order of the file system in it
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["VERSION", "common/wire.mpy", "firmware/app.mpy", "firmware/audio/dsp.mpy"]
        assert all(m.mtime == 0 and m.uid == 0 for m in members)
        assert tar.extractfile("firmware/app.mpy").read() == FILES["firmware/app.mpy"]
    assert firmware.bundle_version(str(tmp_path / "a"), data) == "3.1.4"


def test_admin_firmware_add_list_rollout_and_its_errors(tmp_path):
    db = str(tmp_path / "main.sqlite")
    for site in ("a", "b"):
        assert admin(db, "site", "add", site).returncode == 0
    bundle = tree(tmp_path / "build", FILES)
    out = admin(db, "firmware", "add", bundle, "--json")
    entry = json.loads(out.stdout)
    data = firmware.pack(bundle)[1]
    assert entry == {"version": "3.1.4", "kind": "files", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    again = admin(db, "firmware", "add", bundle)
    assert again.returncode == 1 and again.stderr == "upbx admin: firmware 3.1.4 already exists\n"
    assert admin(db, "firmware", "add", str(tmp_path / "nothing")).stderr == (
        "upbx admin: %s: no such file or directory\n" % (tmp_path / "nothing"))
    (tmp_path / "x.bin").write_bytes(b"\x00not an image")
    assert admin(db, "firmware", "add", str(tmp_path / "x.bin")).stderr == (
        "upbx admin: %s: not an ESP32 image (its first byte is not 0xE9)\n" % (tmp_path / "x.bin"))
    # what `upbx build --image esp32` writes: the flash image; of a board with OTA slots, the application is kept
    app = esp32_images.app_image(size=4000)
    (tmp_path / "ok.bin").write_bytes(esp32_images.flash_image("esp32", "partitions-4MiB-ota.csv", app))
    image = json.loads(admin(db, "firmware", "add", str(tmp_path / "ok.bin"), "--version", "img-1", "--json").stdout)
    assert image == {"version": "img-1", "kind": "image", "sha256": hashlib.sha256(app).hexdigest(), "size": len(app)}
    # MicroPython's default layout (one factory app), an application alone, a damaged one: refused
    (tmp_path / "factory.bin").write_bytes(esp32_images.flash_image("esp32", "partitions-4MiBplus.csv", app))
    r = admin(db, "firmware", "add", str(tmp_path / "factory.bin"))
    assert r.returncode == 1 and r.stderr.startswith(
        "upbx admin: %s: its partition table has no OTA partitions (nvs, phy_init, factory): its handsets cannot take "
        "an image over the air. A board that can says \"ota\": true" % (tmp_path / "factory.bin"))
    (tmp_path / "app.bin").write_bytes(app)
    assert admin(db, "firmware", "add", str(tmp_path / "app.bin")).stderr == (
        "upbx admin: %s: no partition table at 0x8000: an application alone is not enough; give the flash image "
        "`upbx build --image esp32 --board BOARD` wrote (out/BOARD.bin)\n" % (tmp_path / "app.bin"))
    damaged = bytearray((tmp_path / "ok.bin").read_bytes())
    damaged[-100] ^= 0x10
    (tmp_path / "damaged.bin").write_bytes(bytes(damaged))
    assert admin(db, "firmware", "add", str(tmp_path / "damaged.bin")).stderr == (
        "upbx admin: %s: the application at 0x10000 is damaged (its checksum or SHA-256 does not match)\n"
        % (tmp_path / "damaged.bin"))
    s3 = esp32_images.app_image("esp32s3", size=4000)
    (tmp_path / "s3.bin").write_bytes(esp32_images.flash_image("esp32s3", "partitions-8MiBplus-ota.csv", s3))
    assert json.loads(admin(db, "firmware", "add", str(tmp_path / "s3.bin"), "--version", "s3-1",
                            "--json").stdout)["size"] == len(s3)
    assert admin(db, "firmware", "add", bundle, "--version", "a b").stderr == (
        "upbx admin: bad version 'a b': 1 to 31 letters, digits and . - _ +\n")
    assert admin(db, "firmware", "rollout", "9.9", "--all").stderr == (
        "upbx admin: unknown firmware '9.9': add it first (upbx admin firmware add BUNDLE)\n")
    assert admin(db, "firmware", "rollout", "3.1.4", "--site", "z").stderr == "upbx admin: unknown site 'z'\n"
    assert admin(db, "firmware", "rollout", "3.1.4", "--all", "--percent", "0").stderr == (
        "upbx admin: bad --percent 0: 1 to 100\n")
    listed = json.loads(admin(db, "firmware", "list", "--json").stdout)
    assert [(r["version"], r["kind"]) for r in listed] == [("3.1.4", "files"), ("img-1", "image"), ("s3-1", "image")]
    with Directory(db) as d:
        before = d.sysinfo()[0]
    assert admin(db, "firmware", "rollout", "3.1.4", "--all").returncode == 0
    assert admin(db, "firmware", "rollout", "img-1", "--site", "b", "--percent", "30").returncode == 0
    with Directory(db) as d:
        version, info = d.sysinfo()
        assert version == before + 2
        assert info["firmware_rollout"] == {"a": {"version": "3.1.4", "percent": 100},
                                            "b": {"version": "img-1", "percent": 30}}
        store = firmware.FirmwareStore(d)
        assert store.data("3.1.4") == data
    status = json.loads(admin(db, "firmware", "status", "--json").stdout)
    assert status == [{"site": "a", "version": "3.1.4", "percent": 100}, {"site": "b", "version": "img-1", "percent": 30}]
    assert admin(db, "firmware", "stop", "--site", "a").returncode == 0
    assert json.loads(admin(db, "firmware", "status", "--json").stdout) == [
        {"site": "b", "version": "img-1", "percent": 30}]
    assert admin(db, "firmware", "stop", "--site", "a").stderr == "upbx admin: no rollout at site 'a'\n"
    assert admin(db, "firmware", "stop", "--all").returncode == 0
    assert admin(db, "firmware", "status", "--json").stdout.strip() == "[]"
    assert admin(db, "firmware", "stop", "--all").stderr == "upbx admin: no rollout to stop\n"
    with Directory(db) as d:
        assert "firmware_rollout" not in d.sysinfo()[1]


def test_a_percentage_chooses_the_same_phones_and_more_as_it_grows():
    entry = {"version": "5", "sha256": "ab" * 32, "size": 10, "kind": "files"}
    numbers = [str(n) for n in range(100, 120)]
    offers = {}
    for percent in (10, 50, 51, 100):
        info = {"firmware_rollout": {"a": {"version": "5", "percent": percent}}}
        offers[percent] = firmware.site_offer(info, "a", numbers, {"5": entry}.get)
    assert len(offers[10]["extensions"]) == 2 and len(offers[50]["extensions"]) == 10
    assert len(offers[51]["extensions"]) == 11                  # rounded up: a phone is not split
    assert set(offers[10]["extensions"]) < set(offers[50]["extensions"]) < set(offers[51]["extensions"])
    assert offers[100] == entry                                  # every phone: no list
    assert firmware.site_offer({"firmware_rollout": {"b": {"version": "5"}}}, "a", numbers, {"5": entry}.get) is None


HANDSET = r"""
import os, sys
sys.path.insert(0, ROOT)
os.chdir(FLASH)
from firmware.ota_download import TreeWriter
data = open(BUNDLE, "rb").read()
w = TreeWriter("ota/a")
for i in range(0, len(data), 250):
    w.write(data[i:i + 250])
w.close()
print("files", w.files)
try:
    w = TreeWriter("ota/b")
    w.write(BAD)
    print("accepted")
except ValueError as exc:
    print("refused", exc)
"""


def test_the_handset_unpacks_a_bundle_chunk_by_chunk_and_refuses_a_path_out_of_its_slot(tmp_path):
    kind, data = firmware.pack(tree(tmp_path / "build", FILES))
    (tmp_path / "bundle.tar").write_bytes(data)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("../main.py")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    flash = tmp_path / "flash"
    flash.mkdir()
    script = HANDSET.replace("ROOT", repr(str(ROOT))).replace("FLASH", repr(str(flash))).replace(
        "BUNDLE", repr(str(tmp_path / "bundle.tar"))).replace("BAD", repr(out.getvalue()))
    r = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["files 4", "refused bad path '../main.py' in the bundle"]
    for rel in ("VERSION", "common/wire.mpy", "firmware/app.mpy", "firmware/audio/dsp.mpy"):
        assert (flash / "ota" / "a" / rel).read_bytes() == FILES[rel]
    assert not (flash / "main.py").exists() and not (flash / "ota" / "b" / "main.py").exists()


BOOT = r"""
import sys
sys.path.insert(0, ROOT)
import os
os.chdir(FLASH)
from firmware.otaboot import select
main = select()
print("booted", getattr(main, "__name__", main), [p for p in sys.path if p.startswith("ota")])
"""


@pytest.mark.parametrize("boots", [0, 1])
def test_a_slot_on_trial_boots_once_then_the_handset_goes_back_to_the_previous(tmp_path, boots):
    flash = tmp_path / "flash"
    (flash / "ota" / "b").mkdir(parents=True)
    state = {"kind": "files", "slot": "ota/b", "version": "2", "trial": 1, "boots": boots,
             "previous": {"kind": "files", "slot": "ota/a", "version": "1"}}
    (flash / "ota.json").write_text(json.dumps(state))
    script = BOOT.replace("ROOT", repr(str(ROOT))).replace("FLASH", repr(str(flash)))
    r = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    after = json.loads((flash / "ota.json").read_text())
    if boots == 0:    # the first boot of the new firmware: on trial, guarded
        assert r.stdout.splitlines() == ["I ota booting firmware 2 from ota/b (on trial)", "booted _guarded ['ota/b']"]
        assert after == dict(state, boots=1)
    else:             # it booted once and never registered: back to the previous slot
        assert r.stdout.splitlines() == [
            "W ota firmware 2 did not register after its first boot: rolled back to 1",
            "I ota booting firmware 1 from ota/a", "booted main ['ota/a']"]
        assert after == {"slot": "ota/a", "version": "1", "rolled_back": "2", "trial": 0}


IMAGE = r"""
import sys, json, os
sys.path.insert(0, _STANDINS_)
sys.path.insert(1, _ROOT_)
os.chdir(_FLASH_)
import esp32
from firmware import ota


class Login:
    def __init__(self):
        self.sent = []

    def send(self, msg_type, ies, now):
        self.sent.append((msg_type, ies.get(0x2E), ies.get(0x2F), ies.get(0x30)))


class Phone:
    registered = True
    call = None
    firmware_sink = None

    def __init__(self):
        self.login = Login()


class App:
    def __init__(self, firmware):
        self.phone = Phone()
        self.firmware = firmware
        self.ota = None
        self.ota_offer = None
        self.started = 0
        self.running = True
        self.reset_requested = False

    def log(self, level, msg):
        print(level, msg)


def state():
    try:
        return json.load(open("ota.json"))
    except OSError:
        return {}


def update(version, image, sha):
    # the offer in the system information, the download, the check and the install
    app = App(state())
    app.ota_offer = {"version": version, "sha256": sha, "size": len(image), "kind": "image"}
    ota.idle(app, 1000)
    if app.ota is not None:
        count = app.ota.count
        for i in range(0, len(image), 250):
            app.phone.firmware_sink({0x2E: version, 0x21: (i // 250) << 16 | count, 0x22: image[i:i + 250]}, 1000)
    print("sent", json.dumps(app.phone.login.sent), "reset", app.reset_requested)
    return app


def registers():
    app = App(state())
    ota.registered(app, 2000)
    print("registered", json.dumps(app.phone.login.sent))


def boot():
    print("boot", esp32.boot())


esp32.flash(_LAYOUT_)
images = [open(name, "rb").read() for name in _IMAGES_]
for step in _STEPS_:
    if step[0] == "update":
        update(step[1], images[step[2]], step[3])
        print("slot", step[1], bytes(esp32.FLASH["ota_1" if "ota_1" in esp32.FLASH else "factory"][:len(images[step[2]])]) == images[step[2]],
              bytes(esp32.FLASH["ota_0" if "ota_0" in esp32.FLASH else "factory"][:len(images[step[2]])]) == images[step[2]])
    elif step[0] == "boot":
        boot()
    elif step[0] == "registers":
        registers()
print("trace", json.dumps(esp32.TRACE))
print("state", json.dumps(state()))
"""


def run_image_steps(tmp_path, layout, images, steps):
    """The handset's side of image updates under the unix port, against the esp32 stand-in
    (tests/esp32_standins/esp32.py, modelling ports/esp32/esp32_partition.c and ESP-IDF's esp_ota_ops.c and
    bootloader): nothing here has run on an ESP32. Returns the script's output lines."""
    flash = tmp_path / "flash"
    flash.mkdir(parents=True)
    names = []
    for i, image in enumerate(images):
        (flash / ("image%d.bin" % i)).write_bytes(image)
        names.append("image%d.bin" % i)
    script = (IMAGE.replace("_STANDINS_", repr(str(ROOT / "tests" / "esp32_standins")))
              .replace("_ROOT_", repr(str(ROOT))).replace("_FLASH_", repr(str(flash)))
              .replace("_LAYOUT_", repr(layout)).replace("_IMAGES_", repr(names)).replace("_STEPS_", repr(steps)))
    r = subprocess.run([micropython_binary(), "-X", "heapsize=4M", "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def events(lines):
    """The script's own lines (boots, registrations, slots), without the handset's log."""
    return [line for line in lines if line.split(" ", 1)[0] in ("boot", "registered", "slot")]


DOWNLOADING, INSTALLING, RUNNING, ROLLED_BACK, FAILED = 1, 2, 4, 5, 6


def test_an_esp32_image_goes_into_the_next_ota_slot_boots_on_trial_and_is_kept_once_registered(tmp_path):
    first, second = esp32_images.app_image(size=5000, seed=1), esp32_images.app_image(size=7000, seed=2)
    lines = run_image_steps(tmp_path, "ota", [first, second], [
        ("update", "7", 0, sha(first)), ("boot",), ("registers",), ("boot",),
        ("update", "8", 1, sha(second)), ("boot",), ("registers",), ("boot",)])
    chunks = (len(first) + 249) // 250
    assert lines[0] == "I firmware 7 offered: downloading %d bytes (%d chunks)" % (len(first), chunks)
    # FIRMWARE_STATE (69) downloading, a FIRMWARE_WANT (68) per 16 chunks, FIRMWARE_STATE installing
    assert 'sent [[69, "7", 1, ""], %s[69, "7", 2, ""]] reset True' % ('[68, "7", null, null], ' * ((chunks + 15) // 16)) in lines
    # into ota_1, beside the running ota_0; the first reset boots it on trial; registered, it is kept: the next
    # reset boots it again. The second update goes into ota_0 (esp_ota_get_next_update_partition goes round)
    assert events(lines) == ["slot 7 True False", "boot ota_1", 'registered [[69, "7", 4, "7"]]', "boot ota_1",
                             "slot 8 False True", "boot ota_0", 'registered [[69, "8", 4, "8"]]', "boot ota_0"]
    assert "I firmware 7 registered: kept" in lines
    trace = json.loads(lines[-2][len("trace "):])
    assert [t for t in trace if t[0] != "erase"] == [
        ["set_boot", "ota_1"], ["boot", "ota_1"], ["mark_app_valid_cancel_rollback", "ota_1"], ["boot", "ota_1"],
        ["set_boot", "ota_0"], ["boot", "ota_0"], ["mark_app_valid_cancel_rollback", "ota_0"], ["boot", "ota_0"]]
    # each 4096-byte block erased once before it was written (writeblocks without an offset)
    erased = [t for t in trace if t[0] == "erase"]
    assert erased == [["erase", "ota_1", b, 1] for b in range((len(first) + 4095) // 4096)] + [
        ["erase", "ota_0", b, 1] for b in range((len(second) + 4095) // 4096)]
    assert json.loads(lines[-1][len("state "):])["trial"] == 0


def test_an_image_that_never_registers_is_rolled_back_by_the_bootloader_at_the_next_reset(tmp_path):
    image = esp32_images.app_image(size=5000)
    lines = run_image_steps(tmp_path, "ota", [image], [("update", "7", 0, sha(image)), ("boot",), ("boot",),
                                                       ("registers",), ("boot",)])
    # booted once on trial, reset without mark_app_valid_cancel_rollback: ESP-IDF's bootloader aborts it
    assert events(lines) == ["slot 7 True False", "boot ota_1", "boot ota_0", 'registered [[69, "7", 5, ""]]',
                             "boot ota_0"]
    trace = [t for t in json.loads(lines[-2][len("trace "):]) if t[0] != "erase"]
    assert trace == [["set_boot", "ota_1"], ["boot", "ota_1"], ["aborted", "ota_1"], ["boot", "ota_0"], ["boot", "ota_0"]]
    assert json.loads(lines[-1][len("state "):])["rolled_back"] == "7"


def test_an_image_esp_idf_would_not_boot_and_a_handset_without_ota_slots_are_refused(tmp_path):
    wrong_chip = esp32_images.app_image("esp32s3", size=3000)   # a valid image, for the ESP32-S3
    lines = run_image_steps(tmp_path, "ota", [wrong_chip], [("update", "9", 0, sha(wrong_chip)), ("boot",)])
    assert any(line.startswith("E firmware 9 not installed: ESP-IDF refused the image") for line in lines)
    assert 'sent [[69, "9", 1, ""], [68, "9", null, null], [69, "9", 6, ""]] reset False' in lines
    assert "boot ota_0" in lines   # set_boot refused: the running firmware stays
    assert json.loads(lines[-1][len("state "):]) == {}
    image = esp32_images.app_image(size=3000)
    lines = run_image_steps(tmp_path / "factory", "factory", [image], [("update", "9", 0, sha(image)), ("boot",)])
    assert lines[0].startswith("E firmware 9 cannot be installed: this handset's partition table has no OTA slots")
    assert 'sent [[69, "9", 6, ""]] reset False' in lines
    assert json.loads(lines[-2][len("trace "):]) == [["boot", "factory"]]


class Collected:
    """What a host's send_signal would put on a link's reliable channel, kept in order."""

    def __init__(self):
        self.messages = []

    def send_signal(self, msg_type, ies, now):
        self.messages.append((msg_type, dict(ies)))


class Log:
    def __init__(self):
        self.lines = []

    def info(self, event, **fields):
        self.lines.append((event, fields))

    error = info


def test_a_remote_host_resumes_its_download_where_it_stopped_and_checks_it(tmp_path):
    from upbx.common import wire
    from upbx.host.core import Stats
    from upbx.host.firmware_transfer import FirmwareFetcher, FirmwareServer
    db = str(tmp_path / "main.sqlite")
    assert admin(db, "site", "add", "a").returncode == 0
    files = dict(FILES, **{"firmware/big.mpy": os.urandom(20000)})
    entry = json.loads(admin(db, "firmware", "add", tree(tmp_path / "build", files), "--json").stdout)
    count = (entry["size"] + 249) // 250
    assert admin(db, "firmware", "rollout", entry["version"], "--site", "a").returncode == 0   # what a is sent
    offer = {"firmware": dict(entry)}
    folder = str(tmp_path / "remote.cache.json.firmware")
    with Directory(db) as d:
        server = FirmwareServer(firmware.FirmwareStore(d), Stats())
        main_side = Collected()

        def fetcher():
            wants = Collected()
            return FirmwareFetcher(folder, wants.send_signal, Stats(), Log()), wants

        def serve(fetch, wants, limit):
            """The main host answers each WANT; only `limit` chunks get through (then the link drops)."""
            delivered = 0
            while wants.messages and delivered < limit:
                msg_type, ies = wants.messages.pop(0)
                assert msg_type == wire.FIRMWARE_WANT
                main_side.messages.clear()
                server.want(main_side, "a", ies, 0)
                for msg_type, chunk in main_side.messages:
                    if delivered == limit:
                        break
                    fetch.chunk(chunk, 0)
                    delivered += 1
            return delivered

        fetch, wants = fetcher()
        fetch.offered(offer, 0, True)
        assert wants.messages[0][1] == {wire.IE_FW_VERSION: "3.1.4", wire.IE_CHUNK: 0 << 16 | 32}
        assert serve(fetch, wants, 40) == 40 and fetch.status()["chunks"] == 40
        part = os.path.join(folder, "3.1.4.part")
        with open(part, "ab") as f:
            f.write(b"half a chunk")          # the host stopped while it wrote the 41st
        fetch, wants = fetcher()               # the remote host starts again
        fetch.offered(offer, 0, True)
        assert os.path.getsize(part) == 40 * 250
        assert wants.messages[0][1] == {wire.IE_FW_VERSION: "3.1.4", wire.IE_CHUNK: 40 << 16 | 32}
        assert serve(fetch, wants, count) == count - 40
        assert fetch.status() == {"version": "3.1.4", "state": "complete", "chunks": count, "count": count}
        with open(os.path.join(folder, "3.1.4.bin"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
        # a phone's WANT is answered from the file, a batch at most 64
        phone = Collected()
        fetch.want(phone, {wire.IE_FW_VERSION: "3.1.4", wire.IE_CHUNK: (count - 2) << 16 | 100}, 0)
        assert [ies[wire.IE_CHUNK] for _, ies in phone.messages] == [(count - 2) << 16 | count, (count - 1) << 16 | count]
        # a bundle whose bytes do not match the system information's digest is refused and not kept
        bad = {"firmware": dict(entry, version="3.1.5", sha256="0" * 64)}
        with d._transaction():
            d.db.execute("INSERT INTO firmware SELECT '3.1.5', kind, ?, size, data, added FROM firmware "
                         "WHERE version = '3.1.4'", ("0" * 64,))
        server.store.rollout("3.1.5", ["a"])
        fetch.offered(bad, 0, True)
        serve(fetch, wants, count)
        assert fetch.status()["state"] == "refused"
        assert sorted(os.listdir(folder)) == ["3.1.4.bin"]


NOT_BOOTED = r"""
import sys, json, os
sys.path.insert(0, _ROOT_)
os.chdir(_FLASH_)
from firmware import ota


class Login:
    def send(self, msg_type, ies, now):
        print("sent", msg_type, ies.get(0x2E), ies.get(0x2F), ies.get(0x30))


class Phone:
    login = Login()


class App:
    phone = Phone()

    def log(self, level, msg):
        print(level, msg)


app = App()
app.firmware = json.load(open("ota.json"))
ota.registered(app, 0)
print(json.load(open("ota.json")) == app.firmware, app.firmware["version"], app.firmware["rolled_back"])
"""


def test_a_slot_that_main_py_did_not_boot_is_not_kept(tmp_path):
    """A handset deployed before over-the-air updates has a main.py that does not ask firmware/otaboot.py:
    it boots the old firmware, which must not take the new version for its own once registered."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "ota.json").write_text(json.dumps({"kind": "files", "slot": "ota/a", "version": "2", "trial": 1,
                                                "previous": {"kind": "files", "slot": None, "version": None}}))
    script = NOT_BOOTED.replace("_ROOT_", repr(str(ROOT))).replace("_FLASH_", repr(str(flash)))
    r = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "E firmware 2 was not booted: this handset's main.py does not choose a slot (redeploy it)",
        "W firmware 2 was rolled back; running the deployed firmware", "sent 69 2 5 ", "True None 2"]


def test_deploy_removes_an_updates_slots_so_the_deployed_firmware_boots(tmp_path):
    """After an over-the-air update a handset has ota/ and ota.json; `upbx deploy` writes new firmware,
    which must be what boots next, not the update's slot in front of it."""
    from tests.support import require_tool
    from tests.test_device_tools import REF_BOARD, fake_tree, upbx
    from upbx.tools.vhandset import VirtualHandset
    micropython_binary()
    require_tool("socat", "apt-get install socat; make test does it as root")
    with VirtualHandset(tmp_path / "device") as handset:
        dev = handset.device_dir
        (dev / "ota" / "a" / "firmware").mkdir(parents=True)
        (dev / "ota" / "a" / "firmware" / "app.mpy").write_bytes(b"M\x06")
        (dev / "ota.json").write_text('{"kind": "files", "slot": "ota/a", "version": "2", "trial": 0}')
        r = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--offline", "--src-root",
                 str(fake_tree(tmp_path / "src")), "--build-dir", str(tmp_path / "build"))
        assert r.returncode == 0, r.stderr
        assert "deploy: removed an over-the-air update's ota/ and ota.json: the deployed firmware boots now" in r.stdout
        assert not (dev / "ota").exists() and not (dev / "ota.json").exists()
        assert (dev / "common" / "wire.mpy").exists()
        again = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--offline", "--src-root",
                     str(tmp_path / "src"), "--build-dir", str(tmp_path / "build"))
        assert again.returncode == 0 and "ota.json" not in again.stdout    # nothing to remove: nothing said


def test_the_main_host_serves_a_peer_only_the_bundle_offered_to_its_site(tmp_path):
    """A remote host (site x's) asking for a stored bundle that was rolled out elsewhere gets nothing
    (dropped and counted); once rolled out to its site too, it gets the chunks."""
    from tests.inprocess import World
    from upbx.common import wire
    world = World(tmp_path)
    try:
        with Directory(tmp_path / "main.sqlite") as d:
            store = firmware.FirmwareStore(d)
            store.add(tree(tmp_path / "build", FILES))
            store.rollout("3.1.4", ["a"])
        world.start_main()
        host = world.add_login(wire.IE_HOST_NAME, "site-x", ("198.18.9.1", 4570))
        world.run(500)
        assert host.up
        chunks = lambda: [ies for msg_type, ies in _messages(host) if msg_type == wire.FIRMWARE]
        host.login.send(wire.FIRMWARE_WANT, {wire.IE_FW_VERSION: "3.1.4", wire.IE_CHUNK: 0 << 16 | 8}, world.net.now)
        host.flush()
        world.run(300)
        assert world.main.stats.drops["firmware want of a version not offered to the site"] == 1 and not chunks()
        with Directory(tmp_path / "main.sqlite") as d:
            firmware.FirmwareStore(d).rollout("3.1.4", ["x"])
        host.login.send(wire.FIRMWARE_WANT, {wire.IE_FW_VERSION: "3.1.4", wire.IE_CHUNK: 0 << 16 | 8}, world.net.now)
        host.flush()
        world.run(300)
        data = firmware.pack(tree(tmp_path / "build", FILES))[1]
        got = sorted(chunks(), key=lambda ies: ies[wire.IE_CHUNK] >> 16)
        assert [ies[wire.IE_CHUNK] >> 16 for ies in got] == list(range(8))
        assert b"".join(ies[wire.IE_DATA] for ies in got) == data[:8 * 250]
    finally:
        world.close()


def _messages(end):
    """(type, ies) of the messages a LoginEnd received (its inbox also holds the login's events)."""
    return [item for item in end.inbox if isinstance(item, tuple)]


BACKOFF = r"""
import sys, json, os
sys.path.insert(0, _ROOT_)
os.chdir(_FLASH_)
from firmware import ota


class Login:
    def __init__(self):
        self.wants = []

    def send(self, msg_type, ies, now):
        if msg_type == 0x44:
            self.wants.append((now // 1000, ies.get(0x21) >> 16))


class Phone:
    registered = True
    call = None
    firmware_sink = None

    def __init__(self):
        self.login = Login()


class App:
    def __init__(self):
        self.phone = Phone()
        self.firmware = {}
        self.ota = None
        self.ota_offer = None
        self.started = 0
        self.running = True
        self.reset_requested = False

    def log(self, level, msg):
        pass


data = bytes(range(250)) * 40
app = App()
app.ota_offer = {"version": "5", "sha256": _SHA_, "size": len(data), "kind": "files"}
ota.idle(app, 0)
update = app.ota
for t in range(1, 241):   # the host has no bundle to give (it refused its copy): nothing comes
    app.ota.tick(t * 1000)
print("silent", json.dumps(app.phone.login.wants))
del app.phone.login.wants[:]
# the host has it now: the next WANT is answered, and a stall after it is asked about 3 s later again
app.phone.firmware_sink({0x2E: "5", 0x21: 0 << 16 | update.count, 0x22: data[:250]}, 241000)
for t in range(242, 260):
    app.ota.tick(t * 1000)
print("answered", json.dumps(app.phone.login.wants))
app.ota_offer = dict(app.ota_offer, version="6")   # the operator rolled out another version
app.ota.tick(260000)
print("replaced", app.ota is None, app.phone.firmware_sink is None)
"""


def test_a_phone_whose_host_does_not_answer_asks_less_and_less_often(tmp_path):
    """docs/operations.md, "Failure modes": a remote host that refused its copy of the bundle has none to give;
    its phones ask 3 s after the last chunk, then 6, 12, 24, 48 s, then once a minute (not every 3 s)."""
    flash = tmp_path / "flash"
    flash.mkdir()
    script = (BACKOFF.replace("_ROOT_", repr(str(ROOT))).replace("_FLASH_", repr(str(flash)))
              .replace("_SHA_", repr("00" * 32)))
    r = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert json.loads(lines["silent"]) == [[0, 0], [3, 0], [9, 0], [21, 0], [45, 0], [93, 0], [153, 0], [213, 0]]
    # a chunk came at 241 s: the next 16 are not asked for again before 244 s, then the wait doubles again
    assert json.loads(lines["answered"]) == [[244, 1], [250, 1]]
    assert lines["replaced"] == "True True"
