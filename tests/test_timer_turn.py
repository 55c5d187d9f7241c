"""The main host's timer turn and its relay table (host/daemon.py `_timers`, `_pump_table`; docs/relay.md
"Every core", docs/benchmarks.md relay "Session 10").

While a timer turn runs (the relay workers' sync, the core's tick) the main host's socket is read only where the
turn calls `core.pump()`; a frame that arrives in a long step without one waits for it (the hop's tail). What
the code controls is how much work lies between two calls of pump(): these tests count it in Python line events
(sys.settrace), a unit that does not depend on how busy the machine is, on the real MainHost core with its own
relay table (RelayWorkers, one process), two remote hosts logged in through the real protocol and calls set up
between them, in one process on a virtual clock (tests/inprocess.py). C-level work (a list of the delegated
directions at a round's start: tens of microseconds at 2,000 calls) is one line there.
"""
import os
import socket
import sys
from types import SimpleNamespace

import pytest

from tests.inprocess import MAIN, LoginEnd, Net, attach_host, flush_host
from upbx.common import wire
from upbx.common.reliable import Channel
from upbx.host import fastpath
from upbx.host.config import load_main_config
from upbx.host.core import Stats
from upbx.host.directory import Directory
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from upbx.host.peers import PUMP_PEERS, Peer, PeerTable
from upbx.host.relay_workers import SCAN_TICKS, RelayWorkers

SITE_A, SITE_B = ("198.18.1.1", 4570), ("198.18.1.2", 4570)
RINGING = 3          # calls left unanswered: the tick's ring-timeout loop has calls to look at every tick
LINES = 200          # the most Python line events between two pumps (the longest today: ~110, the first call the
                     # scan looks at with the sync's preamble); the ring-timeout slice without a pump was ~7 a call
ENDING = 500         # ... where a call ends between two pumps (its record, its log line, RELEASE to the other leg,
                     # its directions back from the table: ~290-360 today)


class Relayed:
    """A MainHost core with `calls` calls from site a to site b (all but RINGING answered), relayed by its own
    table, and timer turns as the daemon runs them (Daemon._timers): workers.sync(pump), pump(), handle_timer."""

    def __init__(self, tmp_path, calls, keepalive_timeout_s=75):
        secrets = {}
        with Directory(tmp_path / "main.sqlite") as d:
            for site in ("a", "b"):
                d.add_site(site)
                secrets[site] = d.add_remote_host("site-" + site, site)
            d.add_extensions([("1%05d" % i, "a", "") for i in range(calls)])
            d.add_extensions([("2%05d" % i, "b", "") for i in range(calls)])
        (tmp_path / "main.toml").write_text(
            '[main]\nlisten = "%s:%d"\ndatabase = "main.sqlite"\nlog_level = "error"\nring_timeout_s = 600\n'
            'direct_media = false\nmax_calls_per_host = 16383\nkeepalive_timeout_s = %d\n'
            % (MAIN + (keepalive_timeout_s,)))
        self.net = net = Net()
        self.main = MainHost(load_main_config(str(tmp_path / "main.toml")), StructuredLog("main", "error"))
        attach_host(net, self.main, MAIN)
        self.main.start(net.now)
        flush_host(net, self.main)
        self.a = LoginEnd(net, wire.IE_HOST_NAME, "site-a", secrets["a"], SITE_A, MAIN)
        self.b = LoginEnd(net, wire.IE_HOST_NAME, "site-b", secrets["b"], SITE_B, MAIN)
        self.a.start()
        self.b.start()
        while not (self.a.up and self.b.up):
            self.tick()
        for i in range(calls):
            self.a.login.send(wire.SETUP, {wire.IE_CALL_NO: i + 1, wire.IE_CALLED: "2%05d" % i,
                                           wire.IE_CALLING: "1%05d" % i, wire.IE_MEDIA_KEY: os.urandom(16),
                                           wire.IE_CALL_ID: os.urandom(8)}, net.now)
        self.a.flush()
        self.settle()
        setups = [ies for msg_type, ies in self.b.inbox if msg_type == wire.SETUP]
        assert len(setups) == calls
        for ies in setups[:calls - RINGING]:
            for reply in (wire.ALERTING, wire.ANSWER):
                self.b.login.send(reply, {wire.IE_CALL_NO: ies[wire.IE_CALL_NO],
                                          wire.IE_PEER_CALL_NO: ies[wire.IE_CALL_NO]}, net.now)
        self.b.flush()
        self.settle()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # the table reads it: nothing comes
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.workers = RelayWorkers(self.main, self.sock, 1, lambda: None)
        self.workers.start()
        self.main.pump = self.pump
        self.stretch = self.longest = 0
        self.pumps = 0

    def settle(self):
        while self.net.queue:
            for host in self.net.run():
                flush_host(self.net, host)

    def tick(self):
        self.net.now += 20
        for end in (self.a, self.b):
            end.tick()
        self.settle()
        self.main.handle_timer(self.net.now)
        flush_host(self.net, self.main)
        self.settle()

    def pump(self):
        self.pumps += 1
        self.longest = max(self.longest, self.stretch)
        self.stretch = 0

    def _trace(self, frame, event, arg):
        if event == "call" and frame.f_code is Relayed.pump.__code__:
            return None   # the pump's own lines are no step of the turn
        if event == "line":
            self.stretch += 1
        return self._trace

    def turns(self, n):
        """n timer turns; the most line events between two pumps (the turn's start and end count as pumps)."""
        self.longest = 0
        tracing = sys.gettrace()
        for _ in range(n):
            self.net.now += 20
            self.stretch = 0
            sys.settrace(self._trace)
            try:
                self.workers.sync(self.pump)
                self.pump()
                self.main.handle_timer(self.net.now)
            finally:
                sys.settrace(tracing)
            self.pump()
            flush_host(self.net, self.main)
            self.settle()
        return self.longest

    def close(self):
        self.sock.close()
        self.main.directory.close()


