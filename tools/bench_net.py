"""Network benchmarks of the main host on loopback: trunking, relay capacity, hop latency, registrations.

The main host runs as its own process (`upbx main`), pinned to one core; the
load generator runs here, pinned to the other core. Remote hosts and phones are
emulated by protocol clients that log in with real secrets (common.login.Login)
and send real authenticated, encrypted frames (common.media). Frames are sealed
before a measurement starts, so the generator's own crypto does not limit the
rate; what the generator receives is counted per trunk entry and timestamped,
not decrypted again (the main host authenticates and decrypts every frame).
"""
import errno
import gc
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

from upbx.common import wire
from upbx.common.login import UP, Login
from upbx.common.media import MediaLeg, seal_trunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = 0.020
IP_UDP = wire.IP_UDP_HEADERS   # IPv4 + UDP header bytes per datagram
RTP_KBPS = 80.0                 # G.711 20 ms over RTP/UDP/IPv4: (160 + 12 + 8 + 20) * 8 * 50
VOICE = bytes(range(160))


def iax2_trunk_kbps(calls):
    """IAX2 trunked G.711 20 ms per call: IP+UDP 28, meta trunk header 8, 6 per call entry (RFC 5456)."""
    return round((IP_UDP + 8 + calls * (6 + 160)) * 8 * 50 / calls / 1000, 2)


