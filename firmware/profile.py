"""Per-tick CPU time of the handset's own work, measured inside the firmware.

Turned on by the device configuration key "profile" (a number of ticks to record, or
true for 3000 = one minute). A tick is the 20 ms from one audio tick of a call to the
next: the audio tick itself (microphone, encode, VAD, seal, send, playout, speaker) and
everything the loop does until the next one (receive and open frames, timers,
signalling, housekeeping). Busy time is summed with time.ticks_us from the top of each
loop iteration to its sleep; the sleeps are not counted. Time inside the socket, the
poller and the HAL's audio and key calls (on the unix port: system calls, which an ESP32
replaces with lwIP and I2S) is also counted apart, as the tick's I/O; of it, the time in the
socket's calls (sendto, recv, setsockopt) and how many of each the tick made are kept apart
again (an ESP32 makes these calls into lwIP, whose cost `upbx bench handset` takes from
Espressif's published figures instead of scaling this machine's system calls). Each tick's
duration, I/O, socket time and calls and what it did (its kind) go into storage allocated
here, at start-up, so profiling allocates nothing per tick; report() (at the end) gives the
median, p99 and maximum per kind, with and without the I/O, and every tick's figures as hex
("raw", when the heap has room for them at the end) for the bench to combine.

Where the kernel counts the thread's CPU time (the unix port on Linux: /proc/thread-self/schedstat)
each tick also keeps that count (cpu_us: from the end of the previous tick's last pass to the end of
its own, so the sleeps are not in it but the system calls' kernel side is) and whether the thread
waited runnable, not running, in it (the kind's WAITED flag). The busy time above is wall clock: a
tick in which the process was descheduled (another process, or the virtual machine's CPU taken by
its host) counts the time it was away, which cpu_us does not. `upbx bench handset` takes each tick
as the smaller of the two (docs/benchmarks.md, Session 5, "The 10 ms tick"). A device has no such
count: there cpu_us stays 0.
"""
import gc
from array import array

from common.compat import MICROPYTHON, const, micropython
from firmware.audio import jitter

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython, for tests of the report
    import time as _time

    def ticks_us():
        return int(_time.perf_counter() * 1000000)

    def ticks_diff(a, b):
        return a - b

NONE = const(0)       # no call: not recorded
NORMAL = const(1)     # a voice frame sent and a received frame played
BRIDGED = const(2)    # a lost frame concealed from both sides (its successor was buffered)
CONCEALED = const(3)  # a lost frame extrapolated from the past
SILENCE = const(4)    # VAD heard silence: no voice frame sent (nothing, or comfort noise)
OTHER = const(5)      # the rest of a call: jitter buffer priming or empty, a local tone
KINDS = ("none", "normal", "bridged", "concealed", "silence", "other")
COLLECTED = const(0x80)  # flag: the tick held the once-a-second garbage collection
SIGNALLED = const(0x40)  # flag: the tick ran the loop's timers or the protocol's signalling (App._timers, _plan)
HEAP_WALK = const(0x20)  # flag: the tick sampled the heap's use (gc.mem_alloc, gc.mem_free: a walk each)
WAITED = const(0x10)     # flag: the kernel says the thread waited runnable, not running, in the tick (KernelClock)
_KIND = const(0x0F)      # the kind's code; the flags above it
DEFAULT_TICKS = const(3000)
_SCHEDSTAT = "/proc/thread-self/schedstat"   # Linux: "ns on CPU, ns waiting runnable, timeslices"


class KernelClock:
    """The thread's CPU time and its time waiting runnable as Linux counts them, in us since the last
    read; read from /proc/thread-self/schedstat into a buffer made once and parsed in viper (nothing
    allocated per read). open() gives None where there is no such file (a device, another system).

    The kernel brings a running thread's count up to date when it sleeps or is switched out, not on
    every read: a read right after a wake-up (the loop's audio pass) gives the CPU time up to the
    last sleep, so the difference between two such reads is the CPU time of the passes between them."""

    def __init__(self, f):
        self._f = f
        self._buf = bytearray(80)
        self._now = array("I", bytes(8))    # ns on CPU, ns waiting (each mod 2**32)
        self._last = array("I", bytes(8))
        self.cpu_us = self.wait_us = 0
        self.read()

    @staticmethod
    def open():
        if not MICROPYTHON:   # the parser is viper; CPython's tests of the report run without it
            return None
        try:
            return KernelClock(open(_SCHEDSTAT, "rb"))
        except OSError:
            return None

    @micropython.native
    def read(self):
        """cpu_us and wait_us since the last read (no tuple made: attributes; 4.29 s or more wrap)."""
        f = self._f
        f.seek(0)
        n = f.readinto(self._buf)
        _parse_schedstat(self._buf, n, self._now)
        self.cpu_us = _delta_us(self._last, self._now, 0) // 1000
        self.wait_us = _delta_us(self._last, self._now, 1) // 1000

    def close(self):
        self._f.close()


