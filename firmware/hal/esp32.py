"""The ESP32 HAL: I2S microphone and speaker, keypad and buttons, Wi-Fi, watchdog, console,
optional SSD1306 and ES8388.

Everything is driven by the board dict (boards/NAME.json). UNVERIFIED ON HARDWARE: this module
runs here only against stand-ins for machine/network/ssd1306 under the unix port
(tests/test_firmware_hal.py) and is compiled with mpy-cross -march=xtensawin; see
docs/firmware-audio.md and docs/handset.md for what has and has not been checked.

Full-duplex boards (INMP441 + MAX98357A) use two I2S buses: I2S(id) RX with 32-bit slots for
the mic (top 16 bits kept by the re-blocker) and I2S(id) TX 16-bit for the speaker. Half-duplex
boards (ES8388 codec) share one bus: the HAL opens it as RX while the push-to-talk key is held
and as TX otherwise.

Audio timing (docs/firmware-audio.md): DMA buffers sized for latency (microphone 4 KB = two
32 ms buffers, speaker 2 KB mono / 4 KB stereo = four); the microphone is read without
blocking (the I2S object in its asyncio mode) and never more than a frame's worth at a time;
while a call is up it is registered in the loop's poller, so the loop wakes when its DMA has
audio; what it queued before a call is drained at call start; the speaker gets two frames of
silence (40 ms) before the first frame whenever it starts again, so a late loop does not click.

The CPU runs at 240 MHz (machine.freq at start-up): stock MicroPython boots an ESP32 at 160 MHz
(ESP-IDF's default), and the handset's CPU budget per 20 ms tick is reckoned at 240
(docs/benchmarks.md).
"""
import select
import sys
import time

import machine
import network

from firmware.audio import dsp, reblock
from firmware.hal import rarely
from firmware.hal.console import ConsoleLines

FRAME_BYTES = 320
_MIC_IBUF = 4096             # RX DMA frames are always 32-bit stereo (8 bytes): 2 x 256 frames = 64 ms
_SPEAKER_IBUF = 2048         # TX 16-bit mono: 4 x 256 frames (2 bytes) = 4 x 32 ms; stereo needs twice
_SPEAKER_PRIME_FRAMES = 2    # silence ahead of the first frame: the cushion a late loop eats into
_SETTLE_MS = 500             # the INMP441 outputs zeros for about 0.5 s after its clock starts
_DEBOUNCE_MS = 30
_WATCHDOG_PARKED_MS = 3600000  # Ctrl-C: the REPL is wanted; an hour before the WDT (which cannot be stopped) fires
_CONSOLE_CHARS = 64          # console bytes taken per poll_keys(): typing never stalls the loop
_CPU_HZ = 240000000          # the ESP32's and ESP32-S3's fastest clock
_REJOIN_MS = 5000
_STAT_GOT_IP = getattr(network, "STAT_GOT_IP", 1010)
_STAT_IDLE = getattr(network, "STAT_IDLE", 1000)
_STAT_CONNECTING = getattr(network, "STAT_CONNECTING", 1001)
# status() while not connected (ports/esp32/network_wlan.c, v1.28): a disconnect reason code while
# MicroPython reconnects by itself, STAT_CONNECTING, or STAT_IDLE when nothing asked to connect
_WIFI_REASONS = {200: "beacon timeout", 201: "no AP found", 202: "wrong password", 203: "association failed",
                 204: "handshake timeout"}


def _i2s(cfg, mode, bits, ibuf):
    fmt = machine.I2S.STEREO if cfg.get("format") == "stereo" else machine.I2S.MONO
    return machine.I2S(cfg["id"], sck=machine.Pin(cfg["sck"]), ws=machine.Pin(cfg["ws"]),
                       sd=machine.Pin(cfg["sd"]), mode=mode, bits=bits, format=fmt,
                       rate=cfg.get("rate", 8000), ibuf=cfg.get("ibuf", ibuf))


def _nonblocking(dev):
    """Put an I2S object in its asyncio mode: readinto() then returns what the DMA holds at once
    (extmod/machine_i2s.c: the first MP_STREAM_POLL ioctl switches io_mode to ASYNCIO)."""
    poller = select.poll()
    poller.register(dev, select.POLLIN)
    poller.poll(0)
    poller.unregister(dev)
    return dev


