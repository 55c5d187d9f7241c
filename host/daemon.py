"""The host daemon: one UDP socket, the clock, the control socket, signals, around a core.

The core (host/main_host.py, host/remote_host.py) is sans-IO: this module moves its
datagrams and time (as aioquic's QuicConnectionProtocol does for a QuicConnection) and
makes sure no datagram and no bug in handling one can stop the exchange.
"""
import asyncio
import collections
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
import time

from upbx.host import fastpath
from upbx.host import relay_workers
from upbx.host.sip.transport import TcpListener

SOCKET_BUFFER = 4 << 20  # bytes; the kernel caps it at net.core.rmem_max / wmem_max


def now_ms():
    return int(time.monotonic() * 1000)


def wall_offset_ms():
    """Wall-clock ms minus monotonic ms: what a core adds to its time for call records."""
    return int(time.time() * 1000) - now_ms()


class ServiceError(Exception):
    """A service beside the core (the JSON API) cannot start; one line for the operator."""


class ListenError(Exception):
    """The core's UDP port cannot be bound (in use, an address not on this machine): host/cli.py names the
    config key in one line."""

    def __init__(self, address, reason):
        Exception.__init__(self, "cannot listen on UDP %s:%d: %s" % (address[0], address[1], reason))
        self.address = address


