"""The ESP32 HAL: I2S microphone and speaker, keypad, Wi-Fi, optional SSD1306 and ES8388.

Everything is driven by the board dict (boards/NAME.json). UNVERIFIED ON
HARDWARE: this module is only compiled here (mpy-cross -march=xtensawin); see
docs/firmware-audio.md for what has and has not been checked.

Full-duplex boards (INMP441 + MAX98357A) use two I2S buses: I2S(id) RX with
32-bit slots for the mic (top 16 bits kept by the re-blocker) and I2S(id) TX
16-bit for the speaker. Half-duplex boards (ES8388 codec) share one bus: the
HAL opens it as RX while the push-to-talk key is held and as TX otherwise.
"""
import time

import machine
import network

from firmware.audio import dsp, reblock

FRAME_BYTES = 320
_DMA_FRAMES = 256            # the driver's DMA buffer at 8 kHz: 32 ms
_SETTLE_SAMPLES = 4000       # the INMP441 outputs zeros for about 0.5 s after its clock starts
_DEBOUNCE_MS = 30

# ES8388 power-up for 16-bit I2S slave mode, ADC from LINPUT1/RINPUT1, DAC to LOUT1/ROUT1.
# After ESP-ADF es8388_init(); register numbers from the ES8388 user guide. Best effort.
_ES8388_INIT = (
    (0x19, 0x04), (0x01, 0x50), (0x02, 0x00), (0x35, 0xA0), (0x37, 0xD0), (0x39, 0xD0),
    (0x08, 0x00),              # slave mode
    (0x04, 0xC0), (0x00, 0x12),
    (0x17, 0x18), (0x18, 0x02),  # DAC: I2S, 16 bit; MCLK/LRCK 256
    (0x26, 0x00), (0x27, 0x90), (0x2A, 0x90), (0x2B, 0x80), (0x2D, 0x00),
    (0x1A, 0x00), (0x1B, 0x00),  # DAC volume 0 dB
    (0x2E, 0x1E), (0x2F, 0x1E), (0x30, 0x1E), (0x31, 0x1E),  # LOUT1/ROUT1/LOUT2/ROUT2 volume
    (0x04, 0x3C),              # DAC power: LOUT1/ROUT1/LOUT2/ROUT2 on
    (0x03, 0xFF), (0x09, 0x88), (0x0A, 0x00), (0x0B, 0x02),
    (0x0C, 0x0C), (0x0D, 0x02),  # ADC: I2S, 16 bit; MCLK/LRCK 256
    (0x10, 0x00), (0x11, 0x00),  # ADC volume 0 dB
    (0x03, 0x09),              # ADC power on
    (0x02, 0xF0), (0x02, 0x00),  # reset the state machines, then start
)


def _i2s(cfg, mode, bits):
    fmt = machine.I2S.STEREO if cfg.get("format") == "stereo" else machine.I2S.MONO
    return machine.I2S(cfg["id"], sck=machine.Pin(cfg["sck"]), ws=machine.Pin(cfg["ws"]),
                       sd=machine.Pin(cfg["sd"]), mode=mode, bits=bits, format=fmt,
                       rate=cfg.get("rate", 8000), ibuf=cfg.get("ibuf", 8192))


class Keypad:
    """A row/column matrix: rows driven low one at a time, columns read with pull-ups."""

    def __init__(self, cfg):
        self._rows = [machine.Pin(p, machine.Pin.OUT, value=1) for p in cfg["rows"]]
        self._cols = [machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_UP) for p in cfg["cols"]]
        self._keys = cfg["keys"]
        self._seen = None      # key read at the last scan
        self._since = 0
        self._reported = None

    def _scan(self):
        for r in range(len(self._rows)):
            self._rows[r].value(0)
            for c in range(len(self._cols)):
                if not self._cols[c].value():
                    self._rows[r].value(1)
                    return self._keys[r][c]
            self._rows[r].value(1)
        return None

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


