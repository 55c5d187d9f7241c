"""The unix-port HAL: a virtual handset for demos and end-to-end tests.

Audio in is a WAV file (16-bit mono 8 kHz) or "tone:HZ", paced like a microphone
(a frame every 20 ms); audio out is a WAV file whose header is patched on close (or
None to discard). Keys come from a control channel: lines on stdin or on a
unix-domain/TCP socket the caller passes in, read without blocking through
select.poll. It runs on the MicroPython unix port (time.ticks_ms, optionally
started near its wrap). Logs go to stdout as "I tag message" lines. The watchdog
is `upbx phone` (tools/phone.py), fed over UDP; faults are injected here.

Ctrl-C comes from `upbx phone` too, as a byte 0x03 on the watchdog socket, and is raised as
KeyboardInterrupt in the next feed: where a device raises it, between two bytecodes. The unix port's
own SIGINT handler raises it asynchronously, wherever the C code is, and one that lands in the garbage
collector leaves the heap locked for good ("memory allocation failed, heap is locked" from the
handler's first allocation), so `upbx phone` sends SIGINT only to a handset that never fed.
"""
import select
import sys
import time

from common.compat import const
from firmware.audio import dsp, tones
from firmware.hal import rarely
from firmware.hal.console import ConsoleLines

FRAME_BYTES = 320
# audio older than this is lost when the loop falls behind, as a DMA queue overwrites it (an ESP32's
# holds 64 ms); a process on a busy PC stalls longer than a device, and the loop itself skips
# ahead only after 200 ms, so the virtual microphone keeps that much
_MIC_BACKLOG_MS = const(200)


class WavSource:
    """Frames from a WAV file; silence after its end (or from the start again with loop=True)."""

    def __init__(self, path, loop=False):
        self._f = open(path, "rb")
        self._left = self._size = rarely("firmware.hal.wav").parse_header(self._f)
        self._start = self._f.tell() if hasattr(self._f, "tell") else 44
        self._loop = loop
        self.finished = False

    def read_into(self, pcm):
        if self._left <= 0 and self._loop and self._size:
            self._f.seek(self._start)
            self._left = self._size
        n = self._f.readinto(pcm) if self._left > 0 else 0
        if n > self._left:
            n = self._left
        self._left -= n
        if n < len(pcm):
            for i in range(n, len(pcm)):
                pcm[i] = 0
            self.finished = self._left <= 0
        return True

    def close(self):
        self._f.close()


class ToneSource:
    """A continuous sine at HZ (a microphone that hums)."""

    def __init__(self, hz):
        self._inc = tones.phase_increment(hz)
        self._phase = 0
        self.finished = False

    def read_into(self, pcm):
        dsp.fill(pcm, 0, 160, 0)
        self._phase = dsp.add_tone(pcm, 0, 160, tones._SINE, self._phase, self._inc)
        return True

    def close(self):
        pass


class WavSink:
    """Writes frames to a WAV file; the header's sizes are patched on close."""

    def __init__(self, path):
        self._f = open(path, "wb")
        self._f.write(rarely("firmware.hal.wav").header(0))
        self.bytes = 0

    def write(self, pcm):
        self._f.write(pcm)
        self.bytes += len(pcm)

    def close(self):
        if self._f is None:
            return
        self._f.seek(0)
        self._f.write(rarely("firmware.hal.wav").header(self.bytes))
        self._f.close()
        self._f = None


def open_source(spec):
    """'tone:HZ', a WAV path, or None (silence)."""
    if spec is None:
        return None
    if spec.startswith("tone:"):
        return ToneSource(int(spec[5:]))
    return WavSource(spec)


