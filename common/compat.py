"""The one place where MicroPython and CPython differ for common/.

Everything else in common/ imports `const`, `MICROPYTHON`, `sha256`, `compare_digest`,
`forget` and the tick arithmetic from here. Where a whole implementation differs, the CPython one is a module
of its own that a handset never loads (common/crypto_cpython.py, common/g711_cpython.py).

Time in common/ (and firmware/) is integer milliseconds passed in. On a handset that is
`time.ticks_ms()`, which wraps (every 2**30 ms, 12.4 days, on 32-bit ports such as the
ESP32); on a CPython host it is a monotonic count that never wraps. So every sum of a time
and a delay is `ticks_add(t, ms)`, every comparison or difference of two times is
`ticks_diff(a, b)` (a - b, signed), never `+`, `-`, `<` or `min()` on raw times.
"""
try:
    from micropython import const
    MICROPYTHON = True
except ImportError:
    MICROPYTHON = False

    def const(value):
        return value

from hashlib import sha256

try:
    # `@micropython.native` on the handset's per-frame glue (docs/handset.md, "Native code"): the
    # compiler recognises the decorator by its spelling, so a module names it after importing this;
    # on CPython it does nothing
    import micropython
except ImportError:
    class micropython:
        @staticmethod
        def native(fn):
            return fn

try:
    from time import ticks_add, ticks_diff  # MicroPython: modulo the port's tick period, in C
except ImportError:
    def ticks_add(ticks, delta):
        """A time plus a delay (ms); CPython hosts pass a monotonic ms that never wraps."""
        return ticks + delta

    def ticks_diff(a, b):
        """a - b in ms, signed (positive when a is later)."""
        return a - b


def ticks_earliest(a, b):
    """The earlier of two times, either of which may be None (no timer)."""
    if a is None:
        return b
    if b is None or ticks_diff(a, b) <= 0:
        return a
    return b


def forget(name):
    """Let the module `name` ("common.chunks") go once a handset is done with it: out of sys.modules
    and its package, so that its code leaves the heap until the next use imports it again (code a
    handset runs rarely is not worth keeping in a small heap). CPython keeps it: a host uses it."""
    if MICROPYTHON:
        import sys
        if sys.modules.pop(name, None) is not None:
            package, attr = name.rsplit(".", 1)
            try:
                delattr(sys.modules[package], attr)
            except (KeyError, AttributeError):
                pass


def compare_digest(a, b):
    """Constant-time comparison of two byte strings of equal length."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
