"""What a handset runs rarely of its keys and console (firmware/hal/__init__.py, poll_keys): the
console commands other than `!call` and `!dtmf`, what `!state` reports, hold and resume, the keys
of an idle phone (A, *, digits), and the summary a handset writes as it stops.

Rarely run (an operator's or a script's command, a key while idle, once at the end): firmware/app.py
imports this module for each use and forgets it again (firmware.hal.rarely), so that its code does
not stay on a handset's heap in a call (docs/handset.md, Memory). What a call uses often (a key in
a call, `!dtmf`) and what makes a call's objects (`!call`, #: App.dial, with no module on the heap
then) stay in App.command and App.key.
"""
import gc
import json

from common.call import STATE_NAMES
from firmware.app import KEY_OFF_HOOK, KEY_ON_HOOK
from firmware.hal import rarely

_mem_alloc = getattr(gc, "mem_alloc", None)   # MicroPython only
_mem_free = getattr(gc, "mem_free", None)


def command(app, cmd, now):
    """One console command line (`!call N` and `!dtmf D` are App.command's): `!hangup`, `!answer`,
    `!state`, `!reset`, `!quit`, `!hold`, `!resume`, `!dnd`, `!forward`, `!pickup [N]`, `!voicemail`,
    `!conference`, `!button NAME`;
    the two-line commands (`!swap`, `!reject`, `!transfer N`, `!consult N`, `!complete`) go to
    firmware/lines.py."""
    if cmd == "!hangup":
        app.key(KEY_ON_HOOK, now)
    elif cmd == "!answer":
        app.phone.answer(now) or command(app, "!swap", now)   # a waiting call: firmware/lines.py
    elif cmd == "!state":
        app.hal.log("I", "state", json.dumps(state(app, now)))
    elif cmd == "!reset" or cmd == "!quit":
        app.reset_requested = cmd == "!reset"  # a device resets; "!quit" leaves it at the REPL
        app.running = False
    elif cmd == "!conference":   # the current call and the held one (firmware/conference.py)
        rarely("firmware.conference").join(app, now)
    elif cmd == "!hold" or cmd == "!resume":
        hold(app, cmd == "!hold", now)
    elif cmd.startswith("!dnd ") or cmd.startswith("!forward ") or cmd.startswith("!pickup") or cmd == "!voicemail":
        code = rarely("firmware.features").star_code(cmd)   # the host answers it with a cause
        if code is None:
            app.log("W", "bad feature command %r" % cmd)
        else:
            app.dial(code, now)
    elif cmd.startswith("!button "):   # boards without a digit keypad: speed dial (firmware/sysinfo.py)
        rarely("firmware.sysinfo").button(app, cmd[8:].strip(), now)
    else:   # !swap !reject !transfer N !consult N !complete
        rarely("firmware.lines").command(app, cmd, now)


def state(app, now):
    """What `!state` reports: protocol state, dialed digits, tone, heap."""
    return {"state": STATE_NAMES[app.phone.state], "registered": app.phone.registered,
            "extension": app.config["extension"], "sysinfo_version": app.phone.sysinfo_version,
            "digits": app.digits, "tone": app.pipeline.tone.name, "power_save": app.power_save,
            "caller": app.current and app.current.get("from"), "heap": heap(app), "holding": app.phone.holding,
            "ticks": now, "net_errors": app.summary["net_errors"], "speed_dial": app.speed_dial,
            "events_held": app.summary["events_held"]}


def finish(app):
    """The handset stops (App.finish): log out, close the call's record, write the summary (a file
    when the script names one, else one console line) and close the devices."""
    now = app.hal.ticks_ms()
    app.phone.stop(now)
    if app.pipeline.concealer is not None:   # (App.finish let it go on a heap with no room for this code: the events,
        app.events(now)                      # a call's end among them, would reset it; the call's record says "in progress")
    if app.sock is not None:
        app.flush(now)  # the BYE: a failure is counted, never raised
    if app.current is not None:
        app.current["cause"] = "in progress"
        app._close_call()
    summary = app.summary
    summary["frames_sent"], summary["frames_received"] = app.frames_sent, app.frames_received
    # the microphone's frames lost while the loop was late (a busy PC's stall, an ESP32's DMA overrun):
    # counted by the unix HAL; the ESP32 HAL cannot tell (its DMA overwrites unseen): None there
    summary["mic_frames_lost"] = getattr(app.hal, "mic_lost", None)
    summary["cn_sent"], summary["cn_received"] = app.cn_sent, app.cn_received
    summary["frames_suppressed"] = app.frames_suppressed
    summary["frames_rejected"] = app.frames_rejected + app.phone.dropped
    if app.record is not None:
        app.record.close()
    if app.record_sent is not None:
        app.record_sent.close()
    summary["heap"] = heap(app)
    summary["jitter"] = app.pipeline.jitter.stats()  # receive path: late, concealed, delay (docs/handset.md)
    if app.profile is not None:
        summary["profile"] = app.profile.report()
    if app.script.get("summary"):
        with open(app.script["summary"], "w") as f:
            json.dump(summary, f)  # streamed: no copy of the whole summary on a small heap
    else:  # the console then: one line (a copy of the whole summary, which a file does not need)
        app.log("I", "summary " + json.dumps(summary))
    app.hal.close()


def hold(app, flag, now):
    """Hold (the far end hears the host's music on hold) or resume the connected call."""
    if (app.phone.hold if flag else app.phone.resume)(now):
        app.log("I", "call held" if flag else "call resumed")
        app.hal.display("on hold" if flag else "connected", app.phone.call.number)
    else:
        app.log("W", "cannot %s now" % ("hold" if flag else "resume"))


def idle_key(app, key, now):
    """A keypad key while idle (App.key): A lifts (dial tone), digits collect with a key click, a
    leading * starts a star code (# dials what was collected: App.key, so that no module is on the
    heap as the call's long-lived objects are made)."""
    if key == "*" and (not app.digits or app.digits[0] == "*"):
        app.digits += key    # a star code (docs/features.md): *78#, *72301# ...
        app.pipeline.tone.dtmf(key, 60)
        app.tone_stop_at = None
        app.hal.display("dial", app.digits)
    elif key == KEY_OFF_HOOK or key == "*":
        app.digits = ""
        app.pipeline.tone.start("stutter" if app.phone.messages else "dial")   # stutter: voicemail waiting
        app.tone_stop_at = None
        app.hal.display("dial tone", None)
    elif key in "0123456789":
        app.digits += key
        app.pipeline.tone.dtmf(key, 60)  # the key click; it also ends the dial tone
        app.tone_stop_at = None
        app.hal.display("dial", app.digits)


def heap(app):
    """Heap figures (bytes) on MicroPython: in use now, peak seen by the loop, least free, total."""
    if _mem_alloc is None:
        return None
    total = _mem_alloc() + _mem_free()   # every block is used or free (py/gc.c, gc_info)
    return {"alloc": _mem_alloc(), "peak_alloc": app.heap_peak, "peak_live": app.heap_live_peak,
            "min_free": total - app.heap_peak if app.heap_peak else None, "total": total}
