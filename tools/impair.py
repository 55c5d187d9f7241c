"""`upbx impair`: a UDP relay that loses, delays, reorders, duplicates and rate-limits.

`tc netem` is not available where upbx is tested, so impairment is done in user space:
clients send to the relay, the relay forwards to the target through one upstream socket
per client (as a NAT does) and sends the target's replies back to that client. Each
direction has its own `Impairment`, a pure, seeded decision maker: the same seed loses,
duplicates and reorders the same packets (by packet number) in every run.
"""
import argparse
import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time

from upbx.common.wire import IP_UDP_HEADERS

_CLONE_NEWNET = 0x40000000
IP_UDP_OVERHEAD = IP_UDP_HEADERS  # bytes the rate limit counts on top of each payload


class Impairment:
    """What happens to each packet of one direction: when (if ever) its copies leave.

    loss: percent of packets lost independently.
    burst_loss: (p, r) in percent: Gilbert-Elliott chain, good->bad with p, bad->good with r
      per packet; every packet in the bad state is lost (mean loss p/(p+r), mean burst 100/r).
    delay_ms: fixed extra delay; jitter_ms: plus a uniform random delay in 0..jitter_ms
      (independent per packet, so jitter alone can reorder).
    reorder: percent of packets held back an extra reorder_ms, so later packets overtake them.
    duplicate: percent of packets sent twice.
    rate_kbps: token-bucket shaper (kbit/s, counting IP+UDP headers) with burst_bytes of
      credit; packets wait for tokens, and one that would wait more than queue_ms is dropped.
    """

    def __init__(self, seed=None, loss=0.0, burst_loss=None, delay_ms=0.0, jitter_ms=0.0,
                 reorder=0.0, reorder_ms=50.0, duplicate=0.0, rate_kbps=None, burst_bytes=None,
                 queue_ms=200.0):
        for name, pct in (("loss", loss), ("reorder", reorder), ("duplicate", duplicate)):
            if not 0.0 <= pct <= 100.0:
                raise ValueError("%s must be a percentage 0..100, not %r" % (name, pct))
        if burst_loss is not None:
            p, r = burst_loss
            if not (0.0 <= p <= 100.0 and 0.0 < r <= 100.0):
                raise ValueError("burst_loss needs 0 <= p <= 100 and 0 < r <= 100, not %r" % (burst_loss,))
        if rate_kbps is not None and rate_kbps <= 0:
            raise ValueError("rate_kbps must be positive, not %r" % rate_kbps)
        self._rng = random.Random(seed)
        self.loss = loss / 100.0
        self.burst_loss = None if burst_loss is None else (burst_loss[0] / 100.0, burst_loss[1] / 100.0)
        self.delay = delay_ms / 1000.0
        self.jitter = jitter_ms / 1000.0
        self.reorder = reorder / 100.0
        self.reorder_delay = reorder_ms / 1000.0
        self.duplicate = duplicate / 100.0
        self.rate = None if rate_kbps is None else rate_kbps * 1000.0 / 8.0  # bytes per second
        self.burst_bytes = burst_bytes if burst_bytes is not None else (
            0 if self.rate is None else max(1500.0, self.rate * 0.02))
        self.queue_limit = queue_ms / 1000.0
        self._bad = False
        self._tokens = self.burst_bytes
        self._tokens_at = None
        self.counters = {"in": 0, "lost": 0, "queue_dropped": 0, "duplicated": 0, "reordered": 0}

    def decide(self, now, size=0):
        """Send times (seconds, same clock as `now`) of this packet's copies; [] = dropped.

        Call once per packet, in arrival order, with a `now` that never goes back.
        """
        rng = self._rng
        # Always the same number of draws per packet: packet k's fate depends on the
        # seed and k only, never on sizes or timing.
        u_loss, u_chain, u_jitter, u_reorder, u_dup, u_dup_jitter = (rng.random() for _ in range(6))
        self.counters["in"] += 1
        lost = u_loss < self.loss
        if self.burst_loss is not None:
            p, r = self.burst_loss
            self._bad = (u_chain >= r) if self._bad else (u_chain < p)
            lost = lost or self._bad
        if lost:
            self.counters["lost"] += 1
            return []
        copies = [u_jitter]
        if u_dup < self.duplicate:
            copies.append(u_dup_jitter)
            self.counters["duplicated"] += 1
        held = self.reorder_delay if u_reorder < self.reorder else 0.0
        if held:
            self.counters["reordered"] += 1
        times = []
        for u in copies:
            leaves = self._shape(now, size + IP_UDP_OVERHEAD)
            if leaves is None:
                self.counters["queue_dropped"] += 1
                continue
            times.append(leaves + self.delay + held + u * self.jitter)
        return times

    def _shape(self, now, nbytes):
        """When the token bucket lets `nbytes` leave (tokens below zero are the queue), or None."""
        if self.rate is None:
            return now
        if self._tokens_at is not None:
            self._tokens = min(self.burst_bytes, self._tokens + (now - self._tokens_at) * self.rate)
        self._tokens_at = now
        wait = max(0.0, nbytes - self._tokens) / self.rate
        if wait > self.queue_limit:
            return None
        self._tokens -= nbytes
        return now + wait


