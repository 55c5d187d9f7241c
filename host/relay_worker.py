"""A relay worker: one process of the main host's port that relays the trunk frames of its sessions.

The main host (host/relay_workers.py) starts one per core beyond its own, each with a socket
bound to the main host's address with SO_REUSEPORT; the kernel steers every trunk frame to the
socket whose number is the frame's session index modulo the number of sockets (a classic BPF
program on the group), everything else to the main host. A worker holds a copy of what relaying
needs (docs/relay.md, "Every core"): the host links (keys, peer index, address) and, for each
call direction the main host delegated, the two legs' keys, the receiving leg's replay window and
the direction's timestamp shift. It runs the C fast path (`relay_batch`) on those objects and
forwards to the main host, untouched, every datagram the fast path does not take.

    python -m upbx.host.relay_worker FD HOST PORT NUMBER TRUNK_MTU

FD is this end of a SOCK_SEQPACKET pair to the main host. Messages (one per packet):
    main -> worker   b"C" + pickle of ("link", ...), ("unlink", index), ("delegate", ...),
                     ("revoke", key), ("stop",)
    worker -> main   b"R" (bound, ready), b"D" + IPv4 (4) + port (2) + datagram (forwarded),
                     b"E" + IPv4 + port + length (2) + pickle of {call number: highest} + datagram
                     (forwarded, naming legs delegated here: their windows' highest stamps, with
                     which the main host checks the frame's tag before it takes them back),
                     b"C" + pickle of ("revoked", key, state), ("touch", index, address),
                     ("report", counters, drops, meter, bytes out by link, seen)
"""
import os
import pickle
import select
import socket
import struct
import sys
import time

from upbx.common import wire
from upbx.common.call import CONNECTED, CallLeg
from upbx.common.crypto import HmacKey
from upbx.host import fastpath
from upbx.host.core import DSCP_EF, Stats
from upbx.host.switch import Call, Link, Switch

WORKER_TAKEN = "worker fast path datagrams"   # a counter of the reports: datagrams the workers' C path took
REPORT_S = 0.25          # counters, bandwidth and last-seen go to the main host this often
RX_BURST = 64
SOCKET_BUFFER = 4 << 20
DISABLED = True          # moh_last[i] of a direction not delegated here: the C path leaves its frames alone
ADDR = struct.Struct("!4sH")


class Meter:
    """Bytes by address (with IPv4 + UDP headers) since the last report: the main host's meter adds them."""

    def __init__(self):
        self.pending = {}

    def add(self, address, n, out):
        counts = self.pending.get(address)
        if counts is None:
            counts = self.pending[address] = [0, 0]
        counts[1 if out else 0] += n + 28


class WorkerCore:
    """What relay_batch asks of a core (switch, stats, meter, now, trunk_route, _touch), over the copies."""

    def __init__(self, number, trunk_mtu, tell):
        self.number = number
        self.tell = tell                 # tell(message): a control message to the main host
        self.stats = Stats()
        self.meter = Meter()
        self.now = 0
        self.out = []
        self.switch = Switch(self.send, self.stats, trunk_mtu)
        self.links = {}                  # session index -> (Link, receive HmacKey)
        self.calls = {}                  # call id -> Call (copy)
        self.bases = {}                  # (call id, i) -> counters when delegated: what revoke reports is the rest
        self.seen = {}                   # session index -> address of its last new media (main's last-seen)
        self.taken_reported = 0          # the fast path's datagrams in the reports so far

    # what relay_batch calls

    def trunk_route(self, session):
        entry = self.links.get(session)
        return None if entry is None else (session, entry[0], entry[1])

    def _touch(self, session, address, now):
        self.seen[session] = address
        link = self.links[session][0]
        if link.address != address:      # B7: frames for this host go to its new address from now on
            link.address = address
            self.tell(("touch", session, address, now))

    def send(self, data, address, voice=False):
        self.out.append((bytes(data), address, DSCP_EF))
        counters = self.stats.counters
        counters["media out"] = counters.get("media out", 0) + 1
        counters["bytes out"] = counters.get("bytes out", 0) + len(data)
        self.meter.add(address, len(data), True)

    # what the main host says

    def control(self, message):
        kind = message[0]
        if kind == "link":
            _kind, index, name, recv_key, send_key, peer_index, address = message
            entry = self.links.get(index)
            if entry is None:
                link = Link(name, "pair", address=address)
                link.trunk_auth = HmacKey(send_key)
                link.peer_index = peer_index
                self.links[index] = (link, HmacKey(recv_key))
            else:
                entry[0].address = address
        elif kind == "unlink":
            self.links.pop(message[1], None)
        elif kind == "delegate":
            self.delegate(*message[1:])
            self.tell(("delegated", message[1]))
        elif kind == "revoke":
            self.tell(("revoked", message[1], self.revoke(message[1])))

    def delegate(self, key, legs, i, ts_shift, ts_out, replay):
        """Direction i of call key[0] (frames received on leg 1 - i, sent on leg i) is relayed here."""
        call_id = key[0]
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = Call(call_id, "", "", 0)
            call.moh_last = [DISABLED, DISABLED]
            for side, (call_no, media_key, role, peer_call_no, link_index) in zip("ab", legs):
                leg = CallLeg(call_no, media_key, role)
                leg.learn_peer(peer_call_no)
                leg.state = CONNECTED
                leg.link = self.links[link_index][0]
                leg.call = call
                setattr(call, side, leg)
                self.switch.legs[call_no] = leg
        recv, out = (call.b, call.a) if i == 0 else (call.a, call.b)
        window = recv.media.replay
        window.highest, seen, window._held = replay
        window._seen[:] = seen
        call.ts_shift[i] = ts_shift
        call.ts_out[i] = ts_out
        call.moh_last[i] = None
        self.bases[key] = (recv.media.received, recv.media.rejected, out.media.sent, call.frames)

    def revoke(self, key):
        """Direction key[1] goes back to the main host: its replay window, stamps and counts since delegated."""
        call_id, i = key
        call = self.calls.get(call_id)
        base = self.bases.pop(key, None)
        if call is None or base is None:
            return None
        recv, out = (call.b, call.a) if i == 0 else (call.a, call.b)
        window = recv.media.replay
        state = ((window.highest, bytes(window._seen), window._held), call.ts_out[i],
                 recv.media.received - base[0], recv.media.rejected - base[1], out.media.sent - base[2],
                 call.frames - base[3])
        call.moh_last[i] = DISABLED
        # frames counted once: the other direction's base moves past what this report carried
        other = self.bases.get((call_id, 1 - i))
        if other is not None:
            self.bases[(call_id, 1 - i)] = other[:3] + (call.frames,)
        if call.moh_last == [DISABLED, DISABLED]:
            del self.calls[call_id]
            for leg in (call.a, call.b):
                if self.switch.legs.get(leg.call_no) is leg:
                    del self.switch.legs[leg.call_no]
        return state

    def delegated_stamps(self, data):
        """{call number: highest stamp} of the legs delegated here that a trunk frame names, or None."""
        entry = self.links.get(wire.session_of(data)) if data[0] & 0xC0 == 0xC0 else None
        if entry is None:
            return None
        try:
            entries = wire.parse_trunk(data)
        except wire.DecodeError:
            return None
        stamps = {}
        for call_no, _ts, _start, _end in entries:
            leg = self.switch.legs.get(call_no)
            if leg is not None and leg.link is entry[0]:
                call = leg.call
                if call.moh_last[0 if leg is call.b else 1] is None:
                    stamps[call_no] = leg.media.replay.highest
        return stamps or None

    def report(self, taken=0):
        """What changed since the last report; taken: the fast path's datagrams in this process so far."""
        stats, meter, seen = self.stats, self.meter, self.seen
        if taken > self.taken_reported:   # the main host's metrics add them to its own (host/metrics.py)
            stats.count(WORKER_TAKEN, taken - self.taken_reported)
            self.taken_reported = taken
        message = ("report", stats.counters, stats.drops, meter.pending, self.switch.bytes_out_by_link, seen)
        stats.counters, stats.drops, meter.pending, self.switch.bytes_out_by_link, self.seen = {}, {}, {}, {}, {}
        return message


