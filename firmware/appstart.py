"""The handset's start: the App's state (App.__init__: all but the protocol, the audio pipeline
and the receive buffer), the run's start (App.run: the script's timers, the login) and its socket
(App.open_socket; App._reopen after an empty datagram).

Run once at start (and, for the socket, after an empty datagram): firmware/app.py imports this
module for each use and forgets it again (firmware.hal.rarely), so that its code does not stay on a
handset's heap (docs/handset.md, Memory).
"""
import errno
import os
import select
import socket
import sys
import time

from common import wire
from common.compat import const, ticks_add
from firmware.app import _mem_alloc, due   # loaded already: this module is the App's (firmware.hal.rarely)
from firmware.hal import rarely

_TONE_TIMEOUT_MS = const(30000)   # busy and reorder stop by themselves after this
_RESOLVE_RETRY_MS = const(1000)   # getaddrinfo for the host again after this, when it failed


def _random_port():
    """A port for the handset's socket: 61000-65535, the top of the dynamic range (RFC 6335:
    49152-65535) above Linux's ephemeral ports (32768-60999), so that on a host running virtual
    handsets it never takes a port the kernel just handed out to something else."""
    return 61000 + (os.urandom(1)[0] << 8 | os.urandom(1)[0]) % 4536


def init(app, config, hal):
    """The App's state (App.__init__ made the protocol, the audio pipeline and the receive buffer)."""
    app.config = config
    app.hal = hal
    app.script = config.get("script", {})
    app.host_addr = None      # resolved by the loop (getaddrinfo may fail: counted, retried)
    app.sock = None
    app.poller = select.poll()
    app.pcm = bytearray(320)
    if config.get("codec") == "alaw":   # named in its SETUPs and ALERTINGs: its host converts (docs/features.md)
        app.phone.codec = 8             # wire CODEC_ALAW
    if "rebalance_s" in config:   # at a cluster's node: when an idle phone moves to its first node (0: never)
        app.phone.rebalance_ms = max(0, int(float(config["rebalance_s"]) * 1000))
    # firmware.audio.vad is imported only where it is used: silence suppression configured, or
    # the first comfort-noise frame from the far end (docs/handset.md, Memory)
    app.vad = None
    if config.get("vad"):
        from firmware.audio.vad import VoiceActivityDetector
        app.vad = VoiceActivityDetector()
    app.comfort = None       # the ComfortNoise generator, made on the first comfort-noise frame
    app.cn_level = None      # the far end's background level while it sends comfort noise
    app._sent_voice = False  # the last frame captured was voice, not silence (the profile's kinds)
    app._cn = bytearray(wire.CN_BYTES)
    app._tos = None
    app._mark = config.get("dscp", sys.platform != "esp32")
    app._wait_poll = app.poller.ipoll   # the loop's sleep (ipoll: no result list)
    app._raw_sock = None
    app._retry = []           # [data, addr, tos] whose sendto failed, oldest first
    app.digits = ""
    app.tone_stop_at = None
    app.tone_timeout_ms = int(config.get("tone_timeout_ms", _TONE_TIMEOUT_MS))
    app.speed_dial = {}       # button name -> number, from the system information
    app.messages_shown = 0    # the voicemail count last shown (common/phone.py messages)
    app._speaking = False     # the speaker got a frame at the last tick
    app.power_save = True
    app.call_ts = 0
    app.connected_at = None
    # counted per frame as attributes (cheaper than the summary's dict), put in the summary at the end
    app.frames_sent = app.frames_received = app.frames_rejected = 0
    app.cn_sent = app.cn_received = app.frames_suppressed = 0
    app._call_sent = app._call_received = 0   # the current call's frames
    # the loop's timers; _timer_at is the earliest of them, computed when one changes (_plan)
    app.answer_at = app.hangup_at = app.exit_at = app._dtmf_at = None
    app._call_at = app._stop_at = app._proto_at = app._house_at = app._timer_at = None
    app._frame_at = None     # the next 20 ms audio tick
    app._signalled = False   # the protocol moved: its events, datagrams and timer need a look
    app._held = None         # events firmware/events.py found no room to handle yet (App.events)
    app.deferred = None      # work an event put off for want of room (firmware/events.py put_off)
    # when a set-up's datagram (CHALLENGE, SETUP, MEDIA_PEER) last had the garbage collected before it (App.receive).
    # The App's attributes fit the 73 slots of their table (py/map.c's sizes): one more grows it by 192 bytes,
    # which a 100K `.mpy` handset's download did not have to spare (tests/test_ota_handset32.py)
    app._packed_at = None
    app.running = True
    app.reset_requested = False
    app.record = open(app.script["record_g711"], "wb") if app.script.get("record_g711") else None
    # the voice frames sent, as the received ones (the unix port's tests: what the transport was given)
    app.record_sent = open(app.script["record_sent_g711"], "wb") if app.script.get("record_sent_g711") else None
    app.summary = {"extension": config["extension"], "registered": False, "frames_sent": 0,
                   "frames_received": 0, "frames_rejected": 0, "calls": [], "sysinfo_version": None,
                   "dtmf_received": "", "heap": None, "cn_sent": 0, "cn_received": 0,
                   "frames_suppressed": 0, "net_errors": {}, "sends_retried": 0, "sends_dropped": 0,
                   "short_reads": 0, "empty_datagrams": 0, "events_held": 0, "keys_lost": 0}
    # the local port: the configured one, else one chosen here, kept for the life of the
    # handset so that a new socket (_reopen) has the address the hosts and peers know
    app._port = int(config.get("local_port", 0)) or _random_port()
    app.heap_peak = 0
    app.heap_live_peak = 0
    app._sampled_at = None   # when the heap's use was sampled for the coming collection
    app.current = None
    app.started = None
    app._peer_key = app._peer_addr = None
    app.profile = None   # per-tick CPU time (config "profile": ticks to record; firmware/profile.py)
    if config.get("profile"):
        from firmware.profile import DEFAULT_TICKS, TickProfile
        ticks = config["profile"]
        app.profile = TickProfile(DEFAULT_TICKS if ticks is True else int(ticks))
        app.hal = app.profile.time_io(None, None, hal)[2]
        if config.get("profile_spin"):   # the warm figure of `upbx bench handset` (firmware/profile.py, spin)
            from firmware.profile import spin
            app._wait_poll = spin(app.poller.ipoll)
    # over-the-air updates (firmware/ota.py): the firmware running (ota.json, firmware/otaboot.py; {}
    # for the deployed one), an update offered by the system information, a download under way
    app.firmware = rarely("firmware.otaboot").read() or {}
    app.ota_offer = None
    app.ota = None
    rarely("firmware.sysinfo").restore(app)   # the system information kept in flash
    app.hal.attach(app.poller)   # what of the HAL wakes the loop (an ESP32's microphone in a call)


