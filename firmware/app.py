"""The handset application: one loop moving bytes, time and audio.

The protocol is common.phone (sans-IO); audio is firmware.audio.pipeline; the
HAL (unix or esp32) owns the devices. Runs unchanged on an ESP32 and, with the
unix HAL, as a virtual handset under the MicroPython unix port (`upbx phone`).

The loop sleeps in select.poll on the socket (and the HAL's devices, such as an ESP32's
microphone) until the next 20 ms audio tick, the next timer or a datagram (docs/handset.md,
The loop). Time is the HAL's
ticks_ms(), which wraps: every timer is ticks_add(now, ms) and every comparison
ticks_diff(now, timer) >= 0 (common/compat.py). The loop feeds the watchdog once per
audio pass (every 20 ms tick, and when the microphone wakes it), not on a datagram's; network
errors (sendto, getaddrinfo) are counted and retried, never fatal (docs/handset.md, Survival).
"""
import errno
import gc
import os
import socket
import struct

from common import wire
from common.compat import const, micropython, ticks_add, ticks_diff, ticks_earliest
from common.call import CONNECTED, IDLE, RINGING, STATE_NAMES
from common.phone import Phone
from firmware.audio.jitter import FRAME
from firmware.audio.pipeline import AudioPipeline
from firmware.hal import rarely

_FRAME_MS = const(20)
KEY_OFF_HOOK = "A"         # lift: dial tone when idle, answers a ringing call
KEY_ON_HOOK = "D"          # hang up / reject / silence a tone
KEY_HOLD = "B"             # in a call: hold, and resume (docs/features.md)
_CAPTURE_MAX = const(3)           # frames sent per loop iteration at most (a late loop catches up)
_RETRY_MAX = const(8)             # datagrams kept for another try after sendto failed
_RESEND_MS = const(5)             # while datagrams wait for another try, the loop wakes at least this often
_CALLS_KEPT = const(8)            # the summary's record of calls: the last ones
_PACK_GAP_MS = const(1000)        # _pack() before a set-up's datagram at most this often (App.receive)
# A datagram is first peeked at (recv(_PEEK, MSG_PEEK): _PEEK bytes, left queued; two one-block
# objects, which fit in any hole of a fragmented heap). Media (a mini frame, top bit clear) is then
# read with readinto straight into the receive buffer made once, asking for exactly its length: a
# comfort-noise frame's when the peek came back shorter than _PEEK, else a voice frame's. The
# stream readinto keeps reading until it has that many bytes or the socket would block, so it ends
# at the datagram's end and never joins the next one (a datagram of another length is cut or
# joined, fails its tag and is counted; docs/handset.md, "Receiving"). Signalling (rare, and the
# protocol may keep parts of it) is read with recv(n), which takes n contiguous bytes from the heap
# (then gives back the rest): the largest v1 frame a phone gets is a full frame holding every IE at
# its longest (about 720 bytes). When not even those 768 bytes are free in one piece, it is read
# into _RX_SHORT (every message a host sends a phone today, a system information chunk of 250 bytes
# the longest, fits; a longer one is cut, fails its tag and is counted, and the host sends it
# again). A MemoryError may come after the datagram was taken (the unix port's recv copies it into
# a new bytes object while the n-byte buffer is still held): that datagram is lost, so after one
# the handset reads _RX_SHORT at a time until the next once-a-second collection
_RX_BYTES = const(768)
_RX_SHORT = const(320)
_VOICE_FRAME = wire.MINI_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG   # a mini frame's length, voice
_CN_FRAME = wire.MINI_HEADER + wire.CN_BYTES + wire.MEDIA_TAG         # and comfort noise
_PEEK = _CN_FRAME + 1    # bytes peeked at: fewer come back from a comfort-noise frame, this many from voice
_MSG_PEEK = socket.MSG_PEEK   # Linux's 2 on the unix port, lwIP's 1 on an ESP32 (both modules name it)
# DSCP in the IP TOS byte: voice EF, signalling CS3. The unix port takes IP_TOS (Linux numbers
# when the module lacks the names); stock ESP32 MicroPython's setsockopt has no IP_TOS (it prints
# "option not implemented" and does nothing), so the handset does not mark there.
_TOS_EF = const(46 << 2)
_TOS_CS3 = const(24 << 2)
_IPPROTO_IP = getattr(socket, "IPPROTO_IP", 0)
_IP_TOS = getattr(socket, "IP_TOS", 1)
_mem_alloc = getattr(gc, "mem_alloc", None)   # MicroPython only: the heap high-water mark
_mem_free = getattr(gc, "mem_free", None)
_HEAP_SAMPLE_LEAD_MS = const(25)   # the heap's use is sampled this long (more than a tick) before each collection
# While a call is connected the collector runs once a second (_housekeeping), not by start.py's
# gc.threshold, which is off until the call ends when _CALL_GC_ROOM is free as the call connects (firmware/events.py; a
# second's garbage twice over when each datagram's recv left 190 bytes; below it, on the smallest
# heaps, the threshold stays: there it keeps the free space in pieces). The threshold counts every allocation, and every
# call of a bytecode function whose locals and stack take more than 11 words allocates its frame
# on the heap and frees it at return (py/objfun.c without MICROPY_ENABLE_PYSTACK, as on the
# ESP32): about 35 such calls a tick, 175 KB a second counted, so it collected 10 times a second in
# a call. What stays as garbage is about 3 KB a second (12 KB before receive() read media with
# readinto: 64K frozen, least free 21-26 KB against 16-18 KB); a heap that fills
# before the second is up is collected by MicroPython as usual. The threshold keeps long-lived
# objects from landing among garbage; a call's are made at its set-up, after a collection (_pack).


