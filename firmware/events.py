"""What a handset does with the protocol's events (common/phone.py): registered, a call ringing,
ring-back, connected, ended, a DTMF digit, system information, a new voicemail count.

Run once per event, a few times per call (App.events): firmware/app.py imports this module when the
protocol has events and forgets it again (firmware.hal.rarely), so that its code does not stay on a
handset's heap in a call (docs/handset.md, Memory). Each event kind has a function of its own: a
module loaded from a .mpy file takes one heap block per function for its bytecode, and on a full heap
(a 100K handset downloading an update) one handle() of 1 KB found no block, where these small ones do.
A MemoryError while an event is handled (a module it needs finds no room) holds it and those after it
for a later pass, as App.events does when this module cannot be loaded (docs/handset.md, Running out
of memory).
"""
import gc

from common import wire
from common.compat import const, ticks_add, ticks_diff
from common.login import LoginDown, LoginUp
from common.phone import Connected, Dtmf, Ended, Incoming, Ringback, Sysinfo
from firmware.hal import rarely

_mem_free = getattr(gc, "mem_free", None)
_CALL_GC_ROOM = const(24576)   # see firmware/app.py: the collector once a second in a call


def handle(app, events, now):
    """The events the protocol gave App.events (common/phone.py's take_events), oldest first, each taken
    off the list once handled (a MemoryError leaves App.events the rest to hold), and a new voicemail count.
    A module an event needs is loaded before anything is changed, so that an event held for want of room
    for it is handled again from its start."""
    if events and events is app._held:
        app.log("W", "events handled late: no heap for their code")
        app._signalled = True   # those that came meanwhile wait in the protocol's list: the next pass takes them
    if app.phone.messages != app.messages_shown:   # MESSAGE_WAITING (docs/features.md, Voicemail)
        count = app.messages_shown = app.phone.messages
        app.log("I", "messages waiting %d" % count)
        if app.phone.call is None:
            app.hal.display("idle", "%d new messages" % count if count else None)
    while events:
        event = events[0]
        kind = type(event)
        if kind is LoginUp:
            app._packed_at = None   # the next set-up's datagram has its collection (App.receive): this one is genuine
            app.summary["registered"] = True
            app.log("I", "registered as %s" % app.config["extension"])
            app.hal.display("idle", None)
            # which firmware runs, to the host; after an over-the-air update: keep it, or report its roll-back.
            # Its code is the largest an event needs: with no room for it, it is put off (put_off), never
            # held, so that a call's events behind it (ring-back, connected) are not held with it
            try:
                rarely("firmware.ota").registered(app, now)
            except MemoryError:
                put_off(app, 0)
        elif kind is LoginDown:
            app.log("W", "registration lost: %s" % event.reason)
            if app.phone.host_next is not None:   # a cluster's node: the next login goes by rendezvous (docs/cluster.md)
                try:
                    app.host_addr = app.hal.getaddrinfo(*app.phone.host_next)
                    app.log("I", "next login at %s:%d" % app.phone.host_next)
                except OSError as exc:
                    app.count_error("getaddrinfo", exc)
        elif (kind is Incoming and event.waiting) or (kind is Ended and event.line):
            rarely("firmware.lines").event(app, event, now)   # the second line (docs/features.md)
        elif kind is Incoming:
            incoming(app, event, now)
        elif kind is Ringback:
            app.pipeline.tone.start("ringback")
            app.hal.display("ringback", app.current and app.current["to"])
        elif kind is Connected:
            connected(app, event, now)
        elif kind is Ended:
            ended(app, event, now)
        elif kind is Dtmf:
            app.summary["dtmf_received"] += event.digit
            app.log("I", "dtmf %s" % event.digit)
        elif kind is Sysinfo:   # put off as a registration's report is, when there is no room for its code
            try:
                rarely("firmware.sysinfo").received(app, event.version, event.data)
            except MemoryError:
                put_off(app, event)
        events.pop(0)


