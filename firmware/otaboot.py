"""Which firmware a handset boots: the one it was deployed with, or an update's slot (docs/operations.md,
"Over-the-air updates").

main.py calls select() before anything else of the firmware is imported. An update (firmware/ota.py)
writes its files into a slot directory (ota/a or ota/b) and then points ota.json at it, which is the
atomic switch: {"slot", "version", "trial", "previous": {"slot", "version"}}. A slot on trial boots
once: a second boot still on trial means the new firmware never registered (it crashed, hung and was
reset by the watchdog, or reset itself), and the handset goes back to the previous slot by itself.
An image on an ESP32 is switched by esp32.Partition and rolled back by ESP-IDF's bootloader; this
module then only notes which firmware runs.

Loaded at boot only: main.py drops the module again before the loop starts (firmware.hal.rarely does
the same for the firmware's other rarely run code), except while a slot is on trial, when a failure
to start must reset the device instead of leaving it at the REPL.
"""
import json
import os
import sys

STATE = "ota.json"


def read():
    """ota.json as a dict, or None (the firmware the handset was deployed with)."""
    try:
        with open(STATE) as f:
            state = json.load(f)
        return state if isinstance(state, dict) else None
    except (OSError, ValueError):
        return None


def write(state):
    """ota.json replaced whole (written beside it, then renamed: the switch is atomic)."""
    with open(STATE + ".tmp", "w") as f:
        json.dump(state, f)
    os.rename(STATE + ".tmp", STATE)


def log(level, msg):
    print("%s ota %s" % (level, msg))


def select():
    """The firmware's start function (firmware.start.main) from the slot to boot."""
    state = read()
    trial = False
    if state is not None and state.get("kind", "files") == "files":
        if state.get("trial"):
            if state.get("boots", 0) >= 1:
                previous = state.get("previous") or {}
                log("W", "firmware %s did not register after its first boot: rolled back to %s"
                    % (state.get("version"), previous.get("version") or "the deployed firmware"))
                state = {"slot": previous.get("slot"), "version": previous.get("version"),
                         "rolled_back": state.get("version"), "trial": 0}
            else:
                state["boots"] = 1
                trial = True
            write(state)
        slot = state.get("slot")
        if slot:
            sys.path.insert(0, slot)
            log("I", "booting firmware %s from %s%s" % (state.get("version"), slot, " (on trial)" if trial else ""))
    # this module came from the deployed firmware: forget its package, so that firmware.* and
    # common.* are found anew, in the slot first
    for name in ("firmware.otaboot", "firmware"):
        sys.modules.pop(name, None)
    if not trial:
        from firmware.start import main
        return main
    return _guarded


def _guarded():
    """A slot on trial: anything that keeps it from starting resets the device (then it rolls back)."""
    try:
        from firmware.start import main
        main()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:   # SystemExit too: the unix HAL's reset
        if isinstance(exc, SystemExit):
            raise
        log("E", "firmware on trial failed to start: %s: %s; resetting" % (type(exc).__name__, exc))
        sys.print_exception(exc)
        if sys.platform == "linux":
            sys.exit(1)
        import machine
        machine.reset()