class Keypad:
    """A row/column matrix: rows open-drain, pulled low one at a time; columns read with pull-ups.

    Open-drain: a row not being scanned floats instead of driving high, so two keys held in one
    column join a low row to a floating one, never a low output to a high one. Between scans every
    row rests low, so one read of the columns tells whether any key is down: the loop polls once a
    tick, and with no key down (nearly always) that costs 4 pin reads instead of the 24 pin calls
    of a full scan (bytecode on the device; docs/benchmarks.md)."""

    def __init__(self, cfg):
        self._rows = [machine.Pin(p, machine.Pin.OPEN_DRAIN, value=1) for p in cfg["rows"]]
        self._cols = [machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_UP) for p in cfg["cols"]]
        self._keys = cfg["keys"]
        self._seen = None      # key read at the last scan
        self._since = 0
        self._reported = None
        self._rest(0)

    def _rest(self, level):
        for row in self._rows:
            row.value(level)

    def _scan(self):
        for col in self._cols:
            if not col.value():
                break
        else:
            return None   # no column pulled low through a key: nothing is down
        self._rest(1)
        key = None
        for r in range(len(self._rows)):
            self._rows[r].value(0)
            for c in range(len(self._cols)):
                if not self._cols[c].value():
                    key = self._keys[r][c]
                    break
            self._rows[r].value(1)
            if key is not None:
                break
        self._rest(0)
        return key

    def poll(self, now):
        """A key once when it has been stable down for the debounce time."""
        key = self._scan()
        if key != self._seen:
            self._seen, self._since = key, now
            return None
        if time.ticks_diff(now, self._since) < _DEBOUNCE_MS:
            return None
        if key != self._reported:
            self._reported = key
            return key
        return None


class Button:
    """One board button: its "pull" ("up": the internal pull-up; "none": the board's resistor) and
    polarity ("active_low", default true) honoured; "!button NAME" once per debounced press."""

    def __init__(self, cfg):
        pull = machine.Pin.PULL_UP if cfg.get("pull") == "up" else None
        self.name = cfg["name"]
        self._pin = machine.Pin(cfg["pin"], machine.Pin.IN, pull)
        self._down_level = 0 if cfg.get("active_low", True) else 1
        self._seen = False
        self._since = 0
        self._reported = False

    def held(self):
        return self._pin.value() == self._down_level

    def poll(self, now):
        down = self.held()
        if down != self._seen:
            self._seen, self._since = down, now
            return None
        if down == self._reported or time.ticks_diff(now, self._since) < _DEBOUNCE_MS:
            return None
        self._reported = down
        return "!button " + self.name if down else None


