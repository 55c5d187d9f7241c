"""Hardware abstraction for the handset: the same small interface on every target.

    hal = unix.Hal(...) or esp32.Hal(board)      (board: the dict from boards/NAME.json)

    hal.read_frame(pcm) -> bool     fill pcm (320 bytes, 160 samples 16-bit LE at 8 kHz)
                                    with the next captured 20 ms; False if the microphone has
                                    no whole frame yet (never blocks longer than one frame)
    hal.write_frame(pcm)            queue 20 ms of PCM for the speaker
    hal.speaker_start()             the speaker was silent and plays again (a call or a tone
                                    starts): prime it with a cushion of silence
    hal.mic_start()                 a call starts: drop the audio the microphone queued before it
    hal.mic_stop()                  the call ended: the microphone no longer wakes the loop
    hal.mic_due() -> ticks or None  when the microphone's next frame is complete (the loop puts its
                                    audio tick in step with it), None when the HAL cannot tell (its
                                    microphone wakes the loop through the poller instead)
    hal.attach(poller)              the loop's select.poll: the HAL registers the devices that wake the
                                    loop when they are ready (an ESP32's microphone while a call is up)
    hal.poll_keys() -> str or None  next key ("0".."9", "*", "#", "A".."D"), button ("!button NAME")
                                    or console command line ("!call 201", "!hangup", "!answer",
                                    "!dtmf 5", "!state", "!reset"); never blocks; the loop asks
                                    once per 20 ms tick until it gives None
    hal.log(level, tag, msg)        one console line "L tag message", level one of I W E D
    hal.display(state, caller)      show the call state and the caller id (if any), at the
    hal.refresh()                   next refresh(): the loop calls it once per 20 ms tick, after
                                    the audio (a real display takes ~25 ms)
    hal.set_power_save(flag)        Wi-Fi power save off during calls (late packets otherwise)
    hal.network_up() -> bool        whether the network interface has an address
    hal.getaddrinfo(host, port)     the address socket.getaddrinfo gives (OSError as it raises)
    hal.sendto(sock, data, addr)    sock.sendto (OSError as it raises: EAGAIN, ENOMEM, ...)
    hal.feed()                      feed the watchdog: the loop calls it once per audio pass (a tick)
    hal.park_watchdog()             the loop stops on purpose (Ctrl-C): keep the watchdog quiet
    hal.reset(why)                  restart the device ("crash" or "reset"); never returns
    hal.ticks_ms() -> int           monotonic milliseconds (wraps; use ticks_diff)
    hal.ticks_diff(a, b) -> int
    hal.close()

The application loop owns sockets and timing; the HAL owns audio devices, keys,
display, Wi-Fi and the clock. Audio methods allocate nothing per frame.
"""
LEVELS = "IWED"


def rarely(path):
    """The module at `path` ("firmware.sysinfo") for one use, then forgotten again (sys.modules and
    its package): code a handset runs rarely (at boot, on an administrator's change) is not worth
    keeping in a small heap between uses (docs/handset.md, Memory). From a frozen image it costs no
    heap either way."""
    import sys
    __import__(path)
    module = sys.modules.pop(path)
    package, name = path.rsplit(".", 1)
    delattr(sys.modules[package], name)
    return module
