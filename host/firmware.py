"""Over-the-air handset updates on the hosts (issue 15 item 4; docs/operations.md, "Over-the-air updates").

    upbx admin firmware add BUNDLE [--version V]      a .mpy tree (`upbx build`) or an ESP32 flash image with
                                                      OTA partitions (`upbx build --image esp32`)
    upbx admin firmware rollout VERSION --site S|--all [--percent N]
    upbx admin firmware stop --site S|--all
    upbx admin firmware list | status

A tree is stored as an uncompressed ustar archive (deterministic: sorted names, no times, no owners)
that the handset unpacks as it arrives (firmware/ota.py); of a flash image (bootloader, partition table,
application: MicroPython's makeimg.py) the application, checked (esptool: checksum, SHA-256) and only when
the partition table has otadata and two OTA slots it fits (ota_application). The bundle, its SHA-256,
size and kind live in the main host's SQLite database. A rollout is part of the system information
(B6): each site's copy carries {"version", "sha256", "size", "kind"} and, below 100 %, the extensions
chosen. The bundle itself goes by FIRMWARE_WANT / FIRMWARE (common/chunks.py's 250-byte chunks): the
main host serves each remote host and each phone attached to it directly; a remote host fetches its
site's bundle once, resumably, into a file beside its cache and serves its phones on the LAN
(host/firmware_transfer.py).
"""
import hashlib
import io
import math
import os
import struct
import tarfile

from upbx.common.chunks import CHUNK
from upbx.host.directory import DirectoryError

MAX_BUNDLE = 0xFFFF * CHUNK           # IE_CHUNK counts chunks in 16 bits: 16,383,750 bytes
NOT_ON_HANDSET = (".upbx-build", "main.py", "boot.py")   # main.py chooses the slot: it stays
_SCHEMA = """CREATE TABLE IF NOT EXISTS firmware (
    version TEXT PRIMARY KEY, kind TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    data BLOB NOT NULL, added TEXT NOT NULL)"""
ROLLOUT_KEY = "firmware_rollout"      # in the operator's system information: {site: {version, percent}}
# An ESP32 flash image (`upbx build --image esp32`, MicroPython's makeimg.py): the bootloader at the chip's
# flash offset, the partition table at 0x8000 (ESP-IDF's default, which MicroPython keeps), the application
# at its first app partition. esp_image_header_t's chip_id names the chip (ESP-IDF esp_app_format.h).
PARTITION_TABLE_AT = 0x8000
IMAGE_CHIPS = {0: "esp32", 9: "esp32s3"}
_ENTRY = struct.Struct("<2sBBII16sI")   # esp_partition_info_t: magic AA 50, type, subtype, offset, size, label, flags
APP, DATA, DATA_OTA, OTA_MIN, OTA_MAX = 0, 1, 0, 0x10, 0x1F


class FirmwareError(DirectoryError):
    """One line for stderr (host/admin.py prints it and exits 1)."""


def pack(path):
    """(kind, bytes) of a bundle: a directory as a ustar archive ("files"), a file as an image ("image")."""
    if os.path.isdir(path):
        names = []
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), path).replace(os.sep, "/")
                if rel not in NOT_ON_HANDSET:
                    names.append(rel)
        if not any(n.startswith("firmware/") for n in names):
            raise FirmwareError("%s: no firmware/ in it: give the directory `upbx build --out DIR` wrote" % path)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for rel in sorted(names):
                with open(os.path.join(path, rel), "rb") as f:
                    data = f.read()
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return "files", out.getvalue()
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return "image", ota_application(path, f.read())
    raise FirmwareError("%s: no such file or directory" % path)


def partition_table(blob):
    """The entries of an ESP-IDF partition table: [{"type", "subtype", "offset", "size", "label"}]; None when
    blob does not start with one."""
    entries = []
    for at in range(0, len(blob) - _ENTRY.size + 1, _ENTRY.size):
        magic, kind, subtype, offset, size, label, _flags = _ENTRY.unpack_from(blob, at)
        if magic != b"\xaa\x50":   # the end (0xFF..), or the MD5 entry (EB EB)
            break
        entries.append({"type": kind, "subtype": subtype, "offset": offset, "size": size,
                        "label": label.split(b"\0", 1)[0].decode("ascii", "replace")})
    return entries or None


def ota_slots(entries):
    """The OTA application partitions of a partition table when it has otadata and two of them, else None."""
    slots = [e for e in entries or () if e["type"] == APP and OTA_MIN <= e["subtype"] <= OTA_MAX]
    otadata = [e for e in entries or () if e["type"] == DATA and e["subtype"] == DATA_OTA]
    return slots if otadata and len(slots) >= 2 else None


