"""The real host cores in one process, on a virtual network with a virtual clock.

`World` builds a MainHost and a RemoteHost core from real configuration files and a
real SQLite directory and drives them through their sans-IO surface, as their daemon
would (host/daemon.py): every datagram goes to `receive_datagram` (a DecodeError is
counted there; any other exception fails the test, which is stricter than the daemon),
`datagrams_to_send()` after each batch goes onto `Net`, `handle_timer` every 20 ms.
Phones are common.phone.Phone (the handset's protocol core) and attackers
common.login.Login, on the same network. Nothing is mocked: there is just no socket
and no clock, so hours of calls run in seconds.
"""
import collections
import json
import os

from upbx.common import wire
from upbx.common.login import UP, Login
from upbx.common.call import CONNECTED, RINGING
from upbx.common.phone import Ended, Phone, Sysinfo
from upbx.host.config import load_main_config, load_remote_config
from upbx.host.directory import Directory
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from upbx.host.remote_host import RemoteHost

MAIN = ("198.18.0.1", 4569)
SITE_A = ("198.18.1.1", 4570)
SITE_B = ("198.18.1.2", 4570)
TICK_MS = 20
WALL_MS = 1796083200000          # 2026-12-01: the wall clock when the World starts


class Net:
    """Datagrams between endpoints by address, delivered in order; time in ms."""

    def __init__(self):
        self.now = 1000
        self.endpoints = {}         # address -> handler(data, source)
        self.queue = collections.deque()
        self.delivered = 0
        self.errors = []            # exceptions a host raised on a datagram (internal errors)
        self.wan = set()            # addresses on the Internet side of every router
        self.nat = {}               # inside address -> the public address its router gives it

    def send(self, data, source, destination):
        destination = tuple(destination[:2])
        if source in self.nat and destination in self.wan:
            source = self.nat[source]
        self.queue.append((bytes(data), source, destination))

    def _endpoint(self, destination, source):
        if source in self.wan:      # from the Internet: a router's public address, mapped to whom it is now
            inside = [a for a, public in self.nat.items() if public == destination]
            if inside:
                return self.endpoints.get(inside[0])
            if destination in self.nat:
                return None         # an address behind a router is not reachable from outside
        return self.endpoints.get(destination)

    def run(self, limit=None):
        """Deliver until nothing is left in flight (or `limit` datagrams); returns the hosts that
        received something."""
        touched = set()
        while self.queue and limit != 0:
            limit = None if limit is None else limit - 1
            data, source, destination = self.queue.popleft()
            handler = self._endpoint(destination, source)
            if handler is not None:
                self.delivered += 1
                owner = handler(data, source)
                if owner is not None:
                    touched.add(owner)
        return touched


def attach_host(net, host, address):
    """Put a host core on the Net at address."""
    host.address = address

    def handler(data, source):
        try:
            host.receive_datagram(bytearray(data), source, net.now)
        except Exception as exc:       # as the daemon: counted (and the tests assert there are none)
            host.stats.drop("internal error")
            net.errors.append(repr(exc))
        return host

    net.endpoints[address] = handler


def flush_host(net, host):
    """What the host queued goes onto the Net (the daemon sends it after each burst and tick)."""
    for data, destination, _dscp in host.datagrams_to_send():
        net.send(data, host.address, destination)


