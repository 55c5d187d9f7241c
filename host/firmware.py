"""Over-the-air handset updates on the hosts (issue 15 item 4; docs/operations.md, "Over-the-air updates").

    upbx admin firmware add BUNDLE [--version V]      a .mpy tree (`upbx build`) or an ESP32 image (.bin)
    upbx admin firmware rollout VERSION --site S|--all [--percent N]
    upbx admin firmware stop --site S|--all
    upbx admin firmware list | status

A tree is stored as an uncompressed ustar archive (deterministic: sorted names, no times, no owners)
that the handset unpacks as it arrives (firmware/ota.py); an image as it is. The bundle, its SHA-256,
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
import tarfile

from upbx.common.chunks import CHUNK
from upbx.host.directory import DirectoryError

MAX_BUNDLE = 0xFFFF * CHUNK           # IE_CHUNK counts chunks in 16 bits: 16,383,750 bytes
NOT_ON_HANDSET = (".upbx-build", "main.py", "boot.py")   # main.py chooses the slot: it stays
_SCHEMA = """CREATE TABLE IF NOT EXISTS firmware (
    version TEXT PRIMARY KEY, kind TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    data BLOB NOT NULL, added TEXT NOT NULL)"""
ROLLOUT_KEY = "firmware_rollout"      # in the operator's system information: {site: {version, percent}}


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
            data = f.read()
        if data[:1] != b"\xe9":   # esp_image_header_t's magic (ESP-IDF)
            raise FirmwareError("%s: not an ESP32 application image (its first byte is not 0xE9)" % path)
        return "image", data
    raise FirmwareError("%s: no such file or directory" % path)


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
    p = leaf(firmware, "add", "store a bundle: the directory `upbx build` wrote, or an ESP32 image (.bin)")
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
