"""The handset's per-frame audio path; every buffer is allocated once, here.

    mic frame (PCM) --encode()--> tx payload (G.711)          the caller frames and sends it
    rx payload --receive()--> JitterBuffer
    20 ms tick --playout()--> JitterBuffer.get --> decode | conceal --> speaker frame (PCM)
                              (a lost frame whose successor is buffered is bridged into it:
                               JitterBuffer.peek, Concealer.lost(out, ahead))
                              (a local tone, when one is playing, replaces the far end)
"""
from common import g711
from common.compat import const, micropython
from firmware.audio import jitter, plc, tones

FRAME_SAMPLES = const(160)
FRAME_BYTES = const(320)     # PCM
_PAYLOAD_BYTES = const(160)   # G.711


class AudioPipeline:
    """Encode, buffer, decode and conceal 20 ms G.711 frames (codec "ulaw" or "alaw")."""

    def __init__(self, codec="ulaw", plc_enabled=True, ts_per_frame=160, slots=16,
                 initial_delay_ms=40):
        if codec == "ulaw":
            self._encode_into, self._decode_into = g711.ulaw_encode_into, g711.ulaw_decode_into
        elif codec == "alaw":
            self._encode_into, self._decode_into = g711.alaw_encode_into, g711.alaw_decode_into
        else:
            raise ValueError("codec must be 'ulaw' or 'alaw', not %r" % (codec,))
        self.codec = codec
        self.tx_payload = bytearray(_PAYLOAD_BYTES)
        self.speaker = bytearray(FRAME_BYTES)
        self._decoded = bytearray(FRAME_BYTES)
        self.jitter = jitter.JitterBuffer(_PAYLOAD_BYTES, 20, ts_per_frame, slots, initial_delay_ms)
        self.concealer = plc.Concealer(plc_enabled)
        self.tone = tones.ToneGenerator()
        self.tx_ts = 0           # 16-bit timestamp of the next frame encode() produces
        self._ts_step = ts_per_frame
        self.last_status = jitter.EMPTY
        self.bridge = True       # two-sided concealment when the next frame is buffered

    @micropython.native
    def encode(self, pcm):
        """G.711 of one 320-byte PCM frame into tx_payload; returns its timestamp and advances it."""
        self._encode_into(pcm, self.tx_payload)
        ts = self.tx_ts
        self.tx_ts = (ts + self._ts_step) & 0xFFFF
        return ts

    @micropython.native
    def receive(self, ts16, payload, now_ms):
        """A received media payload into the jitter buffer; returns the JitterBuffer.put result."""
        return self.jitter.put(ts16, payload, now_ms)

    @micropython.native
    def playout(self, now_ms):
        """Call once per 20 ms tick: returns the speaker frame (320 bytes of PCM)."""
        status, payload = self.jitter.get(now_ms)
        self.last_status = status
        out = self.speaker
        if status == jitter.FRAME:
            self._decode_into(payload, self._decoded)
            self.concealer.good(self._decoded, out)
        elif status == jitter.MISSING:
            ahead = self.jitter.peek() if self.concealer.enabled and self.bridge else None
            if ahead is not None:
                self._decode_into(ahead, self._decoded)  # decoded again when it plays
                self.concealer.lost(out, self._decoded)
            else:
                self.concealer.lost(out)
        else:
            self.tone.fill(out)  # silence unless a tone plays
            return out
        if self.tone.name is not None:
            self.tone.fill(out)
        return out

    def reset(self):
        """Start a new call: empty jitter buffer, fresh concealment history."""
        self.jitter.reset()
        self.concealer.reset()
        self.tone.stop()
