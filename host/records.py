"""A remote host's own call records, kept on disk until the main host has them (B4).

Each record is a dict with a unique "uid" (the main host stores an upload twice
only once, by uid). It is committed to SQLite the moment it is added, so a
killed or powered-off remote host loses no finished call; after a restart,
`pending()` gives back what the main host has not acknowledged yet.
"""
import json
import sqlite3

from common.wire import CAUSE_TEXT

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
UPLOAD_FIELDS = ("uid", "caller", "callee", "path", "started_ms", "answered_ms", "ended_ms", "cause", "setup_ms")


def call_record(call, origin, cause, now, wall_ms):
    """The record of a finished call (host.switch.Call); times are wall-clock ms.

    now is the daemon's monotonic clock and wall_ms the wall clock at that moment,
    so records from hosts whose monotonic clocks differ line up.
    """
    def wall(t):
        return None if t is None else wall_ms - (now - t)

    return {"uid": call.uid, "origin": origin, "caller": call.caller, "callee": call.callee,
            "path": call.path, "started_ms": wall(call.started_ms), "answered_ms": wall(call.answered_ms),
            "ended_ms": wall_ms, "cause": CAUSE_TEXT.get(cause, str(cause)),
            "setup_ms": (call.alerted_ms - call.started_ms) if call.alerted_ms else None}


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


def decode_upload(data, origin):
    """The record dict of an uploaded RECORDS payload; ValueError when it is not one."""
    values = json.loads(bytes(data))
    if not isinstance(values, list) or len(values) != len(UPLOAD_FIELDS):
        raise ValueError("expected a list of %d fields" % len(UPLOAD_FIELDS))
    record = dict(zip(UPLOAD_FIELDS, values))
    if not isinstance(record["uid"], str) or len(record["uid"]) != 16:
        raise ValueError("bad uid")
    bytes.fromhex(record["uid"])
    cause = record["cause"]
    record["cause"] = CAUSE_TEXT.get(cause, str(cause)) if isinstance(cause, int) else str(cause)
    record["origin"] = origin
    return record