class PhoneEnd:
    """A handset's protocol core on the Net; sends numbered voice frames while connected."""

    def __init__(self, net, number, secret, address, host, dead_ms=None):
        self.net = net
        self.number = number
        self.address = address
        self.host = host
        self.phone = Phone(number, secret, os.urandom, keepalive_ms=2000, dead_ms=dead_ms)
        self.ts = 0
        self._ts_call = self._ts_other = None   # the call self.ts counts for, and the other line then
        self.cn_received = 0        # comfort-noise frames (a holder's each second, B3)
        self.sent = []              # payloads sent in the current call
        self.received = []          # payloads received in the current call
        self.log = []               # events the test has looked at
        self.deaf_until = 0         # until then, what reaches this phone is lost (counted in dropped_in)
        self.standby = False        # a phone at a node keeps a standby session as a handset does (_flush_standby)
        self.phone.rebalance_ms = 0   # and stays at the node the test puts it at (a move's test sets this)
        self.dropped_in = 0
        self._next = None           # the phone's host_next this end last followed (flush)
        net.endpoints[address] = self._receive

    def _receive(self, data, source):
        if self.net.now < self.deaf_until:
            self.dropped_in += 1
            return
        frame = bytearray(data)
        if self.phone.receive(frame, self.net.now) is not None:   # media, opened in place
            payload = bytes(frame[wire.MINI_HEADER:len(frame) - wire.MEDIA_TAG])
            if len(payload) == wire.CN_BYTES:   # comfort noise, as firmware/app.py: its level kept, nothing played
                self.cn_received += 1
            else:
                self.received.append(payload)
        self.flush()

    def flush(self):
        # a phone at a cluster's node whose session was lost logs in next where it says (host_next, set at the
        # LoginDown: firmware/events.py sends the next login there)
        nxt = self.phone.host_next
        if nxt is not None and nxt is not self._next:
            self._next, self.host = nxt, tuple(nxt)
        for datagram in self.phone.datagrams_to_send(self.net.now):
            self.net.send(datagram, self.address, self.host)
        if self.standby:
            self._flush_standby()

    def standby_up(self, at=None):
        """This phone keeps a standby session that is up (at the address `at`, when given)."""
        standby = self.phone.standby
        return standby is not None and standby.state == "up" and (at is None or tuple(self.phone.standby_to) == at)

    def _flush_standby(self):
        """A phone at a cluster's node with `standby` set: what firmware/standby.py does on a handset (its standby
        session's datagrams to the standby node, a switch's new host, a given-up standby's BYE). Off by default:
        the in-memory worlds' phones at a node kept no standby session before session 17."""
        phone, now = self.phone, self.net.now
        todo, phone.cluster_out = phone.cluster_out, ([] if phone.cluster_out is not None else None)
        for item in todo or ():
            if item[0] == "host":
                self.host = tuple(item[1])
            elif item[0] == "bye":
                for datagram in item[2]:
                    self.net.send(datagram, self.address, tuple(item[1]))
        from upbx.common import standby
        if phone.standby is not None or standby.waiting(phone):
            standby.tick(phone, now)
        if phone.standby is not None:
            for datagram in phone.standby.datagrams_to_send(now):
                self.net.send(datagram, self.address, tuple(phone.standby_to))

    def tick(self):
        now = self.net.now
        timer = self.phone.next_timer()
        if timer is not None and timer <= now:
            self.phone.handle_timer(now)
        if self.phone.state == CONNECTED:
            call = self.phone.call
            if call is not self._ts_call:   # as firmware/events.py at a call's connection: its timestamps start at 0,
                if call is not self._ts_other and self.phone.other is None:   # a consultation's carry on the held
                    self.ts = 0             # call's, and so do the held line's when it becomes the current one
                self._ts_call = call
            other = self.phone.other
            self._ts_other = other if other is not None and other.state == CONNECTED else None
            payload = self.voice()
            if self.phone.holding:   # as firmware/app.py capture: comfort noise (level 0) each second
                payload = None if self.ts % 1000 else bytes(wire.CN_BYTES)
            frame = self.phone.seal_frame(self.ts, payload) if payload is not None else None
            if frame is not None:
                if len(payload) > wire.CN_BYTES:
                    self.sent.append(payload)
                self.net.send(frame, self.address, self.phone.frame_to or self.host)
            if not self.ts % 1000 and self.phone.other is not None:   # the held line's comfort noise, as the firmware
                frame = self.phone.seal_frame(self.ts, bytes(wire.CN_BYTES), 1)
                if frame is not None:
                    self.net.send(frame, self.address, self.phone.frame_to or self.host)
            self.ts += TICK_MS
        self.flush()

    def voice(self):
        """The frame this phone says now: its number and timestamp, which tell whose it is and where it belongs."""
        return ("%s %d" % (self.number, self.ts)).encode().ljust(wire.VOICE_BYTES, b".")

    def take(self):
        """The phone's events since the last look (Phone.take_events), also kept in self.log."""
        events = list(self.phone.take_events())
        self.log.extend(events)
        return events

    def sysinfo(self):
        """The data of the last system information this phone was handed (its Sysinfo event:
        the phone keeps only the version, as a handset's heap must)."""
        self.take()
        for event in reversed(self.log):
            if isinstance(event, Sysinfo):
                return event.data
        return None

    def causes(self):
        """Causes of the calls this phone saw end (every call of the test, in order)."""
        self.take()
        return [e.cause for e in self.log if isinstance(e, Ended)]

    @property
    def connected(self):
        return self.phone.state == CONNECTED

    @property
    def idle(self):
        return self.phone.call is None


