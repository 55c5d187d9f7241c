"""An over-the-air update on the handset: download, check, write beside the running firmware, switch,
reboot, keep or roll back (docs/operations.md, "Over-the-air updates").

The system information (authenticated, B6) offers an update as {"version", "sha256", "size", "kind"}
(firmware/sysinfo.py puts it in app.ota_offer). While the phone is idle and registered it asks its
host for the bundle (FIRMWARE_WANT: 16 chunks at a time, from the next one it needs), and streams each
FIRMWARE chunk through SHA-256 into flash, never holding the bundle in RAM:

- kind "files": an uncompressed tar (ustar) of the .mpy tree, unpacked as it arrives into the slot
  that is not running (ota/a or ota/b); ota.json is then pointed at it (firmware/otaboot.py);
- kind "image" (an ESP32 with OTA partitions): written block by block into the next OTA partition
  with MicroPython's esp32.Partition, which is then made the boot partition.

Only when the whole bundle's SHA-256 is the one the system information gave is the switch made; a
mismatch is refused and the running firmware stays. Then the handset resets; the new firmware boots
on trial and is kept once it has registered again (registered() below; on an ESP32 image
mark_app_valid_cancel_rollback). Never during a call: a call that starts while the bundle downloads
stops the download, which starts again from the beginning once the phone is idle.

Three modules, each loaded only for its use (firmware.hal.rarely; docs/handset.md, Memory): this one
(an offer looked at once a second while idle, a registration) and forgotten after each call;
firmware/ota_download.py (Update, TreeWriter), held by app.ota while a download runs and let go after;
firmware/ota_image.py (ImageWriter), for an image only.
"""
import gc

from common.compat import const, ticks_diff
from firmware.hal import rarely

_FIRMWARE_STATE = const(0x45)
_IE_FW_VERSION = const(0x2E)
_IE_FW_STATE = const(0x2F)
_IE_FW_RUNNING = const(0x30)
_REGISTER_MS = const(120000)  # a firmware on trial that has not registered after this resets (rolls back)

# FIRMWARE_STATE's fw_state
DOWNLOADING = const(1)
INSTALLING = const(2)
REFUSED = const(3)
RUNNING = const(4)
ROLLED_BACK = const(5)
FAILED = const(6)


def report(app, version, state, now):
    """FIRMWARE_STATE to the host: what happened to version, and which firmware runs."""
    app.phone.login.send(_FIRMWARE_STATE, {_IE_FW_VERSION: version, _IE_FW_STATE: state,
                                           _IE_FW_RUNNING: app.firmware.get("version") or ""}, now)


def idle(app, now):
    """Once a second while idle, with an update offered or a firmware on trial."""
    state = app.firmware
    if state.get("trial") and not app.phone.registered and ticks_diff(now, app.started) > _REGISTER_MS:
        app.log("W", "firmware %s on trial has not registered in %d s: resetting" % (state.get("version"),
                                                                                      _REGISTER_MS // 1000))
        app.reset_requested = True
        app.running = False
        return
    entry = app.ota_offer
    if entry is None or not app.phone.registered:
        return
    version = entry.get("version")
    if version == state.get("version") or version == state.get("rolled_back"):
        app.ota_offer = None   # running it already, or it rolled back here: not again
        return
    # the download's code and objects live until it ends: made right after a collection they fill the heap from its
    # lowest free block instead of landing among a second's garbage, whose holes would split the free space for the
    # whole download (as a call's are: App.dial, _pack; docs/handset.md, Memory)
    gc.collect()
    try:
        app.ota = rarely("firmware.ota_download").Update(app, entry, now)
    except MemoryError:   # no room for the download now (its code, its writer): from the start at a later second
        app.phone.firmware_sink = None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        app.log("E", "firmware %s cannot be installed: %s" % (version, exc))
        app.ota_offer = None
        report(app, str(version), FAILED, now)


def registered(app, now):
    """The phone registered: a firmware on trial is kept (the switch made final), a roll-back reported; at a
    cluster's node with no room for a standby session (common/cluster.py), that is said."""
    if getattr(app.phone, "no_standby", 0) and app.phone.standby is None:
        app.log("W", "no standby session: too little free heap")
    state = app.firmware
    if state.get("trial") and state.get("kind", "files") == "files" and not state.get("boots"):
        # firmware/otaboot.py did not run: a main.py from before over-the-air updates booted the old firmware
        app.log("E", "firmware %s was not booted: this handset's main.py does not choose a slot (redeploy it)"
                % state.get("version"))
        state = _rolled_back(state)
    if state.get("trial"):
        if state.get("kind") == "image":
            import esp32
            running = esp32.Partition(esp32.Partition.RUNNING).info()[4]
            if running != state.get("partition"):   # the bootloader went back already
                state = _rolled_back(state)
            else:
                try:
                    esp32.Partition.mark_app_valid_cancel_rollback()
                except OSError as exc:   # -261: no otadata partition; 1 (ESP_FAIL): no OTA entry active
                    # (esp_ota_ops.c): either way nothing would roll it back
                    app.log("W", "firmware %s kept, but this image cannot roll back by itself: %s"
                            % (state.get("version"), exc))
        if state.get("trial"):
            state["trial"] = 0
            state.pop("boots", None)
            app.log("I", "firmware %s registered: kept" % state.get("version"))
        rarely("firmware.otaboot").write(state)
        app.firmware = state
    if state.get("rolled_back") and not state.get("reported"):
        app.log("W", "firmware %s was rolled back; running %s" % (state["rolled_back"],
                                                                 state.get("version") or "the deployed firmware"))
        app.firmware = state   # what report() says runs
        report(app, state["rolled_back"], ROLLED_BACK, now)
        state["reported"] = 1
        rarely("firmware.otaboot").write(state)
    else:   # each registration says which firmware runs (the hosts' status shows it)
        report(app, state.get("version") or "deployed", RUNNING, now)


def _rolled_back(state):
    previous = state.get("previous") or {}
    return {"kind": previous.get("kind", "files"), "slot": previous.get("slot"), "version": previous.get("version"),
            "rolled_back": state.get("version"), "trial": 0}
