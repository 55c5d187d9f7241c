"""What both host daemons share: one UDP socket, timers, stats, logs, control socket.

The protocol logic lives in common/ and in host/switch.py; this module only
moves bytes and time, and makes sure no datagram can stop the daemon.
"""
import asyncio
import collections
import json
import logging
import os
import signal
import socket
import sys
import time

from common import wire

DSCP_EF = 46 << 2    # voice
DSCP_CS3 = 24 << 2   # signalling
SOCKET_BUFFER = 4 << 20  # bytes; the kernel caps it at net.core.rmem_max / wmem_max


def now_ms():
    return int(time.monotonic() * 1000)


def wall_ms():
    """Wall-clock milliseconds, for call records (the protocol runs on now_ms)."""
    return int(time.time() * 1000)


class Stats:
    """Counters of a daemon: packets in/out by kind and drops by reason."""

    def __init__(self):
        self.counters = {}
        self.drops = {}

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def drop(self, reason):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self):
        return {"counters": dict(self.counters), "drops": dict(self.drops),
                "dropped": sum(self.drops.values())}


class BandwidthMeter:
    """Bytes on the wire per peer group, as kbps over a sliding window, with the peak seen.

    Every datagram counts its UDP payload plus 28 bytes of IPv4 and UDP headers.
    Bytes are counted by address as they pass; every INTERVAL_MS they are handed
    to the groups that own the address then (a peer's address may change, B7).
    """

    INTERVAL_MS = 250
    WINDOW = 4                 # intervals: a one-second sliding window
    HEADERS = 28               # IPv4 (20) + UDP (8)

    def __init__(self):
        self._pending = {}     # address -> [bytes in, bytes out] since the last sample
        self._last_ms = None
        self.groups = {}       # name -> {"ring": [(ms, in, out)], "in_kbps", "out_kbps", "peak_*"}

    def add(self, address, n, out):
        counts = self._pending.get(address)
        if counts is None:
            counts = self._pending[address] = [0, 0]
        counts[1 if out else 0] += n + self.HEADERS

    def sample(self, now, owners):
        """Close an interval when due; owners maps (host, port) -> names of the groups it belongs to."""
        if self._last_ms is None:
            self._last_ms = now
            return
        elapsed = now - self._last_ms
        if elapsed < self.INTERVAL_MS:
            return
        self._last_ms = now
        pending, self._pending = self._pending, {}
        totals = {}
        for address, (n_in, n_out) in pending.items():
            for name in owners.get(tuple(address[:2]), ("unattributed",)):
                t = totals.setdefault(name, [0, 0])
                t[0] += n_in
                t[1] += n_out
        for name in set(self.groups) | set(totals):
            group = self.groups.setdefault(name, {"ring": [], "in_kbps": 0.0, "out_kbps": 0.0,
                                                  "peak_in_kbps": 0.0, "peak_out_kbps": 0.0})
            ring = group["ring"]
            n_in, n_out = totals.get(name, (0, 0))
            ring.append((elapsed, n_in, n_out))
            del ring[:-self.WINDOW]
            span = max(sum(r[0] for r in ring), self.INTERVAL_MS * self.WINDOW)  # bytes * 8 / ms = kbit/s
            group["in_kbps"] = sum(r[1] for r in ring) * 8.0 / span
            group["out_kbps"] = sum(r[2] for r in ring) * 8.0 / span
            group["peak_in_kbps"] = max(group["peak_in_kbps"], group["in_kbps"])
            group["peak_out_kbps"] = max(group["peak_out_kbps"], group["out_kbps"])

    def as_dict(self):
        return {name: {k: round(v, 1) for k, v in g.items() if k != "ring"}
                for name, g in sorted(self.groups.items())}


