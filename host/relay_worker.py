"""A relay worker: one process of the main host's port that relays the trunk frames of its sessions.

The main host (host/relay_workers.py) starts one per core beyond its own, each with a socket
bound to the main host's address with SO_REUSEPORT; the kernel steers every trunk frame to the
socket whose number is the frame's session index modulo the number of sockets (a classic BPF
program on the group), everything else to the main host. A worker holds a copy of what relaying
needs (docs/relay.md, "Every core"): the host links (keys, peer index, address) and, for each
call direction the main host delegated, the two legs' keys, the receiving leg's replay window and
the direction's timestamp shift, in the C relay table (host/_fastpath.c `Relay`), which reads,
relays and sends in C. Every datagram the table does not take goes to the main host, untouched.

    python -m upbx.host.relay_worker FD HOST PORT NUMBER TRUNK_MTU

FD is this end of a SOCK_SEQPACKET pair to the main host. Messages (one per packet):
    main -> worker   b"C" + pickle of ("link", ...), ("unlink", index), ("delegate", key, args of
                     Relay.delegate), ("revoke", key, session index, call number), ("stop",)
    worker -> main   b"R" (bound, ready), b"D" + IPv4 (4) + port (2) + datagram (forwarded),
                     b"E" + IPv4 + port + length (2) + pickle of {call number: highest} + datagram
                     (forwarded, naming legs delegated here: their windows' highest stamps, with
                     which the main host checks the frame's tag before it takes them back),
                     b"C" + pickle of ("delegated", key), ("revoked", key, state),
                     ("report", counters, drops, meter, bytes out by link, seen)
A host that sends from a new address (B7) is the main host's: the table leaves such frames to it.
"""
import pickle
import select
import socket
import struct
import sys
import time

from upbx.host import fastpath

WORKER_TAKEN = "worker fast path datagrams"   # a counter of the reports: datagrams the relay tables took
REPORT_S = 0.25          # counters, bandwidth and last-seen go to the main host this often
RX_BURST = 16            # recvmmsg of the table (its frames leave before the next 16 are read: hop latency) ...
RX_ROUNDS = 32           # ... up to this many times a wake while the socket has more
SOCKET_BUFFER = 4 << 20
ADDR = struct.Struct("!4sH")


class Worker:
    """The table and what the main host says to it."""

    def __init__(self, table, tell):
        self.table = table
        self.tell = tell                 # tell(message): a control message to the main host
        self.taken_reported = 0

    def control(self, message):
        kind = message[0]
        table = self.table
        if kind == "link":
            table.link(*message[1:])
        elif kind == "unlink":
            table.unlink(message[1])
        elif kind == "delegate":
            table.delegate(*message[2])
            self.tell(("delegated", message[1]))
        elif kind == "revoke":
            self.tell(("revoked", message[1], table.revoke(message[2], message[3])))

    def report(self):
        """What changed since the last report, with the table's datagrams since then (WORKER_TAKEN)."""
        message = self.table.report()
        taken = self.table.taken()
        if taken > self.taken_reported:   # the main host's metrics add them to its own (host/metrics.py)
            message[1][WORKER_TAKEN] = taken - self.taken_reported
            self.taken_reported = taken
        return message


def run(fd, host, port, number, trunk_mtu):
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

    worker = Worker(fastpath.relay_table(trunk_mtu), tell)
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
                    worker.control(message)
            else:
                relay(worker.table, udp, channel)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + REPORT_S
            tell(worker.report())


def relay(table, udp, channel):
    """The datagrams waiting on the socket: the table's relayed and sent in C, the rest to the main host,
    with the table's highest stamps of the delegated legs a trunk frame names (the main host checks its
    tag with them before it takes those directions back)."""
    for data, (host, port) in table.relay(udp, RX_BURST, RX_ROUNDS):
        stamps = table.stamps(data) if data and data[0] & 0xC0 == 0xC0 else None
        if stamps is None:
            channel.send(b"D" + ADDR.pack(socket.inet_aton(host), port) + data)
        else:
            extra = pickle.dumps(stamps, pickle.HIGHEST_PROTOCOL)
            channel.send(b"E" + ADDR.pack(socket.inet_aton(host), port) + len(extra).to_bytes(2, "big") + extra + data)


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
