"""The main host on every core: relay workers that share its port, one per core (docs/relay.md, "Every core").

The main host's socket and one socket per worker (host/relay_worker.py) are bound to the same
address with SO_REUSEPORT. A classic BPF program on the group sends each trunk frame to socket
number (session index mod the number of sockets) and every other datagram (handshakes,
signalling, phones' mini frames) to socket 0, the main host's. Session indexes are given out one
after another, so the sessions spread evenly. The main host keeps all state and all decisions:

- every host link's keys and address go to every worker (`_sync_links`), again when the
  address changes (B7) or the host logs out;
- a call direction (frames received on one leg, relayed on the other) whose receiving host is a
  worker's is *delegated* to that worker while it is the fast path's common case (both legs on
  host links, answered, not held, no music on hold, no conference, no page): the worker gets the
  legs' keys, the receiving leg's replay window and the direction's timestamp shift;
- when that stops being so (a hold, a release, a transfer, a conference, a host gone), the
  direction is *revoked* before the main host acts on it: the worker sends back the replay window,
  the last timestamp sent and the counts, and the main host's own objects carry on from there;
- a datagram a worker does not take is forwarded to the main host as it came (with its source
  address) and handled as if the main host had read it; a delegated direction it names is
  revoked first, so no frame is ever checked against a stale replay window.

A replay window therefore lives in exactly one process at a time, which is what keeps replay
protection, and a worker never decides anything: it relays what it was given.
"""
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import time

from upbx.common import cluster, wire
from upbx.common.call import CONNECTED
from upbx.common.crypto import extend16
from upbx.host import fastpath
from upbx.host.call_rounds import CallRounds
from upbx.common.media import open_trunk
from upbx.host.relay_worker import ADDR

SO_ATTACH_REUSEPORT_CBPF = 51
REVOKE_TIMEOUT_S = 2.0
MIXED_MS = 1000          # how long a host whose trunks mix calls a table cannot take stays with the Python path
SCAN_TICKS = 10          # every call is looked at once in this many ticks (200 ms): delegated or taken back
START_TIMEOUT_S = 20.0


def cpus():
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def steering_program(count):
    """Classic BPF for SO_ATTACH_REUSEPORT_CBPF: a trunk frame (first byte 11xxxxxx) to socket
    (22-bit session index mod count), anything else to socket 0. The program sees the UDP payload."""
    ld_b, ld_h, alu_and, alu_lsh, alu_add_x, alu_mod = 0x30, 0x28, 0x54, 0x64, 0x0C, 0x94
    jeq, ret_k, ret_a, tax = 0x15, 0x06, 0x16, 0x07
    code = [
        (ld_b, 0, 0, 0),            # A = payload[0]
        (alu_and, 0, 0, 0xC0),
        (jeq, 0, 8, 0xC0),          # not a trunk frame: to the last instruction (socket 0)
        (ld_b, 0, 0, 0),
        (alu_and, 0, 0, 0x3F),
        (alu_lsh, 0, 0, 16),
        (tax, 0, 0, 0),             # X = high 6 bits of the index << 16
        (ld_h, 0, 0, 1),            # A = payload[1:3], network order
        (alu_add_x, 0, 0, 0),
        (alu_mod, 0, 0, count),
        (ret_a, 0, 0, 0),
        (ret_k, 0, 0, 0),
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in code), len(code)


def field_steering_program(count):
    """steering_program for a node of a cluster: a trunk frame to the socket its session index's worker
    field names (common/cluster.py: the index's low 3 bits, mod count), anything else to socket 0."""
    ld_b, alu_and, alu_mod, jeq, ret_k, ret_a = 0x30, 0x54, 0x94, 0x15, 0x06, 0x16
    code = [
        (ld_b, 0, 0, 0),
        (alu_and, 0, 0, 0xC0),
        (jeq, 0, 4, 0xC0),          # not a trunk frame: socket 0
        (ld_b, 0, 0, 2),            # A = the index's low byte
        (alu_and, 0, 0, cluster.WORKER_MASK),
        (alu_mod, 0, 0, count),
        (ret_a, 0, 0, 0),
        (ret_k, 0, 0, 0),
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in code), len(code)