def ota_application(path, data):
    """The application of a whole ESP32 flash image whose partition table has OTA slots: what a handset
    writes into its next slot. FirmwareError says what else the file is."""
    try:
        from esptool.bin_image import LoadFirmwareImage
    except ImportError:
        raise FirmwareError("%s: checking an ESP32 image needs esptool: pip install 'upbx[device]'" % path)
    from upbx.boards.schema import load_chips
    if data[:1] != b"\xe9":   # esp_image_header_t's magic (ESP-IDF)
        raise FirmwareError("%s: not an ESP32 image (its first byte is not 0xE9)" % path)
    chip = IMAGE_CHIPS.get(data[12] | data[13] << 8) if len(data) > 13 else None
    if chip is None:
        raise FirmwareError("%s: an image for chip id %d, not one of upbx's (%s)" % (
            path, data[12] | data[13] << 8, ", ".join("%d %s" % kv for kv in sorted(IMAGE_CHIPS.items()))))
    base = load_chips()[chip]["flash_offset"]
    entries = partition_table(data[PARTITION_TABLE_AT - base:PARTITION_TABLE_AT - base + 0xC00])
    if entries is None:
        raise FirmwareError("%s: no partition table at %#x: an application alone is not enough; give the flash "
                            "image `upbx build --image esp32 --board BOARD` wrote (out/BOARD.bin)" % (path, PARTITION_TABLE_AT))
    slots = ota_slots(entries)
    if slots is None:
        raise FirmwareError("%s: its partition table has no OTA partitions (%s): its handsets cannot take an image "
                            "over the air. A board that can says \"ota\": true in micropython_image (docs/boards.md) "
                            "and is built again; these handsets take a bundle of files (upbx build --out DIR)" % (
                                path, ", ".join(e["label"] for e in entries)))
    app_at = next(e["offset"] for e in entries if e["type"] == APP)   # where makeimg.py put the application
    app = data[app_at - base:]
    try:
        parsed = LoadFirmwareImage(chip, app)
    except Exception as exc:   # esptool raises its FatalError, struct.error, ...: a damaged image either way
        raise FirmwareError("%s: the application at %#x is not a valid ESP32 image: %s" % (path, app_at, exc))
    length = parsed.data_length + 32 if parsed.append_digest else len(app)
    if parsed.checksum != parsed.calculate_checksum() or (parsed.append_digest and parsed.stored_digest != parsed.calc_digest):
        raise FirmwareError("%s: the application at %#x is damaged (its checksum or SHA-256 does not match)" % (path, app_at))
    room = min(e["size"] for e in slots)
    if length > room:
        raise FirmwareError("%s: the application is %d bytes, more than an OTA slot's %d" % (path, length, room))
    return app[:length]


def bundle_version(path, data):
    """The VERSION file of a tree, else the first 12 hex digits of the bundle's SHA-256."""
    try:
        with open(os.path.join(path, "VERSION")) as f:
            text = f.read().strip()
        if text:
            return text
    except OSError:
        pass
    return hashlib.sha256(data).hexdigest()[:12]


def check_version(version):
    if not version or len(version.encode()) > 31 or not all(c.isalnum() or c in ".-_+" for c in version):
        raise FirmwareError("bad version %r: 1 to 31 letters, digits and . - _ +" % version)


class FirmwareStore:
    """The bundles in the main host's database (its Directory's connection)."""

    def __init__(self, directory):
        self.directory = directory
        self.db = directory.db
        self.db.execute(_SCHEMA)

    def add(self, path, version=None):
        kind, data = pack(path)
        if len(data) > MAX_BUNDLE:
            raise FirmwareError("%s: %d bytes, more than %d (65535 chunks)" % (path, len(data), MAX_BUNDLE))
        version = version or bundle_version(path, data)
        check_version(version)
        digest = hashlib.sha256(data).hexdigest()
        with self.directory._transaction():
            if self.db.execute("SELECT 1 FROM firmware WHERE version = ?", (version,)).fetchone():
                raise FirmwareError("firmware %s already exists" % version)
            self.db.execute("INSERT INTO firmware VALUES (?, ?, ?, ?, ?, datetime('now'))",
                            (version, kind, digest, len(data), data))
        return {"version": version, "kind": kind, "sha256": digest, "size": len(data)}

    def entry(self, version):
        row = self.db.execute("SELECT version, kind, sha256, size FROM firmware WHERE version = ?",
                              (version,)).fetchone()
        return None if row is None else {"version": row[0], "kind": row[1], "sha256": row[2], "size": row[3]}

    def offered(self, site):
        """The version rolled out to site now (the only one a peer of that site is sent), or None."""
        rollout = (self.directory.sysinfo()[1].get(ROLLOUT_KEY) or {}).get(site)
        return rollout.get("version") if rollout else None

    def data(self, version):
        row = self.db.execute("SELECT data FROM firmware WHERE version = ?", (version,)).fetchone()
        return None if row is None else bytes(row[0])

    def list(self):
        return [{"version": r[0], "kind": r[1], "sha256": r[2], "size": r[3], "added": r[4]}
                for r in self.db.execute("SELECT version, kind, sha256, size, added FROM firmware ORDER BY added")]

    def rollout(self, version, sites, percent=100):
        """Offer version to the phones of sites (every site when None); a new system information version."""
        entry = self.entry(version)
        if entry is None:
            raise FirmwareError("unknown firmware %r: add it first (upbx admin firmware add BUNDLE)" % version)
        if not 1 <= percent <= 100:
            raise FirmwareError("bad --percent %r: 1 to 100" % percent)
        known = [s.name for s in self.directory.sites()]
        for site in sites or ():
            if site not in known:
                raise FirmwareError("unknown site %r" % site)

        def change(data):
            rollout = data.setdefault(ROLLOUT_KEY, {})
            for site in (sites if sites else known):
                rollout[site] = {"version": version, "percent": percent}

        with self.directory._transaction():   # one transaction with the system information's new version
            return self.directory._bump(change)

    def stop(self, sites):
        """No update offered to the phones of sites (every site when None) any more; a new sysinfo version."""
        rollout = self.directory.sysinfo()[1].get(ROLLOUT_KEY) or {}
        for site in sites or ():
            if site not in rollout:
                raise FirmwareError("no rollout at site %r" % site)

        def change(data):
            for site in (sites if sites else list(rollout)):
                data[ROLLOUT_KEY].pop(site, None)
            if not data[ROLLOUT_KEY]:
                del data[ROLLOUT_KEY]

        if not rollout:
            raise FirmwareError("no rollout to stop")
        with self.directory._transaction():
            return self.directory._bump(change)


