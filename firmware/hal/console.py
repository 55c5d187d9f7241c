"""Console lines (what `upbx console` or a test types) -> keys and !commands, for every HAL.

A line starting with "!" is one command ("!call 201", "!state"); any other line is key
presses, one per character of "0123456789*#ABCD" ("301#"). Input arrives in pieces of any
size and is split at newlines; nothing here blocks or reads a device.
"""

KEYS = "0123456789*#ABCD"


class ConsoleLines:
    def __init__(self):
        self._line = b""
        self.pending = []   # keys and commands, oldest first

    def feed(self, chunk):
        """Bytes (or str) as they arrived; complete lines become keys and commands."""
        if isinstance(chunk, str):
            chunk = chunk.encode()
        self._line += chunk
        while b"\n" in self._line:
            line, self._line = self._line.split(b"\n", 1)
            self.line(line.decode().strip())

    def line(self, text):
        if not text:
            return
        if text[0] == "!":
            self.pending.append(text)
        else:
            for key in text:
                if key in KEYS:
                    self.pending.append(key)

    def next(self):
        """The oldest key or command, or None."""
        return self.pending.pop(0) if self.pending else None