class _Direction:
    """One direction of the relay: its impairment (None: pass through), the datagrams a test chose to
    lose (drop: a function of a datagram, True to lose it; None: none), and its counters."""

    def __init__(self, impairment, drop=None):
        self.impairment = impairment
        self.drop = drop
        self.received = 0
        self.sent = 0
        self.send_errors = 0
        self.chosen = 0     # datagrams lost by drop

    def decide(self, now, data):
        self.received += 1
        if self.drop is not None and self.drop(data):
            self.chosen += 1
            return []
        return [now] if self.impairment is None else self.impairment.decide(now, len(data))

    @property
    def counters(self):
        imp = self.impairment.counters if self.impairment else {}
        return {"in": self.received, "out": self.sent,
                "dropped": imp.get("lost", 0) + imp.get("queue_dropped", 0) + self.send_errors + self.chosen,
                "duplicated": imp.get("duplicated", 0), "reordered": imp.get("reordered", 0)}


@contextlib.contextmanager
def _in_netns(fd):
    """Move the calling thread into the namespace `fd` for the body (no-op when already there)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if os.fstat(here).st_ino == os.fstat(fd).st_ino:
            yield
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the relay's namespace failed")
        try:
            yield
        finally:
            libc.setns(here, _CLONE_NEWNET)
    finally:
        os.close(here)


class Relay:
    """The UDP relay: clients -> `listen` -> impairment -> `target`, and replies back.

    Run it with start()/stop() (a thread), run() (blocking until stop()), or
    `await relay.run_async()`. `address` is the bound listen address (port 0 picks one).
    drop_up / drop_down: a function of a datagram, True to lose it (a test's chosen loss: one
    message, say), before the direction's impairment.
    """

    def __init__(self, listen, target, up=None, down=None, idle_timeout=120.0, family=None, drop_up=None,
                 drop_down=None):
        family = family or (socket.AF_INET6 if ":" in listen[0] else socket.AF_INET)
        self.target = target
        self.up = _Direction(up, drop_up)
        self.down = _Direction(down, drop_down)
        self.idle_timeout = idle_timeout
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind(listen)
        with contextlib.suppress(OSError):  # bursts must not be lost before the relay decides
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self._sock.setblocking(False)
        self.address = self._sock.getsockname()[:2]
        self._target_family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        self._upstream = {}  # client address -> [socket, last activity]
        self._queue = []  # heap of (send time, order, socket, data, address or None)
        self._order = itertools.count()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopping = False
        self._thread = None
        # Upstream sockets are made later in the relay's thread: remember this thread's
        # namespace so that a Relay built inside `Lab.inside(node)` keeps working there.
        self._netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    @property
    def counters(self):
        return {"up": self.up.counters, "down": self.down.counters}

    def summary(self):
        return "  ".join("%s: %s" % (d, " ".join("%s=%d" % kv for kv in c.items()))
                         for d, c in self.counters.items())

    def start(self):
        self._thread = threading.Thread(target=self.run, name="impair-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop the loop (from any thread or a signal handler); packets still queued are dropped."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    async def run_async(self):
        await asyncio.to_thread(self.run)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.close()

    def close(self):
        self._selector.close()
        for sock, _ in self._upstream.values():
            sock.close()
        for sock in (self._sock, self._wake_r, self._wake_w):
            sock.close()
        os.close(self._netns)

    def run(self):
        """Relay until stop(), in the network namespace the Relay was created in."""
        with _in_netns(self._netns):
            self._loop()

    def _loop(self):
        last_sweep = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            timeout = max(0.0, self._queue[0][0] - now) if self._queue else 1.0
            for key, _ in self._selector.select(min(timeout, 1.0)):
                if key.data == "wake":
                    self._wake_r.recv(64)
                elif key.data is None:
                    self._receive_from_clients()
                else:
                    self._receive_from_target(key.fileobj, key.data)
            self._send_due(time.monotonic())
            if now - last_sweep > 5.0:
                self._forget_idle(now)
                last_sweep = now

    def _receive_from_clients(self):
        for _ in range(256):
            try:
                data, client = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            now = time.monotonic()
            entry = self._upstream.get(client)
            if entry is None:
                upstream = socket.socket(self._target_family, socket.SOCK_DGRAM)
                upstream.setblocking(False)
                with contextlib.suppress(OSError):
                    upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                upstream.connect(self.target)
                entry = self._upstream[client] = [upstream, now]
                self._selector.register(upstream, selectors.EVENT_READ, client)
            entry[1] = now
            for t in self.up.decide(now, data):
                heapq.heappush(self._queue, (t, next(self._order), entry[0], data, None))

    def _receive_from_target(self, upstream, client):
        for _ in range(256):
            try:
                data = upstream.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from the target: nothing to relay
                continue
            now = time.monotonic()
            self._upstream[client][1] = now
            for t in self.down.decide(now, data):
                heapq.heappush(self._queue, (t, next(self._order), self._sock, data, client))

    def _send_due(self, now):
        while self._queue and self._queue[0][0] <= now:
            _, _, sock, data, address = heapq.heappop(self._queue)
            direction = self.up if address is None else self.down
            try:
                if address is None:
                    sock.send(data)
                else:
                    sock.sendto(data, address)
                direction.sent += 1
            except OSError:
                direction.send_errors += 1

    def _forget_idle(self, now):
        for client, (sock, last) in list(self._upstream.items()):
            if now - last > self.idle_timeout and not any(q[2] is sock for q in self._queue):
                self._selector.unregister(sock)
                sock.close()
                del self._upstream[client]


# -- command line ---------------------------------------------------------------------

def parse_hostport(text):
    """'127.0.0.1:5000' or '[::1]:5000' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, not %r" % text)
    return host.strip("[]") or "0.0.0.0", int(port)


