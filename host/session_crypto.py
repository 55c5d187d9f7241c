"""A session's frame crypto at a host, small enough for 10,000 idle phones.

The same frames as common.session.SessionCrypto, byte for byte (tests/test_session_crypto.py
checks it against the protocol vectors and random frames), built for a host that holds
thousands of sessions, most of them idle (a registered phone sends a keepalive every 20 s):

- the four keys are kept as the 96 bytes HKDF gave them (one bytes object), not as two HMAC
  keys of two hash states each and two AES contexts (about 3.5 KB with OpenSSL's allocations);
- a tag is one call of the stdlib's HMAC (C, OpenSSL), with no state kept between frames;
- counter mode (common.crypto CounterMode, an AES context) is made when a frame with a
  payload is sealed or opened and dropped when the session has nothing left to acknowledge
  (`rest()`, called by host.peers.PeerTable): a burst of messages at login shares one;
- the HMAC keys of the session (`send_auth`, `recv_auth`), which the relay tags trunk frames
  with, are made on first use and kept: only a remote host's session uses them.
"""
from hmac import compare_digest, digest as hmac_digest

from upbx.common import wire
from upbx.common.crypto import CounterMode, HmacKey

_SIGNALLING = b"\x02\x00\x00\x00"   # the nonce's domain byte and padding; the 64-bit sequence follows
_CTR_BUFFER = 512                    # what common.session.SessionCrypto's counter mode holds


class HostSessionCrypto:
    """Seals and opens the full frames of one session, from the 96 bytes of its session keys.

    keys = client-to-server auth (32) and enc (16), then server-to-client auth (32) and enc (16)
    (common.session.session_keys); is_client picks the direction this side sends in.
    """

    __slots__ = ("_keys", "_send", "_send_ctr", "_recv_ctr", "_auth")

    def __init__(self, keys, is_client=False):
        if len(keys) != 96:
            raise ValueError("session keys are 96 bytes, not %d" % len(keys))
        self._keys = bytes(keys)
        self._send = 0 if is_client else 48   # where the keys this side sends with start; the others at 48 - it
        self._send_ctr = self._recv_ctr = None
        self._auth = None                     # (send, recv) HmacKey, once a trunk needed them

    @property
    def _recv(self):
        return 48 - self._send

    def _key(self, offset, size):
        return self._keys[offset:offset + size]

    def _auth_keys(self):
        if self._auth is None:
            self._auth = (HmacKey(self._key(self._send, 32)), HmacKey(self._key(self._recv, 32)))
        return self._auth

    @property
    def send_auth(self):
        """The HmacKey this side tags with (trunk frames of a remote host's session)."""
        return self._auth_keys()[0]

    @property
    def recv_auth(self):
        return self._auth_keys()[1]

    def rest(self):
        """The session is idle: its AES contexts go (made again by the next payload)."""
        self._send_ctr = self._recv_ctr = None

    def seal(self, peer_index, seq, ack, msg_type, payload):
        """A full frame: seq and ack are the 64-bit sequence number and acknowledgement."""
        header = bytearray(wire.FULL_HEADER)
        wire.pack_full_header(header, peer_index, seq & 0xFFFF, ack & 0xFFFF, msg_type)
        frame = bytes(header)
        if payload:
            ctr = self._send_ctr
            if ctr is None:
                ctr = self._send_ctr = CounterMode(self._key(self._send + 32, 16), _CTR_BUFFER)
            frame += ctr.crypt_bytes(_SIGNALLING + seq.to_bytes(8, "big"), payload)
        numbers = seq.to_bytes(8, "big") + ack.to_bytes(8, "big")
        tag = hmac_digest(self._key(self._send, 32), numbers + frame, "sha256")
        return frame + tag[:wire.FULL_TAG]

    def open(self, datagram, seq, ack):
        """Decrypted payload (bytearray) of an authentic frame with extended seq and ack, else None."""
        end = len(datagram) - wire.FULL_TAG
        view = memoryview(datagram)
        numbers = seq.to_bytes(8, "big") + ack.to_bytes(8, "big")
        expected = hmac_digest(self._key(self._recv, 32), numbers + view[:end], "sha256")
        if not compare_digest(expected[:wire.FULL_TAG], view[end:]):
            return None
        payload = view[wire.FULL_HEADER:end]
        if not payload:
            return bytearray()
        ctr = self._recv_ctr
        if ctr is None:
            ctr = self._recv_ctr = CounterMode(self._key(self._recv + 32, 16), _CTR_BUFFER)
        return bytearray(ctr.crypt_bytes(_SIGNALLING + seq.to_bytes(8, "big"), payload))
