"""Moving an over-the-air update's bundle (host/firmware.py) to the phones, in common/chunks.py's chunks.

    FIRMWARE_WANT  fw_version, chunk = first << 16 | how many     (a phone or remote host asks)
    FIRMWARE       fw_version, chunk = index << 16 | count, data   (one reliable message per chunk)
    FIRMWARE_STATE fw_version, fw_state, fw_running                (a phone says how its update went)

The receiver asks for the next chunks it needs, a batch at a time, so a transfer resumes from where it
stopped (after a lost login, a restart) and a sender never queues a whole bundle. `FirmwareServer`
answers from a bundle it holds (the main host: its database; a remote host: its downloaded file);
`FirmwareFetcher` is a remote host's download of its site's bundle from the main host, into
`<directory_cache>.firmware/VERSION.part`, renamed to VERSION.bin once its SHA-256 is the one the
system information gave.
"""
import hashlib
import os

from upbx.common import wire
from upbx.common.chunks import CHUNK

MAX_BATCH = 64            # chunks one FIRMWARE_WANT may ask for
FETCH_BATCH = 32          # what a remote host asks the main host for at once (the channel's window)
STALL_MS = 3000           # nothing for this long: ask again from the next chunk needed
STATES = {1: "downloading", 2: "installing", 3: "refused", 4: "running", 5: "rolled back", 6: "failed"}


def send_chunks(link, version, read, size, ies, now):
    """Answer one FIRMWARE_WANT: chunks first.. of a bundle of size bytes (read(offset, n) gives them)."""
    count = (size + CHUNK - 1) // CHUNK
    want = ies.get(wire.IE_CHUNK, 0)
    first, n = want >> 16, min(want & 0xFFFF, MAX_BATCH)
    for index in range(first, min(first + n, count)):
        link.send_signal(wire.FIRMWARE, {wire.IE_FW_VERSION: version, wire.IE_CHUNK: index << 16 | count,
                                         wire.IE_DATA: read(index * CHUNK, CHUNK)}, now)
    return max(0, min(first + n, count) - first)


class PhoneStates:
    """What each phone last said about its firmware (FIRMWARE_STATE), for the host's status."""

    def __init__(self, log):
        self.log = log
        self.phones = {}

    def update(self, extension, ies):
        state = STATES.get(ies.get(wire.IE_FW_STATE), "unknown")
        entry = {"version": ies.get(wire.IE_FW_VERSION), "state": state, "running": ies.get(wire.IE_FW_RUNNING)}
        self.phones[extension] = entry
        self.log.info("firmware", extension=extension, **entry)


class FirmwareServer:
    """The main host: FIRMWARE_WANT answered from the bundles in its database (one held in memory)."""

    def __init__(self, store, stats):
        self.store = store
        self.stats = stats
        self._held = (None, None)

    def want(self, link, site, ies, now):
        """FIRMWARE_WANT from link, a peer of site: only the version rolled out to site is sent."""
        version = ies.get(wire.IE_FW_VERSION)
        if version is None or version != self.store.offered(site):
            self.stats.drop("firmware want of a version not offered to the site")
            return
        if self._held[0] != version:
            self._held = (version, self.store.data(version))
        data = self._held[1]
        if data is None:
            self.stats.drop("firmware want of an unknown version")
            return
        sent = send_chunks(link, version, lambda at, n: data[at:at + n], len(data), ies, now)
        self.stats.count("firmware chunks sent", sent)