def begin(app):
    """App.run's start, run once: the script's timers, the socket (tried again each second while the host
    cannot be resolved: DNS, Wi-Fi), the login; the time to loop from, or None when the script's end came
    first. Here, not in firmware/app.py, whose code stays on the heap for the handset's life."""
    hal = app.hal
    now = hal.ticks_ms()
    app.started = now
    script = app.script
    if script.get("call"):
        app._call_at = ticks_add(now, int(script.get("call_after_ms", 0)))
    if script.get("exit_after_ms"):
        app._stop_at = ticks_add(now, int(script["exit_after_ms"]))
    while not open_socket(app, now):
        for _ in range(_RESOLVE_RETRY_MS // 100):
            hal.feed()
            time.sleep_ms(100)
        now = hal.ticks_ms()
        if due(now, app._stop_at):
            return None
    app.phone.start(now)
    app._signalled = True
    if _mem_alloc is not None:
        app._house_at = now
    return now


def open_socket(app, now):
    """Resolve the host and make the socket; False (counted, logged) while getaddrinfo or bind
    fails (a port taken: another is chosen, unless the configuration fixed it)."""
    config = app.config
    try:
        host_addr = app.hal.getaddrinfo(config["host"], int(config["port"]))
        local = app.hal.getaddrinfo(config.get("bind", "0.0.0.0"), app._port)
    except OSError as exc:
        app.count_error("getaddrinfo", exc)
        return False
    app.host_addr = host_addr
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(local)
    except OSError as exc:
        sock.close()
        app.count_error("bind", exc)
        if not int(config.get("local_port", 0)):
            app._port = _random_port()
        return False
    sock.setblocking(False)
    app.poller.register(sock, select.POLLIN)
    app.sock = app._raw_sock = sock
    if app.profile is not None:
        app.sock = app.profile.time_io(sock, None, None)[0]
    return True


def reopen(app, now):
    """An empty datagram was read. ESP32 MicroPython marks a socket closed after any read of 0
    bytes, UDP too (ports/esp32/modsocket.c, _socket_read_data: SOCKET_STATE_PEER_CLOSED), and
    then answers every read with 0 bytes at once: one empty datagram from anyone would leave
    the handset deaf until it restarts. So the socket is closed and a new one bound to the
    same port (what was queued in the old one is lost: a frame or two). On every port alike,
    so that the unix port's tests exercise it."""
    app.summary["empty_datagrams"] += 1
    raw = app._raw_sock
    app.sock = app._raw_sock = None
    try:
        app.poller.unregister(raw)
    except (OSError, ValueError, KeyError):
        pass
    raw.close()
    for _ in range(3):   # the port was ours a moment ago
        if open_socket(app, now):
            return
    raise OSError(errno.EADDRINUSE)   # no socket: a fault, the handset restarts (docs/handset.md)