class Hal:
    """The handset HAL for a board dict (see firmware/hal/__init__.py for the interface)."""

    def __init__(self, board, wifi=None, watchdog_ms=10000):
        # the watchdog first: a board that hangs while starting its devices is reset too
        self._wdt = machine.WDT(timeout=watchdog_ms)
        self.feed = self._wdt.feed     # called on every audio pass of the loop: the C method itself
        self.ticks_ms = time.ticks_ms
        machine.freq(_CPU_HZ)
        self.board = board
        self.full_duplex = board.get("full_duplex", True)
        mic = board["i2s_mic"]
        self._mic_cfg = mic
        self._spk_cfg = board["i2s_speaker"]
        self._mic_bits = mic.get("bits", 32)
        slot = 4 if self._mic_bits == 32 else 2
        if mic.get("format") == "stereo":
            slot *= 2  # keep the left sample of each pair: handled by reading 32-bit frames
        self._slot = slot
        self._chunk = bytearray(160 * slot)   # one frame's worth: no read asks the driver for more
        # read_frame() never asks the driver for more than the frame still needs, so the ring holds
        # at most one frame: two frames' room (640 bytes, not the 2 KB of 1024 samples of a heap)
        self._mic_ring = reblock.Reblocker(slot_bytes=4 if slot >= 4 else 2, capacity=320)
        self._settles = slot == 4 and self.full_duplex   # an INMP441
        self._rx_started = 0
        self._rx = None
        self._poller = None    # the loop's poller (attach()): the microphone wakes it during calls
        self._in_call = False
        self._tx = None
        self._ptt = None
        self._talking = False
        self._codec_ok = None
        if "codec" in board:
            self._codec_ok = self._init_codec(board["codec"])
        pa = board.get("pa_enable")
        if pa:
            self._pa = machine.Pin(pa["pin"], machine.Pin.OUT, value=1 if pa.get("active_high", True) else 0)
        self._stereo_out = self._spk_cfg.get("format") == "stereo"
        self._speaker_ibuf = _SPEAKER_IBUF * (2 if self._stereo_out else 1)
        self._out2 = bytearray(2 * FRAME_BYTES) if self._stereo_out else None
        self._silence = bytearray(2 * FRAME_BYTES if self._stereo_out else FRAME_BYTES)
        self._buttons = [Button(k) for k in board.get("keys", ()) if k.get("kind") == "button"]
        if self.full_duplex:
            self._open_rx()
            self._tx = _i2s(self._spk_cfg, machine.I2S.TX, 16, self._speaker_ibuf)
        else:
            self._tx = _i2s(self._spk_cfg, machine.I2S.TX, 16, self._speaker_ibuf)
            for b in self._buttons:
                if b.name == board.get("ptt_key"):
                    self._ptt = b
        self._keypad = Keypad(board["keypad"]) if "keypad" in board else None
        self._console = ConsoleLines()
        self._stdin = select.poll()
        self._stdin.register(sys.stdin, select.POLLIN)
        self._oled = self._init_display(board.get("display"))
        self._shown = self._show = None   # (state, caller) on the display / wanted there
        self._wlan = network.WLAN(network.STA_IF)
        self._wlan.active(True)
        self._wifi = wifi      # (ssid, password) or None
        self._joined = False   # connect() was called: from then on MicroPython reconnects by itself
        self._next_join = 0
        self._wifi_status = None

    def _open_rx(self):
        self._rx = _nonblocking(_i2s(self._mic_cfg, machine.I2S.RX, self._mic_bits, _MIC_IBUF))
        self._rx_started = time.ticks_ms()
        self._mic_ring.clear()
        self._wake(True)

    def _wake(self, on):
        """The microphone wakes the loop (its DMA holds audio) while a call is up, and only then:
        outside calls nobody reads it, and a poller would find it ready on every pass."""
        rx, poller = self._rx, self._poller
        if rx is None or poller is None:
            return
        if on and self._in_call:
            poller.register(rx, select.POLLIN)
        else:
            try:
                poller.unregister(rx)
            except (KeyError, OSError):
                pass  # it was not registered

    def attach(self, poller):
        self._poller = poller

    # audio
    def _switch_half_duplex(self):
        held = self._ptt is not None and self._ptt.held()
        if held == self._talking:
            return
        self._talking = held
        if held:
            self._tx.deinit()
            self._tx = None
            self._open_rx()
        else:
            self._wake(False)
            self._rx.deinit()
            self._rx = None
            self._tx = _i2s(self._spk_cfg, machine.I2S.TX, 16, self._speaker_ibuf)
            self.speaker_start()

    def read_frame(self, pcm):
        if not self._in_call:   # stopped: nothing from before mic_start() reaches a call (its first frame
            return False        # would go out before the call's timestamps start, docs/handset.md)
        if not self.full_duplex:
            self._switch_half_duplex()
        rx = self._rx
        if rx is None:
            return False
        ring = self._mic_ring
        have = ring.available()
        if have < 160:
            # asyncio mode: returns at once with what the DMA holds, at most what this frame still needs
            n = rx.readinto(self._chunk, (160 - have) * self._slot)
            if n:
                ring.push(self._chunk, n)
            if ring.available() < 160:
                return False
        ring.pop_frame(pcm)
        if self._settles and time.ticks_diff(time.ticks_ms(), self._rx_started) < _SETTLE_MS:
            dsp.fill(pcm, 0, 160, 0)  # the mic is still settling: send silence
        return True

    def mic_due(self):
        return None  # the DMA completes a 32 ms buffer when it does: the poller wakes the loop then

    def mic_start(self):
        """A call starts: what the microphone DMA queued before it (up to 64 ms) is dropped, and
        from now on the microphone wakes the loop when its DMA holds audio."""
        rx = self._rx
        if rx is not None:
            for _ in range(16):
                if not rx.readinto(self._chunk):
                    break
        self._mic_ring.clear()
        self._in_call = True
        self._wake(True)

    def mic_stop(self):
        self._in_call = False
        self._wake(False)

    def speaker_start(self):
        """The speaker plays again after silence: two frames of silence first, so the frames that
        follow have 40 ms of cushion in the DMA before a late loop tick would let it run dry."""
        if self._tx is not None:
            for _ in range(_SPEAKER_PRIME_FRAMES):
                self._tx.write(self._silence)

    def write_frame(self, pcm):
        if self._tx is None:
            return
        if self._stereo_out:   # codec boards: the frame into both channels (viper: no bytecode loop per sample)
            dsp.mono_to_stereo(self._out2, pcm, 160)
            self._tx.write(self._out2)
        else:
            self._tx.write(pcm)

    # keys and console
    def poll_keys(self):
        """Console lines first (read from stdin without blocking, as the unix HAL does), then the
        keypad, then the buttons."""
        if not self.full_duplex:
            self._switch_half_duplex()  # in and out of calls: the speaker is back when push-to-talk is let go
        console = self._console
        for _ in range(_CONSOLE_CHARS):
            if console.pending or not self._stdin_ready():
                break
            console.feed(sys.stdin.read(1))
        if console.pending:
            return console.next()
        now = time.ticks_ms()
        if self._keypad is not None:
            key = self._keypad.poll(now)
            if key is not None:
                return key
        for button in self._buttons:
            key = button.poll(now)
            if key is not None:
                return key
        return None

    def _stdin_ready(self):
        for _ in self._stdin.ipoll(0):  # ipoll: no result list per call
            return True
        return False

    # console, display, network
    def log(self, level, tag, msg):
        print("%s %s %s" % (level, tag, msg))

    def _init_display(self, cfg):
        if not cfg or cfg.get("type") != "ssd1306":
            return None
        try:
            import ssd1306  # micropython-lib, installed with mip or frozen
            i2c_cfg = cfg["i2c"]
            i2c = machine.I2C(i2c_cfg["id"], scl=machine.Pin(i2c_cfg["scl"]), sda=machine.Pin(i2c_cfg["sda"]),
                              freq=i2c_cfg.get("freq", 400000))
            return ssd1306.SSD1306_I2C(cfg.get("width", 128), cfg.get("height", 64), i2c,
                                       addr=cfg.get("address", 0x3C))
        except Exception as exc:  # an absent display must not stop the phone
            self.log("W", "display", "no SSD1306: %r" % (exc,))
            return None

    def display(self, state, caller=None):
        """Remember what to show: refresh() draws it (1 KB over I2C, ~25 ms: never inside the audio)."""
        self._show = (state, caller)

    def refresh(self):
        o = self._oled
        if o is None or self._show == self._shown:
            return
        self._shown = state, caller = self._show
        o.fill(0)
        o.text("upbx", 0, 0)
        o.text(str(state)[:16], 0, 20)
        if caller:
            o.text(str(caller)[:16], 0, 40)
        o.show()

    def _init_codec(self, cfg):
        """ES8388 register init over I2C; False (and a log line) when the codec does not answer."""
        if cfg.get("type") != "es8388":
            return False
        i2c_cfg = cfg["i2c"]
        try:
            i2c = machine.I2C(i2c_cfg["id"], scl=machine.Pin(i2c_cfg["scl"]), sda=machine.Pin(i2c_cfg["sda"]),
                              freq=i2c_cfg.get("freq", 100000))
            # only codec boards need the register table, once: loaded for this and forgotten again
            rarely("firmware.hal.es8388").init(i2c, cfg.get("address", 0x10))
        except OSError as exc:
            self.log("E", "codec", "ES8388 init failed: %r" % (exc,))
            return False
        if not cfg.get("mclk_available", False):
            self.log("W", "codec", "no MCLK from stock MicroPython: the ES8388 may stay silent")
        return True

    def set_power_save(self, flag):
        self._wlan.config(pm=self._wlan.PM_PERFORMANCE if flag else self._wlan.PM_NONE)

    def network_up(self):
        """Join the configured network once; then watch status() and let MicroPython reconnect.

        After connect(), ports/esp32/network_wlan.c reconnects by itself after every disconnect
        (status() then gives the reason: no AP found, wrong password, beacon timeout ... or
        STAT_CONNECTING); calling connect() again meanwhile raises "Wifi Internal Error". So
        connect() runs again only when status() is STAT_IDLE (nothing is trying: after a
        disconnect()), at most every 5 s. True once there is an address."""
        wlan = self._wlan
        status = wlan.status()
        if status != self._wifi_status:
            self._wifi_status = status
            if status == _STAT_GOT_IP:
                self.log("I", "wifi", "connected")
            elif status == _STAT_CONNECTING:
                self.log("I", "wifi", "connecting")
            elif status != _STAT_IDLE:
                self.log("W", "wifi", "not connected: %s (MicroPython retries)" % _WIFI_REASONS.get(status, status))
        if status == _STAT_GOT_IP or not self._wifi:
            return status == _STAT_GOT_IP
        now = time.ticks_ms()
        if not self._joined or (status == _STAT_IDLE and time.ticks_diff(now, self._next_join) >= 0):
            self._joined = True
            self._next_join = time.ticks_add(now, _REJOIN_MS)
            try:
                wlan.connect(self._wifi[0], self._wifi[1])
            except OSError as exc:
                self.log("W", "wifi", "connect: %r" % (exc,))
        return False

    def getaddrinfo(self, host, port):
        import socket
        return socket.getaddrinfo(host, port)[0][-1]

    def sendto(self, sock, data, addr):
        return sock.sendto(data, addr)

    # watchdog and reset (feed(): the WDT's own, set in __init__ and here)
    def park_watchdog(self):
        """The loop stopped on purpose (Ctrl-C, "!quit"): an ESP32 WDT cannot be stopped, so give it
        an hour (machine.WDT again reconfigures the one task watchdog: ports/esp32/machine_wdt.c)."""
        self._wdt = machine.WDT(timeout=_WATCHDOG_PARKED_MS)
        self.feed = self._wdt.feed
        self.log("W", "watchdog", "parked: the device resets in an hour unless main.py runs again")

    def reset(self, why):
        self.log("W", "phone", "machine.reset() (%s)" % why)
        machine.reset()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def close(self):
        for dev in (self._rx, self._tx):
            if dev is not None:
                dev.deinit()
