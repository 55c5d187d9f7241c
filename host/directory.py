"""The main host's directory: sites, remote hosts, extensions, system information, call records.

One SQLite database (stdlib sqlite3), written by `upbx admin` and read and
written by the main host daemon, possibly at the same time: file databases use
WAL mode and a busy timeout, and every change is one transaction.

Rows come back as small named tuples (`Site`, `RemoteHostEntry`, `Extension`,
`CallRecord`): read them by attribute, turn them into dicts with `_asdict()`.
Secrets are bytes in rows and hex in the database.

Any change to sites, remote hosts, extensions or system information bumps the
system information version, because the directory is part of what the main host
fans out (B6): the daemon polls `sysinfo()[0]` and resends when it changes.
"""
import collections
import json
import re
import secrets
import sqlite3

from upbx.common import wire
from upbx.host import features, groups
from upbx.host.files import private_database

Site = collections.namedtuple("Site", "name uplink_kbps local_calls local_call_quota")
RemoteHostEntry = collections.namedtuple("RemoteHostEntry", "name site secret")
Extension = collections.namedtuple("Extension", "number site name secret barred")
CallRecord = collections.namedtuple(
    "CallRecord", "id uid origin caller callee path started_ms answered_ms ended_ms cause setup_ms dialled linked")
_V1_RECORD_COLUMNS = "id, uid, origin, caller, callee, path, started_ms, answered_ms, ended_ms, cause, setup_ms"

