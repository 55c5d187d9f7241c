"""A node's own copy of the cluster's directory: SQLite, kept from PostgreSQL.

The main host reads its directory at every login and call (host/main_host.py); on
a node those reads go to this copy, a SQLite file (main.toml's `database`), so a
login never waits on PostgreSQL and a node whose PostgreSQL is away (restarting,
failing over) keeps logging phones in and switching calls from what it last had.
`refresh()` copies every directory table from PostgreSQL in one snapshot; the
node's ClusterService calls it at every NOTIFY (host/cluster/node.py).

Writes go to PostgreSQL first (`primary`), then the copy is refreshed, so the
node reads its own write at once and the others at their NOTIFY. On a running node
(`writer` set by host/cluster/node.py) they go through `write_later`: PostgreSQL's
part on the writer's thread, one at a time, the copy's on the loop, then the caller's
`done` on the loop: a slow or hung PostgreSQL never stalls the relay. A write given a
wait (a star code's) that finds PostgreSQL away waits for it at the head of the queue
and is tried again when the node reaches it, or refused past its bound (expire_writes). Call records:
a remote host's upload is stored in PostgreSQL or not at all (StoreUnavailable:
the main host acknowledges only what committed, host/main_host.py); the main
host's own records wait in this file's call_records table while PostgreSQL is
away and `flush_outbox()` moves them, once each by (origin, uid). On a running
node every main host record goes to that table first and the writer moves it.
"""
import collections
import concurrent.futures
import threading
from upbx.host.directory import MAIN_ORIGIN, CALL_RECORD_FIELDS, Directory, StoreUnavailable
from upbx.host.cluster.postgres import COLUMNS, DIRECTORY_TABLES, PostgresDirectory

# Directory methods that change the directory: PostgreSQL's, then a refresh
WRITES = ("add_site", "remove_site", "add_remote_host", "remove_remote_host", "add_extension", "add_extensions",
          "set_sip_password", "remove_sip_password", "remove_extension", "set_barred", "set_features", "change_features",
          "set_group",
          "remove_group", "set_music_on_hold", "set_sysinfo")

WAITING_MAX = 1000   # writes queued for PostgreSQL at most (write_later): beyond, refused at once


class _Write:
    """A write_later write: until (writer clock ms) it may wait for PostgreSQL, None: it may not; sent: at
    the writer's thread; answered: its done called."""
    __slots__ = ("name", "args", "done", "until", "sent", "answered")

    def __init__(self, name, args, done, until):
        self.name, self.args, self.done, self.until = name, args, done, until
        self.sent = self.answered = False


