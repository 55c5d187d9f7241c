"""The relay's C fast path (host/_fastpath.c) against the pure-Python path it stands in for.

Two Switches set up identically (the same keys, call numbers and states) relay the same
datagrams, one with the C fast path and one without: every datagram out, every counter and drop,
every replay window and leg counter must be the same, for the protocol vectors and for fuzzed
sequences of valid, replayed, forged, truncated and unknown frames, with calls ending, held and
answered along the way. Also recvmmsg/sendmmsg on real loopback sockets.
"""
import json
import random
import socket
import types

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support import ROOT
from upbx.common import wire
from upbx.common.call import ALERTING_RECEIVED, ALERTING_SENT, ANSWER_RECEIVED, ANSWER_SENT, CONNECTED
from upbx.common.crypto import HmacKey, extend16
from upbx.common.media import MediaLeg, open_trunk, seal_trunk
from upbx.host import fastpath, switch as switch_module
from upbx.host.core import Stats
from upbx.host.switch import Link, Switch

native = fastpath.native
pytestmark = pytest.mark.skipif(native is None, reason="the C fast path was not built (no compiler or OpenSSL headers)")

VECTORS = json.loads((ROOT / "tests" / "vectors" / "protocol_vectors.json").read_text())
LINK_KEYS = (bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96)), bytes(range(96, 128)))


def test_seal_trunk_matches_the_protocol_vector_and_the_python_path():
    v = VECTORS["trunk_frame"]
    entries = []
    for e in v["entries"]:
        leg = MediaLeg(bytes.fromhex(e["media_key"]), e["role"], 1, e["peer_call_no"])
        entries.append((leg, e["ts64"], bytes.fromhex(e["payload"])))
    auth = HmacKey(bytes.fromhex(v["session_auth"]))
    python = bytes(seal_trunk(auth, v["receiver_index"], entries, bytearray(65536)))
    entries_c = [(MediaLeg(bytes.fromhex(e["media_key"]), e["role"], 1, e["peer_call_no"]), e["ts64"],
                  bytes.fromhex(e["payload"])) for e in v["entries"]]
    c = bytes(native.seal_trunk(HmacKey(bytes.fromhex(v["session_auth"])), v["receiver_index"], entries_c,
                                bytearray(65536)))
    expected = bytes.fromhex(v["frame"])
    assert python == expected
    assert c == expected
    assert [leg.sent for leg, _t, _p in entries_c] == [1] * len(entries_c)


class HostSession:
    """What a remote host's Link at the main host reads of its session (host/peers.py Peer): its trunk keys,
    its index at the far end, its address; the SETUPs it is asked to send are kept."""

    def __init__(self, recv_key, send_key, peer_index, address):
        crypto = types.SimpleNamespace(recv_auth=HmacKey(recv_key), send_auth=HmacKey(send_key))
        self.channel = types.SimpleNamespace(crypto=crypto, peer_index=peer_index)
        self.address = address
        self.sent = []

    def send(self, msg_type, ies, now):
        self.sent.append((msg_type, ies))