def put_off(app, work):
    """Work an event asked for that found no room for its code (the collector has tried), kept in App.deferred
    for an idle second with room (firmware/putoff.py): 0, the registration's firmware report, or a Sysinfo event.
    Before, the event that asked for it held every event behind it: a 100K `.mpy` handset that logged in
    again at a cluster's next node sent no audio in its next call, its connected event held behind its
    registration's for as long as the call lasted (docs/handset.md, "Work an event can put off")."""
    if app.deferred is None:
        app.deferred = []
    app.deferred.append(work)   # (no console line: there is no room for one either; firmware/putoff.py says it)


def incoming(app, event, now):
    app._packed_at = None   # as for a registration: a MEDIA_PEER after this genuine SETUP has its collection
    app.log("I", "incoming call from %s %s" % (event.number, event.name))
    app.hal.display("ringing", ("%s %s" % (event.number, event.name)).strip())
    app.current = {"from": event.number, "to": app.config["extension"], "dialed_ms": now,
                   "setup_ms": None, "path": None, "cause": None, "frames_sent": 0,
                   "frames_received": 0}
    app._call_sent = app._call_received = 0
    app.digits = ""
    app.pipeline.tone.start("ringback")   # the ringer: the ring-back cadence (2 s on, 4 s off)
    app.tone_stop_at = None
    if app.script.get("answer"):
        app.answer_at = ticks_add(now, int(app.script.get("answer_after_ms", 300)))


def connected(app, event, now):
    if _mem_free is not None and _mem_free() > _CALL_GC_ROOM:   # see _CALL_GC_ROOM
        gc.threshold(-1)
    app.pipeline.reset()
    app.cn_level = None
    if app.vad is not None:
        app.vad.reset()
    app.set_power_save(False)
    app.hal.mic_start()  # what the microphone queued before the call is not sent
    # the audio tick in step with the microphone's frames: one wake-up serves both
    mic = app.hal.mic_due()
    app._frame_at = now if mic is None else mic
    app.connected_at = now
    if app.script.get("dtmf"):
        app._dtmf_at = ticks_add(now, 501)
    if app.phone.other is None:   # a consultation's timestamps carry on the held call's
        app.call_ts = 0
    if app.current is not None:
        app.current["setup_ms"] = ticks_diff(now, app.current["dialed_ms"])
        app.current["path"] = event.path
    app.log("I", "connected (%s)" % event.path)
    call = app.phone.call   # the other party (a transfer changes it: PARTY); None: handled late, the call is over
    app.hal.display("connected", call and call.number)
    duration = app.script.get("duration_ms")
    if duration and app.current and app.current["from"] == app.config["extension"]:
        app.hangup_at = ticks_add(now, int(duration))


def ended(app, event, now):
    if _mem_free is not None and gc.threshold() < 0:   # start.py's threshold again, as it sets it
        gc.collect()
        gc.threshold(_mem_free() // 4)
    cause = wire.CAUSE_TEXT.get(event.cause, str(event.cause))
    app.log("I", "call ended: %s" % cause)
    app.set_power_save(True)
    app.hal.mic_stop()
    app.pipeline.reset()
    # the tone a caller hears after each cause (names from firmware/audio/tones.py TONES)
    tone = "busy" if cause == "busy" or cause == "do not disturb" else "reorder" if cause in (
        "unreachable", "network busy", "not permitted", "unknown extension", "no answer", "forwarding loop") else None
    if tone:
        app.pipeline.tone.start(tone)
        app.tone_stop_at = ticks_add(now, app.tone_timeout_ms)
    if event.cause == wire.CAUSE_FEATURE_ON or event.cause == wire.CAUSE_FEATURE_OFF:
        app.hal.display(cause, app.current and app.current["to"])   # "feature on *78"
    else:
        app.hal.display("ended: " + cause, None)
    if app.current is not None:
        app.current["cause"] = cause
        app.current["tone"] = tone  # what the speaker plays now (None: silence)
        app._close_call()
    app.connected_at = app._dtmf_at = None
    if app.phone.call is not None:   # the other line is left (held or ringing)
        rarely("firmware.lines").remaining(app, now)
    elif app.script.get("exit_after_call"):
        app.exit_at = ticks_add(now, 1500 if tone else 300)  # long enough to hear the tone
