"""Isolation, as a property: what a compromised remote host and a compromised phone can do to
calls they are not party to, whatever authenticated messages they send. Nothing.

The real host objects (tests/inprocess.py: MainHost, RemoteHost, their sessions,
switch and SQLite directory, on a virtual network and clock) carry victim calls
between honest handsets (common.phone: 101 -> 301 through site a's remote host and
the main host, 302 -> 102 the other way), round after round, while two attackers
logged in with stolen secrets, site x's remote host and phone 303 at the main host,
send a seeded random stream of authenticated messages: every message type, random
and well-formed IEs, the victims' call numbers, call ids and extensions, records,
trunk frames for every call number, replays of their own frames, logging out and in.

What must hold, checked each round and at the end:
- every voice frame a victim sends arrives at the other victim, once, in order, with
  its content; every victim call ends "normal clearing" when its caller hangs up;
- each victim call has exactly one record at the main host, with its caller and callee;
- the main host's memory stays bounded: its calls, legs, queues and tables stay under
  their caps, and the bytes reachable from it stop growing (measured, not assumed).

At least MESSAGES authenticated messages are sent, counted as they are sent.
"""
import gc
import os
import random
import sys
import types

from upbx.common import lines, wire
from upbx.common.call import CONNECTED, IDLE
from upbx.common.phone import Ended, Incoming
from upbx.host.log import StructuredLog
from tests.inprocess import MAIN, World

SEED = int(os.environ.get("UPBX_ISOLATION_SEED", "10"))
MESSAGES = 100000
TALK_TICKS = 100                 # 2 s of audio per victim call per round
EXTENSIONS = ("101", "102", "301", "302", "303", "401", "402", "999", "4010")
VICTIMS = (("101", "301"), ("302", "102"))


def retained_bytes(root):
    """Bytes of the Python objects reachable from root (sys.getsizeof), stopping at modules,
    classes, functions and the log (the way out to the rest of the process)."""
    opaque = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
              StructuredLog)
    seen = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, opaque):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