class ReplicaDirectory(Directory):
    """Directory whose reads are a local SQLite copy (`path`) and whose writes go to `primary`."""

    def __init__(self, path, primary):
        Directory.__init__(self, path)
        self.primary = primary
        self.available = True     # False after PostgreSQL failed, until the node reached it again
        self.refreshes = 0
        self.writer = None        # a Writer on a running node: PostgreSQL's writes off the loop
        self.queue = collections.deque()   # write_later's writes not answered yet, in order: the first at the writer
        self.retried = 0          # writes that found PostgreSQL away and waited for it
        self.lost = None          # called when a write finds PostgreSQL away (a running node: its LISTEN probes it)
        self.api_waiting = 0      # API and web requests waiting for PostgreSQL now (host/api.py)
        self.api_wait_s = 10      # ... each at most this long (main.toml [cluster] api_wait_s)
        self.api_withdrawn = 0    # ... given up on before PostgreSQL's thread came to them: not made
        self._flushing = False
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
        StoreUnavailable when PostgreSQL is away; the main host's own waits here (flush_outbox), and on
        a running node always goes here first, moved by the writer (flush_later)."""
        if self.writer is not None and record.get("origin") == MAIN_ORIGIN:
            stored = Directory.add_call_record(self, record)
            self.flush_later()
            return stored
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

    # writes off the loop (a running node)

    def write_later(self, name, args, done, wait_ms=0):
        """PostgreSQL's `name(*args)` (a write of WRITES, or add_call_record of a remote host's upload) on
        the writer's thread, then (a write) the copy refreshed from the snapshot read there, then
        done(result, error, now_ms) on the loop; error is the exception (StoreUnavailable while
        PostgreSQL is away) or None. Without a writer (no loop: `upbx admin`, a test) at once.
        With wait_ms a write that finds PostgreSQL away waits for it (queued, in order) up to wait_ms
        and is tried again, once, when the node reaches it (reconnect_later); past wait_ms done has
        StoreUnavailable. Without, it is refused at once then (the caller keeps it: records).
        Returns the write while it waits (for withdraw), else None (answered at once)."""
        if self.writer is None:
            try:
                result = getattr(self, name)(*args)
            except Exception as exc:
                done(None, exc, None)
                return None
            done(result, None, None)
            return None
        if not self.available and (not wait_ms or len(self.queue) >= WAITING_MAX):
            done(None, StoreUnavailable("PostgreSQL is unreachable: %s not done now" % name), None)
            return None
        until = self.writer.clock() + wait_ms if wait_ms else None
        write = _Write(name, args, done, until)
        self.queue.append(write)
        self._send_next()
        return write

    def withdraw(self, write):
        """A write_later write its caller no longer wants (a star code whose caller hung up): its done is
        never called. True: it is not made (it was still queued, waiting for PostgreSQL); False: it is
        at the writer's thread and may still be made (PostgreSQL slow or hung), or was answered already."""
        if write.answered:
            return False
        write.answered = True
        if write.sent:
            return False
        self.queue.remove(write)
        self._send_next()
        return True

    def _send_next(self):
        """The first write of the queue to the writer's thread, if none is there and PostgreSQL answers:
        one at a time, so one tried again goes before those behind it."""
        if not self.queue or self.queue[0].sent or not self.available:
            return
        write = self.queue[0]
        write.sent = True
        primary, refresh = self.primary, write.name in WRITES

        def work():
            result = getattr(primary, write.name)(*write.args)
            return result, (primary.snapshot() if refresh else None)

        def finished(outcome, error, now):
            if isinstance(error, StoreUnavailable):
                self.available = False
                if self.lost is not None:
                    self.lost()          # the node probes PostgreSQL (host/cluster/node.py _listen)
                if write.until is not None and now < write.until and not write.answered:
                    write.sent = False   # at the queue's head: tried again when PostgreSQL is back
                    self.retried += 1
                    self.expire_writes()
                    return
            self.queue.popleft()
            if error is None:
                outcome, tables = outcome
                if tables is not None:
                    self.apply(tables)
            if not write.answered:     # else refused at its bound already (PostgreSQL hung): it stuck anyway
                write.answered = True
                write.done(None if error else outcome, error, now)
            self._send_next()
        self.writer.submit(work, finished)

    def expire_writes(self):
        """Refuse (StoreUnavailable to their done) the queued writes past their bound, and those without
        one while PostgreSQL is away; one at the writer's thread past its bound (PostgreSQL hung) is
        answered so now and its outcome, when it comes, only refreshes the copy. The main host calls
        this every second."""
        if self.writer is None or not self.queue:
            return
        now = self.writer.clock()
        kept, refused = collections.deque(), []
        for write in self.queue:
            if write.answered or (now < write.until if write.until is not None else self.available or write.sent):
                kept.append(write)
                continue
            write.answered = True
            refused.append(write)
            if write.sent:
                kept.append(write)
        self.queue = kept
        for write in refused:
            write.done(None, StoreUnavailable("PostgreSQL did not take %s in time" % write.name), now)

    def reconnect_later(self, done=None):
        """PostgreSQL answers again (the node's LISTEN is back): on the writer's thread, make the PostgreSQL
        side (unreachable since the start) or drop its connection (it may be to the server that went away,
        or to a primary that is one no more: the next write connects afresh, to the primary a multi-host
        connection string finds); then writes go to it again and the waiting records move."""
        if self.writer is None:
            self.connect_primary()
            return
        primary = self.primary

        def work():
            if isinstance(primary, _Unreachable):
                return PostgresDirectory(primary.dsn)
            primary.db.close()
            return primary

        def finished(outcome, error, now):
            if error is None:
                self.primary = outcome
                self.available = True
                self._send_next()     # the write that waited for PostgreSQL first, then the others
                self.flush_later()
            if done is not None:
                done(error)
        self.writer.submit(work, finished)

    def flush_later(self):
        """Move the waiting records to PostgreSQL on the writer's thread (one batch at a time); each row
        leaves this file once PostgreSQL committed it."""
        if self.writer is None or self._flushing or not self.available:
            return
        waiting = list(reversed(self.outbox()))
        if not waiting:
            return
        self._flushing = True
        primary = self.primary
        rows = [(r.id, {f: getattr(r, f) for f in CALL_RECORD_FIELDS}) for r in waiting]

        def work():
            moved = []
            for row_id, record in rows:
                primary.add_call_record(record)
                moved.append(row_id)
            return moved

        def finished(moved, error, now):
            self._flushing = False
            if error is not None:
                if isinstance(error, StoreUnavailable):
                    self.available = False
                return
            self.db.executemany("DELETE FROM call_records WHERE id = ?", [(i,) for i in moved])
            self.flush_later()   # what was added meanwhile
        self.writer.submit(work, finished)

    # the API's and web page's work (host/api.py): PostgreSQL's, off the loop

    def change_later(self, change, done):
        """change(directory) on PostgreSQL's side, on the writer's thread in turn with the node's own writes
        (an API or web page change: it checks its input and writes through the Directory's methods, as
        `upbx admin --config` does on a cluster), then the copy refreshed from a snapshot read there (the
        node reads its own change at once; the others at their NOTIFY), then done(result, error, now) on
        the loop. Refused at once (StoreUnavailable) while PostgreSQL is known to be away. Returns the
        writer's Job (withdraw() before the thread comes to it: not made), None when answered at once."""
        if not self.available:
            done(None, StoreUnavailable("PostgreSQL is unreachable: nothing was changed"), None)
            return None
        primary = self.primary
        if self.writer is None:
            try:
                result = change(primary)
                self.apply(primary.snapshot())
            except Exception as exc:
                done(None, self._failed(exc), None)
                return None
            done(result, None, None)
            return None

        def work():
            return change(primary), primary.snapshot()

        def finished(outcome, error, now):
            if error is not None:
                return done(None, self._failed(error), now)
            result, tables = outcome
            self.apply(tables)
            done(result, None, now)
        return self.writer.submit(work, finished)

    def read_later(self, read, done):
        """read(directory) on the reader's thread and its PostgreSQL connection (the API's call records: a
        large export holds up neither the loop nor the writes), then done(result, error, now) on the loop.
        Refused at once (StoreUnavailable) while PostgreSQL is known to be away. Returns the Job, or None."""
        if not self.available:
            done(None, StoreUnavailable("PostgreSQL is unreachable: the call records cannot be read now"), None)
            return None
        dsn = self.primary.dsn
        if self.writer is None:
            own = PostgresDirectory.reader(dsn)
            try:
                result = read(own)
            except Exception as exc:
                done(None, exc, None)
                return None
            finally:
                own.db.close()
            done(result, None, None)
            return None
        writer = self.writer

        def work():
            if writer.reader is None or writer.reader.dsn != dsn:
                writer.reader = PostgresDirectory.reader(dsn)   # made again at the next read once it failed
            return read(writer.reader)
        return writer.submit(work, done, reads=True)

    def _failed(self, error):
        if isinstance(error, StoreUnavailable):
            self.available = False
            if self.lost is not None:
                self.lost()          # the node probes PostgreSQL (host/cluster/node.py _listen)
        return error

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