class Side:
    """One Switch with two host links (A, B) and `calls` answered calls A -> B, made from a seed. node: the
    switch is a cluster node's and A and B remote hosts' sessions, which number their legs each on its own
    (Switch.own_numbers): both legs of call i get the same number, 100 + i, one on A and one on B."""

    def __init__(self, seed, calls, fast, monkeypatch, mtu=1472, node=False):
        rng = random.Random(seed)
        monkeypatch.setattr(switch_module, "os", types.SimpleNamespace(urandom=rng.randbytes))
        self.out = []
        self.stats = Stats()
        self.sw = Switch(lambda data, address, voice: self.out.append((bytes(data), address, voice)), self.stats, mtu)
        self.sw.fast = native if fast else None
        if node:
            self.sw.set_node(3)
        self.links = []
        for name, recv_key, send_key, address in (("a", 0, 1, ("198.18.0.10", 4569)), ("b", 2, 3, ("198.18.0.11", 4569))):
            if node:
                link = Link(name, "host", session=HostSession(LINK_KEYS[recv_key], LINK_KEYS[send_key],
                                                               0x1234 + recv_key, address))
            else:
                link = Link(name, "pair", address=address)
                link.trunk_recv_auth = HmacKey(LINK_KEYS[recv_key])
                link.trunk_auth = HmacKey(LINK_KEYS[send_key])
                link.peer_index = 0x1234 + recv_key
            self.links.append(link)
        self.far = []   # (far end of leg a at host A, far end of leg b at host B)
        for i in range(calls):
            call = self.sw.new_call("1%03d" % i, "2%03d" % i, 0)
            key_a = rng.randbytes(16)
            if node:
                self.sw._next_own = 99 + i
            leg_a = self.sw.incoming(call, self.links[0], {wire.IE_MEDIA_KEY: key_a, wire.IE_CALL_NO: 100 + i})
            if node:
                self.sw._next_own = 99 + i
                assert leg_a.call_no == 100 + i
            leg_b = self.sw.offer(call, self.links[1], 0)
            assert not node or leg_b.call_no == leg_a.call_no
            leg_b.learn_peer(200 + i)
            if i % 5 != 4:   # every fifth call rings and is never answered
                for leg, event in ((leg_b, ALERTING_RECEIVED), (leg_a, ALERTING_SENT), (leg_b, ANSWER_RECEIVED),
                                   (leg_a, ANSWER_SENT)):
                    leg.apply(event)
            self.far.append((MediaLeg(key_a, 0, 100 + i, leg_a.call_no), MediaLeg(leg_b.media_key, 1, 200 + i, leg_b.call_no)))
        monkeypatch.undo()

    def feed(self, link_no, frame, now):
        try:
            result = self.sw.trunk_in(bytearray(frame), self.links[link_no], now)
        except wire.DecodeError as exc:
            result = "DecodeError %s" % exc.field
        self.sw.flush_relayed()
        out, self.out = self.out, []
        return result, out

    def state(self):
        legs = {}
        for leg in sorted(self.sw.legs.values(), key=lambda leg: (leg.link.name, leg.call_no)):
            m = leg.media
            legs[leg.link.name, leg.call_no] = (m.replay.highest, bytes(m.replay._seen), m.replay._held, m.received, m.rejected, m.sent, leg.state)
        calls = {c.call_id: (c.frames, list(c.ts_out), list(c.ts_shift)) for c in self.sw.calls.values()}
        return self.stats.as_dict(), legs, calls, dict(self.sw.bytes_out_by_link)


SESSION = (0x1234, 0x1236)   # the index host A's and host B's trunk frames carry (the relay table's session)


def _frame(side, rng, op, ts_base):
    """One datagram towards the switch from host A or B, as op describes; (link number, bytes)."""
    kind, calls, step, cn, link_no = op
    far = [side.far[i % len(side.far)][link_no] for i in calls]
    ts = ts_base + 20 * step
    entries = [(leg, ts + 20 * j * (kind == "jump"), bytes([7]) if cn else bytes(range(160))) for j, leg in enumerate(far)]
    auth = HmacKey(LINK_KEYS[0 if link_no == 0 else 2])   # the far end's send key: the link's receive key
    frame = bytearray(seal_trunk(auth, SESSION[link_no], entries, bytearray(65536)))
    if kind == "forged":
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    elif kind == "truncated":
        frame = frame[:rng.randrange(1, len(frame))]
    elif kind == "unknown":
        frame[3] = 0x7F   # the first entry's call number: 0x7Fxx, no such leg (and the tag fails)
    elif kind == "garbage":
        frame = bytearray(rng.randbytes(rng.randrange(1, 400)))
        frame[0] |= 0xC0
    return link_no, bytes(frame)


OPS = st.lists(st.tuples(st.sampled_from(["ok", "ok", "ok", "replay", "forged", "truncated", "unknown", "garbage",
                                          "jump", "far", "end", "hold", "resume"]),
                         st.lists(st.integers(0, 9), min_size=1, max_size=9),
                         st.integers(-60, 200), st.booleans(), st.integers(0, 1)),
               min_size=1, max_size=40)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32), ops=OPS, mtu=st.sampled_from([200, 500, 1472, 65000]), node=st.booleans())