def _pair(text):
    try:
        p, r = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected P_GOOD_TO_BAD,P_BAD_TO_GOOD in percent, not %r" % text)
    return p, r


def add_arguments(parser):
    parser.add_argument("--listen", type=parse_hostport, required=True, help="HOST:PORT the clients send to")
    parser.add_argument("--to", type=parse_hostport, required=True, help="HOST:PORT of the target")
    parser.add_argument("--loss", type=float, default=0.0, help="random loss, percent")
    parser.add_argument("--burst-loss", type=_pair, default=None, metavar="P,R",
                        help="Gilbert-Elliott bursty loss: percent good->bad, percent bad->good per packet")
    parser.add_argument("--delay", type=float, default=0.0, help="fixed extra delay, ms")
    parser.add_argument("--jitter", type=float, default=0.0, help="random extra delay, uniform 0..MS")
    parser.add_argument("--reorder", type=float, default=0.0, help="percent of packets held back to be overtaken")
    parser.add_argument("--reorder-delay", type=float, default=50.0, help="how long they are held, ms (default 50)")
    parser.add_argument("--duplicate", type=float, default=0.0, help="percent of packets sent twice")
    parser.add_argument("--rate", type=float, default=None, help="rate limit, kbit/s (IP+UDP headers counted)")
    parser.add_argument("--queue", type=float, default=200.0, help="longest wait for the rate limit, ms")
    parser.add_argument("--seed", type=int, default=None, help="random seed (same seed, same fate per packet)")
    parser.add_argument("--direction", choices=("both", "up", "down"), default="both",
                        help="impair client->target (up), replies (down) or both (default)")


def impairments_from_args(args):
    """(up, down) Impairment objects for the command-line options; down gets seed+1."""
    def make(offset):
        seed = None if args.seed is None else args.seed + offset
        return Impairment(seed=seed, loss=args.loss, burst_loss=args.burst_loss, delay_ms=args.delay,
                          jitter_ms=args.jitter, reorder=args.reorder, reorder_ms=args.reorder_delay,
                          duplicate=args.duplicate, rate_kbps=args.rate, queue_ms=args.queue)
    up = make(0) if args.direction in ("both", "up") else None
    down = make(1) if args.direction in ("both", "down") else None
    return up, down


def run(args):
    try:
        up, down = impairments_from_args(args)
        relay = Relay(args.listen, args.to, up=up, down=down)
    except (ValueError, OSError) as exc:
        print("upbx impair: %s" % exc, file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: relay.stop())
    print("upbx impair: %s:%d -> %s:%d" % (relay.address + args.to), flush=True)
    try:
        relay.run()
    finally:
        print("upbx impair: %s" % relay.summary(), flush=True)
        relay.close()
    return 0