CALL_RECORD_FIELDS = CallRecord._fields[1:]  # what add_call_record accepts (id is assigned)
CALL_PATHS = ("relay", "direct", "local", "trunk")   # trunk: a SIP trunk call (docs/sip.md)
SYSINFO_KEYS = ("announcement", "dial_plan", "firmware_version")  # and settings.NAME
MAIN_ORIGIN = "main"  # origin of call records the main host switched itself

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
NAME_BYTES = wire.IE_SPEC[wire.IE_CALLING_NAME][3]   # an extension's name goes in SETUP's calling_name
_SETTING = re.compile(r"^settings\.[A-Za-z0-9_]{1,32}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sites (
    name TEXT PRIMARY KEY,
    uplink_kbps INTEGER NOT NULL DEFAULT 0,
    local_calls INTEGER NOT NULL DEFAULT 1,
    local_call_quota INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS remote_hosts (
    name TEXT PRIMARY KEY,
    site TEXT NOT NULL UNIQUE REFERENCES sites(name),
    secret TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS extensions (
    number TEXT PRIMARY KEY,
    site TEXT NOT NULL REFERENCES sites(name),
    name TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL,
    barred INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS call_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    origin TEXT NOT NULL,
    caller TEXT,
    callee TEXT,
    path TEXT,
    started_ms INTEGER,
    answered_ms INTEGER,
    ended_ms INTEGER,
    cause TEXT,
    setup_ms INTEGER,
    dialled TEXT,
    linked TEXT,
    UNIQUE (origin, uid)
);
CREATE TABLE IF NOT EXISTS features (
    number TEXT PRIMARY KEY REFERENCES extensions(number) ON DELETE CASCADE,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS music_on_hold (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    ulaw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    number TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sip_passwords (
    number TEXT PRIMARY KEY REFERENCES extensions(number) ON DELETE CASCADE,
    password TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sysinfo (
    version INTEGER PRIMARY KEY,
    data TEXT NOT NULL
);
"""


class DirectoryError(ValueError):
    """A change the directory refuses; str() is one line for the operator."""


class StoreUnavailable(Exception):
    """The directory's database cannot be reached (PostgreSQL in a cluster, docs/cluster.md): nothing was
    stored, try again later."""


def check_name(what, name):
    """Site and remote host names: letters, digits, '_', '.', '-'; at most 32."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DirectoryError("bad %s name %r: use letters, digits, '_', '.', '-' (at most 32)" % (what, name))


def check_number(number):
    """Extension numbers: 1 to 15 ASCII digits."""
    if not isinstance(number, str) or not (number.isascii() and number.isdigit()) or len(number) > 15:
        raise DirectoryError("bad extension number %r: use 1 to 15 digits" % (number,))


def check_extension_name(name):
    """Extension names: text of at most NAME_BYTES bytes in UTF-8 (what SETUP can carry)."""
    if not isinstance(name, str) or len(name.encode()) > NAME_BYTES:
        raise DirectoryError("bad extension name %r: at most %d bytes of UTF-8" % (name, NAME_BYTES))


def wire_text(text, limit):
    """text cut to at most limit bytes of UTF-8, never inside a character (names from older databases)."""
    return text.encode()[:limit].decode("utf-8", "ignore")


def check_count(what, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DirectoryError("bad %s %r: use a whole number >= 0" % (what, value))


class Directory:
    """The main host's SQLite directory; `path` is a file name or ":memory:". A cluster's is
    the same class over PostgreSQL (host/cluster/postgres.py): its SQL is written once, here."""

    IntegrityError = sqlite3.IntegrityError   # what the database raises for a broken constraint

    def __init__(self, path):
        self.path = str(path)
        # every device secret is in here: 0600 (its -wal and -shm follow), 0700 for a new directory
        self.warnings = private_database(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")
        with self._transaction():
            self._migrate_call_records()
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(call_records)")}
            for column in ("dialled", "linked"):   # records before transfers and forwards were linked
                if column not in columns:
                    self.db.execute("ALTER TABLE call_records ADD COLUMN %s TEXT" % column)

    def _migrate_call_records(self):
        """Databases of protocol v1 keyed call records by uid alone; now it is (origin, uid)."""
        row = self._one("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'call_records'")
        if row is None or "uid TEXT NOT NULL UNIQUE" not in row[0]:
            return
        self.db.execute("ALTER TABLE call_records RENAME TO call_records_v1")
        self.db.execute(_SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS call_records"):].split(";")[0])
        self.db.execute("INSERT INTO call_records (%s) SELECT %s FROM call_records_v1"
                        % (_V1_RECORD_COLUMNS, _V1_RECORD_COLUMNS))
        self.db.execute("DROP TABLE call_records_v1")

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _transaction(self):
        return _Transaction(self.db)

    def _one(self, sql, args=()):
        return self.db.execute(sql, args).fetchone()

    def _bump(self, change=None):
        """Store the next sysinfo version; `change(data)` edits its dict. Call inside a transaction."""
        version, data = self._sysinfo()
        if change:
            change(data)
        self.db.execute("INSERT INTO sysinfo (version, data) VALUES (?, ?)",
                        (version + 1, json.dumps(data, sort_keys=True)))
        return version + 1

    # sites

    def add_site(self, name, uplink_kbps=0, local_calls=True, local_call_quota=0):
        """Add a site; DirectoryError if the name is taken or a value is bad."""
        check_name("site", name)
        check_count("uplink_kbps", uplink_kbps)
        check_count("local call quota", local_call_quota)
        with self._transaction():
            if self._one("SELECT 1 FROM sites WHERE name = ?", (name,)):
                raise DirectoryError("site %r already exists" % name)
            self.db.execute("INSERT INTO sites VALUES (?, ?, ?, ?)",
                            (name, uplink_kbps, 1 if local_calls else 0, local_call_quota))
            self._bump()

    def site(self, name):
        """Site row, or None."""
        row = self._one("SELECT * FROM sites WHERE name = ?", (name,))
        return _site(row) if row else None

    def sites(self):
        """All sites, by name."""
        return [_site(r) for r in self.db.execute("SELECT * FROM sites ORDER BY name")]

    def remove_site(self, name):
        """Remove a site that has no remote host and no extensions left."""
        with self._transaction():
            self._require_site(name)
            hosts = self._one("SELECT count(*) FROM remote_hosts WHERE site = ?", (name,))[0]
            exts = self._one("SELECT count(*) FROM extensions WHERE site = ?", (name,))[0]
            if hosts or exts:
                raise DirectoryError("site %r still has %d remote host(s) and %d extension(s); remove them first"
                                     % (name, hosts, exts))
            self.db.execute("DELETE FROM sites WHERE name = ?", (name,))
            self._bump()

    def _require_site(self, name):
        if not self._one("SELECT 1 FROM sites WHERE name = ?", (name,)):
            raise DirectoryError("unknown site %r" % (name,))

    # remote hosts

    def add_remote_host(self, name, site):
        """Add the remote host of a site (one per site); returns its new secret, 16 bytes."""
        check_name("remote host", name)
        if name == MAIN_ORIGIN:
            raise DirectoryError("remote host name %r is reserved for the main host" % name)
        secret = secrets.token_bytes(16)
        with self._transaction():
            self._require_site(site)
            if self._one("SELECT 1 FROM remote_hosts WHERE name = ?", (name,)):
                raise DirectoryError("remote host %r already exists" % name)
            other = self._one("SELECT name FROM remote_hosts WHERE site = ?", (site,))
            if other:
                raise DirectoryError("site %r already has remote host %r" % (site, other[0]))
            self.db.execute("INSERT INTO remote_hosts VALUES (?, ?, ?)", (name, site, secret.hex()))
            self._bump()
        return secret

    def remote_host(self, name):
        """RemoteHostEntry (with its secret), or None."""
        row = self._one("SELECT * FROM remote_hosts WHERE name = ?", (name,))
        return _remote_host(row) if row else None

    def remote_host_of_site(self, site):
        """The RemoteHostEntry serving a site, or None where phones attach to the main host."""
        row = self._one("SELECT * FROM remote_hosts WHERE site = ?", (site,))
        return _remote_host(row) if row else None

    def remote_hosts(self):
        """All remote hosts, by name."""
        return [_remote_host(r) for r in self.db.execute("SELECT * FROM remote_hosts ORDER BY name")]

    def remove_remote_host(self, name):
        with self._transaction():
            if not self.db.execute("DELETE FROM remote_hosts WHERE name = ?", (name,)).rowcount:
                raise DirectoryError("unknown remote host %r" % (name,))
            self._bump()

    # extensions

    def add_extension(self, number, site, name="", sip=False):
        """Add an extension to a site; returns its new secret, 16 bytes. With sip, the extension is
        a SIP phone's too: its password is then `sip_password(number)` (docs/sip.md)."""
        check_number(number)
        check_extension_name(name)
        secret = secrets.token_bytes(16)
        with self._transaction():
            self._require_site(site)
            if self._one("SELECT 1 FROM extensions WHERE number = ?", (number,)):
                raise DirectoryError("extension %s already exists" % number)
            if self._one("SELECT 1 FROM groups WHERE number = ?", (number,)):
                raise DirectoryError("%s is a group's number" % number)
            self.db.execute("INSERT INTO extensions (number, site, name, secret) VALUES (?, ?, ?, ?)",
                            (number, site, name, secret.hex()))
            if sip:
                self.db.execute("INSERT INTO sip_passwords VALUES (?, ?)", (number, new_sip_password()))
            self._bump()
        return secret

    def set_sip_password(self, number):
        """Give an extension a new SIP password (its phone must be set up again); returns it."""
        password = new_sip_password()
        with self._transaction():
            if not self._one("SELECT 1 FROM extensions WHERE number = ?", (number,)):
                raise DirectoryError("unknown extension %r" % (number,))
            self.db.execute("INSERT OR REPLACE INTO sip_passwords VALUES (?, ?)", (number, password))
            self._bump()
        return password

    def remove_sip_password(self, number):
        """The extension is no SIP phone's any more."""
        with self._transaction():
            if not self.db.execute("DELETE FROM sip_passwords WHERE number = ?", (number,)).rowcount:
                raise DirectoryError("extension %r has no SIP password" % (number,))
            self._bump()

    def sip_password(self, number):
        row = self._one("SELECT password FROM sip_passwords WHERE number = ?", (number,))
        return row[0] if row else None

    def sip_passwords(self, site=None):
        """{number: SIP password} of one site's extensions, or of every site's."""
        sql = "SELECT s.number, s.password FROM sip_passwords s JOIN extensions e ON e.number = s.number"
        rows = self.db.execute(sql + " WHERE e.site = ?", (site,)) if site else self.db.execute(sql)
        return dict(rows)

    def add_extensions(self, rows):
        """Add many (number, site, name) extensions in one transaction; returns {number: secret}.

        For provisioning thousands at once (benchmarks, imports): one version bump.
        """
        out = {}
        for number, site, name in rows:
            check_number(number)
            check_extension_name(name)
            out[number] = secrets.token_bytes(16)
        with self._transaction():
            for site in {site for _n, site, _name in rows}:
                self._require_site(site)
            try:
                self.db.executemany("INSERT INTO extensions (number, site, name, secret) VALUES (?, ?, ?, ?)",
                                    [(n, site, name, out[n].hex()) for n, site, name in rows])
            except self.IntegrityError as exc:
                raise DirectoryError("extensions not added: %s" % exc) from None
            self._bump()
        return out

    def extension(self, number):
        """Extension row (with its secret), or None."""
        row = self._one("SELECT * FROM extensions WHERE number = ?", (number,))
        return _extension(row) if row else None

    def extension_login(self, number):
        """(secret, site, name of the site's remote host or None) of an extension, or None: what a
        login at the main host needs, in one query (10,000 phones registering at once)."""
        row = self._one("SELECT e.secret, e.site, r.name FROM extensions e LEFT JOIN remote_hosts r ON r.site = e.site "
                        "WHERE e.number = ?", (number,))
        return (bytes.fromhex(row[0]), row[1], row[2]) if row else None

    def extensions(self, site=None):
        """Extensions of one site, or of all sites, by number."""
        if site is None:
            rows = self.db.execute("SELECT * FROM extensions ORDER BY length(number), number")
        else:
            rows = self.db.execute("SELECT * FROM extensions WHERE site = ? ORDER BY length(number), number",
                                   (site,))
        return [_extension(r) for r in rows]

    def remove_extension(self, number):
        with self._transaction():
            if not self.db.execute("DELETE FROM extensions WHERE number = ?", (number,)).rowcount:
                raise DirectoryError("unknown extension %r" % (number,))
            self._bump()

    def set_barred(self, number, flag):
        """Bar (True) or allow (False) an extension's local calls."""
        with self._transaction():
            if not self.db.execute("UPDATE extensions SET barred = ? WHERE number = ?",
                                   (1 if flag else 0, number)).rowcount:
                raise DirectoryError("unknown extension %r" % (number,))
            self._bump()

    def features(self, number):
        """An extension's feature settings (host/features.py; the defaults when none were set)."""
        row = self._one("SELECT data FROM features WHERE number = ?", (number,))
        return features.check(json.loads(row[0])) if row else features.defaults()

    def site_features(self, site):
        """{number: settings} of a site's extensions that have settings, for its remote host."""
        rows = self.db.execute("SELECT f.number, f.data FROM features f JOIN extensions e ON e.number = f.number "
                               "WHERE e.site = ?", (site,))
        return {number: json.loads(data) for number, data in rows}

    def set_features(self, number, settings, announce=False):
        """Store an extension's settings; announce (`upbx admin`): bump the system information
        version, so the main host sends the site's directory with them to its remote host."""
        settings = features.check(settings)
        with self._transaction():
            if not self._one("SELECT 1 FROM extensions WHERE number = ?", (number,)):
                raise DirectoryError("unknown extension %r" % (number,))
            self.db.execute("INSERT OR REPLACE INTO features VALUES (?, ?)", (number, json.dumps(settings)))
            if announce:
                self._bump()
        return settings

    def change_features(self, number, changes):
        """A star code's changes to an extension's settings, made on the settings stored when it is
        written (not those read when it was dialled: a change that waited for a cluster's PostgreSQL
        behind another of the same phone keeps the other's); returns the settings stored."""
        with self._transaction():
            if not self._one("SELECT 1 FROM extensions WHERE number = ?", (number,)):
                raise DirectoryError("unknown extension %r" % (number,))
            settings = self.features(number)
            settings.update(changes)
            settings = features.check(settings)
            self.db.execute("INSERT OR REPLACE INTO features VALUES (?, ?)", (number, json.dumps(settings)))
        return settings

    # groups (host/groups.py): ring-all, hunt, page

    def set_group(self, group, replace=False):
        """Store a group (a dict, host/groups.py check()); bumps the version so the remote hosts get it."""
        try:
            group = groups.check(group)
        except groups.GroupError as exc:
            raise DirectoryError(str(exc)) from None
        number = group["number"]
        with self._transaction():
            if self._one("SELECT 1 FROM extensions WHERE number = ?", (number,)):
                raise DirectoryError("%s is an extension's number" % number)
            if not replace and self._one("SELECT 1 FROM groups WHERE number = ?", (number,)):
                raise DirectoryError("group %s already exists" % number)
            for member in group["members"]:
                ext = self.extension(member)
                if ext is None:
                    raise DirectoryError("member %s is not an extension" % member)
                if group["site"] is not None and ext.site != group["site"]:
                    raise DirectoryError("member %s is on site %r: a %s group's members are of site %r"
                                         % (member, ext.site, group["strategy"], group["site"]))
            if group["site"] is not None:
                self._require_site(group["site"])
            overflow = group["overflow"]
            if overflow is not None and not self._one(
                    "SELECT 1 FROM extensions WHERE number = ? UNION SELECT 1 FROM groups WHERE number = ?",
                    (overflow, overflow)):
                raise DirectoryError("overflow %s is neither an extension nor a group" % overflow)
            self.db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?)", (number, json.dumps(group)))
            self._bump()
        return group

    def group(self, number):
        """A group's definition (dict), or None."""
        row = self._one("SELECT data FROM groups WHERE number = ?", (number,))
        return json.loads(row[0]) if row else None

    def groups(self):
        """Every group, by number."""
        rows = self.db.execute("SELECT data FROM groups ORDER BY length(number), number")
        return [json.loads(r[0]) for r in rows]

    def remove_group(self, number):
        """Remove a group no other group overflows to."""
        with self._transaction():
            users = [g["number"] for g in self.groups() if g["overflow"] == number]
            if users:
                raise DirectoryError("group %s is the overflow of group %s; change that first" % (number, users[0]))
            if not self.db.execute("DELETE FROM groups WHERE number = ?", (number,)).rowcount:
                raise DirectoryError("unknown group %r" % (number,))
            self._bump()

    def site_groups(self, site):
        """{number: group} of the groups a site's remote host runs without the main host (B4): those
        with a member on the site, and the site's page and pickup groups."""
        numbers = {e.number for e in self.extensions(site)}
        return {g["number"]: g for g in self.groups() if g["site"] == site or numbers & set(g["members"])}

    def pickup_scope(self, number):
        """The numbers whose ringing calls number's phone may pick up (host/groups.py pickup_scope)."""
        site = self.site_of_extension(number)
        return groups.pickup_scope(number, [e.number for e in self.extensions(site)],
                                   [g for g in self.groups() if g["site"] == site])

    def music_on_hold(self):
        """(version, name, mu-law bytes) of the operator's music on hold; (0, "default", b"") when none
        was ever set, an empty b"" after `moh unset` (the hosts' generated default)."""
        row = self._one("SELECT version, name, ulaw FROM music_on_hold WHERE id = 1")
        return (row[0], row[1], bytes(row[2])) if row else (0, "default", b"")

    def music_on_hold_version(self):
        """The music on hold's version alone (0: never set), without reading the music."""
        row = self._one("SELECT version FROM music_on_hold WHERE id = 1")
        return row[0] if row else 0

    def set_music_on_hold(self, name, ulaw):
        """Store the music (mu-law, whole 20 ms frames; b"": back to the default); its new version."""
        with self._transaction():
            version = self.music_on_hold()[0] + 1
            self.db.execute("INSERT OR REPLACE INTO music_on_hold VALUES (1, ?, ?, ?)",
                            (version, name if ulaw else "default", ulaw))
        return version

    def site_of_extension(self, number):
        """Name of the extension's site, or None for an unknown number."""
        row = self._one("SELECT site FROM extensions WHERE number = ?", (number,))
        return row[0] if row else None

    # call records

    def add_call_record(self, record):
        """Store one call record (a dict with CALL_RECORD_FIELDS); False if its (origin, uid) is already stored."""
        unknown = set(record) - set(CALL_RECORD_FIELDS)
        if unknown:
            raise ValueError("unknown call record field(s): %s" % ", ".join(sorted(unknown)))
        for field in ("uid", "origin"):
            if not record.get(field):
                raise ValueError("call record without %s" % field)
        if record.get("path") not in CALL_PATHS + (None,):
            raise ValueError("call record path %r is not one of %s" % (record["path"], ", ".join(CALL_PATHS)))
        values = [record.get(f) for f in CALL_RECORD_FIELDS]
        # one statement, a transaction of its own on either database: no write lock to take first (a
        # cluster node's record is one round trip to PostgreSQL, not four)
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO call_records (%s) VALUES (%s)"
            % (", ".join(CALL_RECORD_FIELDS), ", ".join("?" * len(CALL_RECORD_FIELDS))), values)
        return cursor.rowcount == 1

    def call_records(self, limit=100, since_ms=None, until_ms=None, site=None, extension=None):
        """The `limit` most recently stored call records, newest first; only those started in
        [since_ms, until_ms), of a site (its extensions as caller or callee, or its remote host as
        origin) or of an extension (caller or callee), where given."""
        where, values = [], []
        if since_ms is not None:
            where.append("started_ms >= ?")
            values.append(since_ms)
        if until_ms is not None:
            where.append("started_ms < ?")
            values.append(until_ms)
        if site is not None:
            where.append("(origin IN (SELECT name FROM remote_hosts WHERE site = ?) OR caller IN "
                         "(SELECT number FROM extensions WHERE site = ?) OR callee IN "
                         "(SELECT number FROM extensions WHERE site = ?))")
            values += [site, site, site]
        if extension is not None:
            where.append("(caller = ? OR callee = ?)")
            values += [extension, extension]
        rows = self.db.execute("SELECT %s FROM call_records %s ORDER BY id DESC LIMIT ?"
                               % (", ".join(CallRecord._fields), "WHERE " + " AND ".join(where) if where else ""),
                               values + [limit])
        return [CallRecord(*r) for r in rows]

    # system information

    def sysinfo(self):
        """(version, dict) of the operator's system information; (0, {}) before any change."""
        return self._sysinfo()

    def _sysinfo(self):
        row = self._one("SELECT version, data FROM sysinfo ORDER BY version DESC LIMIT 1")
        return (row[0], json.loads(row[1])) if row else (0, {})

    def set_sysinfo(self, key, value):
        """Set (or, with value None, remove) one key; settings.NAME goes under data["settings"]."""
        if key not in SYSINFO_KEYS and not _SETTING.match(key or ""):
            raise DirectoryError("unknown sysinfo key %r: use %s or settings.NAME"
                                 % (key, ", ".join(SYSINFO_KEYS)))

        def change(data):
            table, name = data, key
            if key.startswith("settings."):
                table, name = data.setdefault("settings", {}), key[len("settings."):]
            if value is None:
                table.pop(name, None)
                if not data.get("settings", True):
                    del data["settings"]
            else:
                table[name] = value

        with self._transaction():
            return self._bump(change)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb):
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _site(row):
    return Site(row[0], row[1], bool(row[2]), row[3])


def _remote_host(row):
    return RemoteHostEntry(row[0], row[1], bytes.fromhex(row[2]))


def new_sip_password():
    """20 characters a person can type into a desk phone's web page (about 119 bits)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(20))


def _extension(row):
    return Extension(row[0], row[1], row[2], bytes.fromhex(row[3]), bool(row[4]))