def upbx_trunk_kbps(calls, mtu=1472):
    """Our trunk frames computed from docs/protocol.md: header 3, entry header 4, tag 4, split by the MTU."""
    per = (mtu - wire.TRUNK_HEADER - wire.MEDIA_TAG) // (wire.TRUNK_ENTRY_HEADER + 160)
    datagrams = -(-calls // per)
    size = datagrams * (IP_UDP + wire.TRUNK_HEADER + wire.MEDIA_TAG) + calls * (wire.TRUNK_ENTRY_HEADER + 160)
    return round(size * 8 * 50 / calls / 1000, 2)


def pin(pid, cpu):
    """Pin a process to one CPU when there are enough of them; returns the set used or None."""
    if (os.cpu_count() or 1) < 2:
        return None
    os.sched_setaffinity(pid, {cpu})
    return {cpu}


def waited_seconds(pids):
    """Seconds the processes' threads were ready to run but waited for a CPU (/proc/PID/task/*/schedstat's
    run_delay, summed): on a shared machine, the time another process had the relay's core."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for task in tasks:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def steal_seconds():
    """{cpu number: seconds} the hypervisor ran something else on each virtual CPU (/proc/stat's steal column):
    time in which a process the guest counts as running does not run. A relay stopped that way holds every
    datagram queued at its socket (docs/benchmarks.md, Session 10: 9-10 % of each CPU in a quiet run here)."""
    ticks = os.sysconf("SC_CLK_TCK")
    steal = {}
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0].startswith("cpu") and fields[0] != "cpu" and len(fields) > 8:
                steal[int(fields[0][3:])] = int(fields[8]) / ticks
    return steal


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- the main host under test -------------------------------------------------

class MainUnderTest:
    """A provisioned main host process on loopback with a control socket."""

    def __init__(self, sites, phones=0, trunk_mtu=1472, cpu=0, workdir=None, workers=1):
        from upbx.host.directory import Directory
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="upbx-bench-")
        self.secrets = {}
        db = os.path.join(self.dir, "main.sqlite")
        with Directory(db) as d:
            for site, numbers in sites.items():
                d.add_site(site)
                self.secrets["site-" + site] = d.add_remote_host("site-" + site, site)
                if numbers:
                    self.secrets.update(d.add_extensions([(n, site, "") for n in numbers]))
            if phones:
                # phones straight at the main host, in sites of PHONES_PER_SITE (sites with no remote host)
                self.phone_numbers = [str(100000 + i) for i in range(phones)]
                for first in range(0, phones, PHONES_PER_SITE):
                    site = "p%d" % (first // PHONES_PER_SITE)
                    d.add_site(site)
                    numbers = self.phone_numbers[first:first + PHONES_PER_SITE]
                    self.secrets.update(d.add_extensions([(n, site, "") for n in numbers]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        self.sock_path = os.path.join(self.dir, "main.sock")
        config = os.path.join(self.dir, "main.toml")
        with open(config, "w") as f:
            f.write('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "main.sqlite"\ncontrol_socket = "%s"\n'
                    'direct_media = false\nlog_level = "warning"\ntrunk_mtu = %d\nring_timeout_s = 600\n'
                    'registration_ttl_s = 600\nmax_calls_per_host = 16383\nworkers = %d\n'
                    % (self.port, self.sock_path, trunk_mtu, workers))
        self.log = open(os.path.join(self.dir, "main.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "upbx.tools.cli", "main", "--config", config], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.pids = [self.proc.pid]
        try:
            self.pinned = pin(self.proc.pid, cpu) if cpu is not None else None
            deadline = time.time() + 60   # a busy shared machine: importing and opening the directory took > 10 s
            while not os.path.exists(self.sock_path):
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("main host did not start; see %s" % self.log.name)
                time.sleep(0.02)
            if workers > 1:   # the workers start after the control socket: their CPU counts too
                deadline = time.time() + 30
                while True:
                    try:   # the control socket's file exists from bind(), before listen(): refused until then
                        if len(self.status().get("worker_pids", ())) >= workers - 1:
                            break
                    except ConnectionRefusedError:
                        pass
                    except TimeoutError:   # its loop is starting the workers (each waited for): ask again
                        pass
                    if time.time() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("main host's relay workers did not start; see %s" % self.log.name)
                    time.sleep(0.05)
                self.pids += self.status()["worker_pids"]
        except BaseException:  # Ctrl-C or SIGTERM while it starts: stop it, leave nothing
            self.close()
            raise

    def status(self):
        from upbx.host.daemon import query_status
        return query_status(self.sock_path)

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def cpu_seconds(self):
        """utime + stime of the main host and its relay workers (every thread of each)."""
        total = 0
        for pid in self.pids:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def waited_seconds(self):
        return waited_seconds(self.pids)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- protocol clients -----------------------------------------------------------

def _now_ms():
    return int(time.monotonic() * 1000)


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def recv_stamped(sock):
    """(data, when) of one waiting datagram: when is the kernel's receive time (SO_TIMESTAMPNS on the
    socket, CLOCK_REALTIME seconds, compared with time.time() taken before a send), so how late the
    reader got to it is not part of a latency. Raises BlockingIOError when none is waiting."""
    data, ancdata, _flags, _address = sock.recvmsg(65536, socket.CMSG_SPACE(_TIMESPEC.size))
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, ns = _TIMESPEC.unpack(value[:_TIMESPEC.size])
            return data, sec + ns * 1e-9
    return data, time.time()


class Client:
    """One UDP socket with a Login to the main host (a phone or a remote host)."""

    def __init__(self, identity_ie, identity, secret, main_address, source="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.main = main_address
        index = int.from_bytes(os.urandom(3), "big") % wire.MAX_SESSION + 1
        self.login = Login(identity_ie, identity, secret, index, os.urandom, keepalive_ms=15000)
        self.messages = []
        self.rx_bytes = 0
        self.rx_datagrams = 0

    def start(self, now):
        self.login.start(now)
        self.flush(now)

    def flush(self, now):
        for datagram in self.login.datagrams_to_send(now):
            self.sock.sendto(datagram, self.main)

    def poll(self, now):
        timer = self.login.next_timer()
        if timer is not None and timer <= now:
            self.login.handle_timer(now)
        self.flush(now)

    def signal(self, data, now):
        self.messages.extend(self.login.receive(bytearray(data), now))
        self.flush(now)

    @property
    def up(self):
        return self.login.state == UP


def pump(clients, until, seconds=10.0, on_media=None, poll=None):
    """Drive clients' signalling until until() is true; media go to on_media(client, data, t)."""
    by_fd = {c.sock.fileno(): c for c in clients}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + seconds
    last_poll = 0
    try:
        while not until():
            t = time.monotonic()
            if t > deadline:
                raise TimeoutError("clients did not get there in %.0f s" % seconds)
            now = int(t * 1000)
            for fd, _ in poller.poll(0.01):
                client = by_fd[fd]
                while True:
                    try:
                        data = client.sock.recv(65536)
                    except BlockingIOError:
                        break
                    kind = wire.frame_kind(data)
                    if kind == wire.KIND_FULL:
                        client.signal(data, now)
                    elif on_media is not None:
                        on_media(client, data, t)
            if now - last_poll >= 20:
                last_poll = now
                for c in (clients if poll is None else poll()):
                    c.poll(now)
    finally:
        poller.close()


class TrunkCall:
    """One call from emulated remote host A to emulated remote host B through the main host."""

    def __init__(self, index, a_no, b_no):
        self.index = index
        self.a_no = a_no                # our call numbers at A and at B
        self.b_no = b_no
        self.key = os.urandom(16)
        self.a = MediaLeg(self.key, 0, a_no, 0)   # main's leg a has role 1
        self.b = None                   # MediaLeg at B once the SETUP arrived
        # the bench's clock in ms where this call's media timestamps are 0 (a multiple of 65536, so
        # the 16 bits on the wire are the bench clock's): set by the first tick sealed for the call
        self.ts_base = None


SETUP_BATCH = 1000   # SETUPs a TrunkPair sends before it waits for their answers (TrunkPair.add_calls)


class TrunkPair:
    """Two emulated remote hosts (sites a, b) logged into the main host, with calls a -> b."""

    def __init__(self, main, calls, main_b=None, ready=None):
        """main_b: site b's main host when it is another (a cluster's other node: calls between nodes);
        ready: true once the calls can be routed (a cluster: site b's location is in Redis), waited for
        after the logins and before the first SETUP."""
        self.main = main
        self.a = Client(wire.IE_HOST_NAME, "site-a", main.secrets["site-a"], main.address)
        self.b = Client(wire.IE_HOST_NAME, "site-b", main.secrets["site-b"], (main_b or main).address)
        now = _now_ms()
        self.a.start(now)
        self.b.start(now)
        pump([self.a, self.b], lambda: self.a.up and self.b.up)
        for c in (self.a, self.b):   # as a remote host does: a cluster's node routes the site's calls here
            c.login.send(wire.NODES, {wire.IE_STANDBY: 0}, now)   # "this session is my home"
            c.flush(now)
        if ready is not None:
            pump([self.a, self.b], ready, seconds=60)
        self.calls = []
        self.next_ts = 20
        self.by_a_no = {}
        self.by_b_no = {}
        self.add_calls(calls)

    def add_calls(self, n):
        """Set up n more calls and wait until all are answered, SETUP_BATCH at a time: a remote host's
        channel holds at most 4,096 messages waiting for its window (common/reliable.py _MAX_QUEUE) and
        fails past that, as it does for a peer that never acknowledges (5,610 SETUPs at once did, and
        the bench waited for answers that could not come)."""
        while n > 0:
            batch = min(n, SETUP_BATCH)
            self._add_calls(batch)
            n -= batch

    def _add_calls(self, n):
        now = _now_ms()
        first = len(self.calls)
        for i in range(first, first + n):
            call = TrunkCall(i, i + 1, i + 1)
            self.calls.append(call)
            self.by_a_no[call.a_no] = call
            self.by_b_no[call.b_no] = call
            self.a.login.send(wire.SETUP, {wire.IE_CALL_NO: call.a_no, wire.IE_CALLED: "2%05d" % i,
                                           wire.IE_CALLING: "1%05d" % i, wire.IE_MEDIA_KEY: call.key,
                                           wire.IE_CALL_ID: os.urandom(8)}, now)
        self.a.flush(now)
        pending = {"answered": 0}
        setups = iter(range(first, first + n))

        def handle():
            now = _now_ms()
            for msg_type, ies in self.b.messages:
                if msg_type == wire.SETUP:
                    call = self.calls[next(setups)]
                    call.b = MediaLeg(ies[wire.IE_MEDIA_KEY], 1, call.b_no, ies[wire.IE_CALL_NO])
                    for reply in (wire.ALERTING, wire.ANSWER):
                        self.b.login.send(reply, {wire.IE_CALL_NO: call.b_no,
                                                  wire.IE_PEER_CALL_NO: ies[wire.IE_CALL_NO]}, now)
            self.b.messages = []
            for msg_type, ies in self.a.messages:
                call = self.by_a_no.get(ies.get(wire.IE_PEER_CALL_NO))
                if call is not None and msg_type == wire.ANSWER:
                    call.a.peer_call_no = ies[wire.IE_CALL_NO]
                    pending["answered"] += 1
                elif call is not None and msg_type == wire.RELEASE:   # refused: say why, not wait for a bound
                    cause = ies.get(wire.IE_CAUSE)
                    raise RuntimeError("the pair's call to 2%05d was released: %s" % (
                        call.index, wire.CAUSE_TEXT.get(cause, cause)))
            self.a.messages = []
            self.b.flush(now)
            for c in (self.a, self.b):
                channel = c.login.channel
                if channel is not None and channel.failed:
                    raise RuntimeError("%s's channel failed: %s" % (c.login.identity, channel.error))
            return pending["answered"] >= n

        pump([self.a, self.b], handle, seconds=120 + n / 10)   # a bound on a hang (30 s ran out under CI load)

    def seal_ticks(self, calls, ticks, ts0, mtu):
        """Trunk datagrams of both hosts for `ticks` ticks of `calls` calls: [[(client, bytes, call indices)]]."""
        seal = self.sealer(calls, mtu, ts0=ts0)
        return [seal(ts0 + 20 * k) for k in range(ticks)]

    def sealer(self, calls, mtu, native=None, ts0=0):
        """seal(ts) -> one tick's trunk datagrams of both hosts [(client, bytes, call indices)] for the
        bench clock's ts (ms), ts0 the first tick's; native: the C fast path's seal_trunk (the same
        bytes, tests/test_fastpath.py), for sealing while sending instead of before.

        A leg's first timestamp must be below 65536 (the receiver takes the first 16-bit stamp as it
        is: docs/protocol.md, section 5), so each call's stamps count from its own base, the bench
        clock at its first tick rounded down to 65536: the 16 bits on the wire stay the clock's, and
        a call set up after the clock passed 65.5 s is not sealed with stamps no receiver can extend
        (which made every trunk datagram holding such a call fail authentication)."""
        buf = bytearray(65536)
        seal_fn = native.seal_trunk if native is not None else seal_trunk
        groups = [(client, client.login.channel.crypto.send_auth, client.login.channel.peer_index,
                   [(leg, c.ts_base) for leg, c in part], [c.index for _l, c in part])
                  for client, part in self._datagrams(calls, mtu, ts0)]

        def seal(ts):
            return [(client, bytes(seal_fn(auth, index, [(leg, ts - base, VOICE) for leg, base in legs], buf)), indices)
                    for client, auth, index, legs, indices in groups]
        return seal

    def _datagrams(self, calls, mtu, ts0):
        """A tick's trunk datagrams of both hosts, [(client, [(leg, call)])], as many calls a datagram as
        mtu holds; each call's stamp base set on its first tick (see sealer)."""
        per = max(1, (mtu - wire.TRUNK_HEADER - wire.MEDIA_TAG) // (wire.TRUNK_ENTRY_HEADER + 160))
        for c in calls:
            if c.ts_base is None:
                c.ts_base = ts0 & ~0xFFFF
        return [(client, legs[i:i + per])
                for client, legs in ((self.a, [(c.a, c) for c in calls]), (self.b, [(c.b, c) for c in calls]))
                for i in range(0, len(legs), per)]

    def native_specs(self, calls, mtu, ts0):
        """[(socket fd, specs)] of host A and host B for host/_fastpath.c bench_send_trunks: the datagrams of
        sealer(), each spec (auth, index, ((peer call no, role, ctr, base), ...)) (tests/test_bench_generator.py
        compares the C sealer's bytes with common.trunk.seal_trunk's)."""
        by_client = {self.a: [], self.b: []}
        for client, part in self._datagrams(calls, mtu, ts0):
            channel = client.login.channel
            by_client[client].append((channel.crypto.send_auth, channel.peer_index,
                                      tuple((leg.peer_call_no, leg.role, leg._send_ctr, c.ts_base) for leg, c in part)))
        out = [(client.sock.fileno(), specs) for client, specs in by_client.items()]
        return out

    def close(self):
        now = _now_ms()
        for c in (self.a, self.b):
            if c.up:
                c.login.send(wire.BYE, {}, now)
                c.flush(now)
            c.sock.close()


def run_trunk_load(pair, calls, seconds, mtu, latency=False, quiet_s=0.3, longest_s=0.3):
    """Send two-way media of `calls` calls for `seconds`; count what arrives (and when).

    After the last datagram it reads on until nothing of this run's has come for quiet_s, at most
    longest_s: a relay (or two nodes) still working through a backlog on a busy machine is slow, not
    lossy. Where the frames that never came went is in the result: `kernel_drops` (a full receive
    buffer, /proc/net/udp) at the main host's (or nodes') ports and at the generator's, `late_frames`
    (this run's frames read after the last datagram went out), `behind_ms` (how late the generator sent
    its last datagram, against its schedule)."""
    ticks = int(seconds / TICK)
    # timestamps go on from the last run, as a call's do: a leg extends 16-bit stamps near its last one
    ts0 = pair.next_ts
    pair.next_ts = ts0 + 20 * ticks + 200
    span = 20 * ticks
    plan = pair.seal_ticks(calls, ticks, ts0, mtu)
    sent = ticks * len(calls) * 2
    received = [0]
    lat = []
    sends = []      # latency: (time.time() of each send, how late it was against its schedule)
    frames = []     # latency: (index in sends of the frame's datagram, its latency), in the order they came
    send_at = {}
    rx = {pair.a: [0, 0, 0, 0], pair.b: [0, 0, 0, 0]}   # client -> [datagrams, bytes, this run's entries, all entries]
    last_mine = [0.0]

    def on_media(client, data, t):
        counters = rx[client]
        counters[0] += 1
        counters[1] += len(data)
        if wire.frame_kind(data) != wire.KIND_TRUNK:
            return
        entries = wire.parse_trunk(data)
        # only this run's frames count: late frames of an earlier, overloaded run would hide loss
        mine = sum(1 for e in entries if (e[1] - ts0) & 0xFFFF < span)
        received[0] += mine
        counters[2] += mine
        counters[3] += len(entries)
        if mine:
            last_mine[0] = time.monotonic()
        if latency:
            for call_no, ts16, _s, _e in entries:
                at = send_at.get((client is pair.a, ts16, call_no - 1))
                if at is not None:
                    lat.append(t - at[0])
                    frames.append((at[1], t - at[0]))

    # latency: while it sends, the generator only keeps what it reads (and when) and when it sent each datagram;
    # the entries are parsed and matched after its last send. Parsing and matching as it went cost it ~1 us of
    # Python per entry, 200,000 entries a second at 2,005 calls, and with its sends that was nearly a CPU: it
    # fell behind its schedule (10-200 ms, `latency_generator_late_ms`, even on a quiet machine) and then sent
    # what was due back to back, a burst the relay queued (docs/benchmarks.md, Session 11)
    kept = []

    def keep(client, data, t):
        kept.append((client, data, t))

    mains = {pair.a.main[1], pair.b.main[1]}
    own = {c.sock.getsockname()[1] for c in (pair.a, pair.b)}
    # the generator must not pause: a full collection of its plan (a tracked tuple a datagram; 2,005 calls x 200
    # ticks) took 58-68 ms of CPU, after which it sent what fell due meanwhile back to back, a burst the relay
    # queued: the hop's p99 (docs/benchmarks.md, Session 9); what it makes while it runs is collected after
    gc.collect()
    gc.freeze()
    drops0 = (udp_drops(mains), udp_drops(own))
    start = time.monotonic() + 0.05
    by_fd = {c.sock.fileno(): c for c in (pair.a, pair.b)}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    per_tick_signal = 0
    behind = 0.0
    for c in (pair.a, pair.b):
        c.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1 if latency else 0)
    try:
        gc.disable()
        for k, datagrams in enumerate(plan):
            tick_start = start + k * TICK
            gap = TICK / max(1, len(datagrams))
            ts16 = (ts0 + 20 * k) & 0xFFFF
            for j, (client, data, indices) in enumerate(datagrams):
                due = tick_start + j * gap
                while True:
                    t = time.monotonic()
                    wait = due - t
                    if wait <= 0:
                        break
                    _drain(poller, by_fd, keep if latency else on_media, min(wait, 0.005), pair, latency)
                behind = t - due
                t = time.time()   # the wall clock: the kernel's receive stamps are on it
                client.sock.sendto(data, client.main)   # each site to its own node (a cluster's pair: two)
                if latency:
                    sends.append((t, behind))
            if k - per_tick_signal >= 50:
                per_tick_signal = k
                now = _now_ms()
                pair.a.poll(now)
                pair.b.poll(now)
        done = time.monotonic()
        if latency:   # what each datagram sent carried, then what came back while sending
            n = 0
            for k, datagrams in enumerate(plan):
                ts16 = (ts0 + 20 * k) & 0xFFFF
                for client, _data, indices in datagrams:
                    to_a = client is pair.b
                    sent_as = (sends[n][0], n)
                    n += 1
                    for i in indices:
                        send_at[(to_a, ts16, i)] = sent_as
            for client, data, t in kept:
                on_media(client, data, t)
            del kept[:]
        at_send_end = received[0]
        last_mine[0] = done
        while True:
            now = time.monotonic()
            if now - last_mine[0] >= quiet_s or now - done >= longest_s:
                break
            _drain(poller, by_fd, on_media, 0.01, pair, latency)
    finally:
        gc.enable()
        gc.unfreeze()
        poller.close()
        for c in (pair.a, pair.b):
            c.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 0)
    lost = (sent // 2 - rx[pair.a][2], sent // 2 - rx[pair.b][2])
    return {"sent": sent, "received": received[0], "rx": rx, "latency": lat, "ticks": ticks, "lost": lost,
            "sends": sends, "frames": frames,
            "kernel_drops": {"main": udp_drops(mains) - drops0[0], "generator": udp_drops(own) - drops0[1]},
            "late_frames": received[0] - at_send_end, "behind_ms": round(behind * 1000, 1)}


def _drain(poller, by_fd, on_media, timeout, pair, stamped=False):
    """What waits on the clients' sockets: signalling to their logins, media to on_media(client, data, t),
    t the time.time() it was read, or (stamped) the kernel's receive time (recv_stamped)."""
    for fd, _ in poller.poll(timeout):
        client = by_fd[fd]
        while True:
            try:
                if stamped:
                    data, t = recv_stamped(client.sock)
                else:
                    data, t = client.sock.recv(65536), time.time()
            except BlockingIOError:
                break
            if data and wire.frame_kind(data) == wire.KIND_FULL:
                client.signal(data, _now_ms())   # signalling: not part of a call's media on the wire
            else:
                on_media(client, data, t)


def loopback_baseline(samples=2000):
    """p50/p99 s of a datagram from one loopback socket to another, timed as a relay hop is: from
    time.time() before the send to the kernel's receive stamp."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    b.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    poller = select.epoll()
    poller.register(b.fileno(), select.EPOLLIN)
    lat = []
    data = bytes(600)
    try:
        for _ in range(samples):
            t = time.time()
            a.sendto(data, b.getsockname())
            poller.poll(0.1)
            _data, at = recv_stamped(b)
            lat.append(at - t)
    finally:
        poller.close()
        a.close()
        b.close()
    return percentile(lat, 50), percentile(lat, 99)


_ECHO = """
import os, socket, sys
if len(sys.argv) > 1 and (os.cpu_count() or 1) >= 2:
    os.sched_setaffinity(0, {int(sys.argv[1])})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, address = s.recvfrom(65536)
    s.sendto(data, address)
"""


def echo_baseline(samples=1000, cpu=0, gap=0.002, ladder=False):
    """p50/p99 s of a datagram sent to an echo process on the main host's CPU and back, one every `gap` s
    (the next one once the last came back); with ladder, {percentile: s} for 50, 90, 99, 99.9.

    The same two crossings between processes (and CPUs) as a relay hop in the
    latency measurement, with no work in between: the floor the machine sets. At the
    relay's datagram rate (gap = a tick / datagrams a tick) its core wakes as often as the relay's.
    """
    proc = subprocess.Popen([sys.executable, "-c", _ECHO, str(cpu)], stdout=subprocess.PIPE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    poller = select.epoll()
    try:
        address = ("127.0.0.1", int(proc.stdout.readline()))
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        poller.register(sock.fileno(), select.EPOLLIN)
        data = bytes(wire.TRUNK_HEADER + 8 * (wire.TRUNK_ENTRY_HEADER + 160) + wire.MEDIA_TAG)
        lat = []
        due = time.monotonic()
        for _ in range(samples):
            t = time.time()
            sock.sendto(data, address)
            if poller.poll(0.5):
                _data, at = recv_stamped(sock)
                lat.append(at - t)
            due += gap
            wait = due - time.monotonic()
            if wait > 0.001:
                time.sleep(wait)
            while due > time.monotonic():   # below a millisecond sleep() overshoots: the rate is the point
                pass
    finally:
        poller.close()
        sock.close()
        proc.kill()
        proc.wait()
    if ladder:
        return {p: percentile(lat, p) for p in LADDER}
    return percentile(lat, 50), percentile(lat, 99)


LADDER = (50, 90, 99, 99.9)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- the benchmarks ---------------------------------------------------------------

WAN_CALLS = (1, 2, 5, 10, 30)
# 10,000 is the figure; every login at the main host is sent the whole directory as
# system information (B6), so each registration costs O(directory) and 10,000 phones take
# tens of minutes: the default run uses 2,000 (docs/benchmarks.md), `phones=` sets it.
REGISTRATION_PHONES = 10000
PHONES_PER_SITE = 50


def bench_trunking(quick=False):
    """Entries per trunk datagram per tick on the wire, and WAN kbps per call at 1..30 calls."""
    seconds = 1.0 if quick else 3.0
    out = {"method": "emulated remote hosts A and B log into the main host; calls A->B relayed by the "
                     "main host; media datagrams and their bytes counted at B's socket (+28 per datagram; signalling apart), "
                     "authentication and encryption on",
           "wan_kbps_per_call": {}, "wan_kbps_per_call_jumbo": {}, "datagrams_per_tick": {},
           "datagrams_per_tick_jumbo": {}, "entries_per_datagram": {},
           "framing_wan_kbps_per_call": {}, "framing_wan_kbps_per_call_jumbo": {}}
    for mtu, key, dkey in ((1472, "wan_kbps_per_call", "datagrams_per_tick"),
                           (65000, "wan_kbps_per_call_jumbo", "datagrams_per_tick_jumbo")):
        main = MainUnderTest({"a": ["1%05d" % i for i in range(30)], "b": ["2%05d" % i for i in range(30)]},
                             trunk_mtu=mtu)
        try:
            pair = TrunkPair(main, max(WAN_CALLS))
            try:
                for n in WAN_CALLS:
                    result = run_trunk_load(pair, pair.calls[:n], seconds, mtu)
                    datagrams, nbytes, _mine, entries = result["rx"][pair.b]
                    # bytes on the wire per call-frame carried (each call sends one frame a tick): what
                    # the framing costs, whatever a busy machine did to the timing of the run
                    kbps = (nbytes + IP_UDP * datagrams) * 8 / (max(1, entries) * TICK) / 1000
                    out[key][str(n)] = round(kbps, 2)
                    # what those datagrams and entries cost by the framing (header, entries, tag): the
                    # measured figure must be exactly this (a relay that joins two ticks' entries in
                    # one datagram lowers both; datagrams_per_tick shows it)
                    framing = ((wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES) * entries
                               + (wire.TRUNK_HEADER + wire.MEDIA_TAG + IP_UDP) * datagrams)
                    out["framing_" + key][str(n)] = round(framing * 8 / (max(1, entries) * TICK) / 1000, 2)
                    out[dkey][str(n)] = round(datagrams / result["ticks"], 2)
                    if mtu == 1472:
                        out["entries_per_datagram"][str(n)] = round(result["received"] / 2 / max(1, datagrams), 2)
            finally:
                pair.close()
        finally:
            main.close()
    out["computed_kbps_per_call"] = {str(n): upbx_trunk_kbps(n) for n in WAN_CALLS}
    out["computed_kbps_per_call_jumbo"] = {str(n): upbx_trunk_kbps(n, 65000) for n in WAN_CALLS}
    out["rtp_kbps_per_call"] = RTP_KBPS
    out["iax2_trunk_kbps_per_call"] = {str(n): iax2_trunk_kbps(n) for n in WAN_CALLS}
    out["target_kbps_at_10_calls"] = 67
    out["meets_target_default_mtu"] = out["wan_kbps_per_call"]["10"] <= 67.0
    out["meets_target_jumbo_mtu"] = out["wan_kbps_per_call_jumbo"]["10"] <= 67.0
    return out


# --- relay capacity: the honest measurement (docs/benchmarks.md, "Relay capacity") ----------------

RELAY_WINDOW_S = 12.0      # the windows: >= 10 s, so a relay that needs 1.15 cores cannot pass
RELAY_MAX_LOSS = 0.001     # a step passes with <= 0.1 % of its frames lost ...
RELAY_MAX_CPU = 0.95       # ... and the relay below 95 % of its core over the sending phase
GENERATOR_SLACK = 0.02     # a window whose sending took 2 % longer than planned: the generator could not keep up
GENERATOR_MAX_CPU = 0.90   # ... nor could a generator busy 90 % of its core (it sends and reads late)
SLOT_S = 0.001             # the generator sends what is due each millisecond back to back


def _native():
    """The C extension's recvmmsg/sendmmsg for the load generator, when it was built."""
    from upbx.host import fastpath
    return fastpath.native


def udp_drops(ports):
    """Datagrams the kernel dropped at the UDP sockets bound to these local ports (receive buffer full,
    /proc/net/udp's `drops`), summed: where a lost frame was lost, the relay's socket or the generator's."""
    ports = set(ports)
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) in ports:
                total += int(fields[-1])
    return total


