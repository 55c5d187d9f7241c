"""RTP for SIP calls: the media end of one SIP call at a host (SipMedia), and the glue that makes it
a upbx call leg's media (SipMediaLeg). Both sans-IO: datagrams and time in, datagrams out.

SipMedia speaks RTP (RFC 3550) with one SIP phone in one codec (PCMU or PCMA, 20 ms packets):
- out: sequence numbers from a random start, one per packet; timestamps in samples from a random
  base (8 per ms of the upbx media timestamp it is given); a random SSRC; the marker bit on the
  first packet and on the first after a pause in sending (hold);
- symmetric RTP: the first valid RTP packet latches its source address, and from then on packets
  go there, whatever the SDP said (a phone behind NAT announces its private address); packets from
  any other address are dropped and counted, so a forger cannot take the call's audio;
- in: a packet is checked (version, header length, CSRCs, extension, padding, payload type of the
  codec or telephone-event, sequence) before anything is kept; duplicates and late packets are
  dropped and counted; audio of any packet size is re-blocked into 20 ms frames (160 bytes) on a
  millisecond timeline that only moves forward (a new SSRC or a jump re-anchors it);
- DTMF (RFC 4733): an event is reported once, at its first packet (start, update or end; key:
  its timestamp), whichever of them arrives; a digit sent goes out as a start packet (marker),
  updates every 20 ms for DTMF_MS and three end packets 20 ms apart (end-of-event redundancy),
  with the sender's audio held back meanwhile, as RFC 4733 2.5.1 asks.

Errors are counted in `drops` by reason, never raised: no RTP input raises.
"""
import os
import random
import struct

from upbx.common import wire
from upbx.common.g711 import alaw_encode, ulaw_encode
from upbx.host.codec import ALAW_TO_ULAW, ULAW_TO_ALAW
from upbx.host.sip.sdp import CODECS, DIRECTIONS, receives, sends

RATE_PER_MS = 8                 # 8000 Hz
FRAME = wire.VOICE_BYTES        # 160 samples: 20 ms
DTMF_MS = 100                   # a digit's tone length
DTMF_END_COPIES = 3
DTMF_VOLUME = 10                # -10 dBm0
DIGITS = "0123456789*#ABCD"     # RFC 4733 events 0..15
MAX_DROPOUT = 3000              # sequence numbers ahead that still count as the same stream (RFC 3550 A.1)
MAX_MISORDER = 100
_HEADER = struct.Struct("!BBHII")