class LoginEnd:
    """A Login (an attacker's stolen identity) on the Net; keeps every message the host sends it."""

    def __init__(self, net, identity_ie, identity, secret, address, host):
        self.net = net
        self.address = address
        self.host = host
        self.identity_ie = identity_ie
        self.identity = identity
        self.secret = secret
        self.login = None
        self.inbox = []
        self.frames_in = []          # other datagrams sent to us (PUNCH, trunk, mini)
        net.endpoints[address] = self._receive

    def start(self):
        self.login = Login(self.identity_ie, self.identity, self.secret,
                           int.from_bytes(os.urandom(3), "big") % wire.MAX_SESSION + 1, os.urandom)
        self.login.start(self.net.now)
        self.flush()

    @property
    def up(self):
        return self.login is not None and self.login.state == UP

    def _receive(self, data, source):
        if wire.frame_kind(data) == wire.KIND_FULL and wire.parse_full(data)[3] != wire.PUNCH:
            self.inbox.extend(self.login.receive(data, self.net.now))
            self.flush()
        else:
            self.frames_in.append((data, source))

    def flush(self):
        for datagram in self.login.datagrams_to_send(self.net.now):
            self.net.send(datagram, self.address, self.host)

    def tick(self):
        now = self.net.now
        timer = self.login.next_timer()
        if timer is not None and timer <= now:
            self.login.handle_timer(now)
        self.flush()


# the worlds put each site at the node a test names, and keep it there: a cluster's site moves to the first node
# of its rendezvous order once idle (host/remote_host.py _rebalance) only where a test asks for it
STAY = {"rebalance_s": 0}