def attach_steering(sock, count, by_field=False):
    import ctypes
    program, length = (field_steering_program if by_field else steering_program)(count)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", length, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    return buf   # the kernel copies the program; the buffer only has to live through the call


class RelayWorkers:
    """The workers of one main host (held by its daemon): start, keep in step, stop."""

    def __init__(self, core, sock, count, on_flush):
        self.core = core
        self.sock = sock
        # a node of a cluster: its session indexes name their worker (common/cluster.py), 8 at most
        self.by_field = getattr(core.peers, "node_id", None) is not None
        if self.by_field:
            count = min(count, cluster.MAX_WORKERS)
            core.peers.workers = count
        self.count = count
        # worker 0's table: the directions the main host relays itself, in C (host/_fastpath.c Relay)
        self.local = fastpath.relay_table(core.switch.trunk_mtu)
        self.local_taken = 0                # the table's datagrams already added to the core's counters
        self.table_keys = {}                # (call id, i) -> (receiving session index, call number, out session index)
        self.rounds = CallRounds(core.switch.calls, SCAN_TICKS)   # new calls at once, every call once a round
        self.pending = {}                   # call id -> call: new calls not delegated yet, looked at every tick
        self.mixed = {}                     # session index -> ms: its trunks carry a call no table can take; until then
                                            # its directions stay with the Python path
        self.on_flush = on_flush            # the daemon's _flush: after forwarded datagrams were handled
        self.procs = []                     # worker k is procs[k - 1], its channel channels[k - 1]
        self.channels = []
        self.links = {}                     # session index -> (Link, the state the workers were sent)
        self._links_stamp = None            # the core's (logins and logouts, address moves) at the last look
        self.looked_at_changed = 0          # calls looked at the tick after a hold changed them (status)
        self.delegated = {}                 # (call id, i) -> (worker, call, recv leg, out leg)
        self.by_recv_leg = {}               # (its session index, our call number) of a delegated receiving leg -> key
                                            # (a node numbers a remote host's legs on its session alone)
        self.inbox = []                     # (worker, message) read while waiting for a revoke
        self.dead = set()                   # workers that died (fail)
        self.confirmed = set()              # delegated directions the worker said it holds
        self.syncs = 0                      # sync() calls and the CPU they took (status: the scan's cost)
        self.sync_s = 0.0
        self.forwarded = 0
        self.revokes = 0                    # directions taken back from workers ...
        self.revokes_here = 0               # ... and from the main host's own table
        self.lost = 0

    def owner(self, session_index):
        if self.by_field:
            return (session_index & cluster.WORKER_MASK) % self.count
        return session_index % self.count

    # starting and stopping

    def start(self):
        self.core.call_ending = self.call_ending
        self.core.calls_changed = set()   # a hold: looked at the next tick (_sync), not when the scan comes to it
        if self.count == 1:   # the main host alone: its own table, no processes, no steering
            return
        host, port = self.sock.getsockname()[:2]
        for number in range(1, self.count):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for s in (mine, theirs):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            proc = subprocess.Popen([sys.executable, "-m", "upbx.host.relay_worker", str(theirs.fileno()), host,
                                     str(port), str(number), str(self.core.switch.trunk_mtu)],
                                    pass_fds=(theirs.fileno(),))
            theirs.close()
            mine.settimeout(START_TIMEOUT_S)
            try:
                ready = mine.recv(16)
            except socket.timeout:
                ready = b""
            if ready != b"R":    # bound in order: socket k of the group is worker k
                proc.kill()
                self.stop()
                raise RuntimeError("relay worker %d did not start" % number)
            mine.setblocking(False)
            self.procs.append(proc)
            self.channels.append(mine)
        self._program = attach_steering(self.sock, self.count, self.by_field)
        self.core.call_ending = self.call_ending

    def stop(self):
        for channel in self.channels:
            try:
                channel.send(b"C" + pickle.dumps(("stop",)))
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for channel in self.channels:
            channel.close()
        self.procs, self.channels = [], []

    def fds(self):
        return [(k + 1, channel.fileno()) for k, channel in enumerate(self.channels) if k + 1 not in self.dead]

    def status(self):
        self.merge_local()
        return {"workers": self.count, "worker_pids": [p.pid for p in self.procs], "workers_died": len(self.dead),
                "delegated_directions": len(self.confirmed), "delegated_here": len(self.local),
                "forwarded_datagrams": self.forwarded, "revokes": self.revokes, "revokes_here": self.revokes_here,
                "table_datagrams": self.local.taken(),
                "table_gso": list(self.local.gso()),   # [on, messages, frames] of the table's UDP GSO sends
                "sync_us_mean": round(self.sync_s * 1e6 / self.syncs, 1) if self.syncs else None,
                "calls_looked_at_on_change": self.looked_at_changed}

    # messages

    def fail(self, worker):
        """Worker died: the main host carries on alone. Everything is steered to its socket from now on;
        the directions other workers hold come back with their windows; the calls the dead worker
        relayed end ("unreachable": their replay windows went with it, and no frame is checked
        against a window that may be behind)."""
        core = self.core
        core.log.error("relay-worker-gone", worker=worker, calls_ended=sum(1 for d in self.delegated.values()
                                                                          if d[0] == worker))
        core.stats.drop("relay worker gone")
        self.dead.add(worker)
        self._program = attach_steering(self.sock, 1)
        if worker <= len(self.procs):
            self.procs[worker - 1].kill()   # dead already, or hung: it must not relay on
        now = core.now
        for key, (owner, call, recv, out) in list(self.delegated.items()):
            if owner not in self.dead and self.revoke(key):
                continue
            self.delegated.pop(key, None)
            named = self.table_keys.pop(key, None)
            self.confirmed.discard(key)
            if named is not None and self.by_recv_leg.get(named[:2]) == key:
                del self.by_recv_leg[named[:2]]
            if not call.released:
                for leg in (call.a, call.b):
                    if leg is not None:
                        core.switch.release(leg, wire.CAUSE_UNREACHABLE, now)
                core.end_call(call, wire.CAUSE_UNREACHABLE, now)
        self._drain_inbox()
        self.count = 1            # sync() delegates to the main host's own table only from now on
        for number, channel in enumerate(self.channels, 1):
            if number not in self.dead:
                asyncio_remove(channel)
        self.stop()
        self.on_flush()

    def merge_local(self):
        """What the main host's own table relayed since the last time, into the core's counters and meter."""
        from upbx.host.relay_worker import WORKER_TAKEN
        report = self.local.report()
        taken = self.local.taken()
        if taken > self.local_taken:   # the metrics' upbx_fast_path_datagrams (host/metrics.py)
            report[1][WORKER_TAKEN] = taken - self.local_taken
            self.local_taken = taken
        self._merge_report(*report[1:])

    def _tell(self, worker, message):
        self.channels[worker - 1].send(b"C" + pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def readable(self, worker):
        """What worker sent: forwarded datagrams handled as if read here, reports merged."""
        channel = self.channels[worker - 1]
        for _ in range(256):
            try:
                message = channel.recv(1 << 17)
            except (BlockingIOError, InterruptedError):
                break
            if not message:
                asyncio_remove(channel)
                self.fail(worker)
                break
            self.inbox.append((worker, message))
            self._drain_inbox()
        self.on_flush()

    def _drain_inbox(self):
        while self.inbox:
            worker, message = self.inbox.pop(0)
            self._handle(worker, message)

    def _handle(self, worker, message):
        kind = message[:1]
        if kind in (b"D", b"E"):
            ip, port = ADDR.unpack_from(message, 1)
            self.forwarded += 1
            stamps, start = None, 7
            if kind == b"E":
                length = int.from_bytes(message[7:9], "big")
                stamps, start = pickle.loads(message[9:9 + length]), 9 + length
            self.receive_forwarded(bytearray(message[start:]), (socket.inet_ntoa(ip), port), stamps)
            return
        message = pickle.loads(message[1:])
        if message[0] == "delegated":
            if message[1] in self.delegated:
                self.confirmed.add(message[1])
        elif message[0] == "touch":
            _kind, index, address, _when = message
            self._touch(index, address)
        elif message[0] == "report":
            self._merge_report(*message[1:])

    def _touch(self, index, address):
        peer = self.core.peers.peers.get(index)
        if peer is not None:
            self.core._touch(peer, address, self.core.now)
            self._sync_links()   # the other workers send to its new address at once (B7)

    def _merge_report(self, counters, drops, meter, bytes_out, seen):
        stats = self.core.stats
        for name, n in counters.items():
            stats.count(name, n)
        for reason, n in drops.items():
            stats.drops[reason] = stats.drops.get(reason, 0) + n
        for address, (n_in, n_out) in meter.items():
            if n_in:
                self.core.meter.add(address, n_in - wire.IP_UDP_HEADERS, False)
            if n_out:
                self.core.meter.add(address, n_out - wire.IP_UDP_HEADERS, True)
        by_link = self.core.switch.bytes_out_by_link
        for name, n in bytes_out.items():
            by_link[name] = by_link.get(name, 0) + n
        for index, address in seen.items():
            peer = self.core.peers.peers.get(index)
            if peer is not None and self.core.peers.touch(peer, address, self.core.now):
                self.core._moved(peer, self.core.now)

    def receive_forwarded(self, data, address, stamps=None):
        """A datagram a worker did not take, as if read here. When it names legs delegated to that worker
        (stamps, {call number: highest}, from the worker; or legs delegated here whose delegation the
        worker had not read yet) and its tag verifies, their directions come back first; a forgery is
        dropped here and moves nothing, so no one can pull calls off a worker with garbage."""
        core = self.core
        now = int(time.monotonic() * 1000)
        stamps = stamps or {}
        named = ()
        if len(data) >= 3 and data[0] & 0xC0 == 0xC0 and self.by_recv_leg:
            session = wire.session_of(data)
            try:
                named = [e[0] for e in wire.parse_trunk(data)]
            except wire.DecodeError:
                named = ()
            local = self.local.stamps(data) if len(self.local) else None
            for call_no in named:
                key = self.by_recv_leg.get((session, call_no))
                if key is not None and call_no not in stamps:
                    if self.delegated[key][0] == 0:   # the main host's own table holds the window
                        if local is not None and call_no in local:
                            stamps[call_no] = local[call_no]
                    else:
                        stamps[call_no] = None    # ours is the window: the worker has not taken it yet
        if stamps:
            if not self._authentic(data, stamps):
                core.now = now
                core.stats.count("datagrams in")
                core.stats.count("bytes in", len(data))
                core.meter.add(address, len(data), False)
                core.stats.drop("trunk rejected")
                return
            # an authentic frame no table takes whole (a far jump, a host at a new address, or delegated
            # calls in one trunk with a call not delegated yet): the directions it names come back for it,
            # and go out again right after it if they still are the common case
            back = []
            session = wire.session_of(data)
            for call_no in stamps:
                key = self.by_recv_leg.get((session, call_no))
                if key is None:
                    continue
                entry = self.delegated[key]
                if not self.revoke(key):
                    core.stats.drop("relay worker unreachable")
                    return
                back.append((key, entry))
            core.receive_datagram(data, address, now)
            self._sync_link(session)   # B7: a new address goes to the tables before they relay again
            # the frame's other calls: a new one goes to the table now; one that cannot (a phone's call,
            # a held one) keeps the host's directions here a while, so its trunks are not borrowed frame by frame
            if self._delegate_named(data, session, named, stamps):
                self.mixed[session] = now + MIXED_MS
                return
            for key, (_worker, call, recv, out) in back:
                if key not in self.delegated and self._eligible(call, key[1], recv, out):
                    self._delegate(key, call, key[1], recv, out)
            return
        core.receive_datagram(data, address, now)

    def _delegate_named(self, data, session, named, stamps):
        """Delegate the directions a borrowed frame names that are not delegated and can be; True when one cannot."""
        peer = self.core.peers.peers.get(session)
        link = self.core.links.get(peer.index) if peer is not None else None
        switch = self.core.switch
        mixed = False
        for call_no in named:
            leg = switch.leg(link, call_no) if link is not None else None
            if call_no in stamps or leg is None or leg.call is None:
                continue
            call = leg.call
            i = 0 if leg is call.b else 1     # frames received on leg b go out on leg a: direction 0
            key = (call.call_id, i)
            if key in self.delegated:
                continue
            out = call.a if i == 0 else call.b
            if out is not None and self._eligible(call, i, leg, out):
                self._delegate(key, call, i, leg, out)
            else:
                mixed = True
        return mixed

    def _authentic(self, data, stamps):
        """The trunk frame's tag verifies, with the worker's stamps for its legs and ours for the rest."""
        peer = self.core.peers.peers.get(wire.session_of(data))
        link = self.core.links.get(peer.index) if peer is not None else None
        if link is None:
            return False
        switch = self.core.switch

        def extend(call_no, ts16):
            highest = stamps.get(call_no)   # the worker's, or None: ours
            if highest is None:
                leg = switch.leg(link, call_no)
                if leg is not None:
                    highest = leg.media.replay.highest
                else:   # a call that just ended: its late frames still authenticate (Switch.trunk_in)
                    gone = switch._ended.get(switch.key(link, call_no))
                    if gone is None or gone[1] != link.serial:
                        return None
                    highest = gone[0]
            return extend16(highest, ts16)

        try:
            return open_trunk(link.session.channel.crypto.recv_auth, data, extend) is not None
        except wire.DecodeError:
            return False

    # keeping the workers in step with the core

    def sync(self, pump=None):
        """Before each tick: revoke what stopped being the common case, delegate what became it,
        send the workers new, moved and gone host links. pump(), when given, is called at each call looked at
        and each direction checked: the main host's relay table relays what waits on its socket when enough time
        has passed (the daemon's _pump_table)."""
        started = time.thread_time()   # CPU time: on a busy machine the wall time is mostly waiting
        try:
            self._sync(pump)
            self.merge_local()
        finally:
            self.syncs += 1
            self.sync_s += time.thread_time() - started

    def _sync(self, pump=None):
        """Links every tick; the calls a slice a tick (every call within SCAN_TICKS ticks), so a tick costs
        about 1/SCAN_TICKS of a scan of every call; what the tick itself acts on (music on hold for the
        calls held here) comes back every tick, before the tick."""
        self._sync_links()
        delegated = self.delegated
        if delegated:
            for call in self.core.held:   # the tick sends music on them: their windows and stamps are ours
                for i in (0, 1):
                    if (call.call_id, i) in delegated:
                        self.revoke((call.call_id, i))
        changed = self.core.calls_changed
        if changed:   # held or resumed since the last tick (by a remote host too: not in core.held)
            for call in changed:
                self.looked_at_changed += 1
                self._look_at(call)
            changed.clear()
        mixed = self.mixed
        if mixed:
            now = int(time.monotonic() * 1000)
            for index in [i for i, until in mixed.items() if until <= now]:
                del mixed[index]
        calls = self.core.switch.calls
        pending = self.pending
        for call in self.rounds.new(pump):   # the calls made since the last tick
            if pump is not None:
                pump()
            pending[call.call_id] = call
        for call_id, call in list(pending.items()):
            # a new call goes to a table as soon as it is answered: until then its frames are the Python path's,
            # and a trunk that carries them with delegated calls takes those back for one frame
            if pump is not None:
                pump()
            if call.released or calls.get(call_id) is not call:
                del pending[call_id]
            elif call.b is not None and call.a is not None and call.b.state == CONNECTED:
                del pending[call_id]
                self._look_at(call)
        part, began = self.rounds.part()
        if began:
            # a new round: directions of calls that are gone (the switch dropped them) come back too
            for key in list(delegated):   # the keys: no tuple made per entry (each is one for the collector)
                call = delegated[key][1]
                if calls.get(call.call_id) is not call:
                    self.revoke(key)
                if pump is not None:
                    pump()
        for call in part:
            self._look_at(call)
            if pump is not None:
                pump()
        self._drain_inbox()   # what came in while a direction was revoked

    def _look_at(self, call):
        """Both directions of call: taken back when no longer the common case, delegated when they became it."""
        delegated = self.delegated
        a, b = call.a, call.b
        for i, out, recv in ((0, a, b), (1, b, a)):
            key = (call.call_id, i)
            entry = delegated.get(key)
            if entry is not None:
                if not self._eligible(call, i, entry[2], entry[3]):
                    self.revoke(key)
                continue
            if a is None or b is None or b.state != CONNECTED:
                break
            link = recv.link
            if link.session is None or link.kind != "host" or link.session.index in self.mixed:
                continue
            if self._eligible(call, i, recv, out):
                self._delegate(key, call, i, recv, out)

    def _eligible(self, call, i, recv, out):
        """Direction i of call (received on recv, relayed on out) is a worker's common case."""
        if (call.released or call.held_by is not None or call.conference is not None or call.fanout is not None
                or call.moh_last[i] is not None or out.direct is not None or recv.direct is not None
                or not out.peer_call_no):
            return False
        a, b = call.a, call.b
        if b is None or b.state != CONNECTED or not ((out is a and recv is b) or (out is b and recv is a)):
            return False
        switch, links = self.core.switch, self.links
        if switch.leg(recv.link, recv.call_no) is not recv or switch.leg(out.link, out.call_no) is not out:
            return False
        recv_link, out_link = recv.link, out.link
        if recv_link.kind != "host" or out_link.kind != "host" or recv_link.session is None or out_link.session is None:
            return False
        index = recv_link.session.index
        return (links.get(index, (None,))[0] is recv_link and links.get(out_link.session.index, (None,))[0] is out_link
                and 0 < recv.call_no <= 0x7FFF and 0 < out.peer_call_no <= 0x7FFF)

    def _delegate(self, key, call, i, recv, out):
        """Direction i of call to the table of the process its receiving host's frames are steered to:
        the legs' media keys and roles, the window, the timestamp shift (host/_fastpath.c Relay.delegate)."""
        index = recv.link.session.index
        worker = self.owner(index)
        window = recv.media.replay
        recv_media, out_media = recv.media, out.media
        args = (index, recv.call_no, recv_media._recv_ctr.key, recv_media.role, out.link.session.index,
                out_media.peer_call_no, out_media._send_ctr.key, out_media.role, call.ts_shift[i], call.ts_out[i],
                (window.highest, bytes(window._seen), window._held))
        if worker == 0:
            self.local.delegate(*args)
        else:
            self._tell(worker, ("delegate", key, args))
        self.delegated[key] = (worker, call, recv, out)
        self.table_keys[key] = (index, recv.call_no, args[4])
        self.by_recv_leg[index, recv.call_no] = key

    def call_ending(self, call):
        """A call ends (HostCore.end_call): its delegated directions come back first, so its frames
        and its legs' counts are whole in its record, its log line and the metrics."""
        for i in (0, 1):
            if (call.call_id, i) in self.delegated:
                self.revoke((call.call_id, i))

    def revoke(self, key):
        """Direction key back from its worker (waits for the answer); False when the worker did not answer
        (then it is taken for dead: fail)."""
        if key not in self.delegated:   # a worker failed meanwhile: fail() settled it
            return True
        worker, call, recv, out = self.delegated[key]
        index, call_no, _out_index = self.table_keys[key]
        if worker == 0:
            self.revokes_here += 1
            state = self.local.revoke(index, call_no)
        else:
            self.revokes += 1
            try:
                self._tell(worker, ("revoke", key, index, call_no))
                state = self._wait_revoked(worker, key)
            except OSError:
                state = False
        if state is False:
            self.lost += 1
            self.core.log.error("relay-worker-unreachable", worker=worker, call=call.uid)
            if worker not in self.dead:
                self.fail(worker)
            return False
        del self.delegated[key]
        del self.table_keys[key]
        self.confirmed.discard(key)
        if self.by_recv_leg.get((index, call_no)) == key:
            del self.by_recv_leg[index, call_no]
        if state is None:
            return True
        (highest, seen, held), ts_out, received, rejected, sent, frames = state
        window = recv.media.replay
        window.highest, window._held = highest, held
        window._seen[:] = seen
        i = key[1]
        if ts_out > call.ts_out[i]:
            call.ts_out[i] = ts_out
        recv.media.received += received
        recv.media.rejected += rejected
        out.media.sent += sent
        call.frames += frames
        return True

    def _wait_revoked(self, worker, key):
        channel = self.channels[worker - 1]
        deadline = time.monotonic() + REVOKE_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([channel], [], [], left)[0]:
                return False
            message = channel.recv(1 << 17)
            if not message:
                return False
            if message[:1] == b"C":
                decoded = pickle.loads(message[1:])
                if decoded[0] == "revoked" and decoded[1] == key:
                    return decoded[2]
            self.inbox.append((worker, message))   # handled after this revoke, in order

    def _sync_links(self):
        """Every host link's keys and current address to every worker; gone links withdrawn. Looked at only
        after a login, a logout or an address move (the main host's counts of them), and then only the remote
        hosts' links (MainHost.host_links): a walk of every link each tick was 5-7 % of the main host's CPU
        while 10,000 phones registered."""
        core = self.core
        stamp = (getattr(core, "_links_changed", None), core.peers.moves)
        if stamp[0] is not None and stamp == self._links_stamp:
            return
        self._links_stamp = stamp
        links = getattr(core, "host_links", None)
        if links is None:
            links = core.links
        current = {}
        for link in links.values():
            if link.kind == "host" and link.session is not None:
                current[link.session.index] = link
        for index in [i for i in self.links if current.get(i) is not self.links[i][0]]:
            for key in [k for k, t in self.table_keys.items() if index in (t[0], t[2])]:
                self.revoke(key)
            del self.links[index]
            self.local.unlink(index)
            self._broadcast(("unlink", index))
        for index, link in current.items():
            known = self.links.get(index)
            address = link.address
            if known is not None and known[1] == address:
                continue
            crypto = link.session.channel.crypto
            message = ("link", index, link.name, crypto.recv_auth.key, crypto.send_auth.key,
                       link.session.channel.peer_index, address)
            self.links[index] = (link, address)
            self.local.link(*message[1:])
            self._broadcast(message)

    def _sync_link(self, index):
        """One host link's address to the tables, when it changed (B7: the main host saw it move)."""
        known = self.links.get(index)
        if known is None or known[0].address == known[1]:
            return
        link = known[0]
        if link.session is None or link.session.index != index:
            return
        crypto = link.session.channel.crypto
        message = ("link", index, link.name, crypto.recv_auth.key, crypto.send_auth.key,
                   link.session.channel.peer_index, link.address)
        self.links[index] = (link, link.address)
        self.local.link(*message[1:])
        self._broadcast(message)

    def _broadcast(self, message):
        for worker in range(1, self.count):
            if worker not in self.dead:
                self._tell(worker, message)


def asyncio_remove(channel):
    import asyncio
    try:
        asyncio.get_running_loop().remove_reader(channel.fileno())
    except (RuntimeError, ValueError):
        pass