# --- counting what comes back in the kernel: a sampling socket filter (docs/benchmarks.md, "The generator") ---

SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
SAMPLE_BITS = 4           # with the filter on, 1 in 2**SAMPLE_BITS of the relayed frames is read and checked
SAMPLE_FROM = 40000       # ... in steps that send at least this many datagrams a second (400 calls one a datagram: 400 x 2 x 50)
_isolated = [False]       # the bench runs in a network namespace of its own (private_netns): the counts are ours


def sampling_filter(kind, ts0, span, bits=SAMPLE_BITS):
    """Classic BPF for a generator socket: a datagram that is one relayed frame of this window (kind "upbx": a
    trunk frame of one 160-byte voice entry whose 16-bit stamp is within span of ts0; "rtp": a 172-byte RTP
    packet whose timestamp is) is dropped, and counted in the socket's drops (/proc/net/udp), except a random
    1 in 2**bits, which is read and checked as before; anything else is read. A UDP socket's filter sees the
    UDP header: the payload starts at offset 8 and the length includes the 8 bytes."""
    ld_len, ld_b, ld_h, ld_w = 0x80, 0x30, 0x28, 0x20
    alu_and, alu_sub, jeq, jge, ret = 0x54, 0x14, 0x15, 0x35, 0x06
    random = (-0x1000 + 56) & 0xFFFFFFFF   # SKF_AD_OFF + SKF_AD_RANDOM
    if kind == "upbx":
        size = 8 + wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG
        checks = [(ld_len, 0, 0, 0), (jeq, 0, "read", size),
                  (ld_b, 0, 0, 8), (alu_and, 0, 0, 0xC0), (jeq, 0, "read", 0xC0),
                  (ld_b, 0, 0, 8 + wire.TRUNK_HEADER), (alu_and, 0, 0, 0x80), (jeq, 0, "read", 0),
                  (ld_h, 0, 0, 8 + wire.TRUNK_HEADER + 2), (alu_sub, 0, 0, ts0 & 0xFFFF), (alu_and, 0, 0, 0xFFFF),
                  (jge, "read", 0, span)]
    else:
        checks = [(ld_len, 0, 0, 0), (jeq, 0, "read", 8 + 12 + wire.VOICE_BYTES),
                  (ld_b, 0, 0, 8), (jeq, 0, "read", 0x80),
                  (ld_w, 0, 0, 8 + 4), (alu_sub, 0, 0, ts0 & 0xFFFFFFFF), (jge, "read", 0, span)]
    code = checks + [(ld_w, 0, 0, random), (alu_and, 0, 0, (1 << bits) - 1), (jeq, "read", 0, 0),
                     (ret, 0, 0, 0), (ret, 0, 0, 0xFFFF)]
    read = len(code) - 1
    out = []
    for i, (op, jt, jf, k) in enumerate(code):
        jt = read - i - 1 if jt == "read" else jt
        jf = read - i - 1 if jf == "read" else jf
        out.append(struct.pack("HBBI", op, jt, jf, k))
    return b"".join(out), len(code)


