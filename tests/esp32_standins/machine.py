"""Stand-in for the ESP32's `machine` module, for firmware/hal/esp32.py under the unix port.

Nothing here is hardware: it records what the HAL asks for in TRACE (tuples, oldest first) and
models just enough of the devices for tests/test_firmware_hal.py to check the HAL's behaviour:

- I2S: the DMA buffer count machine_i2s.c derives from ibuf (RX frames are always 32-bit stereo);
  a receive DMA that completes a 256-frame (32 ms) buffer every 32 ms from its start and keeps at
  most its buffer count of them (older audio is overwritten); readinto() that blocks in blocking
  mode (recorded) and returns what is there in asyncio mode, which the first MP_STREAM_POLL ioctl
  selects (extmod/machine_i2s.c; later polls are recorded); write() recorded (length, all zeros
  or not).
- Pin: modes, pulls and levels; a keypad matrix (KEYS_DOWN: (row pin, column pin) pairs held) in
  which a column reads low through a held key from a row pulled low, and two push-pull rows at
  different levels joined by held keys in one column are recorded as a short; buttons
  (BUTTONS_DOWN: pins held to ground) and inputs with neither an internal nor a board pull-up
  (BOARD_PULLUPS) read low, as a floating input may.
- WDT, reset(), I2C, freq(): recorded.
"""
import io
import json
import sys
import time

TRACE = []
KEYS_DOWN = set()       # (row pin, column pin)
BUTTONS_DOWN = set()    # pins held to ground
BOARD_PULLUPS = set()   # pins with a resistor on the board
_PINS = {}


def note(*event):
    TRACE.append(event)


def dump(path):
    with open(path, "w") as f:
        for event in TRACE:
            f.write(json.dumps(list(event)))
            f.write("\n")


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.level = 1 if value is None else value
        _PINS[id] = self
        if mode != -1:
            note("pin", id, mode, pull, value)

    def _driving(self):
        """The level this pin forces on its wire, or None (an input, or open drain released)."""
        if self.mode == Pin.OUT:
            return self.level
        if self.mode == Pin.OPEN_DRAIN and self.level == 0:
            return 0
        return None

    def value(self, v=None):
        if v is not None:
            self.level = v
            self._check_shorts()
            return None
        if self.mode in (Pin.OUT, Pin.OPEN_DRAIN):
            return self.level
        if self.id in BUTTONS_DOWN:
            return 0
        for row, col in KEYS_DOWN:
            if col == self.id and row in _PINS and _PINS[row]._driving() == 0:
                return 0
        if self.pull == Pin.PULL_UP or self.id in BOARD_PULLUPS:
            return 1
        return 0  # floating

    def _check_shorts(self):
        columns = {}
        for row, col in KEYS_DOWN:
            pin = _PINS.get(row)
            if pin is not None and pin._driving() is not None:
                columns.setdefault(col, set()).add((row, pin._driving()))
        for col, rows in columns.items():
            if len(set(level for _row, level in rows)) > 1:
                note("short", col, sorted(row for row, _level in rows))


class I2S(io.IOBase):
    RX = 0
    TX = 1
    MONO = 0
    STEREO = 1

    def __init__(self, id, sck=None, ws=None, sd=None, mode=0, bits=16, format=0, rate=8000, ibuf=20000):
        self.id = id
        self.mode = mode
        self.bits = bits
        self.sample_bytes = (bits // 8) * (2 if format == I2S.STEREO else 1)
        dma_frame = 8 if mode == I2S.RX else self.sample_bytes
        self.buffers = max(ibuf // (256 * dma_frame), 2)   # get_dma_buf_count()
        self.asyncio = False
        self.started = time.ticks_ms()
        self.taken = 0      # frames read so far (RX)
        note("i2s", id, "rx" if mode == I2S.RX else "tx", bits, format, ibuf, self.buffers)

    def _available(self):
        """Frames the RX DMA holds now; audio older than its buffers is overwritten."""
        done = 256 * (time.ticks_diff(time.ticks_ms(), self.started) // 32)
        if done - self.taken > 256 * self.buffers:
            self.taken = done - 256 * self.buffers
        return done - self.taken

    def ioctl(self, request, arg):
        if request == 10:  # MP_STREAM_GET_FILENO (the unix port's select asks first): no file here
            return -1
        if request == 3:  # MP_STREAM_POLL: machine_i2s.c switches to asyncio mode
            if not self.asyncio:
                note("asyncio", self.id)
            else:
                note("poll", self.id)   # a poller asked (the loop's, when the HAL registered it)
            self.asyncio = True
            return arg & 1 if self.mode == I2S.RX and self._available() else arg & 4
        return 0

    def readinto(self, buf, n=None):
        want = len(buf) if n is None else min(n, len(buf))
        frames = want // self.sample_bytes
        have = self._available()
        if frames > have and not self.asyncio:
            start = time.ticks_ms()
            while self._available() < frames:
                time.sleep_ms(1)
            note("blocked", self.id, time.ticks_diff(time.ticks_ms(), start))
            have = frames
        got = frames if frames <= have else have
        for i in range(got * self.sample_bytes):
            buf[i] = (self.taken + i // self.sample_bytes) & 0x7F | 0x01  # never silence
        self.taken += got
        note("read", self.id, want, got * self.sample_bytes, self.asyncio)
        return got * self.sample_bytes

    def write(self, buf):
        zeros = True
        for b in buf:
            if b:
                zeros = False
                break
        note("write", self.id, len(buf), zeros)
        return len(buf)

    def deinit(self):
        note("deinit", self.id)


class WDT:
    def __init__(self, id=0, timeout=5000):
        note("wdt", timeout)

    def feed(self):
        note("feed")


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000):
        note("i2c", id)

    def writeto_mem(self, addr, reg, buf):
        note("i2c_write", addr, reg)


_FREQ = [160000000]   # stock MicroPython boots an ESP32 at 160 MHz (ESP-IDF's default)


def freq(hz=None):
    """machine.freq(): the CPU clock; setting it is recorded."""
    if hz is None:
        return _FREQ[0]
    if hz not in (80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _FREQ[0] = hz
    note("freq", hz)


def reset():
    note("reset")
    raise SystemExit(5)