class FirmwareFetcher:
    """A remote host's copy of its site's bundle: fetched once from the main host, served to its phones."""

    def __init__(self, folder, send, stats, log):
        self.folder = folder
        self.send = send              # send(msg_type, ies, now) to the main host
        self.stats = stats
        self.log = log
        self.offer = None             # {"version", "sha256", "size", "kind"} from the system information
        self.index = 0                # the next chunk needed
        self.until = 0                # the end of the batch asked for
        self.heard_ms = self.asked_ms = None
        self.refused = None           # (version, sha256) whose download did not match
        self.have = False             # the offer's bundle is here whole (VERSION.bin)

    def _path(self, version, ext):
        return os.path.join(self.folder, "%s.%s" % (version, ext))

    def complete(self, version):
        return self.have and self.offer["version"] == version

    def offered(self, info, now, main_up):
        """The system information arrived (or was read back at start): fetch its bundle if it has one."""
        offer = info.get("firmware") if isinstance(info, dict) else None
        if offer is not None:
            offer = {k: offer[k] for k in ("version", "sha256", "size", "kind")}
        if offer == self.offer:
            return
        self.offer = offer
        self.have = offer is not None and os.path.exists(self._path(offer["version"], "bin"))
        if offer is None or self.have:
            return
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        part = self._path(offer["version"], "part")
        have = os.path.getsize(part) // CHUNK if os.path.exists(part) else 0
        with open(part, "ab") as f:
            f.truncate(have * CHUNK)  # a chunk half written when the host stopped is fetched again
        self.index = have
        self.log.info("firmware-fetch", version=offer["version"], size=offer["size"], resume_chunk=have)
        if main_up:
            self._want(now)

    def _count(self):
        return (self.offer["size"] + CHUNK - 1) // CHUNK

    def _fetching(self):
        return (self.offer is not None and not self.have
                and (self.offer["version"], self.offer["sha256"]) != self.refused)

    def _want(self, now):
        n = min(FETCH_BATCH, self._count() - self.index)
        self.until = self.index + n   # the next WANT when this batch has come
        self.send(wire.FIRMWARE_WANT, {wire.IE_FW_VERSION: self.offer["version"], wire.IE_CHUNK: self.index << 16 | n},
                  now)
        self.asked_ms = now

    def tick(self, now, main_up):
        """Ask again when nothing came for a while (a lost login, a main host that restarted)."""
        if (main_up and self.offer is not None and (self.asked_ms is None or now - self.asked_ms >= STALL_MS)
                and (self.heard_ms is None or now - self.heard_ms >= STALL_MS) and self._fetching()):
            self._want(now)

    def chunk(self, ies, now):
        """A FIRMWARE message from the main host."""
        chunk = ies.get(wire.IE_CHUNK, 0)
        if not self._fetching() or ies.get(wire.IE_FW_VERSION) != self.offer["version"] \
                or chunk >> 16 != self.index or chunk & 0xFFFF != self._count():
            self.stats.drop("firmware chunk not wanted")
            return
        version = self.offer["version"]
        with open(self._path(version, "part"), "ab") as f:
            f.write(ies.get(wire.IE_DATA, b""))
        self.index += 1
        self.heard_ms = now
        if self.index < self._count():
            if self.index == self.until:
                self._want(now)
            return
        part = self._path(version, "part")
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(65536), b""):
                digest.update(block)
        digest = digest.hexdigest()
        if digest != self.offer["sha256"] or os.path.getsize(part) != self.offer["size"]:
            os.remove(part)
            self.refused = (version, self.offer["sha256"])
            self.log.error("firmware-refused", version=version, sha256=digest, expected=self.offer["sha256"])
            return
        os.replace(part, self._path(version, "bin"))
        self.have = True
        self.log.info("firmware-fetched", version=version, size=self.offer["size"])

    def want(self, link, ies, now):
        """A phone's FIRMWARE_WANT: answered from the complete file; before that the phone asks again."""
        version = ies.get(wire.IE_FW_VERSION)
        if not self.complete(version):
            self.stats.drop("firmware want before the bundle is here")
            return
        with open(self._path(version, "bin"), "rb") as f:
            def read(at, n):
                f.seek(at)
                return f.read(n)
            sent = send_chunks(link, version, read, self.offer["size"], ies, now)
        self.stats.count("firmware chunks sent", sent)

    def status(self):
        if self.offer is None:
            return None
        version = self.offer["version"]
        state = ("complete" if self.have else
                 "refused" if (version, self.offer["sha256"]) == self.refused else "fetching")
        return {"version": version, "state": state, "chunks": self._count() if state == "complete" else self.index,
                "count": self._count()}
