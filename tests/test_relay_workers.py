"""The main host on every core (host/relay_workers.py, host/relay_worker.py, docs/relay.md "Every core").

A real main host (`upbx main`, workers = 2) relays calls between two emulated remote hosts: one
host's session belongs to the worker process, the other's to the main host itself. What the
tests assert is what a user or an attacker would see: every frame arrives once, decrypted to what
was sent; a replayed or forged trunk is dropped and counted, before and after a direction moves
between the processes (hold and resume); a host that moves is found at its new address (B7).
"""
import gc
import select
import socket
import time

import pytest

from upbx.common import wire
from upbx.common.crypto import extend16
from upbx.common.media import open_trunk
from upbx.host import fastpath
from upbx.host.relay_workers import attach_steering

pytestmark = pytest.mark.skipif(fastpath.native is None, reason="relay workers need the C fast path (not built here)")


def test_the_kernel_steers_trunk_frames_by_session_index_and_the_rest_to_the_main_host():
    group = []
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", group[0].getsockname()[1] if group else 0))
            s.setblocking(False)
            group.append(s)
        attach_steering(group[0], 3)
        address = group[0].getsockname()
        sent = {0: [], 1: [], 2: []}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for index in (1, 2, 3, 4, 5, 0x3FFFFF, 0x010000, 0x2ABCDE):
                frame = bytes([0xC0 | (index >> 16), (index >> 8) & 0xFF, index & 0xFF]) + bytes(20)
                sent[index % 3].append(frame)
                tx.sendto(frame, address)
            for other in (b"\x00\x01" + bytes(30), b"\x80\x05" + bytes(10), b"\x40" + bytes(7)):  # full, mini, other
                sent[0].append(other)
                tx.sendto(other, address)
        time.sleep(0.2)
        for k, s in enumerate(group):
            got = []
            while True:
                try:
                    got.append(s.recv(100))
                except BlockingIOError:
                    break
            assert sorted(got) == sorted(sent[k]), "socket %d" % k
    finally:
        for s in group:
            s.close()