class StructuredLog:
    """`log.info("event", key=value)` -> text or one JSON object per line."""

    def __init__(self, name, level="info", fmt="text"):
        self.name = name
        self.fmt = fmt
        self.logger = logging.getLogger(name)
        if not self.logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
        self.logger.setLevel(getattr(logging, level.upper()))

    def _emit(self, level, event, fields):
        if not self.logger.isEnabledFor(level):
            return
        stamp = time.strftime("%H:%M:%S") + ".%03d" % (int(time.time() * 1000) % 1000)
        if self.fmt == "json":
            record = {"t": time.time(), "daemon": self.name, "level": logging.getLevelName(level).lower(),
                      "event": event}
            record.update(fields)
            self.logger.log(level, json.dumps(record, default=str))
        else:
            text = " ".join("%s=%s" % (k, v) for k, v in fields.items())
            self.logger.log(level, "%s %s %-5s %s %s" % (stamp, self.name, logging.getLevelName(level),
                                                         event, text))

    def debug(self, event, **fields):
        self._emit(logging.DEBUG, event, fields)

    def info(self, event, **fields):
        self._emit(logging.INFO, event, fields)

    def warning(self, event, **fields):
        self._emit(logging.WARNING, event, fields)

    def error(self, event, **fields):
        self._emit(logging.ERROR, event, fields)