needs_table = pytest.mark.skipif(fastpath.native is None, reason="the relay table is the C fast path (not built here)")


@needs_table
def test_a_timer_turn_reads_the_relay_tables_socket_as_often_with_400_calls_as_with_40(tmp_path):
    """The work between two pumps of a timer turn does not grow with the calls: every step that walks calls (the
    sync's slice of the scan, its round start, the tick's ring-timeout slice) pumps at each call it looks at. The
    turns still do their work: every answered call's two directions are delegated to the table within a round,
    and the ringing calls are left with the Python path."""
    longest = {}
    for calls in (40, 400):
        (tmp_path / str(calls)).mkdir()
        relayed = Relayed(tmp_path / str(calls), calls)
        try:
            longest[calls] = relayed.turns(SCAN_TICKS + 2)   # a whole round of the scan, and a round's start
            assert len(relayed.workers.local) == 2 * (calls - RINGING)
            assert relayed.pumps > calls   # at least one pump a call looked at
        finally:
            relayed.close()
    assert longest[400] <= longest[40] <= LINES, longest


@needs_table
def test_remote_hosts_lost_with_400_calls_are_let_go_a_call_at_a_time_between_reads(tmp_path):
    """Both remote hosts fall silent and their sessions expire in a timer turn (the once-a-second walk): every
    call ends, its directions come back from the table, and the turn reads the socket between the calls
    (HostCore.release_calls, Switch.calls_of): the work between two pumps is no more with 400 calls than with 40
    (ending 2,005 calls in one piece took 0.7 s of CPU on the bench machine, every other host's frames waiting)."""
    longest = {}
    for calls in (40, 400):
        (tmp_path / str(calls)).mkdir()
        relayed = Relayed(tmp_path / str(calls), calls, keepalive_timeout_s=1)
        try:
            first = relayed.turns(SCAN_TICKS + 2)   # the hosts are not ticked: silent from here on
            assert len(relayed.workers.local) == 2 * (calls - RINGING)
            longest[calls] = max(first, relayed.turns(3 * 1000 // 20))   # 3 s more: expired at the 1 s walks
            assert relayed.main.switch.calls == {} and len(relayed.workers.local) == 0
            assert relayed.main.status()["calls"] == []   # what `upbx status` shows
        finally:
            relayed.close()
    assert longest[400] <= longest[40] <= ENDING, longest


def test_the_expiry_walk_of_the_sessions_pumps_every_few_peers_and_finds_the_same_peers():
    """PeerTable.expired with a pump (the main host's once-a-second walk of every session: 10,000 phones' at
    most) calls it every PUMP_PEERS peers and finds the same silent and failed sessions as without one."""
    table = PeerTable(lambda identity: None, Stats(), ttl_ms=60000, host_ttl_ms=90000)
    for index in range(1, 301):
        channel = Channel(SimpleNamespace())
        channel.failed = index % 97 == 0
        kind = "host" if index % 10 == 0 else "phone"
        table.peers[index] = Peer(index, kind, "p%d" % index, channel, ("198.18.2.1", 4000 + index),
                                  100000 - (70000 if index % 7 == 0 else 0), b"")
    pumps = []
    with_pump = table.expired(100000, lambda: pumps.append(1))
    assert [p.index for p in with_pump] == [p.index for p in table.expired(100000)]
    assert {p.index for p in with_pump} == {i for i in range(1, 301) if i % 97 == 0 or (i % 7 == 0 and i % 10)}
    assert len(pumps) == -(-300 // PUMP_PEERS)