def run(fd, host, port, number, trunk_mtu):
    native = fastpath.native
    channel = socket.socket(fileno=fd)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass
    sock.bind((host, port))
    sock.setblocking(False)

    def tell(message):
        channel.send(b"C" + pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    core = WorkerCore(number, trunk_mtu, tell)
    channel.send(b"R")
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(channel.fileno(), select.POLLIN)
    udp, ctl = sock.fileno(), channel.fileno()
    next_report = time.monotonic() + REPORT_S
    while True:
        # what the main host said first: a delegation applies to the datagrams read after it
        for fd_ready, _event in sorted(poller.poll(int(REPORT_S * 1000)), key=lambda r: r[0] != ctl):
            if fd_ready == ctl:
                while True:
                    try:
                        message = channel.recv(1 << 20, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    if not message:
                        return 0          # the main host is gone
                    message = pickle.loads(message[1:])
                    if message[0] == "stop":
                        return 0
                    core.control(message)
            else:
                relay(core, native, sock, channel)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + REPORT_S
            tell(core.report(native.taken()))


def relay(core, native, sock, channel):
    """The datagrams waiting on the socket: the fast path's relayed at once, the rest to the main host."""
    batch = native.recv_batch(sock.fileno(), RX_BURST)
    now = int(time.monotonic() * 1000)
    i, count = 0, len(batch)
    while i < count:
        i, exc = native.relay_batch(core, batch, i, now)
        if exc is not None:
            core.stats.drop("internal error")
            print("relay worker %d: internal error: %r" % (core.number, exc), file=sys.stderr)
            i += 1
            continue
        if i < count:
            data, (host, port) = batch[i]
            stamps = core.delegated_stamps(data)
            if stamps is None:
                channel.send(b"D" + ADDR.pack(socket.inet_aton(host), port) + data)
            else:
                extra = pickle.dumps(stamps, pickle.HIGHEST_PROTOCOL)
                channel.send(b"E" + ADDR.pack(socket.inet_aton(host), port) + len(extra).to_bytes(2, "big") + extra + data)
            i += 1
    core.switch.flush_relayed()
    out, core.out = core.out, []
    fd = sock.fileno()
    while out:
        sent, err = native.send_batch(fd, out)
        out = out[sent:]
        if err and out:
            if err not in (11, 4):       # EAGAIN, EINTR: wait for room; anything else loses that datagram
                core.stats.count("socket errors")
                out = out[1:]
                continue
            select.select([], [fd], [], 0.01)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if fastpath.native is None:
        print("relay worker: the C fast path is not built (or UPBX_PURE_PYTHON is set)", file=sys.stderr)
        return 2
    fd, host, port, number, trunk_mtu = args
    try:
        return run(int(fd), host, int(port), int(number), int(trunk_mtu))
    except (BrokenPipeError, ConnectionResetError):
        return 0                          # the main host is gone


if __name__ == "__main__":
    sys.exit(main())
