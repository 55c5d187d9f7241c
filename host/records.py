"""A remote host's own call records, kept on disk until the main host has them (B4).

Each record is a dict with a unique "uid" (the main host stores an upload twice
only once, by uid). It is committed to SQLite the moment it is added, so a
killed or powered-off remote host loses no finished call; after a restart,
`pending()` gives back what the main host has not acknowledged yet.
"""
import json
import re
import sqlite3

from upbx.common.wire import CAUSE_TEXT
from upbx.host.files import private_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0
)"""


class RecordStore:
    """Call records of one remote host in a SQLite file (or ":memory:")."""

    def __init__(self, path):
        self.path = str(path)
        self.warnings = private_database(self.path)   # who called whom, when: 0600
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = FULL")  # a site's Pi loses power more often than it crashes
        self.db.execute(_SCHEMA)

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, record):
        """Store one record and commit; False when a record with its uid is already stored."""
        uid = record.get("uid")
        if not uid or not isinstance(uid, str):
            raise ValueError("call record without a uid")
        cursor = self.db.execute("INSERT OR IGNORE INTO records (uid, data) VALUES (?, ?)",
                                 (uid, json.dumps(record, sort_keys=True)))
        return cursor.rowcount == 1

    def pending(self, limit=None):
        """Records the main host has not acknowledged, oldest first."""
        sql = "SELECT data FROM records WHERE uploaded = 0 ORDER BY seq"
        if limit is not None:
            return [json.loads(r[0]) for r in self.db.execute(sql + " LIMIT ?", (limit,))]
        return [json.loads(r[0]) for r in self.db.execute(sql)]

    def pending_count(self):
        """How many records wait for the main host (a scrape's question: counted, not read)."""
        return self.db.execute("SELECT count(*) FROM records WHERE uploaded = 0").fetchone()[0]

    def mark_uploaded(self, uids):
        """The main host has stored these records; unknown uids are ignored."""
        uids = list(uids)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("UPDATE records SET uploaded = 1 WHERE uid = ?", [(u,) for u in uids])
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def all(self):
        """Every record, uploaded or not, oldest first."""
        return [json.loads(r[0]) for r in self.db.execute("SELECT data FROM records ORDER BY seq")]

    def __len__(self):
        return self.db.execute("SELECT count(*) FROM records").fetchone()[0]


# The upload format: one call record in one RECORDS message (IE_DATA holds at most
# 255 bytes), so a list in a fixed order with the cause as its code, not a dict.
UPLOAD_FIELDS = ("uid", "caller", "callee", "path", "started_ms", "answered_ms", "ended_ms", "cause", "setup_ms",
                 "dialled", "linked")


def call_record(call, origin, cause, now, wall_ms):
    """The record of a finished call (host.switch.Call); times are wall-clock ms.

    now is the daemon's monotonic clock and wall_ms the wall clock at that moment,
    so records from hosts whose monotonic clocks differ line up.
    """
    def wall(t):
        return None if t is None else wall_ms - (now - t)

    return {"uid": call.record_as, "origin": origin, "caller": call.caller, "callee": call.callee,
            "path": call.path, "started_ms": wall(call.started_ms), "answered_ms": wall(call.answered_ms),
            "ended_ms": wall_ms, "cause": CAUSE_TEXT.get(cause, str(cause)),
            "setup_ms": (call.alerted_ms - call.started_ms) if call.alerted_ms else None,
            # linked records (docs/features.md): the number dialled when the call was forwarded
            # elsewhere, and the uid of the call a transfer continues
            "dialled": call.tried[0] if call.tried and call.tried[0] != call.callee else None,
            "linked": call.linked}


def encode_upload(record):
    """Bytes of a record for a RECORDS message (always within one IE)."""
    codes = {text: code for code, text in CAUSE_TEXT.items()}
    values = [record.get(k) for k in UPLOAD_FIELDS]
    values[UPLOAD_FIELDS.index("cause")] = codes.get(record.get("cause"), record.get("cause"))
    values[1] = str(values[1])[:15]
    values[2] = str(values[2])[:15]
    data = json.dumps(values, separators=(",", ":")).encode()
    if len(data) > 255:
        raise ValueError("call record %s does not fit one RECORDS message" % record.get("uid"))
    return data


_UID = re.compile(r"^[0-9a-f]{16}$")
_NUMBER = re.compile(r"^[0-9]{1,15}$")
_OUTSIDE = re.compile(r"^(\+?[0-9*#]{1,15}|anonymous)$")
EARLIEST_MS = 1577836800000          # 2020-01-01: no upbx record is older
FUTURE_MS = 24 * 3600 * 1000         # a remote host's clock may run ahead of ours by up to a day
LONGEST_CALL_MS = 31 * 24 * 3600 * 1000


def decode_upload(data, origin, site, site_of_extension, now_wall_ms):
    """The record dict of a RECORDS payload from remote host `origin` of `site`; ValueError when it is not one.

    Every field is checked for its type and range. A remote host uploads records
    of its own site's local calls only (the main host records everything else
    itself): caller and callee must be numbers of `site` (a number no longer in
    the directory is accepted: it may have been removed since the call), and the
    path "local"; or a call on the site's own SIP trunk (path "trunk", docs/sip.md):
    one side the site's, the other an outside number (up to 15 digits after an
    optional +, or "anonymous"). site_of_extension(number) gives a number's site or None.
    """
    try:
        values = json.loads(bytes(data))
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(values, list) or len(values) not in (len(UPLOAD_FIELDS) - 2, len(UPLOAD_FIELDS)):
        raise ValueError("expected a list of %d fields (or %d, from a remote host before linked records)"
                         % (len(UPLOAD_FIELDS), len(UPLOAD_FIELDS) - 2))
    record = dict(zip(UPLOAD_FIELDS, values + [None, None][:len(UPLOAD_FIELDS) - len(values)]))
    if not isinstance(record["uid"], str) or not _UID.match(record["uid"]):
        raise ValueError("uid: expected 16 lowercase hex digits")
    if record["path"] not in ("local", "trunk"):
        raise ValueError("path: a remote host uploads local calls and its own trunk's only, got %r"
                         % (record["path"],))
    for field in ("caller", "callee"):
        number = record[field]
        outside = record["path"] == "trunk"   # one side is the outside number (or "anonymous")
        if not isinstance(number, str) or not (_OUTSIDE if outside else _NUMBER).match(number):
            raise ValueError("%s: expected %s" % (field, "an outside number: up to 15 digits after an optional +, "
                                                  "or anonymous" if outside else "1 to 15 digits"))
        other = site_of_extension(number)
        if other is not None and other != site and not outside:
            raise ValueError("%s: %s is an extension of site %r, not of %r" % (field, number, other, site))
    started, answered, ended = record["started_ms"], record["answered_ms"], record["ended_ms"]
    for field, value in (("started_ms", started), ("ended_ms", ended)):
        if not _whole(value) or not EARLIEST_MS <= value <= now_wall_ms + FUTURE_MS:
            raise ValueError("%s: expected a time in ms between 2020 and tomorrow" % field)
    if not started <= ended <= started + LONGEST_CALL_MS:
        raise ValueError("ended_ms: expected from started_ms to a month after it")
    if answered is not None and (not _whole(answered) or not started <= answered <= ended):
        raise ValueError("answered_ms: expected null or a time from started_ms to ended_ms")
    setup = record["setup_ms"]
    if setup is not None and (not _whole(setup) or not 0 <= setup <= ended - started):
        raise ValueError("setup_ms: expected null or 0 to the call's length")
    if record["dialled"] is not None and (not isinstance(record["dialled"], str) or not _NUMBER.match(record["dialled"])):
        raise ValueError("dialled: expected null or 1 to 15 digits")
    if record["linked"] is not None and (not isinstance(record["linked"], str) or not _UID.match(record["linked"])):
        raise ValueError("linked: expected null or 16 lowercase hex digits")
    cause = record["cause"]
    if not _whole(cause) or cause not in CAUSE_TEXT:
        raise ValueError("cause: expected one of the cause codes %s" % sorted(CAUSE_TEXT))
    record["cause"] = CAUSE_TEXT[cause]
    record["origin"] = origin
    return record


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)