class Attacker:
    """Sends random authenticated messages on a stolen login, knowing everything the main host knows."""

    def __init__(self, world, end, rng, kind):
        self.world = world
        self.end = end
        self.rng = rng
        self.kind = kind                 # "host" or "phone"
        self.sent = 0                    # authenticated messages and trunk frames, as sent
        self.replays = 0
        self.logins = 1
        self._old = []

    def _ies(self):
        rng, main = self.rng, self.world.main
        legs = list(main.switch.legs) or [1]
        ids = list(main.switch.calls) or [os.urandom(8)]
        ies = {}
        for ie in rng.sample(sorted(wire.IE_SPEC), rng.randint(0, 4)):
            name, kind, lo, hi = wire.IE_SPEC[ie]
            n = rng.randint(lo, min(hi, 40))
            if kind == "str":
                ies[ie] = "".join(rng.choice("0123456789#*ab-") for _ in range(n)) or "1"
                if n == 0:
                    ies[ie] = ""
            elif kind == "bytes":
                ies[ie] = os.urandom(n)
            elif kind == "addr":
                ies[ie] = ("198.18.%d.%d" % (rng.randint(0, 255), rng.randint(0, 255)), rng.randint(1, 65535))
            elif kind == "idx":
                ies[ie] = rng.randint(0, wire.MAX_SESSION)
            else:
                ies[ie] = rng.randint(0, (1 << (8 * hi)) - 1)
        # and the values that name things: the victims' call numbers, ids and extensions
        if rng.random() < 0.8:
            ies[wire.IE_PEER_CALL_NO] = rng.choice(legs)
        if rng.random() < 0.6:
            ies[wire.IE_CALL_NO] = rng.choice(legs) if rng.random() < 0.5 else rng.randint(1, wire.MAX_CALL_NO)
        if rng.random() < 0.3:
            ies[wire.IE_CALL_ID] = rng.choice(ids)
        for ie in (wire.IE_CALLED, wire.IE_CALLING):
            if rng.random() < 0.7:
                ies[ie] = rng.choice(EXTENSIONS)
        if rng.random() < 0.5:
            ies[wire.IE_MEDIA_KEY] = os.urandom(16)
        return ies

    def _record(self):
        rng = self.rng
        ids = [c.uid for c in self.world.main.switch.calls.values()] or ["%016x" % rng.getrandbits(64)]
        started = 1700000000000 + rng.randint(0, 10 ** 11)
        values = [rng.choice(ids), rng.choice(EXTENSIONS), rng.choice(EXTENSIONS),
                  rng.choice(("local", "relay", "direct", 7)), started, started + rng.randint(-5, 5000),
                  started + rng.randint(-5, 90000), rng.randint(-1, 9), rng.choice((None, 300, -1))]
        if rng.random() < 0.2:
            return os.urandom(rng.randint(0, 255))
        return repr(values).replace("'", '"').replace("None", "null").encode()[:255]

    def message(self):
        rng = self.rng
        msg_type = rng.choice((wire.SETUP, wire.SETUP, wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.RELEASE,
                               wire.DTMF, wire.MEDIA_PEER, wire.LOCAL_REQUEST, wire.LOCAL_REQUEST,
                               wire.PUNCH_RESULT, wire.RECORDS, wire.RECORDS, wire.SYSINFO_ACK,
                               wire.PHONE_STATE, wire.PING, wire.WELCOME, wire.SYSINFO, wire.DIRECTORY,
                               wire.PUNCH_OFFER, 0x99))
        ies = self._ies()
        if msg_type == wire.RECORDS:
            ies[wire.IE_DATA] = self._record()
        return msg_type, ies

    def send_one(self):
        """One authenticated message (a replay of an old frame now and then, not counted)."""
        end = self.end
        if not end.up:
            return
        channel = end.login.channel
        if self._old and self.rng.random() < 0.02:
            end.net.send(self.rng.choice(self._old), end.address, MAIN)
            self.replays += 1
            return
        if self.kind == "host" and self.rng.random() < 0.15:
            self._trunk(channel)
            return
        if self.rng.random() < 0.0005:
            msg_type, ies = wire.BYE, {}
        else:
            msg_type, ies = self.message()
        seq = channel.next_seq
        channel.next_seq += 1
        frame = channel.crypto.seal(channel.peer_index, seq, channel.expected, msg_type, wire.encode_ies(ies))
        end.net.send(frame, end.address, MAIN)
        self.sent += 1
        if len(self._old) < 64:
            self._old.append(frame)
        elif self.rng.random() < 0.01:
            self._old[self.rng.randrange(64)] = frame
        if msg_type == wire.BYE:
            end.start()                  # and straight back in
            self.logins += 1
            self._old = []

    def _trunk(self, channel):
        """A trunk frame with entries for call numbers of the main host, the victims' among them."""
        rng = self.rng
        legs = list(self.world.main.switch.legs) or [1]
        entries = [(rng.choice(legs) if rng.random() < 0.7 else rng.randint(1, wire.MAX_CALL_NO),
                    rng.randint(0, 0xFFFF), os.urandom(wire.VOICE_BYTES if rng.random() < 0.5 else 1))
                   for _ in range(rng.randint(1, 4))]
        n = wire.TRUNK_HEADER + sum(wire.TRUNK_ENTRY_HEADER + len(p) for _c, _t, p in entries)
        buf = bytearray(n + wire.MEDIA_TAG)
        wire.pack_trunk_header(buf, channel.peer_index)
        offset = wire.TRUNK_HEADER
        for call_no, ts16, payload in entries:
            offset = wire.pack_trunk_entry(buf, offset, call_no, ts16, len(payload) == 1)
            buf[offset:offset + len(payload)] = payload
            offset += len(payload)
        stamps = b"".join(ts.to_bytes(8, "big") for _c, ts, _p in entries)
        buf[n:] = channel.crypto.send_auth.digest2(stamps, memoryview(buf)[:n])[:wire.MEDIA_TAG]
        self.end.net.send(buf, self.end.address, MAIN)
        self.sent += 1

    def answer_calls(self):
        """A compromised host lets calls to it ring, answers some: its own calls, which may live."""
        end = self.end
        inbox, end.inbox = end.inbox, []
        for msg_type, ies in inbox:
            if msg_type == wire.SETUP and self.rng.random() < 0.5 and end.up:
                reply = {wire.IE_CALL_NO: self.rng.randint(1, wire.MAX_CALL_NO),
                         wire.IE_PEER_CALL_NO: ies.get(wire.IE_CALL_NO, 1)}
                end.login.send(self.rng.choice((wire.ALERTING, wire.ANSWER)), reply, self.end.net.now)
                self.sent += 1


def _victim_round(world, attackers, rng, per_tick):
    """Both victim calls: dial, answer, talk under attack, hang up. Returns the calls' outcome."""
    phones = world.phones

    def attack():
        for _ in range(per_tick):
            for a in attackers:
                a.send_one()
        for a in attackers:
            a.answer_calls()
        world.tick()
        for end in phones.values():           # only the round's calls are answered
            for event in end.take():
                if isinstance(event, Incoming):
                    if event.waiting:                 # call waiting (docs/features.md): refused, the call goes on
                        lines.reject_waiting(end.phone, world.net.now)
                    elif event.number in [c for c, _ in VICTIMS] and end.number in [d for _, d in VICTIMS]:
                        end.phone.answer(world.net.now)
                    else:
                        end.phone.hangup(world.net.now)

    for end in phones.values():
        end.sent, end.received, end.log, end.ts = [], [], [], 0
    for caller, _callee in VICTIMS:
        phones[caller].phone.dial(_callee, world.net.now)
    for _ in range(25):
        attack()
    connected = [all(phones[n].phone.state == CONNECTED for n in pair) for pair in VICTIMS]
    if all(connected):
        for _ in range(TALK_TICKS):
            attack()
    for caller, _callee in VICTIMS:
        phones[caller].phone.hangup(world.net.now)
    for _ in range(10):
        attack()
    return connected