class Daemon:
    """Runs one host core on a UDP socket until SIGINT or SIGTERM."""

    RX_BURST = 16            # datagrams read per wake-up before timers get a turn
    BURST_HOLD_S = 0.0003    # what the core queued leaves at least this often while reading
    TABLE_BURST = 16         # the relay table's recvmmsg (host/_fastpath.c Relay.relay): its frames leave before the next 16 are read ...
    TABLE_ROUNDS = 16        # ... up to this many times a wake while the socket has more
    PUMP_GAP_S = 0.0002      # in a timer turn the table relays what waits at least this often (_pump_table)
    TX_QUEUE = 4096          # datagrams held while the send buffer is full

    def __init__(self, core, listen, control_socket="", services=(), workers=1):
        self.core = core
        self.services = list(services)   # started in the loop after the socket: start(daemon), stop() (host/api.py)
        self.workers_wanted = workers   # relay workers (host/relay_workers.py); 0: one per CPU
        self.workers = None
        self.listen = listen
        self.log = core.log
        self.control_socket = control_socket
        self.sock = None
        self.address = None
        self._tos = None
        self._rx = bytearray(65536)
        self._tx_queue = collections.deque()
        self._stopping = None
        self._wake = None
        self._batch = None       # the C fast path's recvmmsg/sendmmsg (IPv4 sockets), else None
        # the timer turns' wall time (sync, tick, flush): while one runs, no datagram is read or relayed
        self.timer_turns, self.timer_s, self.timer_max_s, self.tick_cpu_s = 0, 0.0, 0.0, 0.0
        self._deferred = []      # datagrams the relay table left during a timer turn (_pump_table)
        self.pump_s = 0.0        # ... and the CPU its relaying took then (in sync_us_mean and tick_cpu_us_mean)
        # when the table last relayed in the turn, and the longest a turn left it without (since the last query)
        self._pumped, self.unpumped_max_s = 0.0, 0.0
        # ... the thread's CPU time then and the step (code, line) that pumped; the longest stretch's CPU and
        # steps, and the longest by CPU with its steps: wall time waits too (_note_unpumped)
        self._pumped_cpu, self._pumped_at = 0.0, None
        self._in_turn = False    # the pump relays only in a timer turn's sync and tick (the core may call it elsewhere)
        self.unpumped, self.unpumped_cpu = (0.0, None, None), (0.0, None, None)
        self.gc_pauses, self.gc_max_s, self._gc_started = 0, 0.0, 0.0   # the collector's, by generation 2
        self.gc_runs, self.gc_young_max_s = [0, 0, 0], 0.0   # every collection by generation; the longest young one
        self.sip_sock = None     # the SIP port, open only while the core has SIP phones (docs/sip.md)
        self.sip_address = None
        self.sip_tcp = None      # SIP over TCP on the same address (host/sip/transport.py), with the UDP port
        self._sip_checked = None
        # local port -> socket, one per SIP call: opened as the call chooses its port (_open_rtp), closed when
        # the core's rtp_ports() no longer has it
        self.rtp_socks = {}
        if getattr(core, "sip_calls", None) is not None:
            core.sip_calls.open_rtp = self._open_rtp

    # sending: each datagram with the DSCP the core gave it (voice EF, signalling CS3)

    def _flush(self):
        """Send what the core has queued (relayed trunks, signalling, media), in order."""
        try:
            out = self.core.datagrams_to_send()
        except Exception as exc:
            self._internal_error(exc, "flush")
            return
        if self._batch is not None and not self._tx_queue:
            out = self._send_batch(out)
        for data, address, tos in out:
            if self._tx_queue:
                self._queue(data, address, tos)
                continue
            if self._tos != tos:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
                self._tos = tos
            try:
                self.sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                self._queue(data, address, tos)
            except OSError:
                self.core.stats.count("socket errors")
        if self.sip_sock is not None:
            self._sip_flush()

    def _send_batch(self, out):
        """sendmmsg as much of out as the socket takes, each datagram with its DSCP; returns the rest."""
        fd = self.sock.fileno()
        while out:
            try:
                sent, err = self._batch.send_batch(fd, out)
            except (TypeError, ValueError):   # an address sendmmsg's IPv4 path cannot take: sendto's
                return out
            out = out[sent:]
            if not err or err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                break
            self.core.stats.count("socket errors")   # as sendto's OSError: this datagram is lost, go on
            out = out[1:]
        return out

    def _queue(self, data, address, tos):
        """Hold a datagram (with its DSCP) until the socket can take it; order is kept."""
        if len(self._tx_queue) >= self.TX_QUEUE:
            self.core.stats.drop("send queue full")
            return
        if not self._tx_queue:
            asyncio.get_running_loop().add_writer(self.sock.fileno(), self._writable)
        self._tx_queue.append((data, address, tos))

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
                self.core.stats.count("socket errors")
            queue.popleft()
        asyncio.get_running_loop().remove_writer(self.sock.fileno())

    # receiving

    def _readable(self):
        """Hand the datagrams that are waiting (up to RX_BURST) to the core, then send what it queued.

        One recvfrom_into per datagram into a buffer allocated once, instead of
        asyncio's datagram transport (a callback and a new bytes object each).
        """
        if self._batch is not None:
            return self._readable_batch()
        sock = self.sock
        rx = self._rx
        core = self.core
        clock = time.monotonic
        started = clock()
        for _ in range(self.RX_BURST):
            try:
                n, addr = sock.recvfrom_into(rx)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                core.stats.count("socket errors")
                continue
            try:
                core.receive_datagram(rx[:n], addr, now_ms())
            except Exception as exc:  # a bug must not stop the exchange; count it and keep going
                self._internal_error(exc, "%s:%d" % addr[:2])
            if clock() - started >= self.BURST_HOLD_S:
                self._flush()
                started = clock()
        self._flush()

    def _readable_batch(self):
        """_readable with recvmmsg: the waiting datagrams (up to RX_BURST) in one system call."""
        core = self.core
        workers = self.workers
        if workers is None:
            try:
                batch = self._batch.recv_batch(self.sock.fileno(), self.RX_BURST)
            except OSError:
                core.stats.count("socket errors")
                return
            return self._handle_batch(batch)
        try:
            # the main host's own table (host/_fastpath.c Relay): what it takes is relayed and sent in C
            batch = workers.local.relay(self.sock.fileno(), self.TABLE_BURST, self.TABLE_ROUNDS)
        except OSError:
            core.stats.count("socket errors")
            return
        if self._deferred:   # read by a pump during the last timer turn: before these, in order
            batch, self._deferred = self._deferred + batch, []
        self._after_table(batch)

    def _pump_table(self):
        """During a timer turn (the sync, the core's tick): the relay table relays what waits on the socket,
        so a long turn does not hold the frames it takes (docs/benchmarks.md, "Hop latency"); what it does
        not take waits, in order, for the end of the turn (the core is in the middle of something). The turn
        calls it at every step (each call it looks at); it relays when PUMP_GAP_S have passed since it last
        did, so a step's cost, not a count of steps, bounds how long a frame waits in a turn."""
        workers = self.workers
        if workers is None or self._batch is None or not self._in_turn:
            return
        now = time.perf_counter()
        gap = now - self._pumped
        if gap < self.PUMP_GAP_S:
            return
        started = time.thread_time()
        step = sys._getframe(1)
        self._note_unpumped(gap, started, (step.f_code, step.f_lineno))
        try:
            batch = workers.local.relay(self.sock.fileno(), self.TABLE_BURST, self.TABLE_ROUNDS)
        except OSError:
            self.core.stats.count("socket errors")
            return
        finally:
            self._pumped_cpu = time.thread_time()
            self.pump_s += self._pumped_cpu - started
            self._pumped = time.perf_counter()
        if batch:
            self._deferred.extend(batch)

    def _note_unpumped(self, gap, cpu_now, step):
        """A stretch of a timer turn without a read of the socket ends at step (code, line; "turn end"): kept when
        it is the longest since the last query, by wall time (table_unpumped_us_max, with its CPU and steps) or by
        the thread's CPU time (table_unpumped_cpu_us_max: the turn's own work, not the machine's other work)."""
        cpu = cpu_now - self._pumped_cpu
        if gap > self.unpumped_max_s:
            self.unpumped_max_s = gap
            self.unpumped = (cpu, self._pumped_at, step)
        if cpu > self.unpumped_cpu[0]:
            self.unpumped_cpu = (cpu, self._pumped_at, step)
        self._pumped_at = step

    @staticmethod
    def _step_name(step):
        """'MainHost.on_tick:1072' for a step (code, line) of _note_unpumped; a str as it is."""
        if step is None or isinstance(step, str):
            return step
        return "%s:%d" % (getattr(step[0], "co_qualname", step[0].co_name), step[1])

    def _after_table(self, batch):
        """What the relay table did not take, in order: to the core, or back from the table first."""
        if not batch:
            return                # all relayed in C: nothing for the core, nothing queued
        workers = self.workers
        local = workers.local
        if not len(local):
            return self._handle_batch(batch)
        pending = []
        for data, addr in batch:
            stamps = local.stamps(data) if data and data[0] & 0xC0 == 0xC0 else None
            if stamps is None:
                pending.append((data, addr))
                continue
            # it names directions of the table and the table did not take it (forged, a far jump, a host
            # at a new address, a call that is not delegated in the same frame): the tag is checked with
            # the table's windows, and only then those directions come back here and it is handled
            if pending:
                self._handle_batch(pending, flush=False)
                pending = []
            try:
                workers.receive_forwarded(data, addr, stamps)
            except Exception as exc:
                self._internal_error(exc, "%s:%d" % addr[:2])
        self._handle_batch(pending)

    def _handle_batch(self, batch, flush=True):
        """The datagrams of a batch, in order: the trunk frames relay_batch takes, the rest to the core."""
        core = self.core
        clock = time.monotonic
        started = clock()
        relay = self._batch.relay_batch if hasattr(core, "trunk_route") else None
        i, count = 0, len(batch)
        while i < count:
            now = now_ms()
            if relay is not None:
                # trunk frames the C fast path takes, in order, until one it leaves to receive_datagram
                i, exc = relay(core, batch, i, now)
                if exc is not None:
                    self._internal_error(exc, "%s:%d" % batch[i][1][:2])
                    i += 1
                    continue
                if i == count:
                    break
            data, addr = batch[i]
            i += 1
            try:
                core.receive_datagram(data, addr, now)
            except Exception as exc:  # a bug must not stop the exchange; count it and keep going
                self._internal_error(exc, "%s:%d" % addr[:2])
            if clock() - started >= self.BURST_HOLD_S:
                self._flush()
                started = clock()
        if flush:
            self._flush()

    # the SIP port: plain datagrams, SIP's own rate (no burst hold, no batches, DSCP CS3)

    def _sip_port(self, now):
        """Open the SIP port when the core has SIP phones to serve, close it when it has none; checked
        once a second (the directory may change under a running host)."""
        if self._sip_checked is not None and now - self._sip_checked < 1000:
            return
        self._sip_checked = now
        if self.sip_tcp is not None:
            self.sip_tcp.sweep(now)
        try:
            wanted = self.core.sip_listen is not None and self.core.sip_wanted()
        except Exception as exc:
            return self._internal_error(exc, "sip")
        loop = asyncio.get_running_loop()
        if wanted and self.sip_sock is None:
            family, _t, _p, _n, sockaddr = socket.getaddrinfo(*self.core.sip_listen, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                sock.close()
                self.core.stats.count("sip port unavailable")
                return self.log.error("sip-port", listen="%s:%d" % self.core.sip_listen, error=str(exc))
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x60)   # DSCP CS3, as the host's signalling
            self.sip_sock, self.sip_address = sock, sock.getsockname()
            loop.add_reader(sock.fileno(), self._sip_readable)
            self.log.info("sip-port", listen="%s:%d" % self.sip_address[:2])
            self._sip_tcp_open()
        elif not wanted and self.sip_sock is not None:
            self._sip_close()

    def _sip_tcp_open(self):
        """SIP over TCP on the UDP port's address and port; without it (the TCP port taken) UDP goes on."""
        tcp = TcpListener(self.sip_address[:2], self._sip_tcp_message, self.core.stats.count, self.log, now_ms)
        try:
            tcp.open()
        except OSError as exc:
            self.core.stats.count("sip tcp port unavailable")
            return self.log.error("sip-tcp-port", listen="%s:%d" % self.sip_address[:2], error=str(exc))
        self.sip_tcp = tcp

    def _sip_tcp_message(self, data, addr):
        try:
            self.core.receive_sip(data, addr, now_ms())
        except Exception as exc:  # a bug must not stop the exchange; count it and keep going
            self._internal_error(exc, "sip tcp %s:%d" % addr[:2])
        self._flush()

    def _sip_close(self):
        loop = asyncio.get_running_loop()
        if self.sip_tcp is not None:
            self.sip_tcp.close()
            self.sip_tcp = None
        for sock in self.rtp_socks.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self.rtp_socks.clear()
        loop.remove_reader(self.sip_sock.fileno())
        self.sip_sock.close()
        self.sip_sock = self.sip_address = None

    def _sip_readable(self):
        for _ in range(self.RX_BURST):
            try:
                data, addr = self.sip_sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.core.stats.count("socket errors")
                continue
            self.core.stats.count("sip udp datagrams")
            try:
                self.core.receive_sip(data, addr, now_ms())
            except Exception as exc:  # a bug must not stop the exchange; count it and keep going
                self._internal_error(exc, "sip %s:%d" % addr[:2])
        self._flush()

    def _sip_flush(self):
        try:
            out = self.core.sip_datagrams_to_send()
            self._rtp_sockets()
            rtp = self.core.rtp_datagrams_to_send()
        except Exception as exc:
            return self._internal_error(exc, "sip flush")
        for data, address in out:
            if len(address) == 3:   # (ip, port, "tcp"): on the connection the peer opened
                if self.sip_tcp is not None:
                    self.sip_tcp.send(data, address)
                continue
            try:
                self.sip_sock.sendto(data, address)
            except OSError:   # a full buffer loses a SIP datagram: the transaction layer resends it
                self.core.stats.count("socket errors")
        for data, address, port in rtp:
            sock = self.rtp_socks.get(port)
            try:
                if sock is not None:
                    sock.sendto(data, address)
            except OSError:
                self.core.stats.count("socket errors")

    def _rtp_sockets(self):
        """Close the RTP sockets of SIP calls the core no longer has (each was opened by _open_rtp when
        its call chose the port)."""
        wanted = self.core.rtp_ports()
        if wanted == set(self.rtp_socks):
            return
        loop = asyncio.get_running_loop()
        for port in set(self.rtp_socks) - wanted:
            sock = self.rtp_socks.pop(port)
            loop.remove_reader(sock.fileno())
            sock.close()

    def _open_rtp(self, port):
        """SipCalls.open_rtp: the RTP socket of a new SIP call, on the SIP port's address (DSCP EF), opened
        before the call's SDP names the port; False when another program holds it (the call takes the
        next port: a call whose SDP named it would hear nothing and send nothing)."""
        if port in self.rtp_socks:
            return True
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.core.sip_listen[0], port))
        except OSError as exc:
            sock.close()
            self.core.stats.count("rtp port unavailable")
            self.log.warning("rtp-port-taken", port=port, error=str(exc))
            return False
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xB8)   # DSCP EF
        self.rtp_socks[port] = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._rtp_readable, port, sock)
        return True

    def _rtp_readable(self, port, sock):
        for _ in range(self.RX_BURST):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.core.stats.count("socket errors")
                break
            try:
                self.core.receive_rtp(port, data, addr, now_ms())
            except Exception as exc:
                self._internal_error(exc, "rtp %s:%d" % addr[:2])
        self._flush()

    def _internal_error(self, exc, where):
        self.core.stats.drop("internal error")
        self.log.error("internal-error", error=repr(exc), where=where)
        logging.getLogger(self.core.name).exception("internal error (%s)", where)

    # time

    async def _timers(self):
        core = self.core
        while True:
            timer = core.get_timer()
            delay = 0.02 if timer is None else max(0, (timer - now_ms()) / 1000)
            await asyncio.sleep(delay)
            core.wall_offset_ms = wall_offset_ms()
            started = self._pumped = time.perf_counter()
            self._pumped_cpu, self._pumped_at = time.thread_time(), "turn start"
            self._in_turn = True
            try:
                if self.workers is not None:   # before the tick acts on a call: its directions are back here
                    self.workers.sync(self._pump_table)
                    self._pump_table()
                tick_started = time.thread_time()
                core.handle_timer(now_ms())
                self.tick_cpu_s += time.thread_time() - tick_started
            except Exception as exc:
                self._internal_error(exc, "timer")
            finally:
                self._in_turn = False
            if self._deferred:
                batch, self._deferred = self._deferred, []
                try:
                    self._after_table(batch)
                except Exception as exc:
                    self._internal_error(exc, "timer")
            self._sip_port(now_ms())
            self._flush()
            ended = time.perf_counter()
            if self.workers is not None:   # the end of the turn: the socket is read next
                self._note_unpumped(ended - self._pumped, time.thread_time(), "turn end")
            held = ended - started
            self.timer_turns += 1
            self.timer_s += held
            if held > self.timer_max_s:
                self.timer_max_s = held

    async def _control(self, reader, writer):
        try:
            line = (await reader.readline()).decode().strip() or "status"
            if line == "status":
                if self.workers is not None:   # what the main host's own relay table counted since the tick
                    self.workers.merge_local()
                reply = dict(self.core.status(), pid=os.getpid(),
                             sip_listen="%s:%d" % self.sip_address[:2] if self.sip_address else None,
                             sip_tcp_connections=len(self.sip_tcp.connections) if self.sip_tcp else None,
                             fast_path="C" if self._batch is not None else "python",
                             fast_path_datagrams=(self._batch.taken() + (self.workers.local.taken() if self.workers else 0)
                                                  if self._batch is not None else 0),
                             workers=1,
                             # how long the timer turns held the loop (wall time: on a busy machine it waits too)
                             timer_us_mean=round(self.timer_s * 1e6 / self.timer_turns, 1) if self.timer_turns else None,
                             timer_us_max=round(self.timer_max_s * 1e6, 1),   # maxima: since the last query
                             table_unpumped_us_max=round(self.unpumped_max_s * 1e6, 1),
                             # its CPU (far less than the wall time: the process waited for its CPU) and the steps
                             # of the turn between which it lay: where the table last read and where it read next
                             table_unpumped_cpu_us=round(self.unpumped[0] * 1e6, 1),
                             table_unpumped_steps=[self._step_name(s) for s in self.unpumped[1:]],
                             # the longest stretch by the thread's CPU time: the turn's own longest step, and where
                             table_unpumped_cpu_us_max=round(self.unpumped_cpu[0] * 1e6, 1),
                             table_unpumped_cpu_steps=[self._step_name(s) for s in self.unpumped_cpu[1:]],
                             # full collections (the loop relays nothing meanwhile), the longest since the last query
                             gc_full_collections=self.gc_pauses, gc_max_ms=round(self.gc_max_s * 1000, 2),
                             # every collection (generations 0, 1, 2) and the longest of generations 0-1 since the
                             # last query: the hop's tail is not the collector's when these stay far below it
                             gc_collections=list(self.gc_runs), gc_young_max_ms=round(self.gc_young_max_s * 1000, 3),
                             # the core's tick alone, CPU time (the rest of a turn: the workers' sync, the sends)
                             tick_cpu_us_mean=round(self.tick_cpu_s * 1e6 / self.timer_turns, 1) if self.timer_turns else None,
                             # of the turns' CPU, what the relay table's relaying inside them took (_pump_table)
                             pump_cpu_us_mean=round(self.pump_s * 1e6 / self.timer_turns, 1) if self.timer_turns else None)
                self.timer_max_s = self.gc_max_s = self.gc_young_max_s = self.unpumped_max_s = 0.0
                self.unpumped = self.unpumped_cpu = (0.0, None, None)
                if self.workers is not None:
                    reply.update(self.workers.status())
                    # receive stamp to send of the frames the main host's own table relayed since the last query
                    reply["table_residence"] = self.workers.local.residence()
            else:
                reply = {"error": "unknown request %r" % line}
            writer.write((json.dumps(reply, default=str) + "\n").encode())
            await writer.drain()
        except ConnectionError:    # the asker gave up (`upbx status` timed out on a busy machine): nothing to answer
            self.core.stats.drop("control client gone")
        finally:
            writer.close()

    def _gc_timed(self, phase, info):
        """gc.callbacks: every collection and the longest, full and young (the loop relays nothing meanwhile:
        status gc_collections, gc_max_ms, gc_young_max_ms)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        generation = info.get("generation", 2)
        self.gc_runs[generation] += 1
        if generation != 2:
            self.gc_young_max_s = max(self.gc_young_max_s, took)
            return
        self.gc_pauses += 1
        self.gc_max_s = max(self.gc_max_s, took)

    async def run(self):
        loop = asyncio.get_running_loop()
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
            self.listen[0], self.listen[1], type=socket.SOCK_DGRAM)[0]
        workers = self._workers_count(family)
        sock = self.sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            if workers > 1:
                if sockaddr[1]:   # the port must be free: SO_REUSEPORT alone would share it with another daemon
                    with socket.socket(family, socket.SOCK_DGRAM) as probe:
                        probe.bind(sockaddr)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise ListenError(sockaddr[:2], exc.strerror or exc) from None
        self.address = sock.getsockname()
        # Room for bursts (every site's trunk frames of one tick can arrive together):
        # the default ~200 KB holds fewer than 100 full trunk frames.
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass
        if fastpath.native is not None and family == socket.AF_INET:
            self._batch = fastpath.native
            # the kernel's receive stamp on each datagram: the relay table's residence (status: table_residence)
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)
        self._stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        server = None
        if self.control_socket:
            if os.path.exists(self.control_socket):
                os.unlink(self.control_socket)
            # bound and listening under a temporary name, then renamed: whoever sees the socket's file
            # can connect (between bind() and listen() a client is refused, and a busy machine can
            # stop us there: `upbx status` and the tests wait for the file)
            building = "%s.%d" % (self.control_socket, os.getpid())
            with unix_path(building) as path:
                server = await asyncio.start_unix_server(self._control, path=path)
            os.chmod(building, 0o660)   # the daemon's user and group: `upbx status` as either
            os.rename(building, self.control_socket)
        self.log.info("started", listen="%s:%d" % self.address[:2], pid=os.getpid(),
                      fast_path="C" if self._batch is not None else "python")
        self.core.wall_offset_ms = wall_offset_ms()
        if self._batch is not None and hasattr(self.core, "trunk_route"):   # a main host: its relay table, workers
            self.workers = relay_workers.RelayWorkers(self.core, sock, workers, self._flush)
            self.workers.start()
            for number, fd in self.workers.fds():
                loop.add_reader(fd, self.workers.readable, number)
            if workers > 1:
                self.log.info("relay-workers", workers=workers, pids=",".join(str(p.pid) for p in self.workers.procs))
        if self.workers is not None:   # a long tick lets the relay table relay meanwhile (MainHost.on_tick)
            self.core.pump = self._pump_table
        self.core.start(now_ms())
        self._flush()
        loop.add_reader(sock.fileno(), self._readable)
        timers = asyncio.ensure_future(self._timers())
        gc.callbacks.append(self._gc_timed)
        try:
            for service in self.services:
                await service.start(self)
            # what start-up made lives as long as the process: out of every full collection from here on, which
            # then looks at the calls' objects only (a full collection of a bench main host's 19,000 start-up
            # objects took 16-23 ms, every one of them; cyclic garbage among them is not collected: there is none
            # to speak of, they are modules, configuration and the directory's caches)
            gc.collect()
            gc.freeze()
            await self._stopping.wait()
        finally:
            gc.callbacks.remove(self._gc_timed)
            for service in reversed(self.services):
                await service.stop()
            timers.cancel()
            if self.workers is not None:
                for _number, fd in self.workers.fds():
                    loop.remove_reader(fd)
                self.workers.stop()
            self.core.stop(now_ms())
            if server is not None:
                server.close()
                if os.path.exists(self.control_socket):
                    os.unlink(self.control_socket)
            loop.remove_reader(sock.fileno())
            if self.sip_sock is not None:
                self._sip_close()
            if self._tx_queue:
                loop.remove_writer(sock.fileno())
                self._tx_queue.clear()
            sock.close()
            self.log.info("stopped", stats=json.dumps(self.core.stats.as_dict()))

    def _workers_count(self, family):
        """How many processes relay on the port: `workers` (0: one per CPU), or 1 where workers cannot run."""
        wanted = self.workers_wanted or relay_workers.cpus()
        if wanted <= 1:
            return 1
        why = ("the C fast path is not built (or UPBX_PURE_PYTHON is set)" if fastpath.native is None else
               "the listen address is not IPv4" if family != socket.AF_INET else
               "only the main host relays" if not hasattr(self.core, "trunk_route") else None)
        if why is not None:
            if self.workers_wanted > 1:
                self.log.warning("relay-workers", workers=1, wanted=wanted, reason=why)
            return 1
        return wanted

    def stop(self):
        if self._stopping is not None:
            self._stopping.set()


class unix_path:
    """A path for bind() or connect() on a Unix socket: the path itself when it fits sun_path (108
    bytes on Linux), else the same file reached through a descriptor of its directory
    (/proc/self/fd/N/NAME), held open while the block runs (the socket keeps its file). A deep
    working directory (a test's, a deployment's) then works as any other."""
    LIMIT = 100

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        if len(os.fsencode(self.path)) <= self.LIMIT:
            return self.path
        self.fd = os.open(os.path.dirname(os.path.abspath(self.path)) or ".", os.O_RDONLY)
        return "/proc/self/fd/%d/%s" % (self.fd, os.path.basename(self.path))

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
        return False


def query_status(path, timeout=5):
    """Ask a daemon's control socket for its status (used by `upbx status` and tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, unix_path(path) as short:
        sock.settimeout(timeout)
        sock.connect(short)
        sock.sendall(b"status\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