def test_fast_and_python_paths_relay_the_same_bytes_and_count_the_same(seed, ops, mtu, node, monkeypatch):
    py = Side(seed, 10, False, monkeypatch, mtu, node)
    c = Side(seed, 10, True, monkeypatch, mtu, node)
    assert py.state() == c.state()
    rng_py, rng_c = random.Random(seed), random.Random(seed)
    sent = []
    now = 1000
    for op in ops:
        now += 20
        kind = op[0]
        if kind == "end":      # a call ends: its late frames still authenticate, its number goes
            for side in (py, c):
                call = list(side.sw.calls.values())[op[1][0] % max(1, len(side.sw.calls))] if side.sw.calls else None
                if call is not None:
                    side.sw.end_call(call, wire.CAUSE_NORMAL, now)
            continue
        if kind in ("hold", "resume"):   # the Python path's case: the fast path hands such frames back
            for side in (py, c):
                calls = sorted(side.sw.calls.values(), key=lambda x: x.caller)
                if calls:
                    call = calls[op[1][0] % len(calls)]
                    call.held_by = call.a if kind == "hold" else None
            continue
        if kind == "replay" and sent:
            link_no, frame = sent[rng_py.randrange(len(sent))]
            rng_c.randrange(len(sent))
        else:
            base = 100000 if kind == "far" else 5000
            link_no, frame = _frame(py, rng_py, op, base + 20 * len(sent))
            link_c, frame_c = _frame(c, rng_c, op, base + 20 * len(sent))
            assert (link_no, frame) == (link_c, frame_c)
            sent.append((link_no, frame))
        assert py.feed(link_no, frame, now) == c.feed(link_no, frame, now), op
        assert py.state() == c.state(), op


class TableSide(Side):
    """A Side whose common-case directions are delegated to the C relay table (host/_fastpath.c Relay), as
    RelayWorkers does for the main host's own table: a frame the table does not take goes to the Python
    path, after its tag is checked with the table's windows and the directions it names are taken back
    (and delegated again after it); a hold, a resume or an end takes every direction back first."""

    def __init__(self, seed, calls, monkeypatch, mtu=1472, node=False):
        super().__init__(seed, calls, False, monkeypatch, mtu, node)
        self.mtu = mtu
        self.table = native.Relay(mtu)
        for k, link in enumerate(self.links):
            recv_key, send_key = (0, 1) if k == 0 else (2, 3)
            peer_index = link.peer_index if link.kind == "pair" else link.session.channel.peer_index
            self.table.link(SESSION[k], link.name, LINK_KEYS[recv_key], LINK_KEYS[send_key], peer_index, link.address)
        self.delegated = {}   # (call id, i) -> (call, recv leg, out leg)
        self.taken = 0
        self.delegate_all()

    def session_of(self, leg):
        return SESSION[self.links.index(leg.link)]

    def eligible(self, call, i):
        a, b = call.a, call.b
        if call.released or call.held_by is not None or call.moh_last[i] is not None or b is None or a is None:
            return False
        out, recv = (a, b) if i == 0 else (b, a)
        return (b.state == CONNECTED and not call.conference and not call.fanout and out.direct is None
                and recv.direct is None and bool(out.peer_call_no) and self.sw.leg(recv.link, recv.call_no) is recv
                and self.sw.leg(out.link, out.call_no) is out)

    def delegate_all(self):
        for call in list(self.sw.calls.values()):
            for i in (0, 1):
                if (call.call_id, i) not in self.delegated and self.eligible(call, i):
                    out, recv = (call.a, call.b) if i == 0 else (call.b, call.a)
                    w = recv.media.replay
                    self.table.delegate(self.session_of(recv), recv.call_no, recv.media._recv_ctr.key, recv.media.role,
                                        self.session_of(out), out.media.peer_call_no, out.media._send_ctr.key,
                                        out.media.role, call.ts_shift[i], call.ts_out[i],
                                        (w.highest, bytes(w._seen), w._held))
                    self.delegated[(call.call_id, i)] = (call, recv, out)

    def revoke(self, key):
        call, recv, out = self.delegated.pop(key)
        state = self.table.revoke(self.session_of(recv), recv.call_no)
        (highest, seen, held), ts_out, received, rejected, sent, frames = state
        w = recv.media.replay
        w.highest, w._held = highest, held
        w._seen[:] = seen
        call.ts_out[key[1]] = max(call.ts_out[key[1]], ts_out)
        recv.media.received += received
        recv.media.rejected += rejected
        out.media.sent += sent
        call.frames += frames

    def revoke_all(self):
        for key in list(self.delegated):
            self.revoke(key)

    def merge(self):
        _kind, counters, drops, _meter, by_link, _seen = self.table.report()
        for name in ("trunks in", "media in", "trunks out"):
            if counters.get(name):
                self.stats.count(name, counters[name])
        for reason, n in drops.items():
            self.stats.drops[reason] = self.stats.drops.get(reason, 0) + n
        for name, n in by_link.items():
            self.sw.bytes_out_by_link[name] = self.sw.bytes_out_by_link.get(name, 0) + n

    def feed(self, link_no, frame, now):
        link = self.links[link_no]
        sent, rest = self.table.process([(frame, link.address)])
        out = [(data, address, True) for data, address in sent]
        if not rest:
            self.taken += 1
            return out
        stamps = self.table.stamps(frame) or {}
        if stamps:
            def extend(call_no, ts16):
                if call_no in stamps:
                    return extend16(stamps[call_no], ts16)
                leg = self.sw.leg(link, call_no)
                if leg is not None:
                    return extend16(leg.media.replay.highest, ts16)
                gone = self.sw._ended.get(self.sw.key(link, call_no))   # a call that just ended (Switch.trunk_in's rule)
                return extend16(gone[0], ts16) if gone is not None and gone[1] == link.serial else None
            try:
                auth = link.trunk_recv_auth if link.kind == "pair" else link.session.channel.crypto.recv_auth
                authentic = open_trunk(auth, bytearray(frame), extend) is not None
            except wire.DecodeError:
                authentic = False
            if not authentic:   # a forgery moves nothing: dropped as the Python path drops it
                self.stats.drop("trunk rejected")
                return out
            by_no = {(self.session_of(recv), recv.call_no): key for key, (_c, recv, _o) in self.delegated.items()}
            for call_no in stamps:
                self.revoke(by_no[SESSION[link_no], call_no])
        _result, python_out = super().feed(link_no, frame, now)
        self.delegate_all()
        return out + python_out

    def state(self):
        self.merge()
        self.revoke_all()
        state = super().state()
        self.delegate_all()
        counters = {k: v for k, v in state[0]["counters"].items() if v}
        return dict(state[0], counters=counters), state[1], state[2], state[3]


