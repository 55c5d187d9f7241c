"""`upbx console`: the serial debug console of a handset.

Prints each line the handset writes with a local timestamp, coloured by level
(firmware log lines are `I tag message`, `W ...`, `E ...`, `D ...`), and sends
commands on single keys:

    c DIGITS Enter   !call DIGITS      (Esc cancels, Backspace edits)
    h                !hangup
    s                !state
    r                !reset
    q or Ctrl-C      quit (the terminal is restored)

`--script KEYS` types KEYS instead of the keyboard (`~` waits half a second),
for tests and scripted checks.
"""
import datetime
import os
import select
import sys
import time

COLOURS = {"E": "\033[31m", "W": "\033[33m", "I": "\033[32m", "D": "\033[2m", ">": "\033[36m"}
RESET = "\033[0m"
KEY_COMMANDS = {"h": "!hangup", "s": "!state", "r": "!reset"}
DIAL_KEYS = "0123456789*#"
PAUSE_KEY = "~"
PARTIAL_FLUSH_S = 0.3  # show a line without newline (a prompt) after this much quiet


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the handset")
    parser.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour by log level (default: when writing to a terminal)")
    parser.add_argument("--script", help="keys to type instead of the keyboard; '~' pauses 0.5 s")


def run(args):
    import signal

    import serial  # pyserial

    # Ctrl-C quits even when whoever started us ignored SIGINT (a shell's background job does, and
    # Python then installs no handler of its own): the console is interactive whatever its parent
    signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        link = serial.serial_for_url(args.port, args.baud, timeout=0)
    except (serial.SerialException, OSError) as exc:
        print("console: cannot open %s: %s" % (args.port, exc), file=sys.stderr)
        return 1
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    console = Console(link, sys.stdout, colour)
    keys = ScriptKeys(args.script) if args.script is not None else TerminalKeys(sys.stdin)
    try:
        with keys:
            return console.loop(keys)
    finally:
        link.close()


def stamp(now=None):
    return (now or datetime.datetime.now()).strftime("%H:%M:%S.%f")[:-3]


class Console:
    """Moves bytes between the handset and the person; knows the key commands."""

    def __init__(self, link, out, colour=False):
        self.link = link
        self.out = out
        self.colour = colour
        self.partial = bytearray()
        self.partial_since = None
        self.dialing = None  # digits typed after 'c', or None

    def show(self, text, level=None):
        level = level or (text[0] if len(text) > 1 and text[1] == " " and text[0] in "IWED" else None)
        line = "%s %s" % (stamp(), text)
        if self.colour and level in COLOURS:
            line = COLOURS[level] + line + RESET
        self.out.write(line + "\n")
        self.out.flush()

    def send(self, command):
        self.link.write(command.encode() + b"\n")
        self.link.flush()
        self.show("> " + command, ">")

    def device_bytes(self, data):
        self.partial += data
        while b"\n" in self.partial:
            line, _, rest = bytes(self.partial).partition(b"\n")
            self.partial = bytearray(rest)
            self.show(line.rstrip(b"\r").decode("utf-8", "replace"))
        self.partial_since = time.monotonic() if self.partial else None

    def flush_partial(self):
        if self.partial and time.monotonic() - self.partial_since >= PARTIAL_FLUSH_S:
            self.show(bytes(self.partial).decode("utf-8", "replace"))
            self.partial = bytearray()
            self.partial_since = None

    def key(self, ch):
        """Act on one key; returns False when the console should quit."""
        if self.dialing is not None:
            if ch in ("\r", "\n"):
                if self.dialing:
                    self.send("!call " + self.dialing)
                self.dialing = None
            elif ch == "\033":
                self.dialing = None
                self.show("call cancelled", ">")
            elif ch in ("\x7f", "\b"):
                self.dialing = self.dialing[:-1]
            elif ch in DIAL_KEYS:
                self.dialing += ch
            return True
        if ch in ("q", "\x03"):
            return False
        if ch == "c":
            self.dialing = ""
            self.show("call: type the number, then Enter (Esc cancels)", ">")
        elif ch in KEY_COMMANDS:
            self.send(KEY_COMMANDS[ch])
        return True

    def loop(self, keys):
        """Run until quit, Ctrl-C, or the handset goes away; returns the exit status."""
        fd = self.link.fileno()
        try:
            while True:
                watch = [fd] + ([keys.fileno()] if keys.fileno() is not None else [])
                ready, _, _ = select.select(watch, [], [], keys.timeout())
                if fd in ready:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        if self.partial:
                            self.device_bytes(b"\n")
                        self.show("console: %s closed" % getattr(self.link, "port", "the port"), "W")
                        return 1
                    self.device_bytes(data)
                for ch in keys.read(ready):
                    if not self.key(ch):
                        return 0
                self.flush_partial()
        except KeyboardInterrupt:
            return 0


class TerminalKeys:
    """Keys from the terminal in cbreak mode, restored on exit."""

    def __init__(self, stream):
        self.stream = stream
        self.fd = stream.fileno() if stream.isatty() else None
        self.saved = None

    def __enter__(self):
        if self.fd is not None:
            import termios
            import tty
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def fileno(self):
        return self.fd

    def timeout(self):
        return 0.1

    def read(self, ready):
        if self.fd is not None and self.fd in ready:
            return os.read(self.fd, 64).decode("utf-8", "replace")
        return ""


class ScriptKeys:
    """Keys from a string, one every 50 ms; '~' pauses half a second.

    A script that does not end with 'q' leaves the console open, as a person would.
    """

    STEP, PAUSE = 0.05, 0.5

    def __init__(self, text):
        self.text = text
        self.pos = 0
        self.next_at = time.monotonic() + self.STEP

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def fileno(self):
        return None

    def timeout(self):
        return max(0.0, min(0.1, self.next_at - time.monotonic()))

    def read(self, ready):
        keys = ""
        while self.pos < len(self.text) and time.monotonic() >= self.next_at:
            ch = self.text[self.pos]
            self.pos += 1
            if ch == PAUSE_KEY:
                self.next_at = time.monotonic() + self.PAUSE
            else:
                keys += ch
                self.next_at = time.monotonic() + self.STEP
        return keys