def test_compromised_host_and_phone_cannot_touch_calls_they_are_not_party_to(tmp_path):
    rng = random.Random(SEED)
    world = World(tmp_path, ring_timeout_s=4)
    try:
        world.start_remote()
        for i, number in enumerate(("101", "102", "301", "302")):
            world.add_phone(number, 11 + i)
        host = Attacker(world, world.add_login(wire.IE_HOST_NAME, "site-x", ("198.18.9.1", 4570)), rng, "host")
        phone = Attacker(world, world.add_login(wire.IE_EXTENSION, "303", ("198.18.9.2", 40000)), rng, "phone")
        attackers = (host, phone)
        world.run(1000)
        assert all(end.phone.registered for end in world.phones.values())
        assert host.end.up and phone.end.up

        rounds = 0
        checkpoints = []
        victim_calls = 0              # victim calls that were connected: each must have its record
        while host.sent + phone.sent < MESSAGES:
            before = host.sent + phone.sent
            connected = _victim_round(world, attackers, rng, per_tick=40)
            victim_calls += sum(connected)
            if not all(connected):
                continue              # a victim was rung by an attacker when its round began: try again
            rounds += 1
            for caller, callee in VICTIMS:
                a, b = world.phones[caller], world.phones[callee]
                for src, dst in ((a, b), (b, a)):
                    # every frame sent arrived, once, in order, unaltered (the last few may be in
                    # flight when the caller hangs up)
                    assert dst.received == src.sent[:len(dst.received)], (caller, callee, rounds)
                    assert len(dst.received) >= len(src.sent) - 2 >= TALK_TICKS - 2, (len(dst.received),
                                                                                     len(src.sent))
                rang = [i for i, e in enumerate(b.log) if isinstance(e, Incoming) and e.number == caller]
                assert len(rang) == 1, b.log
                ended = [e.cause for e in b.log[rang[0]:] if isinstance(e, Ended)][:1]
                assert ended == [wire.CAUSE_NORMAL], (callee, ended)
                assert a.phone.state == IDLE and b.phone.state == IDLE
            records = [r for r in world.main.directory.call_records(limit=10 ** 6)
                       if r.caller in ("101", "302") and r.cause == "normal clearing"]
            assert len(records) == victim_calls and len({r.uid for r in records}) == victim_calls
            assert {(r.origin, r.caller, r.callee, r.answered_ms is not None) for r in records[:2]} == {
                ("main", "101", "301", True), ("main", "302", "102", True)}
            assert host.sent + phone.sent > before
            checkpoints.append(_memory(world))

        assert rounds >= 5 and host.sent + phone.sent >= MESSAGES
        assert host.sent >= MESSAGES // 4 and phone.sent >= MESSAGES // 4
        # bounded: the caps hold, and what the main host holds stops growing once they are reached
        for m in checkpoints:
            assert m["calls"] <= 1000 + 2 + 2 and m["legs"] <= 2 * m["calls"], m
            assert m["queued"] <= 4096 * m["sessions"] and m["local_grants"] <= 1000, m
        settled = [m["bytes"] for m in checkpoints[len(checkpoints) // 2:]]
        early = max(m["bytes"] for m in checkpoints[:len(checkpoints) // 2])
        assert max(settled) <= 1.5 * early, [m["bytes"] for m in checkpoints]
        assert world.net.errors == [] and "internal error" not in world.main.stats.drops
        print("isolation: %d messages (%d host, %d phone), %d replays, %d logins, %d rounds, memory %s"
              % (host.sent + phone.sent, host.sent, phone.sent, host.replays + phone.replays,
                 host.logins + phone.logins, rounds, [m["bytes"] // 1024 for m in checkpoints]))
    finally:
        world.close()


def _memory(world):
    main = world.main
    return {
        "calls": len(main.switch.calls),
        "legs": len(main.switch.legs),
        "sessions": len(main.peers.peers),
        "queued": sum(p.channel.pending() for p in main.peers.peers.values()),
        "local_grants": sum(len(s) for s in main.local_calls.values()),
        "bytes": retained_bytes(main),
    }