def _without_zero_counters(state):
    counters = {k: v for k, v in state[0]["counters"].items() if v}
    return dict(state[0], counters=counters), state[1], state[2], state[3]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32), ops=OPS, mtu=st.sampled_from([200, 500, 1472, 65000]), answered=st.booleans(),
       node=st.booleans())
def test_the_relay_table_and_the_python_path_relay_the_same_bytes_and_count_the_same(seed, ops, mtu, answered, node,
                                                                                     monkeypatch):
    if answered:   # frames of answered calls only (every fifth call rings): most of them the table's common case
        ops = [(kind, [c - 1 if c % 5 == 4 else c for c in calls], step, cn, link) for kind, calls, step, cn, link in ops]
    py = Side(seed, 10, False, monkeypatch, mtu, node)
    t = TableSide(seed, 10, monkeypatch, mtu, node)
    assert _without_zero_counters(py.state()) == t.state()
    rng_py, rng_t = random.Random(seed), random.Random(seed)
    sent = []
    now = 1000
    for op in ops:
        now += 20
        kind = op[0]
        if kind in ("end", "hold", "resume"):   # as RelayWorkers: the directions come back before the change
            t.revoke_all()
            for side in (py, t):
                calls = sorted(side.sw.calls.values(), key=lambda x: x.caller)
                if not calls:
                    continue
                call = calls[op[1][0] % len(calls)]
                if kind == "end":
                    side.sw.end_call(call, wire.CAUSE_NORMAL, now)
                else:
                    call.held_by = call.a if kind == "hold" else None
            t.delegate_all()
            continue
        if kind == "replay" and sent:
            link_no, frame = sent[rng_py.randrange(len(sent))]
            rng_t.randrange(len(sent))
        else:
            base = 100000 if kind == "far" else 5000
            link_no, frame = _frame(py, rng_py, op, base + 20 * len(sent))
            assert (link_no, frame) == _frame(t, rng_t, op, base + 20 * len(sent))
            sent.append((link_no, frame))
        _result, out_py = py.feed(link_no, frame, now)
        assert t.feed(link_no, frame, now) == out_py, op
        assert _without_zero_counters(py.state()) == t.state(), op


