"""The handset's conference keys, console command and events (docs/features.md, Conference).

Rarely run: firmware/app.py loads this module for each use and forgets it again
(firmware.hal.rarely). The second line itself is common/second_line.py, loaded while it is used.

Keys in a call: `C N A` holds the call (if it is not held) and calls N on the second line;
`C *` joins the two calls into a conference (CONFERENCE to the phone's host). Console:
`!call N` while the call is held, then `!conference`.
"""
from common import wire


def dial(app, number, now):
    """A call to number while the connected call is held: that one waits on the second line."""
    from common import second_line
    return second_line.dial(app.phone, number, now)


def join(app, now):
    """`!conference` / `C *`: ask the host to join the active call and the held one."""
    from common import second_line
    if second_line.conference(app.phone, now):
        app.log("I", "conference requested")
        app.hal.display("conference", "joining")
    else:
        app.log("W", "cannot join a conference now (one call connected and one held are needed)")


def key(app, key, now):
    """A key in a call while `C` leads the digits (app.digits): C * joins, C N A calls N."""
    digits = app.digits
    if key == "C":
        app.digits = "C"
    elif key == "*" and digits == "C":
        app.digits = ""
        join(app, now)
    elif key == "A" and len(digits) > 1:
        app.digits = ""
        if not app.phone.holding:
            app.hold(True, now)
        app.dial(digits[1:], now)
    elif key in "0123456789":
        app.digits = digits + key
        app.hal.display("call", app.digits[1:])
    else:
        app.digits = ""


def event(app, event, now):
    """common/second_line.py's events: the held call ended, the host's answer to CONFERENCE."""
    name = type(event).__name__
    if name == "LineEnded":
        if event.cause == wire.CAUSE_CONFERENCE:
            app.log("I", "held call joined the conference")
        else:
            app.log("I", "held call ended: %s" % wire.CAUSE_TEXT.get(event.cause, str(event.cause)))
            if app.phone.call is None:
                app.hal.display("idle", None)
    elif name == "Conferenced":
        app.log("I" if event.joined else "W", "conference %s" % ("joined" if event.joined else "refused"))
        app.hal.display("conference" if event.joined else "conference refused", None)
