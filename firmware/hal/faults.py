"""Fault injection for the virtual handset (unix HAL): what tests/test_survival.py does to a phone.

    sendto ERRNO N        the next N sendto calls raise OSError(ERRNO) (a number or a name: EAGAIN)
    getaddrinfo ERRNO N   the next N getaddrinfo calls raise OSError(ERRNO)
    hang                  the loop stops in its next watchdog feed and never comes back
    raise                 an exception escapes the loop from its next watchdog feed
    collect N             every watchdog feed from now on collects garbage N times (the loop then
                          spends most of its time in the collector: tests/test_handset.py stops
                          such a phone with Ctrl-C); stays armed, so arm it last
    fill N                the next watchdog feed fills the heap (after a collection) until at most N
                          bytes are left free, in whatever pieces are left, and holds it so: the loop
                          finds no room for a module's code (tests/test_survival.py)
    release               what fill holds is let go at once (not queued behind other faults)

Faults are consumed in the order they were armed. Loaded only when a fault is asked for.
"""
import errno
import gc
import time


class Faults:
    def __init__(self, log):
        self._log = log
        self._armed = []    # [operation, errno, count], oldest first
        self._ballast = None   # what "fill" holds

    def arm(self, line):
        words = line.split()
        try:
            if words[0] in ("sendto", "getaddrinfo") and len(words) == 3:
                code = int(words[1]) if words[1].isdigit() else getattr(errno, words[1])
                self._armed.append([words[0], code, int(words[2])])
            elif words[0] in ("collect", "fill") and len(words) == 2:
                self._armed.append([words[0], 0, int(words[1])])
            elif words == ["release"]:
                held = self._ballast[1] if self._ballast else 0
                self._ballast = None
                self._log("I", "fault", "release: %d bytes let go" % held)
                return
            elif words in (["hang"], ["raise"]):
                self._armed.append([words[0], 0, 1])
            else:
                raise ValueError(line)
        except (IndexError, ValueError, AttributeError):
            self._log("W", "fault", "not understood: %r (sendto|getaddrinfo ERRNO N, hang, raise, collect N, fill N, release)" % line)
            return
        self._log("I", "fault", "armed: " + line)

    def fed(self):
        """A watchdog feed: where hang, raise, collect and fill come."""
        for operation in ("hang", "raise", "collect", "fill"):
            self.inject(operation)

    def inject(self, operation):
        """Raise (or hang) when the oldest armed fault is for this operation."""
        armed = self._armed
        if not armed or armed[0][0] != operation:
            return
        fault = armed[0]
        if operation == "collect":
            for _ in range(fault[2]):
                gc.collect()
            return
        if operation == "fill":
            armed.pop(0)
            self._log("W", "fault", "fill: the heap is filled, at most %d bytes left free" % fault[2])
            self._ballast = _fill(fault[2])
            return
        fault[2] -= 1
        if fault[2] <= 0:
            armed.pop(0)
        if operation == "hang":
            self._log("W", "fault", "hang: the loop stops here")
            while True:
                time.sleep_ms(1000)
        if operation == "raise":
            raise RuntimeError("fault injected from the console")
        raise OSError(fault[1])


def _fill(leave):
    """Blocks of 1 KB, then smaller, until at most `leave` bytes of the heap are free: (the blocks, their bytes)."""
    gc.collect()
    ballast = []
    size, held = 1024, 0
    while size >= 16:
        try:
            while gc.mem_free() > leave + size:
                ballast.append(bytearray(size))
                held += size
        except MemoryError:
            pass
        size //= 2
    return ballast, held
