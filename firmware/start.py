"""The handset's start-up: configuration, HAL, network, then the App's loop.

firmware/main.py (run from source at boot) only calls main() here, so this code is
compiled to .mpy like the rest and nothing is compiled on the handset's heap. On a
device (or a virtual handset's device directory) it reads upbx_config.json as
`upbx deploy` writes it: {"version": 1, "board", "wifi_ssid", "wifi_password", "host",
"port", "extension", "secret"}, and the board file board.json.

An exception that escapes the loop is logged on the console and resets the device (on the
unix port the process exits with status 1 and `upbx phone --restart` starts it again).
"""
import gc
import json
import sys
import time


CONFIG_VERSION = 1
REQUIRED = ("host", "port", "extension", "secret")


def load_config(path):
    """The device configuration; ValueError names the file and the missing or bad key."""
    with open(path) as f:
        config = json.load(f)
    if config.get("version", CONFIG_VERSION) != CONFIG_VERSION:
        raise ValueError("%s: version %r, this firmware reads %d" % (path, config.get("version"), CONFIG_VERSION))
    for key in REQUIRED:
        if key not in config:
            raise ValueError("%s: missing %r (run upbx deploy with --host, --extension, --secret)" % (path, key))
    return config


def make_hal(config, booted=None):
    if sys.platform == "linux":
        from firmware.hal import unix
        return unix.Hal(source=config.get("audio_in") or None, sink=config.get("audio_out") or None,
                        name=config.get("extension", "phone"), ticks_start=config.get("ticks_start"),
                        watchdog_port=config.get("watchdog_port"), faults=config.get("faults", ()),
                        booted=booted)
    from firmware.hal import esp32
    with open("board.json") as f:
        board = json.load(f)
    wifi = (config["wifi_ssid"], config.get("wifi_password", "")) if config.get("wifi_ssid") else None
    return esp32.Hal(board, wifi, watchdog_ms=int(config.get("watchdog_ms", 10000)))


def wait_for_network(hal, timeout_ms=30000):
    """Join Wi-Fi before the first socket is made (getaddrinfo needs it), feeding the watchdog."""
    start = hal.ticks_ms()
    while not hal.network_up():
        hal.feed()
        if hal.ticks_diff(hal.ticks_ms(), start) > timeout_ms:
            hal.log("W", "wifi", "no network after %d s, still trying" % (timeout_ms // 1000))
            start = hal.ticks_ms()
        time.sleep_ms(100)


def crashed(hal, app, exc):
    """An exception escaped the loop: say so on the console, log out if we can, reset the device."""
    hal.log("E", "phone", "crashed: %s: %s; resetting" % (type(exc).__name__, exc))
    sys.print_exception(exc)  # the traceback, on the console
    if app is not None:
        try:
            app.finish()  # log out and write the summary, if the network still lets us
        except Exception as again:
            hal.log("E", "phone", "while finishing: %r" % (again,))
    hal.reset("crash")


def main():
    booted = time.ticks_ms()  # "ticks_start" (unix HAL) is what the clock reads now
    path = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].endswith(".json") else "upbx_config.json"
    # a bad configuration or board stops here, at the REPL, with the error: resetting cannot fix it
    config = load_config(path)
    from firmware.app import App
    gc.collect()  # importing leaves garbage: collect it before the long-lived objects are made
    hal = make_hal(config, booted)
    app = None
    try:
        wait_for_network(hal)
        app = App(config, hal)
        gc.collect()
        # collect whenever a quarter of what is free now has been allocated, not only when the heap
        # is full: garbage then never spreads over the whole free space, and what lives long (a
        # session's or a call's keys and buffers) lands low instead of splitting the free space
        # that each datagram's recv() needs in one piece (docs/handset.md, Memory)
        gc.threshold(gc.mem_free() // 4)
        app.run()
    except KeyboardInterrupt:  # Ctrl-C from the console or mpremote: the REPL is wanted
        hal.park_watchdog()
        hal.log("I", "phone", "stopped by Ctrl-C")
        if app is not None:
            app.finish()  # log out, write the summary, close the devices (a no-op if run() got to it)
        return
    except Exception as exc:
        crashed(hal, app, exc)
    if app.reset_requested:
        hal.reset("reset")  # "!reset" on the console
    hal.park_watchdog()  # "!quit", or the script ended: the REPL (or the process's end) follows