def test_the_relay_table_takes_the_protocol_vector_common_case_and_leaves_the_rest(monkeypatch):
    """Authentic frames of delegated calls are the table's (relayed, replays dropped); a forged frame, a frame
    from another address, a call not delegated and a far jump are left to the Python path, untouched."""
    t = TableSide(11, 3, monkeypatch)
    py = Side(11, 3, False, monkeypatch)
    frame = bytes(seal_trunk(HmacKey(LINK_KEYS[0]), SESSION[0], [(t.far[i][0], 2000, bytes(160)) for i in range(3)],
                             bytearray(65536)))
    assert frame == bytes(seal_trunk(HmacKey(LINK_KEYS[0]), SESSION[0], [(py.far[i][0], 2000, bytes(160)) for i in range(3)],
                                     bytearray(65536)))
    before = t.table.taken()
    sent, rest = t.table.process([(frame, t.links[0].address)])
    assert rest == [] and t.table.taken() == before + 1
    assert sent == [(data, address) for data, address, _v in py.feed(0, frame, 1000)[1]]
    again, rest = t.table.process([(frame, t.links[0].address)])   # a replay: taken, nothing out
    assert again == [] and rest == []
    counters, drops = t.table.report()[1:3]
    assert counters["media in"] == 3 and counters["trunks in"] == 2 and drops == {"media rejected": 3}
    forged = bytearray(frame)
    forged[12] ^= 4
    moved = ("198.18.0.99", 4569)
    far = bytes(seal_trunk(HmacKey(LINK_KEYS[0]), SESSION[0], [(t.far[0][0], 2000 + 20 * 2000, bytes(160))],
                           bytearray(65536)))
    for data, address in ((bytes(forged), t.links[0].address), (frame, moved), (far, t.links[0].address),
                          (b"\x00\x01" + bytes(30), t.links[0].address)):
        windows = [t.table.stamps(frame)]
        sent, rest = t.table.process([(data, address)])
        assert sent == [] and [(bytes(d), a) for d, a in rest] == [(data, address)]
        assert [t.table.stamps(frame)] == windows   # nothing moved
    assert t.table.report()[1] == {}
    assert len(t.table) == 6 and t.table.revoke(SESSION[0], 0x7FFF) is None


def test_a_forged_or_replayed_trunk_is_dropped_and_counted_the_same_by_both_paths(monkeypatch):
    py = Side(7, 3, False, monkeypatch)
    c = Side(7, 3, True, monkeypatch)
    handled = []   # what the C path returned: None hands the frame to the Python path

    def trunk_in(*args):
        handled.append(native.trunk_in(*args))
        return handled[-1]

    c.sw.fast = types.SimpleNamespace(trunk_in=trunk_in, seal_trunk=native.seal_trunk, seal_trunks=native.seal_trunks)
    results = []
    for side in (py, c):
        frame = bytes(seal_trunk(HmacKey(LINK_KEYS[0]), 0x1234, [(side.far[i][0], 2000, bytes(160)) for i in range(3)],
                                 bytearray(65536)))
        forged = bytearray(frame)
        forged[10] ^= 1
        first = side.feed(0, frame, 1000)
        again = side.feed(0, frame, 1020)
        bad = side.feed(0, bytes(forged), 1040)
        results.append((first, again, bad, side.state()))
    assert results[0] == results[1]
    # the C path relayed the first and dropped the replay itself; the forged frame went to the Python path
    assert handled == [True, False, None]
    (first, out), (again, out_again), (bad, out_bad), (stats, _legs, _calls, _bytes) = results[1]
    assert first is True and len(out) == 1 and out[0][1] == ("198.18.0.11", 4569)
    assert again is False and out_again == [] and bad is False and out_bad == []
    assert stats["drops"] == {"media rejected": 3, "trunk rejected": 1}
    assert stats["counters"]["media in"] == 3 and stats["counters"]["trunks in"] == 2


