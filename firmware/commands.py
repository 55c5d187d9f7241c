"""The handset's console commands other than a key and `!dtmf` (firmware/hal/__init__.py,
poll_keys), what `!state` reports, and the summary a handset writes as it stops.

Rarely run (an operator's or a script's command, once at the end): firmware/app.py imports this
module for each use and forgets it again (firmware.hal.rarely), so that its code does not stay on a
handset's heap in a call (docs/handset.md, Memory). A keypad key and `!dtmf`, which a call uses,
stay in App.command.
"""
import json

from common.call import STATE_NAMES
from firmware.app import KEY_ON_HOOK
from firmware.hal import rarely


def command(app, cmd, now):
    """One console command line: `!call N`, `!hangup`, `!answer`, `!state`, `!reset`, `!quit`,
    `!hold`, `!resume`, `!dnd`, `!forward`, `!pickup`, `!button NAME`; the two-line commands
    (`!swap`, `!reject`, `!transfer N`, `!consult N`, `!complete`) go to firmware/lines.py."""
    if cmd.startswith("!call "):
        app.dial(cmd[6:].strip(), now)
    elif cmd == "!hangup":
        app.key(KEY_ON_HOOK, now)
    elif cmd == "!answer":
        app.phone.answer(now) or command(app, "!swap", now)   # a waiting call: firmware/lines.py
    elif cmd == "!state":
        app.hal.log("I", "state", json.dumps(state(app, now)))
    elif cmd == "!reset" or cmd == "!quit":
        app.reset_requested = cmd == "!reset"  # a device resets; "!quit" leaves it at the REPL
        app.running = False
    elif cmd == "!hold" or cmd == "!resume":
        app.hold(cmd == "!hold", now)
    elif cmd.startswith("!dnd ") or cmd.startswith("!forward ") or cmd == "!pickup":
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
            "caller": app.current and app.current.get("from"), "heap": app.heap(), "holding": app.phone.holding,
            "ticks": now, "net_errors": app.summary["net_errors"], "speed_dial": app.speed_dial}


def finish(app):
    """The handset stops (App.finish): log out, close the call's record, write the summary (a file
    when the script names one, else one console line) and close the devices."""
    now = app.hal.ticks_ms()
    app.phone.stop(now)
    app.events(now)
    if app.sock is not None:
        app.flush(now)  # the BYE: a failure is counted, never raised
    if app.current is not None:
        app.current["cause"] = "in progress"
        app._close_call()
    summary = app.summary
    summary["frames_sent"], summary["frames_received"] = app.frames_sent, app.frames_received
    summary["cn_sent"], summary["cn_received"] = app.cn_sent, app.cn_received
    summary["frames_suppressed"] = app.frames_suppressed
    summary["frames_rejected"] = app.frames_rejected + app.phone.dropped
    if app.record is not None:
        app.record.close()
    if app.record_sent is not None:
        app.record_sent.close()
    summary["heap"] = app.heap()
    summary["jitter"] = app.pipeline.jitter.stats()  # receive path: late, concealed, delay (docs/handset.md)
    if app.profile is not None:
        summary["profile"] = app.profile.report()
    if app.script.get("summary"):
        with open(app.script["summary"], "w") as f:
            json.dump(summary, f)  # streamed: no copy of the whole summary on a small heap
    else:  # the console then: one line (a copy of the whole summary, which a file does not need)
        app.log("I", "summary " + json.dumps(summary))
    app.hal.close()
