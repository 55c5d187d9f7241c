"""Authenticated sessions: the login handshake and the frame crypto of a session.

Handshake (all frames are full frames tagged with the handshake key, which both
sides derive from the device secret; nothing is encrypted, nothing secret is sent):

    client                                   server
    HELLO(identity, client index, Nc)  -->   (no state: cookie = MAC(server key, ...))
                                       <--   CHALLENGE(cookie)        to the client index
    RESPONSE(identity, index, Nc, cookie) -> verify cookie and tag, create the session
                                       <--   WELCOME(server index, ttl, time), first
                                             reliable message of the new session

Session keys: HKDF(secret, salt = Nc || cookie, "upbx v2 session") -> 96 bytes:
client-to-server auth (32) and enc (16), then server-to-client auth and enc.
A session is identified by its receiver index, never by address (B7). The tag of
a session frame covers its 64-bit sequence number and acknowledgement, of which
only the low 16 bits are on the wire: a frame recorded 65,536 messages ago never
verifies again, and an old ACK cannot acknowledge what was sent since.

The server's side of the handshake (stateless cookies, identities) is common/session_server.py:
a handset never serves one and never loads it (imported here on CPython, and on MicroPython at
the first use of one of its names).
"""
from . import wire
from .compat import MICROPYTHON, compare_digest
from .crypto import CounterMode, HmacKey, hkdf


def handshake_key(secret):
    return HmacKey(hkdf(secret, b"", b"upbx v2 handshake", 32))


def session_keys(secret, client_nonce, cookie, is_client):
    """(send_auth, send_enc, recv_auth, recv_enc) for one side of a new session."""
    m = hkdf(secret, client_nonce + cookie, b"upbx v2 session", 96)
    c2s = (m[0:32], m[32:48])
    s2c = (m[48:80], m[80:96])
    send, recv = (c2s, s2c) if is_client else (s2c, c2s)
    return send[0], send[1], recv[0], recv[1]


class SessionCrypto:
    """Seals and opens full frames of one session (encrypt-then-MAC, 8-byte tag).

    tag = HMAC(auth, seq64 || ack64 || frame)[:8]: both 64-bit numbers, of which
    the header carries the low 16 bits, as the sender meant them.
    """

    def __init__(self, send_auth, send_enc, recv_auth, recv_enc):
        self.send_auth = HmacKey(send_auth)
        self.recv_auth = HmacKey(recv_auth)
        self._send_ctr = CounterMode(send_enc, 512)
        self._recv_ctr = CounterMode(recv_enc, 512)
        self._nonce = bytearray(12)
        self._nonce[0] = 2  # domain: signalling
        self._numbers = bytearray(16)   # seq64 || ack64, the prefix the tag covers

    def _set_nonce(self, seq):
        nonce = self._nonce
        for i in range(8):
            nonce[11 - i] = (seq >> (8 * i)) & 0xFF
        return nonce

    def _set_numbers(self, seq, ack):
        numbers = self._numbers
        for i in range(8):
            numbers[7 - i] = (seq >> (8 * i)) & 0xFF
            numbers[15 - i] = (ack >> (8 * i)) & 0xFF
        return numbers

    def seal(self, peer_index, seq, ack, msg_type, payload):
        """A full frame: seq and ack are the 64-bit sequence number and acknowledgement."""
        n = len(payload)
        buf = bytearray(wire.FULL_HEADER + n + wire.FULL_TAG)
        wire.pack_full_header(buf, peer_index, seq & 0xFFFF, ack & 0xFFFF, msg_type)
        end = wire.FULL_HEADER + n
        buf[wire.FULL_HEADER:end] = payload
        self._send_ctr.crypt(self._set_nonce(seq), buf, wire.FULL_HEADER, end)
        buf[end:] = self.send_auth.digest2(self._set_numbers(seq, ack), memoryview(buf)[:end])[:wire.FULL_TAG]
        return bytes(buf)

    def open(self, datagram, seq, ack):
        """Decrypted payload of an authentic frame with extended sequence seq and ack, else None."""
        end = len(datagram) - wire.FULL_TAG
        view = memoryview(datagram)
        expected = self.recv_auth.digest2(self._set_numbers(seq, ack), view[:end])
        if not compare_digest(expected[:wire.FULL_TAG], view[end:]):
            return None
        payload = bytearray(view[wire.FULL_HEADER:end])
        if payload:
            self._recv_ctr.crypt(self._set_nonce(seq), payload, 0, len(payload))
        return payload


def seal_handshake(key, peer_index, msg_type, ies):
    """A handshake frame (HELLO, CHALLENGE, RESPONSE) tagged with the handshake key."""
    payload = wire.encode_ies(ies)
    buf = bytearray(wire.FULL_HEADER + len(payload))
    wire.pack_full_header(buf, peer_index, 0, 0, msg_type)
    buf[wire.FULL_HEADER:] = payload
    return bytes(buf) + key.tag(buf, wire.FULL_TAG)


def parse_handshake(datagram):
    """(receiver index, type, ies) of a handshake frame, before its tag is checked.

    The caller looks up the identity's secret, then calls verify_handshake.
    Raises wire.DecodeError when the frame is not a well-formed handshake frame.
    """
    index, _seq, _ack, msg_type = wire.parse_full(datagram)
    if msg_type not in wire.HANDSHAKE_TYPES:
        raise wire.DecodeError("message type", 7, "0x%02x is not a handshake message" % msg_type)
    ies = wire.decode_ies(memoryview(datagram)[wire.FULL_HEADER:len(datagram) - wire.FULL_TAG],
                          wire.FULL_HEADER)
    return index, msg_type, ies


def verify_handshake(key, datagram):
    end = len(datagram) - wire.FULL_TAG
    view = memoryview(datagram)
    return key.verify(view[:end], view[end:], wire.FULL_TAG)


_SERVER = ("make_cookie", "identity_of", "COOKIE_BUCKET_MS")


def __getattr__(name):
    """make_cookie, identity_of, COOKIE_BUCKET_MS: the server's side, from common.session_server."""
    if name not in _SERVER:
        raise AttributeError(name)
    from . import session_server
    value = getattr(session_server, name)
    globals()[name] = value
    return value


if not MICROPYTHON:   # the hosts: all of them now (named through _SERVER, not an import list a handset would load)
    for _name in _SERVER:
        __getattr__(_name)
    del _name
