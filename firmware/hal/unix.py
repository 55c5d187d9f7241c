"""The unix-port HAL: a virtual handset for demos and end-to-end tests.

Audio in is a WAV file (16-bit mono 8 kHz) or "tone:HZ"; audio out is a WAV
file whose header is patched on close (or None to discard). Keys come from a
control channel: lines on stdin or on a unix-domain/TCP socket the caller
passes in, read without blocking through select.poll. It runs on the
MicroPython unix port (time.ticks_ms). Logs go to stdout as
"I tag message" lines.
"""
import select
import sys
import time

from firmware.audio import dsp, tones

FRAME_BYTES = 320


def parse_wav_header(f):
    """Read a RIFF/WAVE header from file f; returns the data length in bytes; ValueError says what is wrong."""
    riff = f.read(12)
    if len(riff) < 12 or riff[0:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt_ok = False
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("WAV: no data chunk")
        size = head[4] | head[5] << 8 | head[6] << 16 | head[7] << 24
        if head[0:4] == b"fmt ":
            fmt = f.read(size)
            channels = fmt[2] | fmt[3] << 8
            rate = fmt[4] | fmt[5] << 8 | fmt[6] << 16 | fmt[7] << 24
            bits = fmt[14] | fmt[15] << 8
            if (fmt[0] | fmt[1] << 8) != 1 or channels != 1 or rate != 8000 or bits != 16:
                raise ValueError("WAV: need PCM 16-bit mono 8000 Hz, got format %d, %d ch, %d Hz, %d bit"
                                 % (fmt[0] | fmt[1] << 8, channels, rate, bits))
            fmt_ok = True
        elif head[0:4] == b"data":
            if not fmt_ok:
                raise ValueError("WAV: data chunk before fmt chunk")
            return size
        else:
            f.read(size + (size & 1))


def wav_header(data_bytes):
    """44-byte header of a 16-bit mono 8 kHz PCM WAV file."""
    def le(v, n):
        return bytes((v >> (8 * i)) & 0xFF for i in range(n))
    return (b"RIFF" + le(36 + data_bytes, 4) + b"WAVEfmt " + le(16, 4) + le(1, 2) + le(1, 2)
            + le(8000, 4) + le(16000, 4) + le(2, 2) + le(16, 2) + b"data" + le(data_bytes, 4))


class WavSource:
    """Frames from a WAV file; silence after its end (or from the start again with loop=True)."""

    def __init__(self, path, loop=False):
        self._f = open(path, "rb")
        self._left = self._size = parse_wav_header(self._f)
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
        self._f.write(wav_header(0))
        self.bytes = 0

    def write(self, pcm):
        self._f.write(pcm)
        self.bytes += len(pcm)

    def close(self):
        if self._f is None:
            return
        self._f.seek(0)
        self._f.write(wav_header(self.bytes))
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
    """Virtual handset: source/sink specs, a control stream (file or socket object with fileno)."""

    def __init__(self, source=None, sink=None, control=None, out=None, name="phone"):
        self._source = open_source(source)
        self._sink = WavSink(sink) if sink else None
        self._control = control if control is not None else sys.stdin
        self._out = out if out is not None else sys.stdout
        self._poll = select.poll()
        self._poll.register(self._control, select.POLLIN)
        self._line = b""
        self._pending = []
        self.name = name
        self.state = None
        self.caller = None
        self.power_save = True
        self.control_closed = False

    # audio
    def read_frame(self, pcm):
        if self._source is None:
            dsp.fill(pcm, 0, 160, 0)
            return True
        return self._source.read_into(pcm)

    def write_frame(self, pcm):
        if self._sink is not None:
            self._sink.write(pcm)

    # keys and control commands
    def poll_keys(self):
        if not self._pending and not self.control_closed:
            for _ in self._poll.poll(0):
                self._read_control()
        return self._pending.pop(0) if self._pending else None

    def _read_control(self):
        c = self._control
        # a socket gives what it has; a stream is read a line at a time (poll said one is there)
        chunk = c.recv(256) if hasattr(c, "recv") else c.readline()
        if isinstance(chunk, str):
            chunk = chunk.encode()
        if not chunk:
            self.control_closed = True
            self._poll.unregister(self._control)
            chunk = b"\n"
        self._line += chunk
        while b"\n" in self._line:
            line, self._line = self._line.split(b"\n", 1)
            text = line.decode().strip()
            if not text:
                continue
            if text[0] == "!":
                self._pending.append(text)
            else:
                for key in text:  # plain digits are key presses
                    if key in "0123456789*#ABCD":
                        self._pending.append(key)

    # console, display, network
    def log(self, level, tag, msg):
        self._out.write("%s %s %s\n" % (level, tag, msg))
        if hasattr(self._out, "flush"):
            self._out.flush()

    def display(self, state, caller=None):
        if state != self.state or caller != self.caller:
            self.state, self.caller = state, caller
            self.log("I", "display", "%s %s" % (state, caller or ""))

    def set_power_save(self, flag):
        if bool(flag) != self.power_save:
            self.log("I", "wifi", "power save %s" % ("on" if flag else "off"))
        self.power_save = bool(flag)

    def network_up(self):
        return True

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def close(self):
        if self._source is not None:
            self._source.close()
        if self._sink is not None:
            self._sink.close()
