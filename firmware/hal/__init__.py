"""Hardware abstraction for the handset: the same small interface on every target.

    hal = unix.Hal(...) or esp32.Hal(board)      (board: the dict from boards/NAME.json)

    hal.read_frame(pcm) -> bool     fill pcm (320 bytes, 160 samples 16-bit LE at 8 kHz)
                                    with the next captured 20 ms; False if none is ready
    hal.write_frame(pcm)            queue 20 ms of PCM for the speaker
    hal.poll_keys() -> str or None  next key ("0".."9", "*", "#", "A".."D") or control
                                    command line ("!call 201", "!hangup", "!answer",
                                    "!dtmf 5", "!state", "!reset"); never blocks
    hal.log(level, tag, msg)        one console line "L tag message", level one of I W E D
    hal.display(state, caller)      show the call state and the caller id (if any)
    hal.set_power_save(flag)        Wi-Fi power save off during calls (late packets otherwise)
    hal.network_up() -> bool        whether the network interface has an address
    hal.ticks_ms() -> int           monotonic milliseconds (wraps; use ticks_diff)
    hal.ticks_diff(a, b) -> int
    hal.close()

The application loop owns sockets and timing; the HAL owns audio devices, keys,
display, Wi-Fi and the clock. Audio methods allocate nothing per frame.
"""
LEVELS = "IWED"
