"""The impairment relay: seeded decisions, and real UDP through the relay on loopback."""
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from tests.support import ROOT
from upbx.tools.impair import IP_UDP_OVERHEAD, Impairment, Relay


class Sink:
    """A UDP target on loopback recording (arrival time, payload, source) of everything it gets."""

    def __init__(self, echo=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.echo = echo
        self.arrivals = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        while True:
            try:
                data, source = self.sock.recvfrom(65535)
            except OSError:
                return
            self.arrivals.append((time.monotonic(), data, source))
            if self.echo:
                self.sock.sendto(data, source)

    def settle(self, quiet=0.2, limit=5.0):
        """Wait until nothing arrived for `quiet` seconds; return the sequence numbers seen."""
        deadline = time.monotonic() + limit
        count = -1
        while count != len(self.arrivals) and time.monotonic() < deadline:
            count = len(self.arrivals)
            time.sleep(quiet)
        return [struct.unpack_from("!I", data)[0] for _, data, _ in self.arrivals]

    def close(self):
        self.sock.close()


def _client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _send_numbered(sock, address, count, size=8, spacing=0.0, batch=100, taken=None):
    """Send `count` datagrams carrying their number (and send time); return the send times. With
    `taken` (the count the relay has read), each batch waits until the relay read the one before: a
    relay the machine stalls then loses nothing to its socket's buffer, and loss comes from it only."""
    sent = []
    pad = b"\0" * max(0, size - 12)
    for n in range(count):
        now = time.monotonic()
        sock.sendto(struct.pack("!Id", n, now) + pad, address)
        sent.append(now)
        if spacing:
            time.sleep(spacing)
        elif n % batch == batch - 1:
            time.sleep(0.002)  # let the relay keep up: loss must come from the relay only
            deadline = time.monotonic() + 60
            while taken is not None and taken() < n + 1 - batch and time.monotonic() < deadline:
                time.sleep(0.002)
    return sent


def _predicted_survivors(count, **params):
    fate = Impairment(**params)
    return [n for n in range(count) if fate.decide(0.0)]


# -- the pure decisions -----------------------------------------------------------------

def test_same_seed_drops_the_same_packets_whatever_else_is_configured():
    plain = _predicted_survivors(5000, seed=42, loss=10)
    assert plain == _predicted_survivors(5000, seed=42, loss=10)
    assert plain == _predicted_survivors(5000, seed=42, loss=10, jitter_ms=30, duplicate=5, reorder=5)
    assert plain != _predicted_survivors(5000, seed=43, loss=10)


def test_gilbert_elliott_loss_comes_in_bursts_of_the_configured_length():
    fate = Impairment(seed=1, burst_loss=(5, 25))  # mean loss 5/(5+25), mean burst 100/25 packets
    lost = [not fate.decide(0.0) for _ in range(40000)]
    bursts = [len(run) for run in "".join("x" if x else "." for x in lost).split(".") if run]
    assert abs(sum(lost) / len(lost) - 5 / 30) < 0.02
    assert 3.5 < sum(bursts) / len(bursts) < 4.5
    spread = Impairment(seed=1, loss=100 * 5 / 30)  # the same mean loss at random comes in short runs
    random_lost = [not spread.decide(0.0) for _ in range(40000)]
    random_bursts = [len(r) for r in "".join("x" if x else "." for x in random_lost).split(".") if r]
    assert sum(random_bursts) / len(random_bursts) < 1.5


def test_token_bucket_spaces_packets_at_the_configured_rate_and_drops_past_the_queue():
    fate = Impairment(rate_kbps=80, burst_bytes=0, queue_ms=250)  # 10,000 bytes per second
    size = 1000 - IP_UDP_OVERHEAD
    times = [fate.decide(0.0, size) for _ in range(5)]
    assert times[:3] == [[pytest.approx(0.1)], [pytest.approx(0.2)], []]
    assert fate.decide(1.0, size) == [pytest.approx(1.1)]  # the queue drained meanwhile
    assert fate.counters["queue_dropped"] == 3


def test_jitter_and_delay_stay_within_their_bounds():
    fate = Impairment(seed=2, delay_ms=10, jitter_ms=30)
    delays = [fate.decide(5.0)[0] - 5.0 for _ in range(2000)]
    assert 0.010 <= min(delays) < 0.012 and 0.038 < max(delays) <= 0.040
    assert abs(sum(delays) / len(delays) - 0.025) < 0.002


# -- real UDP through the relay ----------------------------------------------------------

def test_loss_over_10000_packets_is_within_tolerance_and_hits_exactly_the_seeded_packets():
    sink = Sink()
    with Relay(("127.0.0.1", 0), sink.address, up=Impairment(seed=7, loss=10)) as relay:
        _send_numbered(_client(), relay.address, 10000, taken=lambda: relay.counters["up"]["in"])
        got = sink.settle()
    sink.close()
    assert relay.counters["up"]["in"] == 10000
    assert sorted(got) == _predicted_survivors(10000, seed=7, loss=10)
    assert abs((10000 - len(got)) / 10000 - 0.10) < 0.01
    assert relay.counters["up"]["out"] == len(got)


def test_duplicates_and_reordering_are_observed():
    sink = Sink()
    up = Impairment(seed=5, duplicate=20, reorder=20, reorder_ms=30)
    with Relay(("127.0.0.1", 0), sink.address, up=up) as relay:
        _send_numbered(_client(), relay.address, 300, spacing=0.001)
        got = sink.settle()
    sink.close()
    duplicated = relay.counters["up"]["duplicated"]
    assert 30 < duplicated < 90 and len(got) == 300 + duplicated
    assert sorted(set(got)) == list(range(300))
    overtaken = sum(1 for i, n in enumerate(got) if any(m > n for m in got[:i]))
    assert overtaken >= relay.counters["up"]["reordered"] * 0.8 > 20


class RecordingImpairment(Impairment):
    """An Impairment that keeps each decision the relay asked of it: (now, size, send times).

    The relay's own clock decides; the real-socket tests below assert that the relay asked with
    the real sizes, sent exactly what was decided and never before its time. How late it sent
    depends on the machine, so it is printed, never asserted (the decisions themselves are
    checked on a virtual clock above)."""

    def __init__(self, **params):
        super().__init__(**params)
        self.decisions = []

    def decide(self, now, size=0):
        times = super().decide(now, size)
        self.decisions.append((now, size, times))
        return times


def test_rate_limit_caps_throughput():
    sink = Sink()
    up = RecordingImpairment(rate_kbps=400, queue_ms=100)
    size = 500 - IP_UDP_OVERHEAD
    with Relay(("127.0.0.1", 0), sink.address, up=up) as relay:
        _send_numbered(_client(), relay.address, 300, size=size)  # a burst: many times the rate
        sink.settle()
    sink.close()
    assert [d[1] for d in up.decisions] == [size] * 300
    survivors = [n for n, (_now, _size, times) in enumerate(up.decisions) if times]
    assert [struct.unpack_from("!I", data)[0] for _, data, _ in sink.arrivals] == survivors
    assert relay.counters["up"]["dropped"] == 300 - len(survivors) > 0
    leaves = [up.decisions[n][2][0] for n in survivors]
    # on the relay's clock: after the bucket's burst, 500 bytes at 400 kbit/s leave one per 10 ms,
    # exactly that while packets wait in the queue (received before the one ahead left)
    assert (len(leaves) - 1) * 500 <= 50000 * (leaves[-1] - leaves[0]) + up.burst_bytes + 1e-6
    queued = [b - a for a, b, n in zip(leaves, leaves[1:], survivors[1:]) if up.decisions[n][0] < a]
    assert queued and all(g == pytest.approx(0.010) for g in queued)
    # the relay sent none before its time (the sink shares its clock)
    assert all(t >= leave for (t, _, _), leave in zip(sink.arrivals, leaves))
    times = [t for t, _, _ in sink.arrivals]
    print("measured at the sink: %.0f kbps (400 decided)" % ((len(times) - 1) * 500 * 8 / 1000 / (times[-1] - times[0])))


def test_jitter_delays_packets_by_up_to_the_configured_amount():
    sink = Sink()
    up = RecordingImpairment(seed=11, jitter_ms=40)
    with Relay(("127.0.0.1", 0), sink.address, up=up) as relay:
        _send_numbered(_client(), relay.address, 150, spacing=0.002)
        sink.settle()
    sink.close()
    # the delays the relay decided, on its own clock: within 0..40 ms, spread over the range
    delays = [times[0] - now for now, _size, times in up.decisions]
    assert len(delays) == 150 and all(len(times) == 1 for _, _, times in up.decisions)
    assert min(delays) >= 0 and max(delays) <= 0.040
    assert 0.014 < sum(delays) / len(delays) < 0.028 and max(delays) - min(delays) > 0.030
    # every packet arrived, none before its decided time, in the order of those times: the jitter
    # reorders real traffic as decided
    leaves = [times[0] for _, _, times in up.decisions]
    arrived = [struct.unpack_from("!I", data)[0] for _, data, _ in sink.arrivals]
    assert arrived == sorted(range(150), key=lambda n: leaves[n])
    assert arrived != list(range(150))
    assert all(t >= leaves[n] for (t, _, _), n in zip(sink.arrivals, arrived))
    late = [t - leaves[n] for (t, _, _), n in zip(sink.arrivals, arrived)]
    print("sent after the decided time: mean %.1f ms, max %.1f ms" % (1000 * sum(late) / len(late), 1000 * max(late)))


def test_each_client_gets_its_own_upstream_socket_and_its_own_replies():
    target = Sink(echo=True)
    with Relay(("127.0.0.1", 0), target.address) as relay:
        clients = [_client(), _client()]
        for n, client in enumerate(clients):
            client.settimeout(2)
            client.sendto(struct.pack("!I", n), relay.address)
            assert client.recvfrom(100) == (struct.pack("!I", n), relay.address)
    target.close()
    upstream_ports = {source for _, _, source in target.arrivals}
    assert len(upstream_ports) == 2
    assert relay.counters["down"]["out"] == 2


def test_command_line_relay_prints_its_counters_on_sigterm():
    sink = Sink()
    cmd = [sys.executable, "-m", "upbx.tools.cli", "impair", "--listen", "127.0.0.1:0",
           "--to", "%s:%d" % sink.address, "--loss", "30", "--seed", "9", "--direction", "up"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        port = int(re.match(r"upbx impair: 127\.0\.0\.1:(\d+) ->", ready).group(1))
        _send_numbered(_client(), ("127.0.0.1", port), 200)
        got = sink.settle()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=5)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        sink.close()
    assert proc.returncode == 0
    assert got == _predicted_survivors(200, seed=9, loss=30)
    assert "up: in=200 out=%d dropped=%d duplicated=0" % (len(got), 200 - len(got)) in out
