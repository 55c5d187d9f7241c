"""The handset's second line: call waiting, swap, transfer (docs/features.md).

Run only when a second line is in use or a transfer is keyed: firmware/app.py imports this module
for each use and forgets it again (firmware.hal.rarely), so its code does not stay on a handset's
heap. The protocol's side: common/phone.py (the two CallLegs) and common/lines.py (swap, transfer).

Keys in a call: B swaps the two lines (with one line: hold / resume, app.py); A answers a waiting
call (the current one is held); D rejects a waiting call while it rings (else hangs up the current
line); C N # transfers to N (blind), C N A consults N, C # completes the transfer.
Console: !swap !reject !transfer N !consult N !complete (and !answer for a waiting call),
!waiting on|off (dials *70 / *71).
"""
from common.call import CONNECTED, RINGING
from common.compat import forget
from common.phone import Ended
from firmware.hal import rarely

WAITING_MS = 500       # the call-waiting beep over the current call (440 Hz, firmware/audio/tones.py)


def _line(name):
    """A function of common/lines.py (swap, reject_waiting, transfer), the module let go again;
    on a heap too full for its code, once more after a collection."""
    try:
        from common import lines
    except MemoryError:
        import gc
        gc.collect()
        from common import lines
    forget("common.lines")
    return getattr(lines, name)


def _display(app, what, number):
    app.hal.display(what, number)


def _record(app, number, incoming, now):
    """The summary's record of a call on the other line (app.current is the current line's)."""
    me = app.config["extension"]
    return {"from": number if incoming else me, "to": me if incoming else number, "dialed_ms": now,
            "setup_ms": None, "path": None, "cause": None, "frames_sent": 0, "frames_received": 0}


def event(app, event, now):
    """An event of the second line (common/phone.py): a waiting call (Incoming, waiting 1), the far
    end changed by a transfer (Incoming, waiting 2), the other line's call ended (Ended, line 1)."""
    if type(event) is Ended:
        ended(app, event, now)
    elif event.waiting == 2:
        party(app, event)
    else:
        waiting(app, event, now)


def waiting(app, event, now):
    """A call rings beside the current one: a beep over the call and the caller on the display."""
    app.log("I", "call waiting from %s %s" % (event.number, event.name))
    app.line2 = _record(app, event.number, True, now)
    _display(app, "waiting", ("%s %s" % (event.number, event.name)).strip())
    # a timed tone, as a DTMF click is (the generator's own setter: no method for it stays on the heap)
    app.pipeline.tone._set("waiting", 440, 440, 0, 0, WAITING_MS * 8)


def ended(app, event, now):
    """The other line's call ended (its caller gave up, or the held party hung up)."""
    from common import wire
    cause = wire.CAUSE_TEXT.get(event.cause, str(event.cause))
    app.log("I", "other line ended: %s" % cause)
    record = getattr(app, "line2", None)
    app.line2 = None
    if record is not None:
        record["cause"] = cause
        current = app.current
        app.current = record
        app._close_call()
        app.current = current
    if event.cause == wire.CAUSE_CONFERENCE:   # the held line joined the conference (firmware/conference.py)
        _display(app, "conference", None)
        return
    call = app.phone.call
    if call is not None:   # None: the current call ended too, in the same batch of events (its Ended follows)
        _display(app, "connected" if app.phone.state == CONNECTED else "on hold", call.number)


def remaining(app, now):
    """The current call ended and the other line is left: held (B resumes it) or ringing (A answers)."""
    phone = app.phone
    app.current = getattr(app, "line2", None)
    app.line2 = None
    call = phone.call
    if call.state == RINGING:
        app.log("I", "incoming call from %s %s" % (call.number, call.name))
        _display(app, "ringing", call.number)
        app.pipeline.tone.start("ringback")
        app.tone_stop_at = None
        return
    app.tone_stop_at = None
    app.pipeline.tone.stop()
    app.set_power_save(False)
    app.hal.mic_start()
    app.log("I", "on hold %s" % call.number)
    _display(app, "on hold", call.number)