class Daemon:
    """Base of MainHost and RemoteHost. Subclasses implement on_datagram, on_tick, status."""

    TICK_MS = 20
    RX_BURST = 16            # datagrams read per wake-up before timers get a turn
    BURST_HOLD_S = 0.0003    # on_burst at least this often while reading: relayed frames wait no longer
    TX_QUEUE = 4096          # datagrams held while the send buffer is full

    def __init__(self, name, listen, log, control_socket=""):
        self.name = name
        self.listen = listen
        self.log = log
        self.control_socket = control_socket
        self.stats = Stats()
        self.meter = BandwidthMeter()
        self.sock = None
        self._rx = bytearray(65536)
        self._tx_queue = collections.deque()
        self._stopping = None
        self.started_ms = now_ms()

    # sending: voice marked EF, signalling CS3 (per datagram, via the socket's TOS)

    def send(self, data, address, voice=False):
        tos = DSCP_EF if voice else DSCP_CS3
        if self._tx_queue:
            self._queue(data, address, tos)
        else:
            if self._tos != tos:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
                self._tos = tos
            try:
                self.sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                self._queue(data, address, tos)
            except OSError:
                self.stats.count("socket errors")
        counters = self.stats.counters
        key = "media out" if voice else "signalling out"
        counters[key] = counters.get(key, 0) + 1
        counters["bytes out"] = counters.get("bytes out", 0) + len(data)
        self.meter.add(address, len(data), True)

    def _queue(self, data, address, tos):
        """Hold a datagram (with its DSCP) until the socket can take it; order is kept."""
        if len(self._tx_queue) >= self.TX_QUEUE:
            self.stats.drop("send queue full")
            return
        if not self._tx_queue:
            asyncio.get_running_loop().add_writer(self.sock.fileno(), self._writable)
        self._tx_queue.append((bytes(data), address, tos))

    def _writable(self):
        queue = self._tx_queue
        while queue:
            data, address, tos = queue[0]
            if self._tos != tos:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
                self._tos = tos
            try:
                self.sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.stats.count("socket errors")
            queue.popleft()
        asyncio.get_running_loop().remove_writer(self.sock.fileno())

    def _readable(self):
        """Read the datagrams that are waiting (up to RX_BURST), then let the host end the burst.

        One recvfrom_into per datagram into a buffer allocated once, instead of
        asyncio's datagram transport (a callback and a new bytes object each).
        """
        sock = self.sock
        rx = self._rx
        clock = time.monotonic
        started = clock()
        for _ in range(self.RX_BURST):
            try:
                n, addr = sock.recvfrom_into(rx)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.stats.count("socket errors")
                continue
            self._datagram(rx[:n], addr)
            if clock() - started >= self.BURST_HOLD_S:
                self._end_burst()
                started = clock()
        self._end_burst()

    def _end_burst(self):
        try:
            self.on_burst(now_ms())
        except Exception as exc:
            self.stats.drop("internal error")
            self.log.error("internal-error", error=repr(exc), where="burst")
            logging.getLogger(self.name).exception("after a burst")

    def _datagram(self, data, addr):
        now = now_ms()
        counters = self.stats.counters
        counters["datagrams in"] = counters.get("datagrams in", 0) + 1
        counters["bytes in"] = counters.get("bytes in", 0) + len(data)
        self.meter.add(addr, len(data), False)
        try:
            self.on_datagram(data, addr, now)
        except wire.DecodeError as exc:
            self.stats.drop("malformed: " + exc.field)
            self.log.debug("drop", reason=str(exc), source="%s:%d" % addr)
        except Exception as exc:  # a bug must not stop the exchange; count it and keep going
            self.stats.drop("internal error")
            self.log.error("internal-error", error=repr(exc), source="%s:%d" % addr)
            logging.getLogger(self.name).exception("while handling a datagram")

    async def _ticker(self):
        next_at = time.monotonic()
        while True:
            next_at += self.TICK_MS / 1000
            await asyncio.sleep(max(0, next_at - time.monotonic()))
            try:
                now = now_ms()
                self.on_tick(now)
                self.meter.sample(now, self.bandwidth_owners())
            except Exception as exc:
                self.stats.drop("internal error")
                self.log.error("internal-error", error=repr(exc), where="tick")
                logging.getLogger(self.name).exception("in tick")

    async def _control(self, reader, writer):
        try:
            line = (await reader.readline()).decode().strip() or "status"
            if line == "status":
                reply = self.status()
            else:
                reply = {"error": "unknown request %r" % line}
            writer.write((json.dumps(reply, default=str) + "\n").encode())
            await writer.drain()
        finally:
            writer.close()

    async def run(self):
        loop = asyncio.get_running_loop()
        self._tos = None
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
            self.listen[0], self.listen[1], type=socket.SOCK_DGRAM)[0]
        sock = self.sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(sockaddr)
        self.address = sock.getsockname()
        # Room for bursts (every site's trunk frames of one tick can arrive together):
        # the default ~200 KB holds fewer than 100 full trunk frames.
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass
        self._stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        server = None
        if self.control_socket:
            if os.path.exists(self.control_socket):
                os.unlink(self.control_socket)
            server = await asyncio.start_unix_server(self._control, path=self.control_socket)
        self.log.info("started", listen="%s:%d" % self.address[:2], pid=os.getpid())
        self.on_start(now_ms())
        loop.add_reader(sock.fileno(), self._readable)
        ticker = asyncio.ensure_future(self._ticker())
        try:
            await self._stopping.wait()
        finally:
            ticker.cancel()
            self.on_stop(now_ms())
            if server is not None:
                server.close()
                if os.path.exists(self.control_socket):
                    os.unlink(self.control_socket)
            loop.remove_reader(sock.fileno())
            if self._tx_queue:
                loop.remove_writer(sock.fileno())
                self._tx_queue.clear()
            sock.close()
            self.log.info("stopped", stats=json.dumps(self.stats.as_dict()))

    def stop(self):
        if self._stopping is not None:
            self._stopping.set()

    # for subclasses
    def on_start(self, now):
        pass

    def on_stop(self, now):
        pass

    def on_datagram(self, data, addr, now):
        raise NotImplementedError

    def on_tick(self, now):
        pass

    def on_burst(self, now):
        """The datagrams that were waiting have been handled (a relaying host flushes its trunks here)."""
        pass

    def bandwidth_owners(self):
        """{(host, port): (group names)} for the bandwidth meter; subclasses name their peers."""
        return {}

    def status(self):
        return {"name": self.name, "stats": self.stats.as_dict(), "bandwidth": self.meter.as_dict()}


def query_status(path, timeout=5):
    """Ask a daemon's control socket for its status (used by `upbx status` and tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"status\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