class Hal:
    """Virtual handset: source/sink specs, a control stream (file or socket object with fileno).

    ticks_start: what the tick counter reads at `booted` (the time.ticks_ms() when the firmware
    started; default now), in ms, negative counting back from the port's wrap: a test crosses the
    wrap of `time.ticks_ms()` seconds after boot. watchdog_port: a UDP
    port on 127.0.0.1 where `upbx phone` listens for feeds (it kills a phone that stops feeding,
    as a hardware watchdog resets a CPU). faults: fault-injection lines (see `fault`).
    """

    def __init__(self, source=None, sink=None, control=None, out=None, name="phone", ticks_start=None,
                 watchdog_port=None, faults=(), booted=None):
        self._source = open_source(source)
        self._sink = WavSink(sink) if sink else None
        self._control = control if control is not None else sys.stdin
        self._out = out if out is not None else sys.stdout
        self._poll = select.poll()
        self._poll.register(self._control, select.POLLIN)
        self._console = ConsoleLines()
        self.name = name
        self.state = None
        self.caller = None
        self.power_save = True
        self.control_closed = False
        self._offset = 0
        self._last = 0
        if ticks_start is not None:
            period = time.ticks_add(0, -1) + 1
            self._offset = time.ticks_diff(int(ticks_start) % period, time.ticks_ms() if booted is None else booted)
            if self._offset == -(period // 2):
                self._offset += 1  # ticks_add takes less than half a period
        else:
            self.ticks_ms = time.ticks_ms   # the port's own clock, called directly (several times a pass)
        self._last = self.ticks_ms()
        self._mic_at = None       # when the microphone's next 20 ms frame is complete
        self.mic_lost = 0         # frames the microphone lost while the loop was late (_MIC_BACKLOG_MS)
        self._watchdog = None
        self._fed_at = None
        if watchdog_port:
            import socket
            self._watchdog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._watchdog_addr = socket.getaddrinfo("127.0.0.1", int(watchdog_port))[0][-1]
            self._interrupt = select.poll()     # Ctrl-C from `upbx phone`, answering a feed
            self._interrupt.register(self._watchdog, select.POLLIN)
        self._faults = None
        for line in faults:
            self.fault(line)

    # audio: the microphone is a clock too. A frame is ready every 20 ms from mic_start() until
    # mic_stop(), none outside (a frame read in the loop's pass that connects a call, before the
    # Connected event starts the call's timestamps, went out with the last call's timestamp);
    # a loop that falls behind finds at most _MIC_BACKLOG_MS of them (and the current one) queued.
    def mic_start(self):
        self._mic_at = self.ticks_ms()

    def mic_stop(self):
        self._mic_at = None   # wakes nothing: the loop's audio tick is in step with mic_due()

    def mic_due(self):
        return self._mic_at

    def attach(self, poller):
        pass  # keys and console lines are polled once per tick; the microphone is paced (mic_due)

    def read_frame(self, pcm):
        if self._mic_at is None:
            return False
        now = self.ticks_ms()
        late = time.ticks_diff(now, self._mic_at)
        if late < 0:
            return False
        if late > _MIC_BACKLOG_MS:
            skipped = (late - _MIC_BACKLOG_MS) // 20  # 200..219 ms late after this: 11 frames are there
            self._mic_at = time.ticks_add(self._mic_at, 20 * skipped)
            self.mic_lost += skipped
            for _ in range(skipped):  # the samples a DMA queue would have overwritten
                self._read(pcm)
        self._mic_at = time.ticks_add(self._mic_at, 20)
        return self._read(pcm)

    def _read(self, pcm):
        if self._source is None:
            dsp.fill(pcm, 0, 160, 0)
            return True
        return self._source.read_into(pcm)

    def write_frame(self, pcm):
        if self._sink is not None:
            self._sink.write(pcm)

    def speaker_start(self):
        pass  # a file has no underrun to guard against

    def speaker_frames(self):
        """Frames written to the speaker so far."""
        return self._sink.bytes // FRAME_BYTES if self._sink is not None else 0

    # keys and control commands
    def poll_keys(self):
        console = self._console
        if not console.pending and not self.control_closed:
            for _ in self._poll.ipoll(0):   # ipoll: no result list per call
                self._read_control()
                break
        while console.pending and console.pending[0].startswith("!fault "):
            self.fault(console.next()[7:])
        return console.next()

    def _read_control(self):
        c = self._control
        # a socket gives what it has; a stream is read a line at a time (poll said one is there)
        chunk = c.recv(256) if hasattr(c, "recv") else c.readline()
        if not chunk:
            self.control_closed = True
            self._poll.unregister(self._control)
            chunk = b"\n"
        self._console.feed(chunk)

    # console, display, network
    def log(self, level, tag, msg):
        self._out.write("%s %s %s\n" % (level, tag, msg))
        if hasattr(self._out, "flush"):
            self._out.flush()

    def display(self, state, caller=None):
        # a log line costs nothing: shown at once, so a test sees every state (refresh() is a no-op)
        if state != self.state or caller != self.caller:
            self.state, self.caller = state, caller
            self.log("I", "display", "%s %s" % (state, caller or ""))

    def refresh(self):
        pass

    def set_power_save(self, flag):
        if bool(flag) != self.power_save:
            self.log("I", "wifi", "power save %s" % ("on" if flag else "off"))
        self.power_save = bool(flag)

    def network_up(self):
        return True

    # fault injection (docs/handset.md, Survival): the console line "!fault ..." or config "faults";
    # its code (firmware/hal/faults.py) is only loaded when a fault is asked for
    def fault(self, line):
        if self._faults is None:
            from firmware.hal.faults import Faults
            self._faults = Faults(self.log)
        self._faults.arm(line)

    def getaddrinfo(self, host, port):
        if self._faults is not None:
            self._faults.inject("getaddrinfo")
        import socket
        return socket.getaddrinfo(host, port)[0][-1]

    def sendto(self, sock, data, addr):
        if self._faults is not None:
            self._faults.inject("sendto")
        return sock.sendto(data, addr)

    # watchdog: the feeds go to `upbx phone`, at most every 250 ms (a device's WDT.feed() is free)
    def feed(self):
        if self._faults is not None:
            self._faults.fed()
        if self._watchdog is None:
            return
        now = time.ticks_ms()
        if self._fed_at is None or time.ticks_diff(now, self._fed_at) >= 250:
            self._fed_at = now
            try:
                self._watchdog.sendto(b"feed", self._watchdog_addr)
            except OSError:
                pass  # the supervisor is gone: nothing to tell
            for _ in self._interrupt.ipoll(0):
                try:
                    interrupted = self._watchdog.recv(16) == b"\x03"
                except OSError:
                    interrupted = False   # the supervisor is gone (its port answered with ICMP)
                if interrupted:
                    raise KeyboardInterrupt

    def park_watchdog(self):
        if self._watchdog is not None:
            self._watchdog.sendto(b"park", self._watchdog_addr)

    def reset(self, why):
        """The process ends as a device resets: status 1 after a crash, 3 for "!reset" (`upbx phone
        --restart` starts it again with the same flash)."""
        sys.exit(1 if why == "crash" else 3)

    def ticks_ms(self):
        now = time.ticks_add(time.ticks_ms(), self._offset)
        if now < self._last:  # only at the wrap: ticks_ms never goes back otherwise
            self.log("I", "clock", "wrapped at speaker frame %d" % self.speaker_frames())
        self._last = now
        return now

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def close(self):
        if self._source is not None:
            self._source.close()
        if self._sink is not None:
            self._sink.close()