def party(app, event):
    """The far end is now another party: the call was transferred."""
    app.log("I", "now talking to %s %s" % (event.number, event.name))
    if app.current is not None:
        key = "to" if app.current.get("from") == app.config["extension"] else "from"
        app.current[key] = event.number
    _display(app, "ringing" if app.phone.state == RINGING else "connected",
             ("%s %s" % (event.number, event.name)).strip())


def swap(app, now):
    phone = app.phone
    answering = phone.other is not None and phone.other.state != CONNECTED
    if not _line("swap")(phone, now):
        app.log("W", "cannot swap now")
        return
    app.current, app.line2 = getattr(app, "line2", None), app.current
    if answering and app.current is not None:
        app.current["setup_ms"] = 0
    app.pipeline.reset()
    app.log("I", "connected to %s (%s held)" % (phone.call.number, phone.other.number))
    _display(app, "connected", phone.call.number)


def consult(app, number, blind, now):
    """Hold the current call and call number: a consultation, or a blind transfer's call."""
    held = app.current
    if not _line("consult")(app.phone, number, now, blind):
        app.log("W", "cannot call %s now" % number)
        return
    app.line2 = held
    app.current = _record(app, number, False, now)
    app.log("I", "%s %s" % ("transferring to" if blind else "consulting", number))
    _display(app, "transfer" if blind else "dialing", number)


def complete(app, now):
    if _line("transfer")(app.phone, now):
        app.log("I", "transfer %s to %s" % (app.phone.other.number, app.phone.call.number))
    else:
        app.log("W", "cannot transfer now")


def reject(app, now):
    if _line("reject_waiting")(app.phone, now):
        app.log("I", "waiting call rejected")
        record = app.line2
        app.line2 = None
        if record is not None:
            record["cause"] = "busy"
            current = app.current
            app.current = record
            app._close_call()
            app.current = current
    else:
        app.log("W", "no waiting call")


def command(app, cmd, now):
    """!swap, !reject, !transfer N, !consult N, !complete; False when cmd is none of them."""
    word, _, arg = cmd.partition(" ")
    arg = arg.strip()
    if word == "!swap":
        swap(app, now)
    elif word == "!reject":
        reject(app, now)
    elif word == "!complete":
        complete(app, now)
    elif word in ("!transfer", "!consult") and arg.isdigit():
        consult(app, arg, word == "!transfer", now)
    elif word == "!waiting" and arg in ("on", "off"):    # call waiting on / off: a star code
        app.dial("*70" if arg == "on" else "*71", now)
    else:
        return False
    return True


def key(app, key, now):
    """A key in a call while a second line is in use or a transfer is keyed; False: not ours."""
    phone = app.phone
    other = phone.other
    digits = app.digits
    if digits[:1] == "C":                 # C N # blind, C N A consult, C # complete, D cancels
        if key in "0123456789":
            app.digits = digits + key
            app.pipeline.tone.dtmf(key, 60)
            _display(app, "transfer", app.digits[1:])
        elif key == "*" and len(digits) == 1:   # C *: conference (firmware/conference.py)
            app.digits = ""
            rarely("firmware.conference").join(app, now)
        elif key == "#" or key == "A":
            app.digits = ""
            if len(digits) == 1:
                complete(app, now)
            else:
                consult(app, digits[1:], key == "#", now)
        elif key == "D":
            app.digits = ""
            _display(app, "connected", phone.call and phone.call.number)
        return True
    if key == "C":
        app.digits = "C"
        _display(app, "transfer", "")
        return True
    if other is None:
        return False
    if key == "B" or (key == "A" and other.state == RINGING):
        swap(app, now)
        return True
    if key == "D" and other.state == RINGING:
        reject(app, now)
        return True
    return False