def attach_filter(sock, program):
    """SO_ATTACH_FILTER of (bytes, instructions); the program's buffer must live while the call runs."""
    import ctypes
    code, count = program
    buf = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", count, ctypes.addressof(buf)))


def udp_rcvbuf_errors():
    """/proc/net/snmp's Udp RcvbufErrors: datagrams dropped at a full receive buffer, this network namespace."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


class private_netns:
    """The relay bench in a network namespace of its own (root only; else nothing changes): the main host,
    rtpengine and the generator on a loopback nobody else uses, and /proc/net/snmp's UDP counters theirs
    alone, which is what lets the generator count frames its sampling filter dropped (a socket's drops also
    count a full receive buffer; RcvbufErrors, per namespace, tells those apart). Entered with unshare(2)
    by the calling thread; left with setns(2) back to the namespace it came from."""
    CLONE_NEWNET = 0x40000000

    def __enter__(self):
        self.back = None
        if os.environ.get("UPBX_BENCH_NETNS", "1") == "0" or os.geteuid() != 0 or not shutil.which("ip"):
            return False
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        back = os.open("/proc/self/ns/net", os.O_RDONLY)
        if self.libc.unshare(self.CLONE_NEWNET) != 0:
            os.close(back)
            return False
        self.back = back
        if subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True).returncode != 0:
            self.__exit__()
            return False
        _isolated[0] = True
        return True

    def __exit__(self, *exc):
        _isolated[0] = False
        if self.back is not None:
            if self.libc.setns(self.back, self.CLONE_NEWNET) != 0:
                raise OSError(ctypes_errno(), "setns back to the bench's network namespace failed")
            os.close(self.back)
            self.back = None
        return False


def ctypes_errno():
    import ctypes
    return ctypes.get_errno()


class NativeTick:
    """One tick of load the C generator seals and sends (host/_fastpath.c bench_send_trunks, bench_send_rtp):
    parts [(count, send(first, last) -> (sent, errno))], one a socket; paced_window sends each part's share of
    a slot (so both directions are spread over the tick) without a Python object per datagram."""

    def __init__(self, parts):
        self.parts = parts
        self.total = sum(count for count, _send in parts)

    def __len__(self):
        return self.total

    def send_slot(self, j, slots, drain):
        for count, send in self.parts:
            first, last = count * j // slots, count * (j + 1) // slots
            while first < last:
                sent, err = send(first, last)
                first += sent
                if first < last:
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, 0):
                        raise OSError(err, "generator: sendmmsg failed")
                    drain(0)


def relay_waited(relay):
    """waited_seconds of a relay under test (MainUnderTest: the main host and its workers; RtpEngine: its threads)."""
    pids = getattr(relay, "pids", None)
    return waited_seconds(pids if pids is not None else [relay.proc.pid])


def paced_window(relay, ticks, datagrams_of_tick, sockets, on_datagram, settle=0.3, relay_ports=()):
    """Send ticks x 20 ms of load, paced evenly over each tick, and count what comes back.

    datagrams_of_tick(k) -> [(socket, bytes, address)]; on_datagram(socket, data) counts what
    arrives (frames of this window only). The relay's CPU is read when the first datagram leaves
    and when the last one has: CPU seconds over the sending phase alone, divided by the frames
    relayed within it, is its cost per frame (pre-sealing and the drain are outside it).
    Returns {"cpu_s", "wall_s", "behind_s", "at_end", "generator_cpu_s", "relay_drops", "generator_drops"}:
    at_end is on_datagram's count when sending ended; the drops are what the kernel dropped at the relay's
    sockets (relay_ports) and at the generator's own over the window and its settling time.
    """
    by_fd = {s.fileno(): s for s in sockets}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    batch = _native()

    counting = getattr(on_datagram, "native", None)   # (kind, ts0, span, counter): counted in C

    def drain(timeout):
        for fd, _ in poller.poll(timeout):
            sock = by_fd[fd]
            if batch is not None and counting is not None:   # no Python object per relayed frame
                kind, ts0, span, counter = counting
                while True:
                    n, counted, others = batch.bench_count(fd, 64, kind, ts0, span)
                    counter[0] += counted
                    for data in others:
                        on_datagram(sock, data)
                    if n < 64:
                        break
                continue
            if batch is not None:   # recvmmsg: the generator must not be what limits a relay
                while True:
                    got = batch.recv_batch(fd, 64)
                    if not got:
                        break
                    for data, _address in got:
                        on_datagram(sock, data)
                continue
            recv = sock.recv
            while True:
                try:
                    data = recv(65536)
                except BlockingIOError:
                    break
                on_datagram(sock, data)

    def send(items):
        if batch is None:
            for sock, data, address in items:
                sock.sendto(data, address)
            return
        groups = {}
        for sock, data, address in items:
            groups.setdefault(sock, []).append((data, address, 0))
        for sock, group in groups.items():
            fd = sock.fileno()
            while group:
                sent, err = batch.send_batch(fd, group)
                group = group[sent:]
                if group:
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        raise OSError(err, "generator: sendmmsg failed")
                    drain(0)

    behind = 0.0
    own_ports = [sock.getsockname()[1] for sock in sockets]
    # counting in the kernel: each frame the filter drops is one relayed (sampling_filter)
    sample = getattr(on_datagram, "filter", None)
    rate = len(datagrams_of_tick(0)) / TICK if sample is not None else 0   # datagrams a second sent (as many come back)
    sampled = sample is not None and _isolated[0] and rate >= SAMPLE_FROM
    if sampled:
        for sock in sockets:
            attach_filter(sock, sampling_filter(*sample))

    def in_kernel():
        """Frames the filters dropped so far: the generator's socket drops less those of a full buffer (this
        namespace's RcvbufErrors less the relay's own socket drops, which are all of a full buffer)."""
        if not sampled:
            return 0
        full = udp_rcvbuf_errors() - rcvbuf0 - (udp_drops(relay_ports) - drops0[0])
        return max(0, udp_drops(own_ports) - drops0[1] - max(0, full))

    drops0 = udp_drops(relay_ports), udp_drops(own_ports)
    rcvbuf0 = udp_rcvbuf_errors()
    try:
        start = time.monotonic() + 0.05
        cpu0 = None
        for k in range(ticks):
            datagrams = datagrams_of_tick(k)
            per_slot = max(1, -(-len(datagrams) * SLOT_S // TICK))
            slots = -(-len(datagrams) // int(per_slot))
            gap = TICK / max(1, slots)
            for j in range(slots):
                due = start + k * TICK + j * gap
                wait = due - time.monotonic()
                if wait <= 0:   # behind: what came back is read all the same (a full buffer loses it)
                    drain(0)
                while wait > 0:
                    drain(min(wait, 0.002))
                    wait = due - time.monotonic()
                if cpu0 is None:
                    cpu0 = relay.cpu_seconds()
                    wait0 = relay_waited(relay)
                    gen0 = time.process_time()
                    t0 = time.monotonic()
                behind = max(behind, -wait)
                if isinstance(datagrams, NativeTick):
                    datagrams.send_slot(j, slots, drain)
                else:
                    send(datagrams[j * int(per_slot):(j + 1) * int(per_slot)])
        cpu1 = relay.cpu_seconds()
        wait1 = relay_waited(relay)
        gen1 = time.process_time()
        t1 = time.monotonic()
        at_end = on_datagram(None, None) + in_kernel()
        end = t1 + settle
        while time.monotonic() < end:
            drain(0.01)
        counted = in_kernel()
        full = udp_rcvbuf_errors() - rcvbuf0 - (udp_drops(relay_ports) - drops0[0])
    finally:
        poller.close()
        if sampled:
            for sock in sockets:
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "behind_s": behind, "at_end": at_end, "waited_s": wait1 - wait0,
            "generator_cpu_s": gen1 - gen0, "relay_drops": udp_drops(relay_ports) - drops0[0],
            "generator_drops": udp_drops(own_ports) - drops0[1] - counted,
            "counted_in_kernel": counted if sampled else None, "sample": (1 << SAMPLE_BITS) if sampled else 1,
            "generator_full_drops": max(0, full) if sampled else None}


class RtpCalls:
    """Calls through rtpengine: plain RTP (12-byte header + 160 bytes G.711), one packet per call per
    direction per tick, from two generator sockets (the callers' side A and the callees' side B)."""

    def __init__(self, engine):
        self.engine = engine
        self.a = _bench_socket()
        self.b = _bench_socket()
        self.calls = []       # (port A sends to, port B sends to)
        self.next_ts = 160

    def add_calls(self, n):
        a_port, b_port = self.a.getsockname()[1], self.b.getsockname()[1]
        for i in range(len(self.calls), n):
            self.calls.append(self.engine.call("upbx-bench-%d" % i, a_port, b_port))

    def window(self, n, seconds):
        """One measured window of n calls; rtpengine's ports, timestamps going on from the last window."""
        ticks = int(round(seconds / TICK))
        ts0 = self.next_ts
        self.next_ts = ts0 + 160 * (ticks + 10)
        span = 160 * ticks
        pack = struct.Struct("!BBHII").pack
        a, b = self.a, self.b
        targets = [(("127.0.0.1", pa), ("127.0.0.1", pb), i) for i, (pa, pb) in enumerate(self.calls[:n])]

        native = _native()
        specs_a = [(0x10000 + i, pa) for pa, _pb, i in ((t[0][1], t[1][1], t[2]) for t in targets)]
        specs_b = [(0x20000 + i, pb) for _pa, pb, i in ((t[0][1], t[1][1], t[2]) for t in targets)]

        def datagrams_of_tick(k):
            ts = (ts0 + 160 * k) & 0xFFFFFFFF
            seq = (ts0 // 160 + k) & 0xFFFF
            if native is not None:
                return NativeTick([(len(specs), lambda first, last, fd=sock.fileno(), specs=specs:
                                    native.bench_send_rtp(fd, specs, seq, ts, VOICE, "127.0.0.1", first, last))
                                   for sock, specs in ((a, specs_a), (b, specs_b))])
            out = []
            for to_a_port, to_b_port, i in targets:
                out.append((a, pack(0x80, 0, seq, ts, 0x10000 + i) + VOICE, to_a_port))
                out.append((b, pack(0x80, 0, seq, ts, 0x20000 + i) + VOICE, to_b_port))
            return out

        got = [0]

        def on_datagram(sock, data):
            if data is None:
                return got[0]
            if len(data) >= 12 and (int.from_bytes(data[4:8], "big") - ts0) & 0xFFFFFFFF < span:
                got[0] += 1
            return None

        on_datagram.native = (1, ts0, span, got)   # the same count, made in C (_fastpath.bench_count)
        on_datagram.filter = ("rtp", ts0, span)     # ... or in the kernel, but for a sample (sampling_filter)

        return ticks, datagrams_of_tick, [a, b], on_datagram, got, n * 2 * ticks

    def engine_ports(self, n):
        """rtpengine's local ports of the first n calls (where it receives)."""
        return [port for pair in self.calls[:n] for port in pair]

    def close(self):
        self.a.close()
        self.b.close()


def _bench_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def trunk_window(pair, n, seconds, mtu):
    """One measured window of n trunked calls, as RtpCalls.window: sealed tick by tick while sending
    with the C fast path's seal_trunk when it is built, else all before the window starts (the
    Python sealer is slower than a relay; a window of thousands of calls then needs ~0.5 GB)."""
    ticks = int(round(seconds / TICK))
    ts0 = pair.next_ts
    pair.next_ts = ts0 + 20 * ticks + 200
    span = 20 * ticks
    main_of = {c.sock.fileno(): c.main for c in (pair.a, pair.b)}   # each site's own main host (or node)
    native = _native()
    seal = pair.sealer(pair.calls[:n], mtu, None, ts0=ts0) if native is None else None
    if native is None:
        plan = [[(client.sock, data, client.main) for client, data, _i in seal(ts0 + 20 * k)] for k in range(ticks)]
    got = [0]
    step = wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES

    def on_datagram(sock, data):
        if data is None:
            return got[0]
        if data[0] & 0xC0 != 0xC0:   # signalling (keepalives): the clients' logins answer it
            if wire.frame_kind(data) == wire.KIND_FULL:
                client = pair.a if sock is pair.a.sock else pair.b
                client.signal(data, _now_ms())
            return None
        # the generator sends voice entries only: walk them without a full parse
        for offset in range(wire.TRUNK_HEADER, len(data) - wire.MEDIA_TAG, step):
            if (((data[offset + 2] << 8) | data[offset + 3]) - ts0) & 0xFFFF < span:
                got[0] += 1
        return None

    on_datagram.native = (0, ts0, span, got)   # the same count, made in C (_fastpath.bench_count)
    per = max(1, (mtu - wire.TRUNK_HEADER - wire.MEDIA_TAG) // (wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES))
    if per == 1:   # one frame a datagram: counted in the kernel but for a sample, as rtpengine's (sampling_filter)
        on_datagram.filter = ("upbx", ts0, span)

    specs = pair.native_specs(pair.calls[:n], mtu, ts0) if native is not None else None

    def datagrams_of_tick(k):
        if k % 50 == 0:   # the logins' keepalives, once a second
            now = _now_ms()
            pair.a.poll(now)
            pair.b.poll(now)
        if native is None:
            return plan[k]
        ts = ts0 + 20 * k
        return NativeTick([(len(group), lambda first, last, fd=fd, group=group, ts=ts:
                            native.bench_send_trunks(fd, group, ts, VOICE, main_of[fd], first, last))
                           for fd, group in specs])

    per = max(1, (mtu - wire.TRUNK_HEADER - wire.MEDIA_TAG) // (wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES))
    datagrams = 2 * ticks * -(-n // per)   # datagrams sent
    return ticks, datagrams_of_tick, [pair.a.sock, pair.b.sock], on_datagram, got, n * 2 * ticks, datagrams


def _measure_step(relay, window, cores=1, relay_ports=()):
    ticks, datagrams_of_tick, sockets, on_datagram, got, sent = window[:6]
    r = paced_window(relay, ticks, datagrams_of_tick, sockets, on_datagram, relay_ports=relay_ports)
    received = got[0] + (r["counted_in_kernel"] or 0)
    loss = max(0.0, 1 - received / sent)
    relayed = max(1, r["at_end"])
    # relay_cpu: the share of its cores (all the workers' processes over `cores` of them)
    step = {"loss_pct": round(100 * loss, 3), "relay_cpu": round(r["cpu_s"] / r["wall_s"] / cores, 3),
            "us_per_frame": round(r["cpu_s"] * 1e6 / relayed, 2), "frames_sent": sent, "frames_relayed": received,
            "window_s": round(r["wall_s"], 2), "generator_behind_ms": round(r["behind_s"] * 1000, 1),
            "load_average": round(os.getloadavg()[0], 2),
            # where frames were lost: datagrams the kernel dropped at the relay's sockets (receive buffer
            # full) and at the generator's; the generator's own share of its core over the window
            "relay_socket_drops": r["relay_drops"], "generator_socket_drops": r["generator_drops"],
            "generator_cpu": round(r["generator_cpu_s"] / r["wall_s"], 3),
            # the share of the window the relay was ready to run but its core ran something else (the
            # generator's own core is another; on a shared machine, other developers' processes): a step
            # lost with relay_cpu below 95 % and relay_waited high is a core the relay did not have
            "relay_waited": round(r["waited_s"] / r["wall_s"] / cores, 3),
            # frames counted in the kernel (the generator's sampling filter dropped them), 1 in `sample` read and
            # checked; generator_full_drops: the generator's own full buffer meanwhile (not counted as relayed)
            "counted_in_kernel": r["counted_in_kernel"], "sample": r["sample"],
            "generator_full_drops": r["generator_full_drops"]}
    if len(window) > 6:
        step["datagrams_sent"] = window[6]
    # a generator that could not keep to its schedule did not offer the load: such a
    # step measures the generator, not the relay, and ends the search without counting against it
    # (late by more than GENERATOR_SLACK, or its core busy GENERATOR_MAX_CPU of the time: then it also reads
    # late what comes back, and its sockets' buffers overflow: generator_socket_drops)
    step["generator_limited"] = (r["wall_s"] > ticks * TICK * (1 + GENERATOR_SLACK)
                                 or step["generator_cpu"] >= GENERATOR_MAX_CPU)
    step["passed"] = loss <= RELAY_MAX_LOSS and step["relay_cpu"] < RELAY_MAX_CPU and not step["generator_limited"]
    return step


def search_capacity(relay, prepare, measure, first, limit, quick):
    """Calls per core: steps up by 1.4x from `first` while steps pass, then halves the gap twice.

    prepare(n) sets up n calls; measure(n) -> step dict. Returns (best passing n, steps)."""
    steps = []
    best, failed = 0, None
    n = first
    while n <= limit:
        prepare(n)
        step = measure(n)
        if not step["passed"] and not step["generator_limited"]:   # a shared machine: measured once more
            step = measure(n)
            step["second_try"] = True
        step["calls"] = n
        steps.append(step)
        if not step["passed"]:
            failed = n
            break
        best = n
        n = int(n * 1.4) // 10 * 10 if not quick else n + 20
    for _ in range(0 if quick or failed is None else 2):
        n = (best + failed) // 2 // 10 * 10
        if n <= best or n >= failed:
            break
        prepare(n)
        step = measure(n)
        step["calls"] = n
        steps.append(step)
        if step["passed"]:
            best = n
        else:
            failed = n
    return best, steps


def _upbx_shape(mtu, quick, window_s, workers=1, first=None):
    """(calls, steps) of the main host relaying trunked calls with trunk_mtu = mtu: with workers = 1
    pinned to CPU 0 (calls per core), else with that many workers where the kernel puts them
    (calls per machine; a step passes below 95 % of `workers` cores)."""
    # above any machine yet (5,610 passed on an AMD EPYC core at 6,000); the sites have this many
    # extensions, and a site's directory copy at login is one channel message per ~2.7 of them: more than
    # ~11,000 fill the 4,096 a channel queues and the login fails (docs/benchmarks.md)
    limit = 120 if quick else 10000
    main = MainUnderTest({"a": ["1%05d" % i for i in range(limit)], "b": ["2%05d" % i for i in range(limit)]},
                         trunk_mtu=mtu, cpu=0 if workers == 1 else None, workers=workers)
    try:
        pair = TrunkPair(main, 0)
        try:
            def prepare(n):
                if len(pair.calls) < n:
                    pair.add_calls(n - len(pair.calls))
                run_trunk_load(pair, pair.calls[:n], 0.4, mtu)   # warm-up, not counted

            def measure(n):
                before = main.status()
                step = _measure_step(main, trunk_window(pair, n, window_s, mtu), cores=workers, relay_ports=[main.port])
                status = main.status()
                # which path relayed: the relay tables (main host's own, workers') against everything else
                step["delegated_here"] = status.get("delegated_here")
                step["table_datagrams"] = (status.get("table_datagrams") or 0) - (before.get("table_datagrams") or 0)
                step["fast_path_datagrams"] = status.get("fast_path_datagrams", 0) - before.get("fast_path_datagrams", 0)
                step["revokes_here"] = status.get("revokes_here")
                step["sync_us_mean"] = status.get("sync_us_mean")   # the main host's scan a tick (CPU, with the pumps)
                # of the timer turns' CPU, the relaying the table did inside them (_pump_table); the tick alone
                step["pump_cpu_us_mean"] = status.get("pump_cpu_us_mean")
                step["tick_cpu_us_mean"] = status.get("tick_cpu_us_mean")
                step["table_gso"] = status.get("table_gso")
                # what held the main host's loop (no datagram read meanwhile): its timer turns, full collections
                step["timer_us_max"] = status.get("timer_us_max")
                step["gc_full_collections"] = (status.get("gc_full_collections") or 0) - (before.get("gc_full_collections") or 0)
                step["gc_max_ms"] = status.get("gc_max_ms")
                if workers > 1:
                    step["delegated_directions"] = status.get("delegated_directions")
                    step["forwarded_datagrams"] = status.get("forwarded_datagrams")
                return step

            best, steps = search_capacity(main, prepare, measure, first or (20 if quick else 200), limit, quick)
            return best, steps, pair
        finally:
            pair.close()
    finally:
        main.close()


def _rtpengine_shape(quick, window_s):
    from upbx.tools.rtpengine import RtpEngine
    engine = RtpEngine(cpu=0, port_min=20000, port_max=32000)
    calls = None
    try:
        calls = RtpCalls(engine)

        def prepare(n):
            calls.add_calls(n)
            r = calls.window(n, 0.4)   # warm-up, not counted: rtpengine learns each side's address
            paced_window(engine, *r[:4])

        def measure(n):
            step = _measure_step(engine, calls.window(n, window_s), relay_ports=calls.engine_ports(n))
            if engine.proc.poll() is not None:   # not a relay that lost frames: one that is gone
                raise RuntimeError("rtpengine exited (status %s) during the %d-call step; its log ends:\n%s"
                                   % (engine.proc.returncode, n, engine.log_tail()))
            if step["loss_pct"] > 50:   # for the reader: what rtpengine said about it (docs/benchmarks.md)
                step["rtpengine_log_tail"] = engine.log_tail(1500)
            return step

        return search_capacity(engine, prepare, measure, 20 if quick else 200, 120 if quick else 2900, quick)
    finally:
        if calls is not None:
            calls.close()
        engine.close()


def cost_split(trunked, datagram):
    """(us per datagram, us per call-frame) from the two shapes' cost per frame: cost = a * datagrams + b * frames."""
    if not trunked or not datagram:
        return None, None
    r_t = trunked["datagrams_sent"] / trunked["frames_sent"]
    r_d = datagram["datagrams_sent"] / datagram["frames_sent"]
    if r_d - r_t <= 0:
        return None, None
    a = (datagram["us_per_frame"] - trunked["us_per_frame"]) / (r_d - r_t)
    return round(a, 2), round(trunked["us_per_frame"] - a * r_t, 2)


def bench_relay(quick=False, peer=None):
    """Calls per core the main host relays at <= 0.1 % loss and < 95 % CPU over 12 s windows, trunked
    and one frame per datagram; with peer="rtpengine", rtpengine's in the same run; hop latency.
    As root, in a network namespace of its own (private_netns), where the generator counts the frames of
    one-a-datagram steps in the kernel but for a sample (sampling_filter)."""
    with private_netns() as isolated:
        out = _bench_relay(quick, peer)
    out["netns"] = "private" if isolated else "the machine's"
    out["generator"] = ("C: sealed and sent with sendmmsg (host/_fastpath.c bench_send_trunks, bench_send_rtp); "
                        "one frame a datagram at >= %d datagrams/s sent (and back) counted in the kernel, 1 in %d read and "
                        "checked" % (SAMPLE_FROM, 1 << SAMPLE_BITS) if isolated else "C: sealed and sent with sendmmsg; "
                        "every datagram read (recvmmsg) and counted") if _native() is not None else "Python"
    return out


def _bench_relay(quick=False, peer=None):
    window_s = 1.0 if quick else RELAY_WINDOW_S
    gen_cpu = pin(0, 1)
    trunked, trunk_steps, _ = _upbx_shape(1472, quick, window_s)
    datagram, datagram_steps, _ = _upbx_shape(DATAGRAM_MTU, quick, window_s)
    at = {s["calls"]: s for s in trunk_steps if s["passed"]}
    at_d = {s["calls"]: s for s in datagram_steps if s["passed"]}
    us_per_datagram, us_per_call_frame = cost_split(at.get(trunked), at_d.get(datagram))
    # the machine: one worker per CPU, trunked, the search starting at the per-core figure
    workers = 2 if quick else max(1, os.cpu_count() or 1)
    if workers > 1 and _native() is not None:
        machine, machine_steps, _ = _upbx_shape(1472, quick, window_s, workers=workers,
                                                first=None if quick else max(200, trunked // 10 * 10))
    else:
        workers, machine, machine_steps = 1, trunked, []
    at_m = {s["calls"]: s for s in machine_steps if s["passed"]}
    out = {
        "relay_calls_per_core": trunked,
        "relay_calls_per_core_datagram": datagram,
        "window_s": window_s,
        "us_per_datagram": us_per_datagram,
        "us_per_call_frame": us_per_call_frame,
        "workers": workers,
        "relay_calls_per_machine": machine,
        # what `workers` whole cores would carry at the machine step's CPU per frame (95 % of each)
        "relay_calls_per_machine_by_cpu": _by_cpu(at_m.get(machine), workers) if machine_steps else None,
        "us_per_frame_trunked": at[trunked]["us_per_frame"] if trunked in at else None,
        "us_per_frame_datagram": at_d[datagram]["us_per_frame"] if datagram in at_d else None,
        # what one whole core would carry at the cost per frame of the best passing step (95 % of it):
        # the figure a shared machine disturbs less than the step search (docs/benchmarks.md)
        "relay_calls_per_core_by_cpu": _by_cpu(at.get(trunked)),
        "relay_calls_per_core_datagram_by_cpu": _by_cpu(at_d.get(datagram)),
        "load": "two emulated remote hosts, two-way G.711 20 ms; trunked: trunk_mtu 1472 (8 calls a datagram); "
                "datagram: trunk_mtu %d (one frame a datagram, as phones send)" % DATAGRAM_MTU,
        "pass_rule": "loss <= %.1f %% and relay CPU < %d %% over the sending phase of a %g s window" % (
            100 * RELAY_MAX_LOSS, 100 * RELAY_MAX_CPU, window_s),
        "relay_pinned": [0] if gen_cpu else None,
        "generator_pinned": sorted(gen_cpu) if gen_cpu else None,
        "steps_trunked": trunk_steps,
        "steps_datagram": datagram_steps,
        "steps_machine": machine_steps,
        "machine_note": "relay_calls_per_machine: trunked, the main host with `workers` processes (one per CPU) "
                        "placed by the kernel, the load generator pinned to CPU %s on the same machine; the two "
                        "emulated hosts' sessions go to two processes" % (sorted(gen_cpu) if gen_cpu else None),
    }
    if peer == "rtpengine":
        rtp, rtp_steps = _rtpengine_shape(quick, window_s)
        at_r = {s["calls"]: s for s in rtp_steps if s["passed"]}
        out["rtpengine_calls_per_core"] = rtp
        out["ratio_vs_rtpengine"] = round(datagram / rtp, 3) if rtp else None
        out["rtpengine_us_per_packet"] = at_r[rtp]["us_per_frame"] if rtp in at_r else None
        out["rtpengine_calls_per_core_by_cpu"] = _by_cpu(at_r.get(rtp))
        out["ratio_vs_rtpengine_by_cpu"] = (round(out["rtpengine_us_per_packet"] / out["us_per_frame_datagram"], 3)
                                            if out["rtpengine_us_per_packet"] and out["us_per_frame_datagram"] else None)
        out["steps_rtpengine"] = rtp_steps
        out["rtpengine_generator_limited"] = bool(rtp_steps) and rtp_steps[-1]["generator_limited"]
    out["generator_limited"] = {shape: any(s["generator_limited"] for s in steps) for shape, steps in
                                (("trunked", trunk_steps), ("datagram", datagram_steps))}
    out["fast_path"] = "python" if os.environ.get("UPBX_PURE_PYTHON", "") not in ("", "0") or _native() is None else "C"
    out.update(_hop_latency(max(1, trunked // 2), quick))
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _by_cpu(step, cores=1):
    """Calls `cores` cores would relay at RELAY_MAX_CPU of each, at this step's CPU per frame (2 x 50 frames a call)."""
    if not step or not step["us_per_frame"]:
        return None
    return int(cores * RELAY_MAX_CPU * 1e6 / (step["us_per_frame"] * 100))


DATAGRAM_MTU = 200   # one 160-byte entry fits (3 + 4 + 160 + 4 = 171), two do not: one frame a datagram


def _hop_latency(calls, quick):
    """A trunked relay hop at `calls` calls (half the trunked capacity): end to end minus a loopback baseline,
    the relay's own residence (its receive stamp to its send), and an echo process at the same datagram rate."""
    main = MainUnderTest({"a": ["1%05d" % i for i in range(calls)], "b": ["2%05d" % i for i in range(calls)]},
                         trunk_mtu=1472, cpu=0)
    seconds = 1.0 if quick else 4.0
    try:
        pair = TrunkPair(main, calls)
        try:
            base50, base99 = loopback_baseline(500 if quick else 2000)
            run_trunk_load(pair, pair.calls[:calls], 0.4, 1472)   # warm-up: the calls delegated to the table
            before = main.status()                               # the table's residence counts from here
            wait0, steal0, t0 = main.waited_seconds(), steal_seconds(), time.monotonic()
            r = run_trunk_load(pair, pair.calls[:calls], seconds, 1472, latency=True)
            span = time.monotonic() - t0
            waited = (main.waited_seconds() - wait0) / span
            steal1 = steal_seconds()
            stolen = {str(cpu): round((steal1[cpu] - steal0.get(cpu, 0.0)) / span, 4) for cpu in sorted(steal1)}
            status = main.status()
            lat = r["latency"]
            late = sorted(behind for _t, behind in r["sends"])
        finally:
            pair.close()
    finally:
        main.close()
    per_tick = 2 * -(-calls // 8)   # trunk datagrams a tick, both ways: the echo gets them at the same rate
    echo = echo_baseline(int((1.0 if quick else 4.0) / TICK * per_tick), cpu=0, gap=TICK / per_tick, ladder=True)
    ladder = {p: percentile(lat, p) for p in LADDER}

    def ms(value, minus=0.0):
        return round((value - minus) * 1000, 3) if value is not None else None

    residence = status.get("table_residence") or {}
    return {
        "latency_load_calls": calls,
        "hop_latency_p50_ms": ms(ladder[50], base50),
        "hop_latency_p99_ms": ms(ladder[99], base99),
        "hop_latency_ms": {str(p): ms(v, base50 if p == 50 else base99) for p, v in ladder.items()},
        "loopback_baseline_p50_ms": ms(base50),
        "loopback_baseline_p99_ms": ms(base99),
        # the relay's own part: from the kernel's receive stamp at its socket to its sendmmsg (host/_fastpath.c
        # Relay.residence), so neither the generator nor the way back is in it; 10 us buckets (upper edges)
        "relay_residence_ms": {k[:-3]: round(v / 1000, 3) for k, v in residence.items()
                               if k.endswith("_us") and not k.startswith("queued_")},
        # the part of it spent at the socket before the table's recvmmsg read the datagram (the process was
        # elsewhere: a timer turn, Python's wake-up, its own previous batch); the rest is the table's own work
        "relay_queued_ms": {k[7:-3]: round(v / 1000, 3) for k, v in residence.items()
                            if k.startswith("queued_") and k.endswith("_us")},
        "relay_residence_datagrams": residence.get("n"),
        # context, not subtracted: a process that only echoes, on the main host's CPU, at the same datagram rate
        "echo_baseline_ms": {str(p): ms(v) for p, v in echo.items()},
        "echo_baseline_p50_ms": ms(echo[50]),
        "echo_baseline_p99_ms": ms(echo[99]),
        # the main host's timer turns (its sync and tick: the table relays between their parts) and how much of
        # the run it was ready to run but its core ran something else (a shared machine)
        "latency_timer_us_mean": status.get("timer_us_mean"),
        "latency_timer_us_max": status.get("timer_us_max"),
        "latency_tick_cpu_us_mean": status.get("tick_cpu_us_mean"),
        "latency_sync_cpu_us_mean": status.get("sync_us_mean"),
        "latency_pump_cpu_us_mean": status.get("pump_cpu_us_mean"),
        "latency_relay_waited": round(waited, 4),
        # the share of the run each virtual CPU was taken by the hypervisor (steal): the relay is pinned to CPU 0
        "latency_steal": stolen,
        # how late the generator sent against its schedule (evenly spread over each tick): a generator that
        # fell behind sends what is due back to back, and the relay queues that burst (docs/benchmarks.md, Session 9)
        "latency_generator_late_ms": {str(p): ms(percentile(late, p)) for p in (50, 99)} if late else None,
        "latency_generator_late_max_ms": ms(late[-1]) if late else None,
        "latency_frames": len(lat),   # of 2 x 50 x calls a second: the rest came too late or was dropped (below)
        "latency_kernel_drops": r["kernel_drops"],
        # the relay's collections in the measured run, by generation, and the longest young one (status)
        "latency_relay_gc_collections": [a - b for a, b in zip(status.get("gc_collections") or (0, 0, 0),
                                                                before.get("gc_collections") or (0, 0, 0))],
        "latency_relay_gc_young_max_ms": status.get("gc_young_max_ms"),
        "latency_relay_gc_max_ms": status.get("gc_max_ms"),
        "latency_load_average": round(os.getloadavg()[0], 2),
        "latency_method": "end to end: from time.time() before the generator's send to the kernel's receive stamp "
                          "(SO_TIMESTAMPNS) of the relayed frame at the generator's socket, every frame of a %g s "
                          "run, minus the loopback baseline's p50/p99 measured the same way (how late the generator "
                          "read it is not counted); residence: the relay's own receive stamp to its send" % seconds,
        "latency_note": "trunked relay: the main host's table forwards a received trunk frame's entries as soon as "
                        "it has handled the datagrams of its recvmmsg (up to %d; no wait for its 20 ms tick), "
                        "and relays between the parts of its timer turns" % _table_burst(),
    }


def _table_burst():
    from upbx.host.daemon import Daemon
    return Daemon.TABLE_BURST


def bench_registrations(quick=False, phones=None):
    """Registrations per second and RSS per registered phone at the main host with many phones."""
    n = phones or (200 if quick else REGISTRATION_PHONES)
    main = MainUnderTest({}, phones=n)
    clients = []
    try:
        time.sleep(0.3)
        rss0 = main.rss_kb()
        cpu0 = main.cpu_seconds()
        load0 = os.getloadavg()[0]
        counters0 = main.status()["stats"]["counters"]
        # each site's phones share one source address, as behind the site's NAT router (the main host
        # limits handshakes per source address: docs/security.md); all of 127/8 is loopback
        clients = [Client(wire.IE_EXTENSION, num, main.secrets[num], main.address,
                          "127.0.%d.%d" % divmod(i // PHONES_PER_SITE + 1, 256))
                   for i, num in enumerate(main.phone_numbers)]
        t0 = time.monotonic()
        window = 200
        started = [0]

        pending = []

        def progress():
            pending[:] = [c for c in pending if not c.up]
            now = _now_ms()
            while started[0] < len(clients) and len(pending) < window:
                clients[started[0]].start(now)
                pending.append(clients[started[0]])
                started[0] += 1
            return not pending and started[0] == len(clients)

        pump(clients, progress, seconds=600, poll=lambda: pending)
        elapsed = time.monotonic() - t0
        cpu = main.cpu_seconds() - cpu0   # the main host's CPU: the bench's own clients share the machine
        time.sleep(0.5)
        rss1 = main.rss_kb()   # before the status query below, whose answer lists every phone
        counters = main.status()["stats"]["counters"]
        per = {}
        for key, name in (("datagrams in", "in"), ("signalling out", "out")):
            per["main_datagrams_%s_per_registration" % name] = round(
                (counters.get(key, 0) - counters0.get(key, 0)) / n, 2)
        return {"phones": n, "note": "%d sites of %d phones straight at the main host; each login is sent its "
                                     "site's system information" % ((n + PHONES_PER_SITE - 1) // PHONES_PER_SITE,
                                                                    PHONES_PER_SITE),
                "registrations_per_s": round(n / elapsed, 1),
                "main_cpu_s": round(cpu, 2),
                "registrations_per_main_cpu_s": round(n / cpu, 1) if cpu > 0 else None,
                "main_cpu_us_per_registration": round(cpu / n * 1e6, 1),
                # datagrams per registration: a busy machine shows here (handshakes and messages sent again)
                **per,
                "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
                "bytes_per_registered_phone": round((rss1 - rss0) * 1024 / n),
                "main_rss_kb_before": rss0, "main_rss_kb_after": rss1, "seconds": round(elapsed, 2)}
    finally:
        for c in clients:
            c.sock.close()
        main.close()
