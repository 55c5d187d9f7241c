"""An over-the-air update's download on the handset (firmware/ota.py has the whole story): Update asks for
the bundle a batch of chunks at a time and streams each chunk through SHA-256 into flash; TreeWriter
unpacks a tree's ustar archive into a slot directory as it arrives. Held by app.ota while a download
runs, and let go after: nothing of it stays on the heap (docs/handset.md, Memory).
"""
import gc
import hashlib
import os
from binascii import hexlify

from common.compat import const, ticks_diff
from firmware.hal import rarely

_FIRMWARE_WANT = const(0x44)
_FIRMWARE_STATE = const(0x45)
_IE_CHUNK = const(0x21)
_IE_DATA = const(0x22)
_IE_FW_VERSION = const(0x2E)
_IE_FW_STATE = const(0x2F)
_IE_FW_RUNNING = const(0x30)
_DOWNLOADING = const(1)     # FIRMWARE_STATE's fw_state, as in firmware/ota.py
_INSTALLING = const(2)
_REFUSED = const(3)
_FAILED = const(6)
_CHUNK = const(250)
_BATCH = const(16)          # chunks asked for at once: 4 KB in flight, within the channel's window of 32
_STALL_MS = const(3000)     # nothing for this long: ask again from the next chunk needed,
_STALL_MAX_MS = const(60000)    # then twice as long each time unanswered, up to 1 min (a host without the bundle)


def report(app, version, state, now):
    """FIRMWARE_STATE to the host (firmware/ota.py's report, without keeping that module loaded)."""
    app.phone.login.send(_FIRMWARE_STATE, {_IE_FW_VERSION: version, _IE_FW_STATE: state,
                                           _IE_FW_RUNNING: app.firmware.get("version") or ""}, now)


class Update:
    """One download under way; app.ota while it runs, app.phone.firmware_sink its chunk()."""

    def __init__(self, app, entry, now):
        self.app = app
        self.version = str(entry["version"])
        self.sha256 = str(entry["sha256"]).lower()
        self.kind = entry.get("kind", "files")
        size = int(entry["size"])
        self.count = (size + _CHUNK - 1) // _CHUNK
        if not 0 < self.count <= 0xFFFF:
            raise ValueError("size %d out of range" % size)
        current = app.firmware
        if self.kind == "files":
            self.slot = "ota/b" if current.get("slot") == "ota/a" else "ota/a"
            self.writer = TreeWriter(self.slot)
        elif self.kind == "image":
            self.slot = None
            self.writer = rarely("firmware.ota_image").ImageWriter(size)
        else:
            raise ValueError("unknown kind %r" % self.kind)
        self.hash = hashlib.sha256()
        self.index = 0
        self.asked_at = self.heard_at = now
        self.wait = _STALL_MS   # until the next WANT when nothing comes: doubles while the host does not answer
        app.phone.firmware_sink = self.chunk
        app.log("I", "firmware %s offered: downloading %d bytes (%d chunks)%s"
                % (self.version, size, self.count, " into " + self.slot if self.slot else ""))
        report(app, self.version, _DOWNLOADING, now)
        self.want(now)

    def want(self, now):
        n = self.count - self.index
        n = n if n < _BATCH else _BATCH
        self.until = self.index + n   # the next WANT when this batch has come
        self.app.phone.login.send(_FIRMWARE_WANT, {_IE_FW_VERSION: self.version, _IE_CHUNK: self.index << 16 | n}, now)
        self.asked_at = now

    def chunk(self, ies, now):
        """One FIRMWARE message (the phone's firmware_sink): the next chunk into the hash and the flash."""
        chunk = ies.get(_IE_CHUNK, 0)
        if ies.get(_IE_FW_VERSION) != self.version or chunk >> 16 != self.index or chunk & 0xFFFF != self.count:
            return   # another version's, or one we have (asked for twice after a stall)
        data = ies.get(_IE_DATA, b"")
        self.hash.update(data)
        try:
            self.writer.write(data)
        except (OSError, ValueError) as exc:
            return self.fail("writing it: %s" % exc, now)
        self.index += 1
        self.heard_at = now
        self.wait = _STALL_MS
        if self.index == self.count:
            self.finish(now)
        elif self.index == self.until:
            self.want(now)

    def tick(self, now):
        """Once a second: stop for a call, or when the offer changed; ask again after a stall (a lost WANT, a
        host that came back), 3 s after the last chunk, then 6, 12 ... up to 1 min while nothing comes (a
        remote host that refused its copy of the bundle has none to give)."""
        app = self.app
        offer = app.ota_offer
        if app.phone.call is not None:
            app.log("I", "firmware %s: download stopped for a call, again when idle" % self.version)
            self.stop()
        elif offer is None or str(offer.get("version")) != self.version or str(offer.get("sha256")).lower() != self.sha256:
            app.log("I", "firmware %s: no longer offered, download stopped" % self.version)
            self.stop()
        elif (app.phone.registered and ticks_diff(now, self.heard_at) >= self.wait
              and ticks_diff(now, self.asked_at) >= self.wait):
            self.want(now)
            self.wait = self.wait * 2 if self.wait < _STALL_MAX_MS // 2 else _STALL_MAX_MS

    def stop(self):
        self.app.phone.firmware_sink = None
        self.app.ota = None
        self.writer.abort()

    def fail(self, why, now):
        self.stop()
        self.app.log("E", "firmware %s not installed: %s" % (self.version, why))
        self.app.ota_offer = None
        report(self.app, self.version, _FAILED, now)

    def finish(self, now):
        app = self.app
        digest = hexlify(self.hash.digest()).decode()
        if digest != self.sha256:
            self.stop()
            app.log("E", "firmware %s refused: its SHA-256 is %s, the system information says %s"
                    % (self.version, digest, self.sha256))
            app.ota_offer = None
            report(app, self.version, _REFUSED, now)
            return
        try:
            self.writer.close()
        except (OSError, ValueError) as exc:
            return self.fail("finishing it: %s" % exc, now)
        app.phone.firmware_sink = None
        app.ota = None
        current = app.firmware
        state = {"kind": self.kind, "slot": self.slot, "version": self.version, "trial": 1,
                 "previous": {"kind": current.get("kind", "files"), "slot": current.get("slot"),
                              "version": current.get("version")}}
        if self.kind == "image":
            try:
                state["partition"] = self.writer.install()
            except OSError as exc:   # the bootloader would not boot it: the running firmware stays
                app.ota_offer = None
                app.log("E", "firmware %s not installed: ESP-IDF refused the image (%s)" % (self.version, exc))
                report(app, self.version, _FAILED, now)
                return
        self.writer = self.hash = None   # their buffers go before firmware/otaboot.py is loaded (a full heap)
        rarely("firmware.otaboot").write(state)   # the switch: the next boot runs the new firmware
        app.log("I", "firmware %s checked (SHA-256 %s) and installed: resetting into it" % (self.version, digest))
        app.log("I", "heap while it downloaded: peak live %d of %d bytes" % (getattr(app, "heap_live_peak", 0),
                                                                           gc.mem_alloc() + gc.mem_free()))
        report(app, self.version, _INSTALLING, now)
        app.reset_requested = True
        app.running = False