if MICROPYTHON:
    @micropython.viper
    def _parse_schedstat(buf, n: int, out):
        """The first two decimal fields of buf[:n] into out[0], out[1], mod 2**32."""
        p = ptr8(buf)
        o = ptr32(out)
        field = 0
        v = uint(0)
        i = 0
        while i < n and field < 2:
            c = p[i]
            if c >= 48 and c <= 57:
                v = v * 10 + uint(c - 48)
            else:
                o[field] = v
                field += 1
                v = uint(0)
            i += 1

    @micropython.viper
    def _delta_us(last, now, k: int) -> int:
        """now[k] - last[k] in ns (mod 2**32, at most 2**30 - 1: a small int), and last[k] = now[k]."""
        a = ptr32(last)
        b = ptr32(now)
        d = uint(b[k]) - uint(a[k])
        a[k] = b[k]
        if d > uint((1 << 30) - 1):
            d = uint((1 << 30) - 1)
        return int(d)


class TickProfile:
    """Durations (us) and kinds of up to `capacity` call ticks."""

    def __init__(self, capacity=DEFAULT_TICKS):
        # 16 bits a figure (a tick of 65.5 ms or more is stored as 65535): the collector scans
        # this storage at every collection, so it is kept small
        self.us = array("H", bytes(2 * capacity))
        self.io_us = array("H", bytes(2 * capacity))
        self.net_us = array("H", bytes(2 * capacity))   # of io_us: the socket's calls
        self.net_calls = bytearray(capacity)   # sendto (low 4 bits) and recv (high 4 bits) calls, at most 15 each
        self.kinds = bytearray(capacity)
        self.clock = KernelClock.open()   # None on a device: cpu_us stays 0
        self.cpu_us = array("H", bytes(2 * capacity))   # 0 without the kernel's clock
        self.count = 0
        self.dropped = 0     # ticks after the storage was full
        self.kind = NONE     # what the open tick did, set by classify() after its audio tick
        self.io = 0          # I/O time of the open tick so far
        self.net = 0         # of it, in the socket's calls
        self.sends = 0       # the open tick's sendto (and setsockopt) calls
        self.recvs = 0       # and recv calls
        self._busy = 0
        self._mark = ticks_us()
        self._bridged = 0
        self._ended = False  # the tick stored last ended the call (no classify() after it)

    def time_io(self, sock, ipoll, hal):
        """(sock, ipoll, hal) to use instead of these: the same, with the time in their I/O calls counted."""
        return (sock and _TimedSocket(self, sock), ipoll and _timed(self, ipoll),
                hal and _TimedHal(self, hal))

    @micropython.native
    def resume(self):
        """Top of a loop iteration: the handset is busy from here."""
        self._mark = ticks_us()

    @micropython.native
    def pause(self):
        """Just before the loop sleeps."""
        self._busy += ticks_diff(ticks_us(), self._mark)

    def collected(self):
        """The loop ran its garbage collection in the open tick."""
        self.kind |= COLLECTED

    def flag(self, bits):
        """The open tick also did this (SIGNALLED, HEAP_WALK): `upbx bench handset` names what its worst ticks did."""
        self.kind |= bits

    @micropython.native
    def tick(self):
        """An audio tick starts: the previous tick ends here and is stored (if it was in a call).

        It counts once classify() says the call goes on; if the call ended in it, it stays
        apart (report()'s "end": the tick that also tears the call down)."""
        now = ticks_us()
        busy = self._busy + ticks_diff(now, self._mark)
        self._ended = False
        cpu = wait = 0
        clock = self.clock
        if clock is not None:   # the kernel's count of the tick just ended; the read is in no tick's busy time
            clock.read()
            cpu = clock.cpu_us
            wait = clock.wait_us
        if self.kind & _KIND:
            n = self.count
            if n < len(self.kinds):
                self.cpu_us[n] = cpu if cpu < 65535 else 65535
                self.us[n] = busy if busy < 65535 else 65535
                self.io_us[n] = self.io if self.io < 65535 else 65535
                self.net_us[n] = self.net if self.net < 65535 else 65535
                self.net_calls[n] = (self.sends if self.sends < 15 else 15) | (self.recvs if self.recvs < 15 else 15) << 4
                self.kinds[n] = self.kind | (WAITED if wait else 0)
                self._ended = True   # until classify() shows the call still up
            else:
                self.dropped += 1
        self.kind = NONE
        self.io = self.net = self.sends = self.recvs = 0
        self._busy = 0
        self._mark = now if self.clock is None else ticks_us()

    @micropython.native
    def classify(self, sent_voice, pipeline):
        """What the audio tick just done did: sent_voice is False when the VAD heard silence."""
        if self._ended:   # the call is still up: the tick stored last counts
            self.count += 1
            self._ended = False
        bridged = pipeline.concealer.bridged
        status = pipeline.last_status
        if status == jitter.MISSING:
            kind = BRIDGED if bridged != self._bridged else CONCEALED
        elif not sent_voice:
            kind = SILENCE
        elif sent_voice and status == jitter.FRAME and pipeline.tone.name is None:
            kind = NORMAL
        else:
            kind = OTHER
        self._bridged = bridged
        self.kind = kind | (self.kind & ~_KIND)

    def report(self):
        """{"ticks", "dropped", "unit", "kinds": {name: figures}, "all": figures, "with_collection": figures
        (the ticks that held a gc.collect()), "worst": {"us", "io_us", "kind", "collected", "cpu_us"}, "end": {"us",
        "io_us"} (the tick in which the call ended, not among the others) or None}, where figures
        are {"ticks", "p50_us", "p99_us", "max_us", "io_p50_us", "without_io_p50_us", "without_io_p99_us",
        "without_io_max_us"}, and per kind "collections"; "raw": every stored tick as hex of its little-endian
        storage ({"us", "io_us", "net_us", "cpu_us": 16 bits a tick, "kinds", "net_calls": 8 bits});
        "kernel_clock": whether cpu_us and the WAITED flags were counted (KernelClock). Allocates (one list of
        ticks at a time, for a small heap; the raw hex, 14 bytes a tick): call it at the end."""
        gc.collect()   # the lists below are the largest things made on a small heap at the end
        n = self.count
        kinds = {}
        for code in range(1, len(KINDS)):
            figures = self._figures(code, _KIND)
            if figures["ticks"]:
                figures["collections"] = self._figures(code | COLLECTED, _KIND | COLLECTED)["ticks"]
                kinds[KINDS[code]] = figures
        worst = 0
        for i in range(n):
            if self.us[i] > self.us[worst]:
                worst = i
        return {"ticks": n, "dropped": self.dropped, "unit": "us of handset time per 20 ms tick",
                "kinds": kinds, "all": self._figures(0, 0), "with_collection": self._figures(COLLECTED, COLLECTED),
                "worst": {"us": self.us[worst] if n else None, "io_us": self.io_us[worst] if n else None,
                          "kind": KINDS[self.kinds[worst] & _KIND] if n else None,
                          "collected": bool(n and self.kinds[worst] & COLLECTED),
                          "cpu_us": self.cpu_us[worst] if n else None},
                "kernel_clock": self.clock is not None,
                "end": {"us": self.us[n], "io_us": self.io_us[n]} if self._ended else None,
                "raw": self._raw(n)}

    def _raw(self, n):
        """The stored ticks as hex (18 bytes of text a tick), or None when the heap has no room for them
        at the end (a device profiling many ticks: the figures above are complete without them). The
        last use of the storage: each array is let go once its hex is made, so that its room serves the
        next one's (the hex takes twice an array's bytes; a 110 KB heap holds 2,000 ticks so)."""
        out = {}
        try:
            for name in ("us", "io_us", "net_us", "cpu_us", "kinds", "net_calls"):
                out[name] = _hex(getattr(self, name), n)
                setattr(self, name, None)
        except MemoryError:
            return None
        return out

    def _figures(self, code, mask):
        """Tick count, median, p99 (nearest rank) and maximum of the ticks whose kind & mask == code:
        of their durations, their I/O, and their durations without the I/O (one list, reused)."""
        kinds, us, io, count = self.kinds, self.us, self.io_us, self.count
        n = 0
        for i in range(count):
            if kinds[i] & mask == code:
                n += 1
        if not n:
            return {"ticks": 0}
        mid, p99 = (n - 1) // 2, -(-99 * n // 100) - 1
        out = {"ticks": n}
        values = [0] * n
        for key in ("", "io_", "without_io_"):
            j = 0
            for i in range(count):
                if kinds[i] & mask == code:
                    values[j] = us[i] if key == "" else io[i] if key == "io_" else max(us[i] - io[i], 0)
                    j += 1
            values.sort()
            out[key + "p50_us"] = values[mid]
            if key != "io_":
                out[key + "p99_us"] = values[p99]
                out[key + "max_us"] = values[-1]
        return out