def site_offer(info, site, extensions, entry_of):
    """The system information's "firmware" for one site (or None): the rollout's bundle, and below
    100 % the extensions chosen (the same ones for the same version, more as the percentage grows)."""
    rollout = (info.get(ROLLOUT_KEY) or {}).get(site)
    if not rollout:
        return None
    entry = entry_of(rollout["version"])
    if entry is None:
        return None
    offer = dict(entry)
    if rollout.get("percent", 100) < 100:
        ranked = sorted(extensions, key=lambda n: hashlib.sha256(("%s/%s" % (entry["version"], n)).encode()).digest())
        offer["extensions"] = sorted(ranked[:math.ceil(len(ranked) * rollout["percent"] / 100)])
    return offer


def rollout_rows(directory):
    """(site, version, percent) of each rollout, for `upbx admin firmware status`."""
    info = directory.sysinfo()[1]
    return [{"site": site, "version": r["version"], "percent": r.get("percent", 100)}
            for site, r in sorted((info.get(ROLLOUT_KEY) or {}).items())]


# `upbx admin firmware ...` (host/admin.py makes the parsers with its _actions and _leaf)

def add_arguments(things, actions, leaf):
    firmware = actions(things, "firmware", "over-the-air handset updates (docs/operations.md)")
    p = leaf(firmware, "add", "store a bundle: the directory `upbx build` wrote, or the ESP32 image "
                                         "`upbx build --image esp32` wrote for a board with OTA partitions")
    p.add_argument("bundle")
    p.add_argument("--version", help="its version (default: the tree's VERSION file, else its SHA-256's start)")
    p = leaf(firmware, "rollout", "offer a version to the phones of a site, or of every site")
    p.add_argument("version")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", action="append", metavar="S", help="a site (repeatable)")
    where.add_argument("--all", action="store_true", help="every site")
    p.add_argument("--percent", type=int, default=100, metavar="N", help="this share of each site's phones (1-100)")
    p = leaf(firmware, "stop", "offer no update any more (phones that installed it keep it)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", action="append", metavar="S", help="a site (repeatable)")
    where.add_argument("--all", action="store_true", help="every site")
    leaf(firmware, "list", "the stored bundles")
    leaf(firmware, "status", "which version is rolled out where")


def firmware_add(d, args, done):
    entry = FirmwareStore(d).add(args.bundle, args.version)
    done(args, "firmware %s added: %s, %d bytes, SHA-256 %s" % (entry["version"], entry["kind"], entry["size"],
                                                               entry["sha256"]), entry)


def firmware_rollout(d, args, done):
    version = FirmwareStore(d).rollout(args.version, None if args.all else args.site, args.percent)
    where = "every site" if args.all else "site " + ", ".join(args.site)
    done(args, "firmware %s rolled out to %s (%d %% of the phones), system information version %d"
         % (args.version, where, args.percent, version),
         {"version": args.version, "sites": "all" if args.all else args.site, "percent": args.percent,
          "sysinfo_version": version})


def firmware_stop(d, args, done):
    version = FirmwareStore(d).stop(None if args.all else args.site)
    where = "every site" if args.all else "site " + ", ".join(args.site)
    done(args, "no update offered at %s any more, system information version %d" % (where, version),
         {"sites": "all" if args.all else args.site, "sysinfo_version": version})


def firmware_list(d, args, table):
    table(args, FirmwareStore(d).list(), [("version", "version"), ("kind", "kind"), ("size", "bytes"),
                                          ("sha256", "sha256"), ("added", "added")])


def firmware_status(d, args, table):
    table(args, rollout_rows(d), [("site", "site"), ("version", "version"), ("percent", "percent")])


def handlers(done, table):
    return {("firmware", "add"): lambda d, a: firmware_add(d, a, done),
            ("firmware", "rollout"): lambda d, a: firmware_rollout(d, a, done),
            ("firmware", "stop"): lambda d, a: firmware_stop(d, a, done),
            ("firmware", "list"): lambda d, a: firmware_list(d, a, table),
            ("firmware", "status"): lambda d, a: firmware_status(d, a, table)}