class TreeWriter:
    """Unpacks a ustar stream into a fresh directory as it arrives (512-byte headers, data padded to 512)."""

    def __init__(self, slot):
        self.slot = slot
        _remove(slot)
        _makedirs(slot)
        self.head = bytearray(512)
        self.fill = 0
        self.left = 0       # bytes of the current file still to come
        self.skip = 0       # padding (or an entry we do not write) still to pass over
        self.pad = 0
        self.file = None
        self.done = False   # the end-of-archive block came
        self.files = 0

    def write(self, data):
        view = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            if self.left:
                k = min(self.left, n - i)
                if self.file is not None:
                    self.file.write(view[i:i + k])
                i += k
                self.left -= k
                if not self.left:
                    self._close_file()
            elif self.skip:
                k = min(self.skip, n - i)
                i += k
                self.skip -= k
            elif self.done:
                return
            else:
                k = min(512 - self.fill, n - i)
                self.head[self.fill:self.fill + k] = view[i:i + k]
                self.fill += k
                i += k
                if self.fill == 512:
                    self.fill = 0
                    self._header()

    def _header(self):
        head = self.head
        if not head[0]:
            self.done = True
            return
        name = _field(head, 0, 100)
        prefix = _field(head, 345, 155)
        if prefix:
            name = prefix + "/" + name
        size = int(_field(head, 124, 12) or "0", 8)
        kind = head[156]
        parts = [p for p in name.split("/") if p and p != "."]
        if name.startswith("/") or ".." in parts or not parts:
            raise ValueError("bad path %r in the bundle" % name)
        path = self.slot + "/" + "/".join(parts)
        self.pad = (512 - size % 512) % 512
        if kind == 0x35:   # '5': a directory
            _makedirs(path)
            self.skip = size + self.pad
        elif kind == 0x30 or kind == 0:   # '0': a file
            _makedirs(path.rsplit("/", 1)[0])
            self.file = open(path, "wb")
            self.files += 1
            self.left = size
            if not size:
                self._close_file()
        else:
            self.skip = size + self.pad   # links and the like: not in a bundle upbx makes

    def _close_file(self):
        if self.file is not None:
            self.file.close()
            self.file = None
        self.skip = self.pad

    def close(self):
        if not self.done or self.left or self.files == 0:
            raise ValueError("the bundle ended in the middle of its archive")

    def abort(self):
        self._close_file()


def _field(head, at, size):
    end = at
    while end < at + size and head[end]:
        end += 1
    return bytes(head[at:end]).decode().strip()


def _makedirs(path):
    done = ""
    for part in path.split("/"):
        done = done + "/" + part if done else part
        try:
            os.mkdir(done)
        except OSError:
            pass


def _remove(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        child = path + "/" + entry[0]
        if entry[1] == 0x4000:
            _remove(child)
        else:
            os.remove(child)
    os.rmdir(path)