def _hex(storage, n):
    """The first n items of storage (an array or bytearray) as hex of their bytes (native byte order:
    little-endian on the ports the handset runs on, x86 and Xtensa)."""
    return bytes(memoryview(storage)[:n]).hex()


def spin(ipoll):
    """ipoll(timeout_ms) that does not sleep: it polls without waiting until something is ready or
    the time has come, then returns ipoll(0)'s iterator (what is ready stays ready: a datagram stays
    queued until it is read). For measuring on a shared machine only (configuration key
    "profile_spin", `upbx phone --profile-spin`): the loop's time between ticks is not counted
    either way, but a handset that sleeps leaves this machine's CPU, its caches and branch
    predictors to other processes, so every wake-up starts cold; spinning keeps them the handset's,
    as a core of its own would (docs/benchmarks.md, "Warm and cold")."""
    from time import ticks_ms

    def wait(timeout):
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < timeout:
            for _ in ipoll(0):
                return ipoll(0)
        return ipoll(0)
    return wait


def _timed(profile, fn):
    """fn(arg) with its time added to profile.io (one argument: no tuple made per call)."""
    def call(arg):
        t = ticks_us()
        try:
            return fn(arg)
        finally:
            profile.io += ticks_diff(ticks_us(), t)
    return call


class _TimedSocket:
    """The app's socket, with recv, readinto, sendto and setsockopt counted as I/O."""

    def __init__(self, profile, sock):
        self._profile = profile
        self._sock = sock

    @micropython.native
    def recv(self, n, flags=0):
        t = ticks_us()
        try:
            return self._sock.recv(n, flags)
        finally:
            p = self._profile
            t = ticks_diff(ticks_us(), t)
            p.io += t
            p.net += t
            p.recvs += 1

    @micropython.native
    def readinto(self, buf, n):
        t = ticks_us()
        try:
            return self._sock.readinto(buf, n)
        finally:
            p = self._profile
            t = ticks_diff(ticks_us(), t)
            p.io += t
            p.net += t
            p.recvs += 1

    @micropython.native
    def sendto(self, data, addr):
        t = ticks_us()
        try:
            return self._sock.sendto(data, addr)
        finally:
            p = self._profile
            t = ticks_diff(ticks_us(), t)
            p.io += t
            p.net += t
            p.sends += 1

    def setsockopt(self, level, option, value):
        t = ticks_us()
        try:
            return self._sock.setsockopt(level, option, value)
        finally:
            p = self._profile
            t = ticks_diff(ticks_us(), t)
            p.io += t
            p.net += t
            p.sends += 1   # costed as a send (an ESP32 handset makes none: stock setsockopt has no IP_TOS)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _TimedHal:
    """The HAL, with the audio and key calls counted as I/O; everything else passed through."""

    def __init__(self, profile, hal):
        self._profile = profile
        self._hal = hal
        # called every loop iteration or frame and passed through as the HAL's own bound methods (no
        # __getattr__, whose failed lookups first would be counted as the handset's time, and no
        # wrapper's call either); sendto's system call is counted by the socket, which the app hands to it
        self.ticks_ms = hal.ticks_ms
        self.sendto = hal.sendto
        self.feed = hal.feed
        self.refresh = hal.refresh

    @micropython.native
    def read_frame(self, pcm):
        t = ticks_us()
        try:
            return self._hal.read_frame(pcm)
        finally:
            self._profile.io += ticks_diff(ticks_us(), t)

    @micropython.native
    def write_frame(self, pcm):
        t = ticks_us()
        try:
            return self._hal.write_frame(pcm)
        finally:
            self._profile.io += ticks_diff(ticks_us(), t)

    @micropython.native
    def poll_keys(self):
        t = ticks_us()
        try:
            return self._hal.poll_keys()
        finally:
            self._profile.io += ticks_diff(ticks_us(), t)

    def __getattr__(self, name):
        return getattr(self._hal, name)
