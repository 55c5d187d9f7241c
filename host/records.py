"""A remote host's own call records, kept on disk until the main host has them (B4).

Each record is a dict with a unique "uid" (the main host stores an upload twice
only once, by uid). It is committed to SQLite the moment it is added, so a
killed or powered-off remote host loses no finished call; after a restart,
`pending()` gives back what the main host has not acknowledged yet.
"""
import json
import sqlite3

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