def test_recv_batch_and_send_batch_move_datagrams_with_their_addresses():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        assert native.recv_batch(rx.fileno(), 16) == []
        items = [(bytes([i]) * (i + 1), rx.getsockname(), (46 << 2) if i % 2 else (24 << 2)) for i in range(100)]
        assert native.send_batch(tx.fileno(), items) == (100, 0)
        got = []
        while len(got) < 100:
            batch = native.recv_batch(rx.fileno(), 64)
            assert batch, "datagrams lost on loopback"
            got += batch
        assert [bytes(d) for d, _a in got] == [d for d, _a, _t in items]
        assert all(a == tx.getsockname() and isinstance(d, bytearray) for d, a in got)
        # an address the IPv4 batch cannot take: what comes before it is sent and counted, then it is refused
        bad = (b"v6", ("::1", 4569), 0)
        assert native.send_batch(tx.fileno(), items[:2] + [bad] + items[2:3]) == (2, 0)
        with pytest.raises(ValueError, match="not an IPv4 address"):
            native.send_batch(tx.fileno(), [bad] + items[2:3])
        assert [bytes(d) for d, _a in native.recv_batch(rx.fileno(), 64)] == [d for d, _a, _t in items[:2]]
    finally:
        rx.close()
        tx.close()


def _relay_through_the_daemon(tmp_path):
    """A real main host (`upbx main`) relays 3 calls A -> B for 20 ticks, plus 5 replayed and 3 forged trunk
    frames; what B gets is opened with B's keys. Returns (payloads by call and timestamp, status, log)."""
    import time

    from upbx.common.media import open_trunk
    from upbx.tools import bench_net

    main = bench_net.MainUnderTest({"a": ["1%05d" % i for i in range(3)], "b": ["2%05d" % i for i in range(3)]},
                                   workdir=str(tmp_path))
    try:
        pair = bench_net.TrunkPair(main, 3)
        try:
            if main.status()["fast_path"] == "C":
                # the main host's relay table takes the calls' directions at the tick after they are answered
                deadline = time.monotonic() + 10
                while main.status().get("delegated_here") != 6 and time.monotonic() < deadline:
                    time.sleep(0.02)
            plan = pair.seal_ticks(pair.calls, 20, 1000, 1472)
            frames = [data for tick in plan for client, data, _i in tick if client is pair.a]
            forged = []
            for k in (0, 7, 13):
                bad = bytearray(frames[k])
                bad[5 + k] ^= 0x10
                forged.append(bytes(bad))
            got = {}
            b_auth = pair.b.login.channel.crypto.recv_auth
            by_no = {c.b.call_no: c for c in pair.calls}

            def on_media(client, data, t):
                if client is not pair.b or wire.frame_kind(data) != wire.KIND_TRUNK:
                    return
                entries = open_trunk(b_auth, bytearray(data),
                                     lambda no, ts16: (by_no[no].b.replay.highest, ts16) and
                                     __import__("upbx.common.crypto", fromlist=["x"]).extend16(by_no[no].b.replay.highest, ts16))
                assert entries is not None, "a relayed trunk frame B cannot authenticate"
                for no, ts, start, end in entries:
                    payload = by_no[no].b.open_entry_bytes(bytearray(data), ts, start, end)
                    got.setdefault((by_no[no].index, ts), []).append(bytes(payload) if payload is not None else None)

            sent = frames + frames[2:7] + forged
            for data in sent:
                pair.a.sock.sendto(data, main.address)
                time.sleep(0.002)
            deadline = time.monotonic() + 5
            bench_net.pump([pair.a, pair.b], lambda: len(got) >= 60 or time.monotonic() > deadline, seconds=10,
                           on_media=on_media)
            # the main host has taken every datagram once its counters say so (the forged ones come last)
            deadline = time.monotonic() + 10
            while True:
                status = main.status()
                if status["stats"]["drops"].get("trunk rejected", 0) >= 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            pair.close()
    finally:
        main.close()
    with open(tmp_path / "main.log") as f:
        log = f.read()
    status["trunk_bytes_sent"] = sum(len(d) for d in sent)
    return got, status, log