class World:
    """Main host, site a's remote host with phones 101 and 102, phones 301-303 at the main host,
    and site x (remote host site-x, extensions 401 and 402) for an attacker to log in as; with
    site_b, a second remote host (site b, phones 201 and 202) for calls between two sites (B2)."""

    def __init__(self, tmp_path, ring_timeout_s=30, site_a=None, extensions=(), barred=(), main_settings="",
                 remote_settings=None, site_b=False):
        """site_a: add_site keywords for site a (local_calls, local_call_quota); extensions:
        more (number, site) pairs; barred: extensions barred from calling; main_settings: more
        lines for main.toml; remote_settings: more [remote] keys for site a's remote host;
        site_b: site b's remote host too (started by start_remote)."""
        self.tmp = tmp_path
        self.net = Net()
        directory = Directory(tmp_path / "main.sqlite")
        self.secrets = {}
        for site in ("a", "c", "x") + (("b",) if site_b else ()):
            directory.add_site(site, **(site_a or {} if site == "a" else {}))
        self.secrets["site-a"] = directory.add_remote_host("site-a", "a")
        self.secrets["site-x"] = directory.add_remote_host("site-x", "x")
        if site_b:
            self.secrets["site-b"] = directory.add_remote_host("site-b", "b")
            extensions = (("201", "b"), ("202", "b")) + tuple(extensions)
        for number, site in (("101", "a"), ("102", "a"), ("301", "c"), ("302", "c"), ("303", "c"),
                             ("401", "x"), ("402", "x")) + tuple(extensions):
            self.secrets[number] = directory.add_extension(number, site, "Phone " + number)
        for number in barred:
            directory.set_barred(number, True)
        directory.close()
        (tmp_path / "main.toml").write_text(
            '[main]\nlisten = "%s:%d"\ndatabase = "main.sqlite"\nlog_level = "error"\nring_timeout_s = %d\n%s'
            % (MAIN[0], MAIN[1], ring_timeout_s, main_settings))
        self.net.wan.add(MAIN)
        self.net.nat[SITE_A] = SITE_A       # site a's router: its public address (move_site_a)
        self.main = self.a = self.b = self.paused = None
        self.phones = {}
        self.others = []            # LoginEnds
        self.start_main()
        (tmp_path / "site-a.toml").write_text(
            '[remote]\nname = "site-a"\nsecret = "%s"\nmain = "%s:%d"\nlisten = "%s:%d"\nlog_level = "error"\n'
            % (self.secrets["site-a"].hex(), MAIN[0], MAIN[1], SITE_A[0], SITE_A[1])
            + "".join("%s = %s\n" % (k, json.dumps(v)) for k, v in dict(STAY, **(remote_settings or {})).items()))
        os.chmod(tmp_path / "site-a.toml", 0o600)
        self._new_remote()
        if site_b:
            self.net.nat[SITE_B] = SITE_B
            (tmp_path / "site-b.toml").write_text(
                '[remote]\nname = "site-b"\nsecret = "%s"\nmain = "%s:%d"\nlisten = "%s:%d"\nlog_level = "error"\n'
                'rebalance_s = 0\n' % (self.secrets["site-b"].hex(), MAIN[0], MAIN[1], SITE_B[0], SITE_B[1]))
            os.chmod(tmp_path / "site-b.toml", 0o600)
            self.b = RemoteHost(load_remote_config(str(tmp_path / "site-b.toml")), StructuredLog("site-b", "error"))
            attach_host(self.net, self.b, SITE_B)
            self.b.wall_offset_ms = WALL_MS - 1000

    @property
    def hosts(self):
        return tuple(h for h in (self.main, self.a, self.b) if h is not None)

    def start_main(self):
        """The main host from its configuration and database (again, after stop_main())."""
        self.main = MainHost(load_main_config(str(self.tmp / "main.toml")), StructuredLog("main", "error"))
        attach_host(self.net, self.main, MAIN)
        self.main.wall_offset_ms = WALL_MS - 1000   # wall-clock time for call records: today's, not 1970's
        self.main.start(self.net.now)
        flush_host(self.net, self.main)

    def stop_main(self):
        """The main host dies at once (kill -9): nothing more reaches it, it sends nothing; its
        database keeps what it had committed."""
        del self.net.endpoints[MAIN]
        self.main.directory.close()
        self.main = None

    def pause_main(self):
        """The main host stops (SIGSTOP): it runs no timer and reads nothing; what is sent to it waits
        in its socket's receive buffer (resume_main)."""
        self.paused, self.main = self.main, None
        self.held_for_main = []
        self.net.endpoints[MAIN] = lambda data, source: self.held_for_main.append((data, source))

    def resume_main(self):
        """SIGCONT: the main host reads what waited for it, first, then runs on (its clock has moved on)."""
        self.main, self.paused = self.paused, None
        attach_host(self.net, self.main, MAIN)
        self.net.queue.extendleft((data, source, MAIN) for data, source in reversed(self.held_for_main))
        self.held_for_main = []

    def _new_remote(self):
        self.a = RemoteHost(load_remote_config(str(self.tmp / "site-a.toml")), StructuredLog("site-a", "error"))
        attach_host(self.net, self.a, SITE_A)
        self.a.wall_offset_ms = WALL_MS - 1000

    def restart_remote(self):
        """Remote host a dies at once (kill -9) and starts again from its configuration, records
        database and directory cache, at the same address."""
        del self.net.endpoints[SITE_A]
        self.a.records.close()
        self._new_remote()
        self.a.start(self.net.now)
        flush_host(self.net, self.a)
        self.settle()

    def move_site_a(self, public):
        """Site a's router gets a new public address (B7): what the main host sends to the old one
        is lost; what site a sends the main host comes from the new one."""
        self.net.nat[SITE_A] = public

    def move_phone(self, number, address):
        """A phone's address (as its host sees it) changes: nothing reaches it at the old one."""
        end = self.phones[number]
        del self.net.endpoints[end.address]
        end.address = address
        self.net.endpoints[address] = end._receive

    def add_extensions(self, numbers, site):
        """More extensions in the directory (site "a": behind remote host a; "c": at the main host),
        as `upbx admin` adds them while everything runs; then add_phone each."""
        with Directory(self.tmp / "main.sqlite") as directory:
            for number, secret in directory.add_extensions([(n, site, "Phone " + n) for n in numbers]).items():
                self.secrets[number] = secret

    def start_remote(self):
        for host in (self.a, self.b):
            if host is not None:
                host.start(self.net.now)
                flush_host(self.net, host)
        self.settle()
        assert self.a.login.state == UP and (self.b is None or self.b.login.state == UP)

    def main_away(self):
        """The main host drops off the network (datagrams to it are lost); runs until site a's
        remote host has noticed (B4)."""
        self.net.endpoints.pop(MAIN)
        for _ in range(30000 // TICK_MS):
            if self.a.login.state != UP:
                return
            self.tick()
        raise AssertionError("site a's remote host did not notice the main host was gone")

    def add_phone(self, number, index, dead_ms=None):
        """A phone at its host (site a's for 1xx, site b's for 2xx, else the main host); dead_ms=2000
        is the firmware's."""
        host = SITE_A if number.startswith("1") else SITE_B if number.startswith("2") else MAIN
        end = PhoneEnd(self.net, number, self.secrets[number], ("198.18.%d.%d" % (2 + index // 256, index % 256),
                                                                40000), host, dead_ms)
        self.phones[number] = end
        end.phone.start(self.net.now)
        end.flush()
        return end

    def add_login(self, identity_ie, identity, address, host=MAIN):
        end = LoginEnd(self.net, identity_ie, identity, self.secrets[identity], address, host)
        self.others.append(end)
        end.start()
        return end

    def settle(self, until=None):
        """Deliver everything in flight; after each batch a host's queued datagrams go out. With
        `until`, one datagram at a time, stopping (the rest left in flight) as soon as until()
        holds: True then."""
        while self.net.queue:
            for host in self.net.run(limit=None if until is None else 1):
                flush_host(self.net, host)
            if until is not None and until():
                return True
        return False

    def tick(self, until=None):
        """20 ms: phones and logins act, then every host's tick, then deliver (see settle for until)."""
        self.net.now += TICK_MS
        for end in self.phones.values():
            end.tick()
        for end in self.others:
            end.tick()
        if self.settle(until):
            return True
        for host in self.hosts:
            if host.get_timer() is not None and host.get_timer() <= self.net.now:
                host.handle_timer(self.net.now)
            flush_host(self.net, host)
        return self.settle(until)

    def run(self, ms):
        for _ in range(ms // TICK_MS):
            self.tick()

    def run_until(self, predicate, limit_ms, what):
        """Tick until predicate() holds; returns the virtual ms it took. Fails after limit_ms."""
        started = self.net.now
        while not predicate():
            if self.net.now - started >= limit_ms:
                raise AssertionError("not within %d ms: %s" % (limit_ms, what))
            self.tick()
        return self.net.now - started

    def call(self, caller, callee, limit_ms=5000, answers=None):
        """caller dials callee, callee (or answers: where callee forwards to) answers when it rings;
        returns once both are connected."""
        a, b = self.phones[caller], self.phones[answers or callee]
        assert a.phone.dial(callee, self.net.now), "%s cannot dial now" % caller
        a.flush()

        def up():
            if b.phone.state == RINGING:
                b.phone.answer(self.net.now)
                b.flush()
            return a.connected and b.connected
        self.run_until(up, limit_ms, "%s -> %s connected" % (caller, callee))
        a.sent, a.received, b.sent, b.received = [], [], [], []

    def hangup(self, number):
        end = self.phones[number]
        assert end.phone.hangup(self.net.now)
        end.flush()
        self.settle()

    def close(self):
        for main in (self.main, self.paused):
            if main is not None:
                main.directory.close()
        self.a.records.close()
        if self.b is not None:
            self.b.records.close()
