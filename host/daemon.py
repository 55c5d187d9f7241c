"""What both host daemons share: one UDP socket, timers, stats, logs, control socket.

The protocol logic lives in common/ and in host/switch.py; this module only
moves bytes and time, and makes sure no datagram can stop the daemon.
"""
import asyncio
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


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, daemon):
        self.daemon = daemon

    def datagram_received(self, data, addr):
        self.daemon._datagram(data, addr)

    def error_received(self, exc):
        self.daemon.stats.count("socket errors")


class Daemon:
    """Base of MainHost and RemoteHost. Subclasses implement on_datagram, on_tick, status."""

    TICK_MS = 20

    def __init__(self, name, listen, log, control_socket=""):
        self.name = name
        self.listen = listen
        self.log = log
        self.control_socket = control_socket
        self.stats = Stats()
        self.meter = BandwidthMeter()
        self.transport = None
        self._stopping = None
        self.started_ms = now_ms()

    # sending: voice marked EF, signalling CS3 (per datagram, via the socket's TOS)

    def send(self, data, address, voice=False):
        sock = self.transport.get_extra_info("socket")
        tos = DSCP_EF if voice else DSCP_CS3
        if self._tos != tos:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            self._tos = tos
        self.transport.sendto(bytes(data), address)
        self.stats.count("media out" if voice else "signalling out")
        self.stats.count("bytes out", len(data))
        self.meter.add(address, len(data), True)

    def _datagram(self, data, addr):
        now = now_ms()
        self.stats.count("datagrams in")
        self.stats.count("bytes in", len(data))
        self.meter.add(addr, len(data), False)
        try:
            self.on_datagram(bytearray(data), addr, now)
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
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=self.listen)
        self.address = self.transport.get_extra_info("sockname")
        # Room for bursts (every site's trunk frames of one tick can arrive together):
        # the default ~200 KB holds fewer than 100 full trunk frames.
        sock = self.transport.get_extra_info("socket")
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
            self.transport.close()
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
