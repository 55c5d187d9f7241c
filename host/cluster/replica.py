"""A node's own copy of the cluster's directory: SQLite, kept from PostgreSQL.

The main host reads its directory at every login and call (host/main_host.py); on
a node those reads go to this copy, a SQLite file (main.toml's `database`), so a
login never waits on PostgreSQL and a node whose PostgreSQL is away (restarting,
failing over) keeps logging phones in and switching calls from what it last had.
`refresh()` copies every directory table from PostgreSQL in one snapshot; the
node's ClusterService calls it at every NOTIFY (host/cluster/node.py).

Writes go to PostgreSQL first (`primary`), then the copy is refreshed, so the
node reads its own write at once and the others at their NOTIFY. Call records:
a remote host's upload is stored in PostgreSQL or not at all (StoreUnavailable:
the main host acknowledges only what committed, host/main_host.py); the main
host's own records wait in this file's call_records table while PostgreSQL is
away and `flush_outbox()` moves them, once each by (origin, uid).
"""
from upbx.host.directory import MAIN_ORIGIN, CALL_RECORD_FIELDS, Directory, StoreUnavailable
from upbx.host.cluster.postgres import COLUMNS, DIRECTORY_TABLES, PostgresDirectory

# Directory methods that change the directory: PostgreSQL's, then a refresh
WRITES = ("add_site", "remove_site", "add_remote_host", "remove_remote_host", "add_extension", "add_extensions",
          "set_sip_password", "remove_sip_password", "remove_extension", "set_barred", "set_features", "set_group",
          "remove_group", "set_music_on_hold", "set_sysinfo")


class ReplicaDirectory(Directory):
    """Directory whose reads are a local SQLite copy (`path`) and whose writes go to `primary`."""

    def __init__(self, path, primary):
        Directory.__init__(self, path)
        self.primary = primary
        self.available = True     # False after PostgreSQL failed, until the node reached it again
        self.refreshes = 0
        self.db.execute("PRAGMA foreign_keys = OFF")   # PostgreSQL checks them; the copy takes its tables whole

    @classmethod
    def open(cls, path, dsn):
        """The copy at path, refreshed from PostgreSQL at dsn; (directory, None) or, when PostgreSQL cannot
        be reached, (directory with what the file last had, the reason)."""
        try:
            primary = PostgresDirectory(dsn)
        except StoreUnavailable as exc:
            replica = cls(path, _Unreachable(dsn))
            replica.available = False
            return replica, str(exc)
        replica = cls(path, primary)
        try:
            replica.refresh()
        except StoreUnavailable as exc:
            replica.available = False
            return replica, str(exc)
        return replica, None

    def connect_primary(self):
        """PostgreSQL answers again: make the PostgreSQL side (unreachable since the start), or drop its
        connection (it may be to the server that went away: the next write connects afresh); then
        writes go to it again. Raises StoreUnavailable."""
        if isinstance(self.primary, _Unreachable):
            self.primary = PostgresDirectory(self.primary.dsn)
        else:
            self.primary.db.close()
        self.available = True

    def refresh(self):
        """Copy every directory table from PostgreSQL; returns the system information version copied."""
        try:
            tables = self.primary.snapshot()
        except StoreUnavailable:
            self.available = False
            raise
        version = self.apply(tables)
        self.available = True
        return version

    def apply(self, tables):
        """Replace the copy with a snapshot ({table: rows}, postgres.py) in one SQLite transaction; returns
        the system information version it holds."""
        with self._transaction():
            for table in reversed(DIRECTORY_TABLES):
                self.db.execute("DELETE FROM %s" % table)
            for table in DIRECTORY_TABLES:
                columns = COLUMNS[table]
                self.db.executemany("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(columns),
                                                                       ", ".join("?" * len(columns))),
                                    tables[table])
        self.refreshes += 1
        return self.sysinfo()[0]

    def _write(self, name, *args, **kwargs):
        if not self.available:
            raise StoreUnavailable("PostgreSQL is unreachable: the directory cannot change now")
        try:
            result = getattr(self.primary, name)(*args, **kwargs)
        except StoreUnavailable:
            self.available = False
            raise
        self.refresh()
        return result

    # call records: PostgreSQL's

    def add_call_record(self, record):
        """Store a record in PostgreSQL (False: stored before). A remote host's upload raises
        StoreUnavailable when PostgreSQL is away; the main host's own waits here (flush_outbox)."""
        if self.available:
            try:
                return self.primary.add_call_record(record)
            except StoreUnavailable:
                self.available = False
                if record.get("origin") != MAIN_ORIGIN:
                    raise
        elif record.get("origin") != MAIN_ORIGIN:
            raise StoreUnavailable("PostgreSQL is unreachable: the record was not stored")
        return Directory.add_call_record(self, record)

    def outbox(self):
        """The main host's records waiting for PostgreSQL."""
        return Directory.call_records(self, limit=1 << 30)

    def flush_outbox(self):
        """Move the waiting records to PostgreSQL (each once); returns how many were moved."""
        moved = 0
        for record in reversed(self.outbox()):
            self.primary.add_call_record({f: getattr(record, f) for f in CALL_RECORD_FIELDS})
            self.db.execute("DELETE FROM call_records WHERE id = ?", (record.id,))
            moved += 1
        return moved

    def call_records(self, *args, **kwargs):
        return self.primary.call_records(*args, **kwargs)

    def close(self):
        Directory.close(self)
        if isinstance(self.primary, PostgresDirectory):
            self.primary.db.close()


def _forward(name):
    def write(self, *args, **kwargs):
        return self._write(name, *args, **kwargs)
    write.__name__ = name
    write.__doc__ = "PostgreSQL's %s, then a refresh of this copy (StoreUnavailable when it is away)." % name
    return write


for _name in WRITES:
    setattr(ReplicaDirectory, _name, _forward(_name))


class _Unreachable:
    """The PostgreSQL side of a node that started while it was away (connect_primary makes it)."""

    def __init__(self, dsn):
        self.dsn = dsn

    def __getattr__(self, name):
        raise StoreUnavailable("PostgreSQL has not been reached since this node started")
