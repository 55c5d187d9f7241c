"""The relay's fast path: host/_fastpath.c, a C extension built at install (docs/relay.md).

`native` is the extension module, or None where it was not built (no C compiler or no OpenSSL
headers when upbx was installed: setup.py marks it optional) or when the environment sets
UPBX_PURE_PYTHON=1. The pure-Python path (host/switch.py, common/) is the reference: the fast
path does the same work on the same objects, gives the same bytes and counts the same drops,
and hands back (None) every datagram that is not the common case, untouched.
"""
import hashlib
import os

from upbx.common.call import CONNECTED, RINGBACK


class StaleBuild(ImportError):
    """The built extension is not of the _fastpath.c beside it (an editable install after `git pull`)."""


def check_build(module, source):
    """Raise StaleBuild when `source` (a _fastpath.c file, where there is one: an editable install
    or a source tree) is not the file `module` was built from. A stale extension would run old relay
    code, or take arguments of another shape, silently: this names the files and the fix instead."""
    if not os.path.exists(source):
        return   # an installed wheel: no source beside it
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    built = getattr(module, "source_sha256", "")
    if built != digest:
        raise StaleBuild("%s was built from another %s (built %s, the file is %s): rebuild it with "
                         "`make setup` or `pip install -e .`, or run the pure-Python path with UPBX_PURE_PYTHON=1"
                         % (module.__file__, source, built[:12] or "without a hash", digest[:12]))


native = None
if os.environ.get("UPBX_PURE_PYTHON", "") in ("", "0"):
    try:
        from upbx.host import _fastpath as native
    except ImportError:
        native = None
    if native is not None:
        check_build(native, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fastpath.c"))
if native is not None:
    native.configure(CONNECTED, RINGBACK)

AVAILABLE = native is not None


def relay_table(mtu):
    """A relay table (host/_fastpath.c Relay) for a socket with trunk_mtu mtu. Its sends use UDP GSO (runs of
    frames to one host as one message, cut by the kernel into the same datagrams) unless UPBX_RELAY_GSO=0;
    where the kernel or the device refuses GSO the table turns it off by itself (docs/relay.md)."""
    table = native.Relay(mtu)
    table.set_gso(os.environ.get("UPBX_RELAY_GSO", "1") not in ("0", ""))
    return table
