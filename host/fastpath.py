"""The relay's fast path: host/_fastpath.c, a C extension built at install (docs/relay.md).

`native` is the extension module, or None where it was not built (no C compiler or no OpenSSL
headers when upbx was installed: setup.py marks it optional) or when the environment sets
UPBX_PURE_PYTHON=1. The pure-Python path (host/switch.py, common/) is the reference: the fast
path does the same work on the same objects, gives the same bytes and counts the same drops,
and hands back (None) every datagram that is not the common case, untouched.
"""
import os

from upbx.common.call import CONNECTED, RINGBACK

native = None
if os.environ.get("UPBX_PURE_PYTHON", "") in ("", "0"):
    try:
        from upbx.host import _fastpath as native
    except ImportError:
        native = None
if native is not None:
    native.configure(CONNECTED, RINGBACK)

AVAILABLE = native is not None
