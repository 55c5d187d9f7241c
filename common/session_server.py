"""The server's side of the login handshake: stateless cookies and the identity a HELLO names.

Hosts use it (host/sessions.py); a handset only ever logs in as a client and never loads this
module (docs/handset.md, Memory). common.session imports it on CPython and, on MicroPython, at
the first use of one of its names there.
"""
from . import wire
from .crypto import hmac_sha256

COOKIE_BUCKET_MS = 30000  # a cookie is valid in its 30 s bucket and the next


def make_cookie(server_secret, identity, client_nonce, client_index, address, now_ms, previous=False, node=None):
    """Stateless challenge: binds identity, nonce, index and source address to a time bucket.

    A cluster's node (node: its id, 1..15) names itself: the MAC covers its id too, and the id is the
    cookie's last byte, so the nodes, which share the secret, each accept only their own cookies
    (a RESPONSE replayed to a second node opens nothing there: docs/cluster.md). A standalone host's
    cookie is as it always was (node None)."""
    bucket = now_ms // COOKIE_BUCKET_MS - (1 if previous else 0)
    material = "%s|%d|%s|%d" % (identity, client_index, address, bucket)
    if node is None:
        return hmac_sha256(server_secret, material.encode() + client_nonce)[:16]
    material += "|node %d" % node
    return hmac_sha256(server_secret, material.encode() + client_nonce)[:15] + bytes((node,))


def identity_of(ies):
    """('ext', number) or ('host', name) named by a handshake's IEs, else None."""
    if wire.IE_EXTENSION in ies:
        return ("ext", ies[wire.IE_EXTENSION])
    if wire.IE_HOST_NAME in ies:
        return ("host", ies[wire.IE_HOST_NAME])
    return None