def due(now, at):
    """Whether the timer `at` (None: not set) has come."""
    return at is not None and ticks_diff(now, at) >= 0


def _keyed(app, path):
    """The module at `path` for a key (firmware.lines, firmware.commands), or None when the heap has no
    room for its code now: that key is lost and counted (`keys_lost`), as one pressed too soon, and the
    call goes on; a MemoryError out of the loop would reset the handset (docs/handset.md, Memory)."""
    try:
        return rarely(path)
    except MemoryError:
        app.summary["keys_lost"] += 1


def _pack():
    """Collect the garbage before a call's or a login's long-lived objects (keys, AES contexts, buffers)
    are made: they then fill the heap from its lowest free block instead of landing among garbage that
    leaves holes when it goes, and the free space stays in pieces large enough for a signalling recv()
    and the next call (docs/handset.md, Memory). Once per call set-up or login (a CHALLENGE: the session's
    keys), a few ms on an ESP32, and at most once every _PACK_GAP_MS: the datagram that asks for it is not
    authenticated yet, so forged ones must not buy a collection each (App.receive)."""
    gc.collect()


def error_name(exc):
    code = exc.args[0] if exc.args else 0
    return errno.errorcode.get(code, str(code)) if isinstance(code, int) else str(code)


class App:
    def __init__(self, config, hal):
        """The protocol, the audio pipeline and the receive buffer; the rest of the handset's state
        is made by firmware/appstart.py, loaded for it and forgotten (docs/handset.md, Memory)."""
        # a short keepalive with a liveness limit: a restarted host is noticed within about 4 s (B4)
        self.phone = Phone(config["extension"], bytes.fromhex(config["secret"]), os.urandom,
                           keepalive_ms=int(config.get("keepalive_ms", 2000)),
                           dead_ms=int(config.get("dead_ms", 2000)),
                           backoff_max_ms=int(config.get("backoff_max_ms", 5000)))
        self.pipeline = AudioPipeline(config.get("codec", "ulaw"), config.get("plc", True), _FRAME_MS)
        self._rx = bytearray(_VOICE_FRAME)  # every media datagram lands here (readinto): no allocation per frame
        self._rx_n = _RX_BYTES              # what recv asks for signalling (_RX_SHORT for a second after a MemoryError)
        rx = self._rx_view = memoryview(self._rx)
        self._voice_frame, self._cn_frame = rx[:_VOICE_FRAME], rx[:_CN_FRAME]
        self._voice_payload = rx[wire.MINI_HEADER:wire.MINI_HEADER + wire.VOICE_BYTES]
        rarely("firmware.appstart").init(self, config, hal)

    def log(self, level, msg):
        self.hal.log(level, "phone", msg)

    # actions

    def dial(self, number, now):
        if self.phone.call is not None:   # in a call: a consultation (firmware/lines.py)
            return rarely("firmware.lines").consult(self, number, False, now)
        _pack()   # the call's keys and buffers are made now
        if self.phone.dial(number, now):
            self.current = {"to": number, "from": self.config["extension"], "dialed_ms": now, "setup_ms": None,
                            "path": None, "cause": None, "frames_sent": 0, "frames_received": 0}
            self._call_sent = self._call_received = 0
            self.log("I", "dialing %s" % number)
            self.hal.display("dialing", number)
        else:
            self.log("W", "cannot dial %s now (state %s)" % (number, STATE_NAMES[self.phone.state]))

    def command(self, cmd, now):
        """A key, or a console command line (firmware/hal/__init__.py, poll_keys). A key, `!call` and
        `!dtmf`, which a call uses, are handled here; every other command, rare, in firmware/commands.py,
        loaded for the use and forgotten (docs/handset.md, Memory)."""
        if len(cmd) == 1:
            self.key(cmd, now)
        elif cmd.startswith("!call "):   # here: no module on the heap as the call's objects are made (dial)
            self.dial(cmd[6:].strip(), now)
        elif cmd.startswith("!dtmf "):
            digit = cmd[6:].strip()[:1]
            if self.phone.dtmf(digit, now):
                self.pipeline.tone.dtmf(digit)
        else:
            rarely("firmware.commands").command(self, cmd, now)

    def key(self, key, now):
        """One keypad key: digits collect, # sends, * clears, A lifts / answers, D hangs up."""
        tone = self.pipeline.tone
        state = self.phone.state
        if self.phone.other is not None or self.digits[:1] == "C" or (key == "C" and state == CONNECTED):
            lines = _keyed(self, "firmware.lines")   # two lines, transfer (docs/features.md)
            if lines is None or lines.key(self, key, now):
                return
        if key == KEY_ON_HOOK:
            self.digits = ""
            tone.stop()
            self.tone_stop_at = None
            if self.phone.call is not None:
                self.phone.hangup(now)
            else:
                self.hal.display("idle", None)
        elif state == RINGING:
            self.phone.answer(now)  # any other key answers
        elif state == CONNECTED:
            if key == KEY_HOLD:
                commands = _keyed(self, "firmware.commands")
                if commands is not None:
                    commands.hold(self, not self.phone.holding, now)
            elif key in "0123456789*#":
                self.command("!dtmf " + key, now)
        elif state != IDLE:
            return  # dialing or ring-back: only D (hang up) means anything
        elif key == "#":   # here, not in firmware/commands.py: no module on the heap as the call's objects are made
            if self.digits:
                tone.stop()
                self.dial(self.digits, now)
            self.digits = ""
        else:   # A, *, a digit: firmware/commands.py
            commands = _keyed(self, "firmware.commands")
            if commands is not None:
                commands.idle_key(self, key, now)

    # events from the protocol

    def events(self, now):
        """What the protocol said since the last look (common/phone.py's events, a new voicemail count):
        handled by firmware/events.py, loaded when there is something and forgotten (docs/handset.md,
        Memory). With no room for its code (the collector has tried) the events are held, in order, for
        the next pass that plans (a datagram, a key, a timer: the housekeeping's collection at least once a
        second), and an update's download, which can wait, is stopped (docs/handset.md, Running out of memory)."""
        events = self._held or self.phone.take_events()
        if events or self.phone.messages != self.messages_shown:
            try:
                rarely("firmware.events").handle(self, events, now)
            except MemoryError:   # the module or one an event needs: handle() takes each event off once done
                self._held = events
                self.summary["events_held"] += 1
                if self.ota is not None:
                    self.ota.stop()
                return
            self._held = None

    def _close_call(self):
        """The call's record into the summary, which keeps the last _CALLS_KEPT (a device runs for
        months: an unbounded list of calls would fill its heap)."""
        current = self.current
        current["frames_sent"] = self._call_sent
        current["frames_received"] = self._call_received
        calls = self.summary["calls"]
        if len(calls) >= _CALLS_KEPT:
            calls.pop(0)
        calls.append(current)
        self.current = None

    def set_power_save(self, flag):
        self.power_save = flag
        self.hal.set_power_save(flag)

    # I/O

    def open_socket(self, now):
        """Resolve the host and make the socket (firmware/appstart.py); False while it cannot."""
        return rarely("firmware.appstart").open_socket(self, now)

    def _reopen(self, now):
        """An empty datagram was read: a new socket on the same port (firmware/appstart.py)."""
        rarely("firmware.appstart").reopen(self, now)

    def count_error(self, operation, exc):
        """One more network error of this kind (summary and !state "net_errors"); never fatal."""
        key = "%s %s" % (operation, error_name(exc))
        errors = self.summary["net_errors"]
        errors[key] = errors.get(key, 0) + 1
        if errors[key] == 1 or errors[key] % 100 == 0:
            self.log("W", "%s failed (%d so far): %r" % (operation, errors[key], exc))

    @micropython.native
    def receive(self, now):
        """One datagram (the poller said one is there); the loop comes back at once for the next.

        Peeked at first (recv with MSG_PEEK: no address tuple, two small objects); media is then
        read with readinto into the buffer made once, exactly its length, and opened in place there
        through views made once: nothing else is allocated. Signalling (rare) is read with recv and
        gets its own bytearray, since the protocol may keep parts of it."""
        sock = self.sock
        try:
            head = sock.recv(_PEEK, _MSG_PEEK)
        except OSError:
            return
        except MemoryError:   # not even two blocks free (the collector has tried): the datagram waits
            self.summary["short_reads"] += 1
            return
        n = len(head)
        if n and not head[0] & 0x80:   # media: read where it is opened
            try:
                n = sock.readinto(self._rx, n if n < _PEEK else _VOICE_FRAME)
            except OSError:
                return
            if not n:
                self._reopen(now)
                return
            data = None
        else:
            data = self._recv_signalling(sock)
            if data is None:
                return
            n = len(data)
            if not n:   # an empty datagram, taken off the queue: on an ESP32 the socket is now closed
                self._reopen(now)
                return
        try:
            if data is not None:
                self._signalled = True
                if n > 7 and (data[7] == wire.SETUP or data[7] == wire.MEDIA_PEER or data[7] == wire.CHALLENGE) and (
                        self._packed_at is None or ticks_diff(now, self._packed_at) >= _PACK_GAP_MS):
                    # a call's or a login's keys and buffers come with it (the type is in the clear header, read
                    # before the datagram is authenticated: forged ones collect at most once a gap; a registration
                    # and an incoming call, which are authenticated, open the gate again: firmware/events.py)
                    self._packed_at = now
                    _pack()
                self.phone.receive(bytearray(data), now)
                return
            if n == _VOICE_FRAME:
                frame = self._voice_frame
            elif n == _CN_FRAME:
                frame = self._cn_frame
            else:
                frame = self._rx_view[:n]   # not a media frame's length: open_media refuses it
            ts = self.phone.open_media(frame)
        except wire.DecodeError:
            self.frames_rejected += 1
            return
        except MemoryError:   # no room to decode or handle it (the collector has tried): dropped as if lost,
            self.summary["short_reads"] += 1   # and the host sends it again (docs/handset.md, Running out of memory)
            return
        if ts is None:
            return
        if n == _CN_FRAME:  # comfort noise: the far end is silent at this level (0, a host's keepalive: silence,
            self.cn_level = self._rx[wire.MINI_HEADER] or None   # no generator made for it)
            self.cn_received += 1
            return
        self.cn_level = None
        payload = self._voice_payload
        self.pipeline.receive(ts & 0xFFFF, payload, now)
        self.frames_received += 1
        self._call_received += 1
        if self.record is not None:
            self.record.write(struct.pack(">I", ts & 0xFFFFFFFF))
            self.record.write(payload)

    def _recv_signalling(self, sock):
        """A signalling datagram (or an empty one) as bytes; None when there was none or no room."""
        try:
            return sock.recv(self._rx_n)
        except OSError:
            return None
        except MemoryError:   # the heap has no room now (the collector has tried): shorter ones
            self.summary["short_reads"] += 1
            self._rx_n = _RX_SHORT
            try:
                return sock.recv(_RX_SHORT)
            except OSError:
                return None
            except MemoryError:   # not even that: the datagram waits (or is lost), the loop goes on
                self.summary["short_reads"] += 1
                return None

    def flush(self, now):
        if self.phone.cluster_out is not None:   # a cluster's node: the standby session (firmware/standby.py)
            from firmware import standby
            standby.flush(self, now)
        for datagram in self.phone.datagrams_to_send(now):
            self.sendto(datagram, self.host_addr, _TOS_CS3)

    @micropython.native
    def sendto(self, data, addr, tos):
        """Send one datagram marked with tos (DSCP << 2), where the platform lets us mark.

        When sendto fails (EAGAIN/EWOULDBLOCK, ENOMEM: lwIP out of buffers; EHOSTUNREACH ...)
        the error is counted and a copy waits for the next loop iteration (resend(); the loop
        then wakes at least every _RESEND_MS); datagrams after it queue behind it, so the order
        holds. At most _RETRY_MAX wait: then the oldest goes.
        """
        if self._retry:
            self._keep(data, addr, tos)
            return
        try:
            self._send(data, addr, tos)
        except OSError as exc:
            self.count_error("sendto", exc)
            self._keep(data, addr, tos)

    @micropython.native
    def _send(self, data, addr, tos):
        if self._mark and self._tos != tos:
            try:
                self.sock.setsockopt(_IPPROTO_IP, _IP_TOS, tos)
                self._tos = tos
            except (OSError, ValueError, TypeError):
                self._mark = False
        self.hal.sendto(self.sock, data, addr)

    def _keep(self, data, addr, tos):
        if len(self._retry) >= _RETRY_MAX:
            self._retry.pop(0)
            self.summary["sends_dropped"] += 1
        self._retry.append((bytes(data), addr, tos))  # media is a view of a buffer reused per frame

    def resend(self):
        """Send what failed before, oldest first, until one fails again."""
        retry = self._retry
        while retry:
            data, addr, tos = retry[0]
            try:
                self._send(data, addr, tos)
            except OSError as exc:
                self.count_error("sendto", exc)
                return
            retry.pop(0)
            self.summary["sends_retried"] += 1

    @micropython.native
    def capture(self, now):
        """Send every whole 20 ms frame the microphone has (the microphone's clock paces sending);
        each frame is read, encoded, sealed and sent before anything else runs."""
        for _ in range(_CAPTURE_MAX):
            if not self.hal.read_frame(self.pcm):
                return
            self.pipeline.encode(self.pcm)
            payload = self.pipeline.tx_payload
            if self.phone.holding:
                # nothing said, but a comfort-noise frame each second keeps the far end's replay window within
                # reach of our timestamps (docs/protocol.md section 5: a leg never silent for 32 s)
                payload = None if self.call_ts % 1000 else self._cn
            elif self.vad is not None and not self.vad.update(self.pcm):
                payload = None  # silence: nothing, or a comfort-noise frame with the level
                if self.vad.cn_due():
                    self._cn[0] = self.vad.level
                    payload = self._cn
            self._sent_voice = payload is self.pipeline.tx_payload
            if payload is None:
                frame = None
                self.frames_suppressed += 1
            else:
                frame = self.phone.seal_frame(self.call_ts, payload)
                if frame is not None and self.record_sent is not None and payload is not self._cn:
                    self.record_sent.write(struct.pack(">I", self.call_ts & 0xFFFFFFFF))
                    self.record_sent.write(payload)
            if frame is not None and self._send_frame(frame):
                if payload is self._cn:
                    self.cn_sent += 1
                else:
                    self.frames_sent += 1
                    self._call_sent += 1
            if not self.call_ts % 1000 and self.phone.other is not None:
                # the held line: comfort noise each second keeps its replay windows within reach of our timestamps,
                # which go on in the other call (docs/features.md "A hold of any length")
                frame = self.phone.seal_frame(self.call_ts, self._cn, 1)
                if frame is not None and self._send_frame(frame):
                    self.cn_sent += 1
            self.call_ts += _FRAME_MS

    def _send_frame(self, frame):
        """Send a sealed media frame where the phone says (frame_to: a LAN peer, B3; None: the host); False when
        the peer's address could not be had (the frame is lost). Bytecode, not native: out of capture, the native
        code it would add costs more heap (a `.mpy` build) than the call costs time."""
        addr = self.phone.frame_to
        if addr is not None:
            if self._peer_key != addr:  # resolve the LAN peer's address once per call
                try:
                    self._peer_addr = self.hal.getaddrinfo(addr[0], addr[1])
                except OSError as exc:
                    self.count_error("getaddrinfo", exc)  # this frame is lost; the next tries again
                    return False
                self._peer_key = addr
            addr = self._peer_addr
        self.sendto(frame, addr if addr is not None else self.host_addr, _TOS_EF)
        return True

    @micropython.native
    def audio_tick(self, now):
        """Every 20 ms: the speaker's next frame (the far end, concealment, comfort noise or a tone)."""
        pipeline = self.pipeline
        if self.phone.state == CONNECTED:
            out = pipeline.playout(now)
            if self.profile is not None:
                self.profile.classify(self._sent_voice, pipeline)
            if self.cn_level is not None and pipeline.last_status != FRAME and pipeline.tone.name is None:
                if self.comfort is None:
                    from firmware.audio.vad import ComfortNoise
                    self.comfort = ComfortNoise()
                self.comfort.fill(out, self.cn_level)  # the far end is silent: its background, not dead air
        elif pipeline.tone.name is not None:  # dial tone, ring, ring-back, busy, reorder, key clicks
            out = pipeline.speaker
            pipeline.tone.fill(out)
        else:
            self._speaking = False  # the speaker drains and falls silent
            return
        if not self._speaking:
            self._speaking = True
            self.hal.speaker_start()  # a call or a tone starts: a cushion before the first frame
        self.hal.write_frame(out)

    def run(self):
        """Register, then loop until the script ends, `!quit`, `!reset` or Ctrl-C; finish() in any case."""
        try:
            now = rarely("firmware.appstart").begin(self)   # the script's timers, the socket, the login
            if now is None:
                return   # the script's end came before the host could be resolved
            self._loop(now)
        except BaseException:  # a crash, or Ctrl-C from the console or mpremote: start.py reports it
            try:
                self.finish()  # log out and write the summary if we still can
            except Exception as again:  # a MemoryError on a full heap, say: never instead of the loop's own
                try:
                    self.hal.log("E", "phone", "while finishing: %r" % (again,))
                except Exception:
                    pass
            raise
        self.finish()

    @micropython.native
    def _loop(self, now):
        """One pass per wake-up: a datagram came (1), a HAL device such as the microphone is ready
        (2), a timer came, or the audio tick. A pass allocates nothing but the datagram it reads."""
        hal = self.hal
        profile = self.profile
        poll = self._wait_poll
        self._frame_at = now
        ready = 0
        while self.running:
            if profile is not None:
                profile.resume()
            now = hal.ticks_ms()
            if ready & 1:
                self.receive(now)
            if self._retry:
                self.resend()
            if self._timer_at is not None and ticks_diff(now, self._timer_at) >= 0:
                self._timers(now)
            if ready & 2 or ticks_diff(now, self._frame_at) >= 0:
                self._audio(now)
            if self._signalled:
                self._plan(now)
            now = hal.ticks_ms()
            wait = ticks_diff(self._frame_at, now)   # the next audio tick (the microphone's frame too)
            if self._timer_at is not None and ticks_diff(self._timer_at, now) < wait:
                wait = ticks_diff(self._timer_at, now)
            if self._retry and wait > _RESEND_MS:
                wait = _RESEND_MS
            if profile is not None:
                profile.pause()
            if not self.running:
                break
            ready = 0   # sleep in the poller until a datagram (1), a HAL device (2) or the time
            for entry in poll(wait if wait > 0 else 1):   # ipoll: no list, one tuple reused
                ready |= 1 if entry[0] is self._raw_sock else 2   # not a local: _reopen makes a new one

    @micropython.native
    def _audio(self, now):
        """The 20 ms tick when it has come (keys, the speaker's frame, the display), and the
        microphone's frames whenever they are there."""
        hal = self.hal
        hal.feed()   # the watchdog: once per audio pass (at least once a tick), not per datagram
        tick = ticks_diff(now, self._frame_at) >= 0
        if tick:
            frame_at = self._frame_at
            while ticks_diff(now, frame_at) >= 0:
                if self.profile is not None:
                    self.profile.tick()
                self.audio_tick(now)
                frame_at = ticks_add(frame_at, _FRAME_MS)
                if ticks_diff(now, frame_at) > 200:
                    frame_at = now  # fell far behind: skip rather than burst
            self._frame_at = frame_at
        if self.phone.state == CONNECTED:
            self.capture(now)
        if tick:
            key = hal.poll_keys()
            while key is not None:
                self._signalled = True
                self.command(key, now)
                key = hal.poll_keys()
            hal.refresh()  # the display, at most once per iteration and never inside the audio

    def _plan(self, now):
        """After anything that moved the protocol: its events and datagrams, then the earliest of
        the loop's timers (the protocol's, the script's, a tone's end, housekeeping), computed
        when one may have changed, not on every pass."""
        self._signalled = False
        phone = self.phone
        self.events(now)
        self.flush(now)
        at = self._proto_at = phone.next_timer()
        for timer in (self._call_at if phone.registered else None, self.answer_at, self.hangup_at,
                      self.tone_stop_at, self._dtmf_at, self.exit_at, self._stop_at, self._house_at):
            at = ticks_earliest(at, timer)
        self._timer_at = at

    def _timers(self, now):
        """Every timer that has come; then the timers are planned again."""
        phone = self.phone
        self._signalled = True
        if due(now, self._proto_at):
            phone.handle_timer(now)
        if self._call_at is not None and phone.registered and due(now, self._call_at):
            self._call_at = None
            self.dial(self.script["call"], now)
        if due(now, self.answer_at):
            self.answer_at = None
            phone.answer(now)
        if due(now, self.hangup_at):
            self.hangup_at = None
            phone.hangup(now)
        if due(now, self.tone_stop_at):
            self.tone_stop_at = None
            self.pipeline.tone.stop()
        if due(now, self._dtmf_at):
            self._dtmf_at = None
            for digit in self.script.pop("dtmf"):
                self.command("!dtmf " + digit, now)
        if due(now, self._house_at):
            self._housekeeping(now)
        if due(now, self.exit_at) or due(now, self._stop_at):
            self.running = False

    def _housekeeping(self, now):
        """Once a second: the heap's use, then, a tick later, a collection that measures what is
        really live and the HAL's chance to rejoin Wi-Fi. gc.mem_alloc() walks the heap's whole
        allocation table: run here, not every loop, and not in the collection's tick, so no tick holds
        more than one walk besides the collection. The high-water mark is sampled 25 ms before the
        collection, when the second's garbage is there. The least free space is not sampled apart:
        every block is either used or free (py/gc.c, gc_info), so it is the heap's size less that
        high-water mark (firmware/commands.py, heap), and gc.mem_free()'s second walk is saved."""
        if self._sampled_at is None:
            self._sampled_at = now
            used = _mem_alloc()
            if used > self.heap_peak:
                self.heap_peak = used
            self._house_at = ticks_add(now, _HEAP_SAMPLE_LEAD_MS)   # short, regular pauses
            return
        self._sampled_at = None
        self._house_at = ticks_add(now, 1000 - _HEAP_SAMPLE_LEAD_MS)
        self.hal.network_up()
        if self.deferred and self.phone.call is None and not self._held:
            try:   # what events put off for want of room (firmware/events.py put_off)
                rarely("firmware.putoff").run_deferred(self, now)
            except MemoryError:
                pass
        if self.ota is not None:   # an over-the-air update downloading (firmware/ota.py)
            self.ota.tick(now)
        elif (self.ota_offer is not None or self.firmware.get("trial")) and self.phone.call is None and not self._held:
            try:   # no room for its code now: a later second (events held go first: App.events)
                rarely("firmware.ota").idle(self, now)
            except MemoryError:
                pass
        gc.collect()
        self._rx_n = _RX_BYTES
        if self.profile is not None:
            self.profile.collected()
        live = _mem_alloc()
        if live > self.heap_live_peak:
            self.heap_live_peak = live

    def finish(self):
        """Log out, write the summary, close the devices (firmware/commands.py); a no-op when done. On a
        heap with no room for that code (a full `.mpy` handset's), the run being over, the concealer's
        history and a download go first: a MemoryError here reset the handset with no summary written."""
        if not self.running and self.started is None:
            return  # already finished
        try:
            commands = rarely("firmware.commands")
        except MemoryError:
            self.pipeline.concealer = None
            if self.ota is not None:
                self.ota.stop()
            gc.collect()
            commands = rarely("firmware.commands")
        self.running = False
        self.started = None
        commands.finish(self)
