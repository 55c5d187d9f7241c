"""A handset straight at a cluster's node: its standby session's datagrams (docs/cluster.md, Failover).

common/standby.py keeps the standby Login (to the home node's successor) beside the session and
switches to it, with its keys and no handshake, when the session falls silent; this module is the
firmware's side: the standby's datagrams go to the standby node, and what common/standby.py leaves
in `phone.cluster_out` is done: after a switch everything goes to the new node, a standby given up
gets its BYE (a standby not taken for want of heap is said with the registration: firmware/ota.py).
App.flush imports it only for a phone whose cluster_out is a list (a standby, or something to do for
one), and it lets itself go once the phone has no standby: a handset at a standalone main host never
loads it.
"""
from sys import modules

from common.compat import const, forget

_TOS_CS3 = const(24 << 2)   # signalling, as firmware/app.py marks it


def _resolve(app, address):
    try:
        return app.hal.getaddrinfo(*address)
    except OSError as exc:
        app.count_error("getaddrinfo", exc)
        return None


def flush(app, now):
    """Before the session's datagrams go out."""
    phone = app.phone
    todo = phone.cluster_out
    if todo:
        phone.cluster_out = []
        for item in todo:
            addr = _resolve(app, item[1])
            if addr is None:
                continue
            if item[0] == "host":    # the standby is the session now: everything goes to its node
                app.host_addr = addr
                app.log("I", "switched to the standby session at %s:%d" % item[1])
            else:                    # "bye": a standby given up
                for datagram in item[2]:
                    app.sendto(datagram, addr, _TOS_CS3)
    standby = phone.standby
    if standby is None:
        module = modules.get("common.standby")   # (not imported here: a phone without room for it has none)
        if module is not None and module.waiting(phone):   # a switch's new standby, chosen in a moment
            module.tick(phone, now)
            return
        phone.cluster_out = None
        forget("firmware.standby")   # nothing more to do: this module leaves the heap until it has
        return
    from common import standby as module
    module.tick(phone, now)   # the session's keepalive: tighter in a call with a standby up
    cached = getattr(app, "standby_addr", None)
    if cached is None or cached[0] != phone.standby_to:
        addr = _resolve(app, phone.standby_to)
        if addr is None:
            return
        cached = app.standby_addr = (phone.standby_to, addr)
        app.log("I", "standby session at %s:%d" % phone.standby_to)
    for datagram in standby.datagrams_to_send(now):
        app.sendto(datagram, cached[1], _TOS_CS3)