@pytest.mark.parametrize("pure", [False, True], ids=["C", "python"])
def test_the_daemon_relays_and_drops_the_same_with_either_path(pure, tmp_path, monkeypatch):
    if pure:
        monkeypatch.setenv("UPBX_PURE_PYTHON", "1")
    got, status, log = _relay_through_the_daemon(tmp_path)
    assert status["fast_path"] == ("python" if pure else "C"), log[-2000:]
    # the C path took the relayed and the replayed frames itself (the forged ones are the Python path's)
    assert status["fast_path_datagrams"] == (0 if pure else 25)
    # every frame of every call arrived once, decrypted to what A sent; nothing else arrived
    assert sorted(got) == [(i, 1000 + 20 * k) for i in range(3) for k in range(20)]
    assert all(v == [bench_net_voice()] for v in got.values())
    stats = status["stats"]
    assert stats["counters"]["media in"] == 60
    assert stats["counters"]["trunks in"] == 20 + 5          # the replayed frames authenticate ...
    assert stats["drops"].get("media rejected") == 15        # ... and each of their entries is a replay
    assert stats["drops"].get("trunk rejected") == 3         # the forged ones do not authenticate
    # one trunk a tick to B, or fewer when the main host read two of A's trunks in one burst (joined)
    assert 10 <= stats["counters"]["trunks out"] <= 20
    # every datagram in is counted, whichever path took it (the C path counts a batch's at its end)
    assert stats["counters"]["datagrams in"] >= 28 + 2   # the trunks, and at least the two logins
    assert stats["counters"]["bytes in"] >= status["trunk_bytes_sent"]


def bench_net_voice():
    from upbx.tools.bench_net import VOICE
    return VOICE