class Hal:
    """The handset HAL for a board dict (see firmware/hal/__init__.py for the interface)."""

    def __init__(self, board, wifi=None):
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
        # ibuf holds at least 3 DMA buffers so a late tick does not lose audio
        self._chunk = bytearray(_DMA_FRAMES * slot)
        self._mic_ring = reblock.Reblocker(slot_bytes=4 if slot >= 4 else 2, capacity=1024,
                                           settle=_SETTLE_SAMPLES if slot == 4 and self.full_duplex else 0)
        self._rx = None
        self._tx = None
        self._ptt = None
        self._talking = False
        self._codec_ok = None
        if "codec" in board:
            self._codec_ok = self._init_codec(board["codec"])
        pa = board.get("pa_enable")
        if pa:
            self._pa = machine.Pin(pa["pin"], machine.Pin.OUT, value=1 if pa.get("active_high", True) else 0)
        if self.full_duplex:
            self._rx = _i2s(mic, machine.I2S.RX, self._mic_bits)
            self._tx = _i2s(self._spk_cfg, machine.I2S.TX, 16)
        else:
            self._tx = _i2s(self._spk_cfg, machine.I2S.TX, 16)
            self._ptt = self._button(board.get("ptt_key"))
        self._keypad = Keypad(board["keypad"]) if "keypad" in board else None
        self._buttons = [(k["name"], machine.Pin(k["pin"], machine.Pin.IN))
                         for k in board.get("keys", ()) if k.get("kind") == "button"]
        self._button_state = {}
        self._poller = None
        self._oled = self._init_display(board.get("display"))
        self._wlan = network.WLAN(network.STA_IF)
        self._wlan.active(True)
        self._wifi = wifi      # (ssid, password) or None
        self._next_join = 0
        self._stereo_out = self._spk_cfg.get("format") == "stereo"
        self._out2 = bytearray(2 * FRAME_BYTES) if self._stereo_out else None

    def _button(self, name):
        for k in self.board.get("keys", ()):
            if k["name"] == name:
                return machine.Pin(k["pin"], machine.Pin.IN)
        return None

    # audio
    def _switch_half_duplex(self):
        held = self._ptt is not None and self._ptt.value() == 0
        if held == self._talking:
            return
        self._talking = held
        if held:
            self._tx.deinit()
            self._tx = None
            self._rx = _i2s(self._mic_cfg, machine.I2S.RX, self._mic_bits)
        else:
            self._rx.deinit()
            self._rx = None
            self._tx = _i2s(self._spk_cfg, machine.I2S.TX, 16)

    def read_frame(self, pcm):
        if not self.full_duplex:
            self._switch_half_duplex()
        if self._rx is None:
            return False
        if self._mic_ring.available() < 160:
            n = self._rx.readinto(self._chunk)  # blocks at most one DMA buffer (32 ms)
            self._mic_ring.push(self._chunk, n)
        if not self._mic_ring.pop_frame(pcm):
            dsp.fill(pcm, 0, 160, 0)  # the mic is still settling: send silence
        return True

    def write_frame(self, pcm):
        if self._tx is None:
            return
        if self._stereo_out:
            out = self._out2
            for i in range(160):  # duplicate into both channels (codec boards)
                out[4 * i] = out[4 * i + 2] = pcm[2 * i]
                out[4 * i + 1] = out[4 * i + 3] = pcm[2 * i + 1]
            self._tx.write(out)
        else:
            self._tx.write(pcm)

    # keys
    def poll_keys(self):
        now = time.ticks_ms()
        if self._keypad is not None:
            key = self._keypad.poll(now)
            if key is not None:
                return key
        for name, pin in self._buttons:
            down = pin.value() == 0
            if down != self._button_state.get(name, False):
                self._button_state[name] = down
                if down:
                    return "!" + name
        return None

    # console, display, network
    def log(self, level, tag, msg):
        print("%s %s %s" % (level, tag, msg))

    def _init_display(self, cfg):
        if not cfg or cfg.get("type") != "ssd1306":
            return None
        try:
            import ssd1306  # micropython-lib, installed with mip
            i2c_cfg = cfg["i2c"]
            i2c = machine.I2C(i2c_cfg["id"], scl=machine.Pin(i2c_cfg["scl"]), sda=machine.Pin(i2c_cfg["sda"]),
                              freq=i2c_cfg.get("freq", 400000))
            return ssd1306.SSD1306_I2C(cfg.get("width", 128), cfg.get("height", 64), i2c,
                                       addr=cfg.get("address", 0x3C))
        except Exception as exc:  # an absent display must not stop the phone
            self.log("W", "display", "no SSD1306: %r" % (exc,))
            return None

    def display(self, state, caller=None):
        if self._oled is None:
            return
        o = self._oled
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
            addr = cfg.get("address", 0x10)
            buf = bytearray(1)
            for reg, value in _ES8388_INIT:
                buf[0] = value
                i2c.writeto_mem(addr, reg, buf)
        except OSError as exc:
            self.log("E", "codec", "ES8388 init failed: %r" % (exc,))
            return False
        if not cfg.get("mclk_available", False):
            self.log("W", "codec", "no MCLK from stock MicroPython: the ES8388 may stay silent")
        return True

    def set_power_save(self, flag):
        self._wlan.config(pm=self._wlan.PM_PERFORMANCE if flag else self._wlan.PM_NONE)

    def network_up(self):
        """Join (or rejoin, at most every 5 s) the configured network; True once connected."""
        if self._wlan.isconnected():
            return True
        now = time.ticks_ms()
        if self._wifi and time.ticks_diff(now, self._next_join) >= 0:
            self._next_join = time.ticks_add(now, 5000)
            try:
                self._wlan.connect(self._wifi[0], self._wifi[1])
            except OSError as exc:
                self.log("W", "wifi", "connect: %r" % (exc,))
        return False

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def close(self):
        for dev in (self._rx, self._tx):
            if dev is not None:
                dev.deinit()