class Writer:
    """A node's PostgreSQL writes, one at a time on a thread of their own (a psycopg connection is used by
    one thread; one writer keeps them in order, as one connection did). submit(work, finished) runs
    work() there and finished(result, error, now_ms) on the loop, then `after()` (the daemon sends what
    finished queued). A hung PostgreSQL (stopped, its network gone) holds the thread, never the loop."""

    def __init__(self, loop, clock, after):
        self.loop = loop
        self.clock = clock
        self.after = after
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postgres-writer")
        # the API's reads (ReplicaDirectory.read_later): one at a time on a connection of their own, beside
        # the writes (a hung PostgreSQL holds them as it holds the writes; an export holds no write up)
        self.readers = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postgres-reader")
        self.reader = None   # its PostgresDirectory (used on that thread only)
        self.pending = 0

    def submit(self, work, finished, reads=False):
        """Returns the Job: withdraw() keeps work from running if its thread has not started it."""
        self.pending += 1
        job = Job()

        def run():
            job.start()
            return work()
        future = self.loop.run_in_executor(self.readers if reads else self.pool, run)
        future.add_done_callback(lambda f: self._finished(f, finished))
        return job

    def _finished(self, future, finished):
        self.pending -= 1
        if future.cancelled():
            return
        error = future.exception()
        try:
            if not isinstance(error, Withdrawn):
                finished(None if error else future.result(), error, self.clock())
        finally:
            self.after()

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.readers.shutdown(wait=False, cancel_futures=True)


class Withdrawn(Exception):
    """A Job withdrawn before its thread came to it: its work was not run (its finished is not called)."""


class Job:
    """Work submitted to a Writer's thread. Its thread starts it, or the loop withdraws it first (an API
    request given up after `api_wait_s`), never both: a lock decides which came first."""
    __slots__ = ("lock", "state")

    def __init__(self):
        self.lock = threading.Lock()
        self.state = "queued"

    def start(self):
        """On the thread, before the work: Withdrawn if the loop withdrew it."""
        with self.lock:
            if self.state == "withdrawn":
                raise Withdrawn()
            self.state = "started"

    def withdraw(self):
        """On the loop: True if the work will never run; False if its thread started it (it may finish)."""
        with self.lock:
            if self.state == "queued":
                self.state = "withdrawn"
            return self.state == "withdrawn"


class _Unreachable:
    """The PostgreSQL side of a node that started while it was away (connect_primary makes it)."""

    def __init__(self, dsn):
        self.dsn = dsn

    def __getattr__(self, name):
        raise StoreUnavailable("PostgreSQL has not been reached since this node started")