class SipMedia:
    """RTP with one SIP phone: SipMedia(codec, remote_address, dtmf_pt); see the module's docstring.

    codec: "PCMU" or "PCMA"; remote_address: (host, port) from the phone's SDP (where to send until
    a packet latches the real one); dtmf_pt: the telephone-event payload type of the SDP, or None
    (no DTMF either way). counters and drops say what happened."""

    def __init__(self, codec, remote_address, dtmf_pt, seed=None):
        if codec not in CODECS:
            raise ValueError("codec %r: not PCMU or PCMA" % (codec,))
        rng = random.Random(seed if seed is not None else os.urandom(8))
        self.codec = codec
        self.pt = CODECS[codec]
        self.dtmf_pt = dtmf_pt
        self.remote = tuple(remote_address)
        self.latched = False
        self.direction = "sendrecv"          # ours: what our SDP said last
        self.counters = {}
        self.drops = {}
        # sending
        self.ssrc = rng.getrandbits(32) or 1
        self._seq = rng.getrandbits(16)
        self._ts_base = rng.getrandbits(32)
        self._last_out = None                # samples (relative) of the last packet sent
        self._shift = 0                      # added to given media ms so that RTP time only moves forward
        self._marker = True
        self._dtmf_queue = []                # digits waiting for the current event to end
        self._dtmf_packets = []              # [(due ms, datagram)] of the event being sent
        # receiving
        self._ssrc_in = None
        self._max_seq = None
        self._anchor = None                  # (rtp timestamp, media ms) the receive timeline hangs on
        self._last_ms = -FRAME // RATE_PER_MS
        self._carry = None                   # (bytes, media ms, rtp ts) of less than a frame, kept
        self._event_ts = None                # timestamp of the last DTMF event reported

    def _count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def _drop(self, reason):
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return []

    # receiving

    def rtp_in(self, datagram, source, now):
        """Events of one RTP datagram from source: ("audio", 160 bytes in the phone's codec), ("dtmf", digit)."""
        return [event[:2] for event in self.receive(datagram, source, now)]

    def receive(self, datagram, source, now):
        """rtp_in with each event's media time: [("audio", payload, ms), ("dtmf", digit, ms)]."""
        self._count("rtp in")
        data = bytes(datagram)
        if len(data) < 12:
            return self._drop("rtp too short")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            return self._drop("rtp version")
        pt = b1 & 0x7F
        if 72 <= pt <= 76:                   # RTCP multiplexed on the port (RFC 5761): not ours to read
            return self._drop("rtcp")
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if len(data) < start + 4:
                return self._drop("rtp extension cut short")
            start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
        end = len(data)
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or pad > end - start:
                return self._drop("rtp padding")
            end -= pad
        if start >= end:
            return self._drop("rtp without payload")
        if pt != self.pt and (pt != self.dtmf_pt or self.dtmf_pt is None):
            return self._drop("rtp payload type %d" % pt)
        source = tuple(source[:2])
        if not self.latched:
            self.remote = source             # symmetric RTP: where the phone really is
            self.latched = True
            self._count("latched")
        elif source != self.remote:
            return self._drop("rtp from another address")
        if not self._sequence(seq, ssrc, ts):
            return self._drop("rtp late or duplicate")
        payload = data[start:end]
        if pt == self.pt:
            if not receives(self.direction):
                return self._drop("audio while not receiving")
            return self._audio(payload, ts)
        return self._dtmf(payload, ts)

    def _sequence(self, seq, ssrc, ts):
        """True for a new packet of the stream; a new SSRC or a big jump starts the timeline over."""
        if ssrc != self._ssrc_in or self._max_seq is None:
            if self._ssrc_in is not None:
                self._count("ssrc changes")
            self._ssrc_in = ssrc
            self._max_seq = seq
            self._reanchor(ts)
            return True
        delta = (seq - self._max_seq) & 0xFFFF
        if delta == 0 or delta >= 0x10000 - MAX_MISORDER:
            return False
        if delta >= MAX_DROPOUT:             # the phone restarted its sequence: a new timeline
            self._reanchor(ts)
        self._max_seq = seq
        return True

    def _reanchor(self, ts):
        self._anchor = (ts, self._last_ms + FRAME // RATE_PER_MS)
        self._carry = None

    def _ms(self, ts):
        anchor_ts, anchor_ms = self._anchor
        delta = (ts - anchor_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:              # before the anchor (a phone that set its clock back)
            self._reanchor(ts)
            return self._anchor[1]
        return anchor_ms + delta // RATE_PER_MS

    def _audio(self, payload, ts):
        carry = self._carry
        self._carry = None
        if carry is not None and (carry[2] + len(carry[0])) & 0xFFFFFFFF == ts:
            payload, ms, ts = carry[0] + payload, carry[1], carry[2]    # continues the part kept
        else:
            if carry is not None:
                self._drop("partial frame")
            ms = self._ms(ts)
        events = []
        while len(payload) >= FRAME:
            if ms > self._last_ms:
                events.append(("audio", payload[:FRAME], ms))
                self._last_ms = ms
            else:
                self._drop("rtp time went back")
            payload = payload[FRAME:]
            ms += FRAME // RATE_PER_MS
            ts = (ts + FRAME) & 0xFFFFFFFF
        if payload:                          # less than a frame: kept for the next packet
            self._carry = (payload, ms, ts)
        self._count("frames in", len(events))
        return events

    def _dtmf(self, payload, ts):
        if len(payload) < 4:
            return self._drop("dtmf too short")
        if ts == self._event_ts:
            return []                        # the same event again: an update or its end
        self._event_ts = ts
        if payload[0] >= len(DIGITS):
            return self._drop("dtmf event not a digit")
        self._count("dtmf in")
        return [("dtmf", DIGITS[payload[0]], self._ms(ts))]

    # sending

    def rtp_out(self, payload, now, ms=None):
        """(datagram, address) carrying one frame in the phone's codec, or None when this side sends
        nothing now (hold, or a DTMF event in progress). ms: the frame's media time (the upbx
        timestamp); None: the frame after the last one."""
        if not sends(self.direction):
            self._marker = True
            self._drop("audio while not sending")
            return None
        if self._dtmf_packets:
            self._drop("audio during dtmf")
            return None
        rel = self._next_samples(ms)
        self._last_out = rel + len(payload)
        datagram = self._packet(self.pt, self._marker, rel, payload)
        self._marker = False
        self._count("frames out")
        return datagram, self.remote

    def _next_samples(self, ms):
        last = self._last_out
        if ms is None:
            return last if last is not None else 0
        rel = (ms + self._shift) * RATE_PER_MS
        if last is not None and rel < last:  # behind what was sent (after DTMF, or a sender that went back)
            self._shift += (last - rel + RATE_PER_MS - 1) // RATE_PER_MS
            rel = (ms + self._shift) * RATE_PER_MS
        return rel

    def _packet(self, pt, marker, rel, payload):
        self._seq = (self._seq + 1) & 0xFFFF
        self._count("rtp out")
        header = _HEADER.pack(0x80, pt | (0x80 if marker else 0), self._seq, (self._ts_base + rel) & 0xFFFFFFFF,
                              self.ssrc)
        return header + bytes(payload)

    def dtmf_out(self, digit, now):
        """[(datagram, address)] to send now for digit (0-9 * # A-D): the event's first packet; the
        rest come from handle_timer(). [] when the phone took no telephone-event, or while on hold."""
        if digit not in DIGITS or len(digit) != 1:
            raise ValueError("DTMF digit %r: not one of %s" % (digit, DIGITS))
        if self.dtmf_pt is None or not sends(self.direction):
            self._drop("dtmf not negotiated" if self.dtmf_pt is None else "dtmf while not sending")
            return []
        self._dtmf_queue.append(digit)
        if len(self._dtmf_queue) > 1 or self._dtmf_packets:
            return []
        return self._start_event(now)

    def _start_event(self, now):
        digit = self._dtmf_queue.pop(0)
        rel = self._last_out if self._last_out is not None else 0
        duration = DTMF_MS * RATE_PER_MS
        event = DIGITS.index(digit)
        packets = []
        steps = DTMF_MS // 20
        for i in range(steps + DTMF_END_COPIES):
            end = i >= steps
            length = duration if end else (i + 1) * FRAME
            body = struct.pack("!BBH", event, (0x80 if end else 0) | DTMF_VOLUME, length)
            packets.append((now + 20 * i, i == 0, body))
        self._dtmf_packets = [(due, (marker, rel, body)) for due, marker, body in packets]
        self._last_out = rel + duration       # audio after the event carries on after it
        self._count("dtmf out")
        return self.handle_timer(now)

    def get_timer(self):
        """When handle_timer is next due (ms), or None."""
        return self._dtmf_packets[0][0] if self._dtmf_packets else None

    def handle_timer(self, now):
        """[(datagram, address)] of the DTMF packets due by now (and the next queued digit's start)."""
        out = []
        while self._dtmf_packets and self._dtmf_packets[0][0] <= now:
            _due, (marker, rel, body) = self._dtmf_packets.pop(0)
            out.append((self._packet(self.dtmf_pt, marker, rel, body), self.remote))
            if not self._dtmf_packets and self._dtmf_queue:
                out += self._start_event(now)
        return out

    # hold and re-INVITE

    def hold(self, direction):
        """Our direction from now on (what our SDP says): "sendrecv", "sendonly", "recvonly", "inactive"."""
        if direction not in DIRECTIONS:
            raise ValueError("direction %r: not one of %s" % (direction, ", ".join(DIRECTIONS)))
        if not sends(direction):
            self._marker = True
        self.direction = direction

    def update(self, remote_address, dtmf_pt):
        """A new SDP from the phone (re-INVITE): a new address unlatches (the next packet latches again)."""
        if tuple(remote_address) != tuple(self.remote) and remote_address[0] != "0.0.0.0":
            self.remote = tuple(remote_address)
            self.latched = False
        self.dtmf_pt = dtmf_pt


# the glue: a SIP call's media as a upbx call leg's media

# A-law <-> mu-law: host/codec.py's tables (bytes.translate: one C call a frame)


def _transcoders(codec):
    """(to upbx mu-law, from upbx mu-law) for a phone's codec; None where no conversion is needed."""
    if codec == "PCMU":
        return None, None
    return (lambda p: p.translate(ALAW_TO_ULAW)), (lambda p: bytes(p).translate(ULAW_TO_ALAW))


class SipMediaLeg:
    """The host as a SIP phone's media end: a call leg of the host's switch whose far end is RTP.

    How sip-core attaches it: the SIP side of a call is a leg of the host's switch on a Link of kind
    "app" (as voicemail's AppLink, host/voicemail.py): Switch.send_media hands such a link every
    frame meant for the leg, opened already, as `link.media(leg, ts, payload)`; the link calls
    `SipMediaLeg.media(ts, payload)` of the leg's SipMediaLeg. Then, for the life of the call:
    - RTP from the phone's socket -> `rtp_in(datagram, source, now)`;
    - DTMF the link is sent (`send_signal(wire.DTMF, ...)`) -> `dtmf(digit, now)`;
    - every 20 ms tick -> `tick(now)` (DTMF packets and comfort noise due);
    - a new offer/answer (re-INVITE) -> `renegotiated(sdp, codec, our_direction)`;
    - what to send: `send(datagram, address)` if given, else `datagrams_to_send()`, from the
      call's RTP socket (the one the phone sends to: symmetric RTP).
    Frames from the phone go into the switch as the leg's own (`switch.forward`), in mu-law (the
    handsets' codec: PCMA is transcoded both ways), 20 ms apart on the leg's timeline; digits go
    to the host as a DTMF message from the leg's link (`core.call_message`), as a phone's would.
    upbx comfort noise (a 1-byte frame: the level) becomes noise frames at that level every tick
    until voice comes again, so the phone's jitter buffer never starves in the far end's silence.
    """

    def __init__(self, core, leg, media, send=None):
        self.core = core
        self.leg = leg
        self.rtp = media
        self._send = send
        self._out = []
        self._to_upbx, self._from_upbx = _transcoders(media.codec)
        self._cn_level = None                # the far end is silent at this level (-dBov)
        self._cn_ms = None                   # media ms of the last noise frame sent
        self._cn_next = 0                    # no noise frame before this time (ms)
        self._noise = {}                     # level -> noise frames in the phone's codec
        self._rng = random.Random(0x5EED)

    def _emit(self, datagram, address):
        if self._send is not None:
            self._send(datagram, address)
        else:
            self._out.append((datagram, address))

    def datagrams_to_send(self):
        """[(bytes, address)] queued since the last call (when no send callable was given)."""
        out, self._out = self._out, []
        return out

    # upbx -> SIP

    def media(self, ts, payload):
        """A frame for the phone from the switch (opened, mu-law, or 1 byte of comfort noise)."""
        now = self.core.now
        if len(payload) == wire.CN_BYTES:
            first = self._cn_level is None
            self._cn_level = payload[0]   # a refresh (every 200 ms) only changes the level: the
            if first:                     # noise keeps its own 20 ms pace, set by the ticks
                self._cn_ms = ts - 20
                self._noise_frame(now)
            return
        self._cn_level = None
        self._cn_ms = ts
        if self._from_upbx is not None:
            payload = self._from_upbx(payload)
        sent = self.rtp.rtp_out(payload, now, ms=ts)
        if sent is not None:
            self._emit(*sent)

    def _noise_frame(self, now):
        frames = self._noise.get(self._cn_level)
        if frames is None:
            frames = self._noise[self._cn_level] = [self._make_noise(self._cn_level) for _ in range(4)]
        self._cn_ms += 20
        self._cn_next = now + 20 - 5      # the next one a tick from now (a tick may come a little early)
        sent = self.rtp.rtp_out(frames[self._rng.randrange(len(frames))], now, ms=self._cn_ms)
        if sent is not None:
            self._emit(*sent)

    def _make_noise(self, level):
        amplitude = 32768.0 * 10 ** (-min(level, 127) / 20.0) * 3 ** 0.5   # uniform noise of that rms
        pcm = struct.pack("<%dh" % FRAME, *(max(-32768, min(32767, int(self._rng.uniform(-amplitude, amplitude))))
                                             for _ in range(FRAME)))
        return ulaw_encode(pcm) if self.rtp.codec == "PCMU" else alaw_encode(pcm)

    def dtmf(self, digit, now):
        """A digit from the upbx side, for the phone (RFC 4733)."""
        for sent in self.rtp.dtmf_out(digit, now):
            self._emit(*sent)

    def tick(self, now):
        """Every 20 ms: DTMF packets due; a comfort-noise frame while the far end is silent."""
        for sent in self.rtp.handle_timer(now):
            self._emit(*sent)
        if self._cn_level is not None and now >= self._cn_next:
            self._noise_frame(now)

    def renegotiated(self, sdp, codec, direction):
        """A new offer/answer in the call (re-INVITE: hold, resume, a phone that moved): sdp is the
        phone's new description (host.sip.sdp.Sdp), codec the one agreed, direction ours."""
        media = self.rtp
        if codec != media.codec:
            media.codec, media.pt = codec, CODECS[codec]
            self._to_upbx, self._from_upbx = _transcoders(codec)
            self._noise = {}
        media.update((sdp.address, sdp.port), sdp.dtmf_pt)
        media.hold(direction)

    # SIP -> upbx

    def rtp_in(self, datagram, source, now):
        """An RTP datagram from the phone: its audio into the switch, its digits to the host."""
        leg = self.leg
        for kind, value, ms in self.rtp.receive(datagram, source, now):
            if kind == "audio":
                if self._to_upbx is not None:
                    value = self._to_upbx(value)
                self.core.switch.forward(leg, ms, value, now)
            else:
                self.core.call_message(leg.link, wire.DTMF, {wire.IE_PEER_CALL_NO: leg.call_no,
                                                              wire.IE_CALL_NO: leg.peer_call_no,
                                                              wire.IE_DIGIT: value}, now)
