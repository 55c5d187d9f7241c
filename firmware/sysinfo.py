"""The system information a handset keeps (B6): into flash as it arrives, back at boot, and what
the handset takes from it: settings.speed_dial, the numbers its board buttons dial.

Rarely run (at boot, at registration, when an administrator changes it, when a board button is
pressed): firmware/app.py imports this module for each use and forgets it again
(firmware.hal.rarely), so that a handset's heap does not hold its code in between
(docs/handset.md, Memory).
"""
import json
import os

from common.call import IDLE, RINGING
from firmware.app import KEY_ON_HOOK


def received(app, version, data):
    """A new version arrived (the phone's "sysinfo" event): keep it in flash, then use it."""
    app.summary["sysinfo_version"] = version
    app.log("I", "system information version %d (%d bytes)" % (version, len(data)))
    keep(app, version, data)
    try:
        use(app, json.loads(data))
    except ValueError:
        app.log("W", "system information version %d is not JSON" % version)


def keep(app, version, data):
    """The last system information in flash: {"version": N, "info": {...}}."""
    path = app.config.get("sysinfo_file", "sysinfo.json")
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(('{"version":%d,"info":' % version).encode())
            f.write(data)
            f.write(b"}")
        os.rename(tmp, path)
        app.log("I", "system information version %d kept in %s" % (version, path))
    except OSError as exc:
        app.log("W", "cannot keep system information: %s" % exc)


def restore(app):
    """At boot: the version kept in flash, if there is one."""
    try:
        with open(app.config.get("sysinfo_file", "sysinfo.json")) as f:
            kept = json.load(f)
        app.phone.sysinfo_version = kept["version"]
        app.summary["sysinfo_version"] = kept["version"]
        app.log("I", "system information version %d from flash" % kept["version"])
        use(app, kept["info"])
    except (OSError, ValueError, KeyError, TypeError):
        pass


def use(app, info):
    """What the handset takes from the system information: settings.speed_dial,
    "BUTTON=NUMBER,..." (docs/sysinfo.md), for boards whose buttons dial; an over-the-air update
    offered to this phone ("firmware", docs/operations.md), which firmware/ota.py installs when idle."""
    offer = info.get("firmware") if isinstance(info, dict) else None
    if isinstance(offer, dict) and ("extensions" not in offer or app.config["extension"] in offer["extensions"]):
        offer.pop("extensions", None)
        app.ota_offer = offer
    else:
        app.ota_offer = None
    text = info.get("settings", {}).get("speed_dial", "") if isinstance(info, dict) else ""
    dial = {}
    for item in str(text).split(","):
        pair = item.split("=")
        if len(pair) == 2 and pair[0].strip() and pair[1].strip():
            dial[pair[0].strip()] = pair[1].strip()
        elif item.strip():
            app.log("W", "settings.speed_dial: %r is not BUTTON=NUMBER" % item.strip())
    app.speed_dial = dial


def button(app, name, now):
    """A board button (boards without a digit keypad): dial its speed-dial number when idle,
    answer when ringing, end the call when it has a number and a call is up."""
    number = app.speed_dial.get(name)
    state = app.phone.state
    if state == RINGING:
        app.phone.answer(now)
    elif state != IDLE:
        if number is not None:
            app.key(KEY_ON_HOOK, now)
    elif number:
        app.pipeline.tone.stop()
        app.dial(number, now)
    else:
        app.log("W", "button %s has no speed-dial number (system information settings.speed_dial)" % name)