class Pair:
    """A 2-worker main host and two emulated remote hosts with `calls` answered calls a -> b."""

    def __init__(self, tmp_path, calls):
        from upbx.tools import bench_net
        self.bench_net = bench_net
        self.main = bench_net.MainUnderTest({"a": ["1%05d" % i for i in range(calls)],
                                             "b": ["2%05d" % i for i in range(calls)]},
                                            workdir=str(tmp_path), cpu=None, workers=2)
        try:
            self.pair = bench_net.TrunkPair(self.main, calls)
        except BaseException:
            self.main.close()
            raise
        a, b = self.pair.a, self.pair.b
        self.index = {a: a.login.channel.peer_index, b: b.login.channel.peer_index}
        # sessions are numbered one after another: one host is the worker's (odd), the other the main host's
        self.worker_side = a if self.index[a] % 2 else b
        self.main_side = b if self.worker_side is a else a
        assert self.index[self.main_side] % 2 == 0

    def close(self):
        try:
            self.pair.close()
        finally:
            self.main.close()

    def status(self):
        return self.main.status()

    def wait(self, what, seconds=10):
        deadline = time.monotonic() + seconds
        while True:
            status = self.status()
            if what(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError("not reached in %d s; status: %r" % (seconds, status))
            time.sleep(0.05)

    def frames(self, client, ticks, ts0):
        plan = self.pair.seal_ticks(self.pair.calls, ticks, ts0, 1472)
        return [data for tick in plan for c, data, _i in tick if c is client]

    def opener(self, client):
        """Opens what arrives at client with its own keys: [(call index, ts, payload or None)]."""
        pair = self.pair
        auth = client.login.channel.crypto.recv_auth
        legs = {c.a_no if client is pair.a else c.b_no: (c, c.a if client is pair.a else c.b) for c in pair.calls}

        def open_(data):
            data = bytearray(data)
            entries = open_trunk(auth, data, lambda no, ts16: extend16(legs[no][1].replay.highest, ts16)
                                 if no in legs else None)
            assert entries is not None, "a relayed trunk frame the host cannot authenticate"
            out = []
            for no, ts, start, end in entries:
                call, leg = legs[no]
                payload = leg.open_entry_bytes(data, ts, start, end)
                out.append((call.index, ts, bytes(payload) if payload is not None else None))
            return out
        return open_

    def exchange(self, sends, receiver, want, seconds=5, sock=None):
        """Send [(socket, datagram)], 2 ms apart, and collect what receiver's socket (or sock) gets until
        want(got) or the time is up; signalling is answered by its login."""
        open_ = self.opener(receiver)
        rx = sock or receiver.sock
        got = []

        def drain(timeout):
            if not select.select([rx], [], [], timeout)[0]:
                return
            while True:
                try:
                    data = rx.recv(65536)
                except BlockingIOError:
                    return
                if wire.frame_kind(data) == wire.KIND_FULL:
                    receiver.signal(data, int(time.monotonic() * 1000))
                elif wire.frame_kind(data) == wire.KIND_TRUNK:
                    got.extend(open_(data))

        for s, data in sends:
            s.sendto(data, self.main.address)
            drain(0.002)
        deadline = time.monotonic() + seconds
        while not want(got) and time.monotonic() < deadline:
            drain(0.02)
        drain(0.1)
        return got

    def hold(self, client, flag):
        """HOLD (flag 1) or resume (0) from client on its call 0."""
        call = self.pair.calls[0]
        ours, theirs = (call.a_no, call.a.peer_call_no) if client is self.pair.a else (call.b_no, call.b.peer_call_no)
        now = int(time.monotonic() * 1000)
        client.login.send(wire.HOLD, {wire.IE_CALL_NO: ours, wire.IE_PEER_CALL_NO: theirs, wire.IE_STATE: flag}, now)
        client.flush(now)


def _voice():
    from upbx.tools.bench_net import VOICE
    return VOICE


def test_calls_through_a_two_worker_main_host_arrive_once_each_way_and_forgeries_and_replays_are_dropped(tmp_path):
    p = Pair(tmp_path, 3)
    try:
        status = p.wait(lambda s: s.get("delegated_directions") == 3)   # the worker's host's direction of each call
        assert status["workers"] == 2 and len(status["worker_pids"]) == 1
        pair = p.pair
        for sender, receiver in ((pair.a, pair.b), (pair.b, pair.a)):
            ts0 = pair.next_ts
            pair.next_ts += 20 * 20 + 200
            frames = p.frames(sender, 20, ts0)
            forged = []
            for k in (0, 7, 13):
                bad = bytearray(frames[k])
                bad[5 + k] ^= 0x10
                forged.append(bytes(bad))
            sends = [(sender.sock, d) for d in frames + frames[2:7] + forged]
            got = p.exchange(sends, receiver, lambda g: len(g) >= 60)
            # every frame of every call once, decrypted to what was sent, nothing else
            assert sorted((i, ts) for i, ts, _p in got) == [(i, ts0 + 20 * k) for i in range(3) for k in range(20)]
            assert all(payload == _voice() for _i, _ts, payload in got)
        # the counts of both processes end up in the main host's status (a worker reports every 0.25 s: wait
        # for every count the asserts read, each to its least, or a busy machine reads a report behind)
        status = p.wait(lambda s: s["stats"]["drops"].get("trunk rejected", 0) >= 6
                        and s["stats"]["drops"].get("media rejected", 0) >= 30
                        and s["stats"]["counters"].get("trunks in", 0) >= 2 * (20 + 5)
                        and s["stats"]["counters"].get("media in", 0) >= 120, seconds=60)
        stats = status["stats"]
        assert stats["counters"]["media in"] == 120
        assert stats["drops"].get("media rejected") == 30      # 2 x 5 replayed trunks of 3 entries
        assert stats["drops"].get("trunk rejected") == 6       # the forged ones, both ways
        assert stats["counters"]["trunks in"] == 2 * (20 + 5)
        # the worker forwarded the forged frames (they are the main host's to count), nothing else
        assert status["forwarded_datagrams"] == 3
        assert status["revokes"] == 0
    finally:
        p.close()


def test_a_held_call_comes_back_to_the_main_host_with_its_replay_window_and_goes_out_again(tmp_path):
    p = Pair(tmp_path, 1)
    try:
        p.wait(lambda s: s.get("delegated_directions") == 1)
        pair, x, y = p.pair, p.worker_side, p.main_side
        ts0 = pair.next_ts
        pair.next_ts += 20 * 40
        old = p.frames(x, 10, ts0)
        got = p.exchange([(x.sock, d) for d in old], y, lambda g: len(g) >= 10)
        assert sorted(ts for _i, ts, _p in got) == [ts0 + 20 * k for k in range(10)]   # relayed by the worker
        assert p.status()["forwarded_datagrams"] == 0
        # on hold: the direction comes back to the main host, and its window with it, at the tick after the
        # HOLD (a remote host's hold is not music played here: once only the scan of every call found it)
        p.hold(y, 1)
        status = p.wait(lambda s: s["revokes"] == 1 and s["delegated_directions"] == 0)
        assert status["calls_looked_at_on_change"] == 1
        got = p.exchange([(x.sock, d) for d in old], y, lambda g: False, seconds=0.5)
        assert got == []
        status = p.wait(lambda s: s["stats"]["drops"].get("media rejected", 0) >= 10)
        assert status["stats"]["drops"]["media rejected"] == 10   # replays, not new frames (not "media held")
        assert status["forwarded_datagrams"] == 10                # the main host checked them
        assert status["stats"]["drops"].get("media held", 0) == 0
        # resumed: the worker relays again, from the window the main host had
        p.hold(y, 0)
        assert p.wait(lambda s: s["delegated_directions"] == 1)["calls_looked_at_on_change"] == 2
        new = p.frames(x, 5, ts0 + 20 * 10)
        got = p.exchange([(x.sock, d) for d in new + old[:3]], y, lambda g: len(g) >= 5)
        assert sorted(ts for _i, ts, _p in got) == [ts0 + 20 * k for k in range(10, 15)]
        status = p.wait(lambda s: s["stats"]["drops"].get("media rejected", 0) >= 13)
        assert status["stats"]["drops"]["media rejected"] == 13   # the worker dropped the old ones again
        assert status["forwarded_datagrams"] == 10
    finally:
        p.close()


def test_a_host_whose_address_changes_is_found_by_the_worker_and_the_main_host(tmp_path):
    """B7 with workers: the worker's host sends from a new port; frames to it go there at once."""
    p = Pair(tmp_path, 2)
    try:
        p.wait(lambda s: s.get("delegated_directions") == 2)
        pair, x, y = p.pair, p.worker_side, p.main_side
        moved = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        moved.bind(("127.0.0.1", 0))
        moved.setblocking(False)
        old_sock, x.sock = x.sock, moved
        try:
            ts0 = pair.next_ts
            pair.next_ts += 20 * 20
            got = p.exchange([(moved, d) for d in p.frames(x, 3, ts0)], y, lambda g: len(g) >= 6)
            assert len(got) == 6
            status = p.wait(lambda s: s["stats"]["counters"].get("media in", 0) >= 6)
            # a frame from a new address is the main host's (the worker's table leaves it): forwarded,
            # authenticated there, the two directions it names taken back for it, the new address noted and
            # sent to the tables, the directions delegated again; the worker takes what it reads after that
            moved_forwarded = status["forwarded_datagrams"]
            assert 1 <= moved_forwarded <= 3 and status["revokes"] == 2 * moved_forwarded
            # y -> x (the main host's direction) now reaches x's new address
            got = p.exchange([(y.sock, d) for d in p.frames(y, 5, ts0 + 60)], x, lambda g: len(g) >= 10,
                             sock=moved)
            assert sorted((i, ts) for i, ts, _p in got) == [(i, ts0 + 60 + 20 * k) for i in range(2) for k in range(5)]
            status = p.status()
            assert status["forwarded_datagrams"] == moved_forwarded and status["delegated_here"] == 2   # the main host's table
        finally:
            x.sock = old_sock
            moved.close()
    finally:
        p.close()


def test_when_a_worker_dies_its_calls_end_and_the_main_host_relays_alone(tmp_path):
    import os
    import signal
    p = Pair(tmp_path, 2)
    try:
        status = p.wait(lambda s: s.get("delegated_directions") == 2)
        pair = p.pair
        os.kill(status["worker_pids"][0], signal.SIGKILL)
        status = p.wait(lambda s: s.get("workers_died") == 1)
        assert status["workers"] == 1 and status["delegated_directions"] == 0
        # both calls had a direction on the dead worker: their windows are gone with it, so they end
        released = {}
        causes = []

        def both_released():
            for client in (pair.a, pair.b):
                for msg_type, ies in client.messages:
                    if msg_type == wire.RELEASE:
                        released.setdefault(client, set()).add(ies[wire.IE_PEER_CALL_NO])
                        causes.append(ies.get(wire.IE_CAUSE))
                client.messages = []
            return all(len(released.get(c, ())) == 2 for c in (pair.a, pair.b))

        p.bench_net.pump([pair.a, pair.b], both_released, seconds=10)
        assert released == {pair.a: {1, 2}, pair.b: {1, 2}}
        assert causes == [wire.CAUSE_UNREACHABLE] * 4
        # new calls: every frame relayed both ways by the main host alone
        pair.calls = []
        pair.add_calls(2)
        for sender, receiver in ((pair.a, pair.b), (pair.b, pair.a)):
            ts0 = pair.next_ts
            pair.next_ts += 20 * 10 + 200
            got = p.exchange([(sender.sock, d) for d in p.frames(sender, 5, ts0)], receiver, lambda g: len(g) >= 10)
            assert sorted((i, ts) for i, ts, _p in got) == [(i, ts0 + 20 * k) for i in range(2) for k in range(5)]
        status = p.status()
        assert status["forwarded_datagrams"] == 0 and status["delegated_directions"] == 0
    finally:
        p.close()


def test_the_main_hosts_table_times_each_datagram_it_relays_from_the_kernels_receive_stamp(tmp_path):
    """status table_residence (host/_fastpath.c Relay.residence): every datagram the main host's own table
    relayed since the last query, from its receive stamp (SO_TIMESTAMPNS on the main host's socket) to the
    sendmmsg of its frames, and the part of it before the table's recvmmsg read it (queued_); cleared by the
    query. Timing is not asserted, only that each one was counted and that none took longer than the exchange
    itself."""
    p = Pair(tmp_path, 3)
    try:
        p.wait(lambda s: s.get("delegated_here") == 3)   # the main host's host's direction of each call
        assert p.status()["table_residence"]["n"] >= 0   # the counts start from here
        pair = p.pair
        sender = p.main_side
        receiver = pair.b if sender is pair.a else pair.a
        ts0 = pair.next_ts
        pair.next_ts += 20 * 20 + 200
        frames = p.frames(sender, 20, ts0)
        assert len(frames) == 20   # 3 calls a datagram, one a tick
        started = time.monotonic()
        got = p.exchange([(sender.sock, d) for d in frames], receiver, lambda g: len(g) >= 60)
        elapsed_us = (time.monotonic() - started) * 1e6
        assert sorted((i, ts) for i, ts, _p in got) == [(i, ts0 + 20 * k) for i in range(3) for k in range(20)]
        residence = p.status()["table_residence"]
        assert residence["n"] == 20
        assert 0 < residence["p50_us"] <= residence["p90_us"] <= residence["p99_us"] <= residence["p999_us"]
        # a percentile is its 10 us bucket's upper edge, the last bucket "20 ms or more" (reported as its upper
        # edge, 20010): a datagram held longer than that on a busy machine has a max above its p99.9
        assert 0 < residence["max_us"] < elapsed_us
        assert residence["max_us"] <= residence["p999_us"] or residence["p999_us"] >= 20000
        # the part spent at the socket before the table read it: within the whole, datagram by datagram
        assert 0 < residence["queued_p50_us"] <= residence["queued_p99_us"] <= residence["queued_p999_us"]
        assert residence["queued_max_us"] <= residence["max_us"] and residence["queued_p50_us"] <= residence["p50_us"]
        status = p.status()
        assert status["table_residence"] == {"n": 0, "max_us": 0.0, "queued_max_us": 0.0}
        # the collector beside it: every collection by generation, the full ones (start-up's included) also apart
        assert len(status["gc_collections"]) == 3 and status["gc_collections"][2] == status["gc_full_collections"] >= 1
    finally:
        p.close()


def test_a_timer_turns_pump_reads_the_socket_only_after_its_gap_and_keeps_what_the_table_leaves_in_order():
    """Daemon._pump_table, called at every step of a timer turn: the main host's table reads its socket when
    PUMP_GAP_S have passed since it last did, and what it does not take (here: datagrams that are no relayed
    trunk) is kept for the end of the turn in the order it came, with its sender. Outside a timer turn (the core
    calls it from code that also runs on a datagram, e.g. a remote host's logout) it reads nothing."""
    from types import SimpleNamespace

    from upbx.host.core import Stats
    from upbx.host.daemon import Daemon

    daemon = Daemon(SimpleNamespace(log=None, stats=Stats()), ("127.0.0.1", 0))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx.bind(("127.0.0.1", 0))
        daemon.sock, daemon._batch = rx, object()
        daemon.workers = SimpleNamespace(local=fastpath.relay_table(1472))

        def send(*payloads):
            for p in payloads:
                tx.sendto(p, rx.getsockname())
            assert select.select([rx], [], [], 10)[0]   # queued at the socket

        sender = ("127.0.0.1", tx.getsockname()[1])
        send(b"\x00one", b"\x00two", b"\x00three")
        daemon.PUMP_GAP_S = 0.0
        daemon._pump_table()   # not in a timer turn
        assert daemon._deferred == [] and select.select([rx], [], [], 0)[0]
        daemon._in_turn = True
        daemon._pump_table()
        assert [(bytes(d), a) for d, a in daemon._deferred] == [(b"\x00one", sender), (b"\x00two", sender),
                                                               (b"\x00three", sender)]
        send(b"\x00four")
        daemon.PUMP_GAP_S = 3600.0   # it relayed just now: not again within the gap
        daemon._pump_table()
        assert len(daemon._deferred) == 3 and select.select([rx], [], [], 0)[0]
        daemon.PUMP_GAP_S = 0.0
        daemon._pump_table()
        assert [bytes(d) for d, _ in daemon._deferred] == [b"\x00one", b"\x00two", b"\x00three", b"\x00four"]
        assert daemon.unpumped_max_s > 0 and not select.select([rx], [], [], 0)[0]
        # the longest stretch is kept with the steps it lay between (status table_unpumped_steps): here, this test
        steps = [Daemon._step_name(step) for step in daemon.unpumped[1:]]
        assert all(step.startswith("test_a_timer_turns_pump_reads") for step in steps if step is not None), steps
        assert steps[1] is not None and daemon.unpumped_cpu[0] >= 0.0
    finally:
        rx.close()
        tx.close()


def test_the_daemon_counts_every_collection_by_generation_and_keeps_the_longest_young_and_full_apart():
    """Daemon._gc_timed (gc.callbacks; status gc_collections, gc_young_max_ms, gc_full_collections, gc_max_ms):
    the hop's tail can be told from the collector's pauses only if every collection is seen, young ones too."""
    from types import SimpleNamespace

    from upbx.host.core import Stats
    from upbx.host.daemon import Daemon

    daemon = Daemon(SimpleNamespace(log=None, stats=Stats()), ("127.0.0.1", 0))
    enabled = gc.isenabled()
    gc.disable()   # only the collections made here
    gc.callbacks.append(daemon._gc_timed)
    try:
        gc.collect(0)
        gc.collect(0)
        gc.collect(1)
        assert daemon.gc_runs == [2, 1, 0] and daemon.gc_pauses == 0 and daemon.gc_max_s == 0.0
        assert daemon.gc_young_max_s > 0.0
        gc.collect(2)
        assert daemon.gc_runs == [2, 1, 1] and daemon.gc_pauses == 1 and daemon.gc_max_s > 0.0
    finally:
        gc.callbacks.remove(daemon._gc_timed)
        if enabled:
            gc.enable()
