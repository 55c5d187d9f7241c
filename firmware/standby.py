"""A handset straight at a cluster's node: its standby session's datagrams (docs/cluster.md, Failover).

common/cluster.py keeps the standby Login (to the home node's successor) beside the session and
switches to it, with its keys and no handshake, when the session falls silent; this module is the
firmware's side: the standby's datagrams go to the standby node, a standby given up gets its BYE,
and after a switch everything goes to the new node. App.flush imports it only for a phone whose host
sent a node list (a cluster's node): a handset at a standalone main host never loads it.
"""
from common import cluster
from common.compat import const

_TOS_CS3 = const(24 << 2)   # signalling, as firmware/app.py marks it


def _resolve(app, address):
    try:
        return app.hal.getaddrinfo(*address)
    except OSError as exc:
        app.count_error("getaddrinfo", exc)
        return None


def flush(app, now):
    """Before the session's datagrams go out: after a switch, the host is the new node; a standby
    given up gets its BYE; the standby's own datagrams go to its node."""
    phone = app.phone
    to = getattr(phone, "switched", None)   # set by common/cluster.py once the node list is known
    if to is not None:
        phone.switched = None
        addr = _resolve(app, to)
        if addr is not None:
            app.host_addr = addr
            app.log("I", "switched to the standby session at %s:%d" % to)
    bye = getattr(phone, "standby_bye", None)
    if bye is not None:
        phone.standby_bye = None
        addr = _resolve(app, bye[0])
        if addr is not None:
            for datagram in bye[1]:
                app.sendto(datagram, addr, _TOS_CS3)
    standby = phone.standby
    if standby is None:
        return
    cluster.standby_tick(phone, now)   # the session's keepalive: tighter in a call with a standby up
    cached = getattr(app, "standby_addr", None)
    if cached is None or cached[0] != phone.standby_to:
        addr = _resolve(app, phone.standby_to)
        if addr is None:
            return
        cached = app.standby_addr = (phone.standby_to, addr)
        app.log("I", "standby session at %s:%d" % phone.standby_to)
    for datagram in standby.datagrams_to_send(now):
        app.sendto(datagram, cached[1], _TOS_CS3)