@pytest.mark.parametrize("mtu, per, gso", [(1472, 8, True), (1472, 8, False), (200, 1, True)])
def test_the_relay_table_relays_every_frame_of_2500_calls_on_real_sockets(mtu, per, gso):
    """2,500 answered calls between two hosts (5,000 directions, past every size the table grows through)
    go through the C table's relay(fd) on real loopback sockets, 8 calls a trunk frame (or one, mtu 200), two
    ticks each way: every frame arrives once, at the right host, for the right call, with its own payload;
    with UDP GSO (runs of frames to one host sent as one message, the kernel cutting them) and without."""
    import hashlib
    import os

    from upbx.common.crypto import HmacKey as Key

    calls, ticks = 2500, 2
    relay_sock, host_a, host_b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    try:
        for s in (relay_sock, host_a, host_b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        table = native.Relay(mtu)
        table.set_gso(gso)
        # the relay's session index at each host is the one in the host's frames; the host's index for the relay
        # is what the relay writes in frames to it
        a_auth, a_back, b_auth, b_back = (os.urandom(32) for _ in range(4))
        table.link(SESSION[0], "a", a_auth, a_back, 0x2001, host_a.getsockname())
        table.link(SESSION[1], "b", b_auth, b_back, 0x2002, host_b.getsockname())
        far_a, far_b = {}, {}   # the hosts' legs by their own call numbers
        window = (-1, bytes(128), -1)
        for i in range(calls):
            key_a, key_b = os.urandom(16), os.urandom(16)
            # host A issued the A hop's key (role 0 there, the relay 1); the relay issued the B hop's (role 0)
            a_no, relay_a_no, b_no, relay_b_no = 100 + i, 5000 + i, 20000 + i, 10000 + i
            far_a[a_no] = MediaLeg(key_a, 0, a_no, relay_a_no)
            far_b[b_no] = MediaLeg(key_b, 1, b_no, relay_b_no)
            mine_a, mine_b = MediaLeg(key_a, 1, relay_a_no, a_no), MediaLeg(key_b, 0, relay_b_no, b_no)
            table.delegate(SESSION[0], relay_a_no, mine_a._recv_ctr.key, 1, SESSION[1], b_no, mine_b._send_ctr.key, 0,
                           0, -1, window)
            table.delegate(SESSION[1], relay_b_no, mine_b._recv_ctr.key, 0, SESSION[0], a_no, mine_a._send_ctr.key, 1,
                           0, -1, window)
        assert len(table) == 2 * calls

        def payload(side, call_no, ts):
            return (hashlib.sha256(b"%s %d %d" % (side, call_no, ts)).digest() * 5)[:160]

        frames = []   # (from socket, datagram)
        buf = bytearray(65536)
        for k in range(ticks):
            ts = 1000 + 20 * k
            for side, sock, auth, legs in ((b"a", host_a, a_auth, far_a), (b"b", host_b, b_auth, far_b)):
                legs = list(legs.values())
                for j in range(0, calls, per):
                    entries = [(leg, ts, payload(side, leg.call_no, ts)) for leg in legs[j:j + per]]
                    frames.append((sock, bytes(seal_trunk(Key(auth), SESSION[side == b"b"], entries, buf))))
        got = {}   # (receiving side, its call number, ts) -> payloads

        def receive(side, sock, auth, legs):
            while True:
                try:
                    data = bytearray(sock.recv(65536))
                except BlockingIOError:
                    return
                entries = open_trunk(Key(auth), data, lambda no, ts16: extend16(legs[no].replay.highest, ts16))
                assert entries is not None, "a relayed trunk frame the host cannot authenticate"
                for no, ts, start, end in entries:
                    got.setdefault((side, no, ts), []).append(bytes(legs[no].open_entry_bytes(data, ts, start, end)))

        relay_to = relay_sock.getsockname()
        for first in range(0, len(frames), 32):
            for sock, data in frames[first:first + 32]:
                sock.sendto(data, relay_to)
            rest = native.Relay.relay(table, relay_sock.fileno(), 64, 4)
            assert rest == []   # every datagram the table's: none handed to the Python path
            receive(b"a", host_a, a_back, far_a)
            receive(b"b", host_b, b_back, far_b)
        assert table.taken() == len(frames)
        expected = {}
        for k in range(ticks):
            ts = 1000 + 20 * k
            for i in range(calls):
                # what host A sent for its call 100 + i arrives at host B's call 20000 + i, and back
                expected[(b"b", 20000 + i, ts)] = [payload(b"a", 100 + i, ts)]
                expected[(b"a", 100 + i, ts)] = [payload(b"b", 20000 + i, ts)]
        assert len(got) == len(expected) == 2 * calls * ticks
        assert got == expected
        counters, drops = table.report()[1:3]
        assert counters["media in"] == 2 * calls * ticks and drops == {}
        on, messages, sent = table.gso()
        if gso:   # the kernel took GSO here (loopback): runs of frames went as one message each
            assert on and 0 < messages < sent <= counters["trunks out"]
        else:
            assert (on, messages, sent) == (False, 0, 0)
    finally:
        for s in (relay_sock, host_a, host_b):
            s.close()


def test_an_extension_built_from_another_source_is_refused_by_name(tmp_path):
    """An editable install does not rebuild C on `git pull`: fastpath refuses a build whose source hash is
    not the _fastpath.c beside it, naming both files and the fix; a wheel (no source beside it) is trusted."""
    source = ROOT / "host" / "_fastpath.c"
    fastpath.check_build(native, str(source))   # this tree's build is of this tree's source
    changed = tmp_path / "_fastpath.c"
    changed.write_bytes(source.read_bytes() + b"\n/* one more line */\n")
    with pytest.raises(fastpath.StaleBuild, match="built from another .*_fastpath.c.*make setup"):
        fastpath.check_build(native, str(changed))
    fastpath.check_build(native, str(tmp_path / "absent.c"))


def test_bench_count_counts_a_windows_frames_and_hands_back_the_rest():
    """The relay bench's receive side in C: entries of trunk frames (voice and comfort noise) whose stamp is
    in the window, or RTP packets whose timestamp is; anything else comes back as it was."""
    import struct

    rx, tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        legs = [MediaLeg(bytes(16), 0, n, n) for n in (1, 2, 3)]
        # stamps 65530 (in a window from 65520 of 40 ms, across the 16-bit wrap), 65550 -> 14 (in), 70000 (out)
        entries = [(legs[0], 65530, bytes(160)), (legs[1], 65550, bytes([9])), (legs[2], 70000, bytes(160))]
        trunk = bytes(seal_trunk(HmacKey(bytes(32)), 7, entries, bytearray(65536)))
        signalling = bytes([0x80]) + bytes(20)
        for data in (trunk, signalling):
            tx.sendto(data, rx.getsockname())
        n, counted, others = native.bench_count(rx.fileno(), 64, 0, 65520, 40)
        assert (n, counted, others) == (2, 2, [signalling])
        rtp = [struct.pack("!BBHII", 0x80, 0, 1, ts, 5) + bytes(160) for ts in (0xFFFFFFF0, 10, 500)]
        for data in rtp:
            tx.sendto(data, rx.getsockname())
        assert native.bench_count(rx.fileno(), 64, 1, 0xFFFFFFE0, 100) == (3, 2, [])
        assert native.bench_count(rx.fileno(), 64, 1, 0, 100) == (0, 0, [])
    finally:
        rx.close()
        tx.close()
