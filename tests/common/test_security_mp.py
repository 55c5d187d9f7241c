"""Security properties of common/ on both interpreters (issue 10, the low findings).

- A media frame that authenticates but jumps far ahead (what one lucky forgery of a
  4-byte tag, one chance in 2**32, would be) moves nothing: the stream goes on.
- A tag of the wrong length, an empty one above all, never verifies.
- A session frame's tag covers the 64-bit sequence number and acknowledgement.
"""
from common import session, wire
from common.crypto import HmacKey, extend16
from common.media import MediaLeg, open_trunk, seal_trunk


def _legs():
    key = bytes(range(16))
    return MediaLeg(key, 0, 11, 22), MediaLeg(key, 1, 22, 11)


def test_a_lucky_forged_mini_frame_far_ahead_does_not_stop_the_stream():
    tx, rx = _legs()
    payload = bytes(160)
    for ts in range(0, 2000, 20):
        assert rx.open_mini(bytearray(tx.seal_mini(ts, payload))) == ts
    # authentic and 30 s ahead: as a forgery that passed the 4-byte tag would be
    rx.open_mini(bytearray(tx.seal_mini(32000, payload)))
    for ts in range(2000, 4000, 20):          # the sender's real stream is still accepted, every frame
        assert rx.open_mini(bytearray(tx.seal_mini(ts, payload))) == ts
    assert rx.received == 200                 # and the jump was never delivered


def test_a_far_jump_confirmed_by_the_next_frame_is_taken():
    tx, rx = _legs()
    payload = b"\x20"                         # comfort noise, then a long silence on the sender's side
    assert rx.open_mini(bytearray(tx.seal_mini(1000, payload))) == 1000
    held = bytes(tx.seal_mini(21000, payload))
    assert rx.open_mini(bytearray(held)) is None                            # held, not delivered ...
    assert rx.open_mini(bytearray(tx.seal_mini(21020, payload))) == 21020   # ... the next one moves the window
    assert rx.open_mini(bytearray(tx.seal_mini(21040, payload))) == 21040
    assert rx.open_mini(bytearray(held)) == 21000      # never delivered, so a late copy still is, once
    assert rx.open_mini(bytearray(held)) is None


def test_a_lucky_forged_trunk_entry_far_ahead_does_not_stop_the_stream():
    tx, rx = _legs()
    auth = HmacKey(bytes(32))
    buf = bytearray(400)
    extend = lambda call_no, ts16: extend16(rx.replay.highest, ts16) if call_no == 22 else None

    def deliver(ts):
        frame = bytearray(seal_trunk(auth, 5, [(tx, ts, bytes(160))], buf))
        (call_no, ts64, start, end), = open_trunk(auth, frame, extend)
        return rx.open_entry_bytes(frame, ts64, start, end) is not None

    assert all(deliver(ts) for ts in range(0, 1000, 20))
    deliver(31000)
    assert all(deliver(ts) for ts in range(1000, 2000, 20))
    assert rx.received == 100


def test_tags_of_the_wrong_length_never_verify():
    key = HmacKey(b"k" * 32)
    msg = b"upbx"
    tag = key.digest(msg)
    assert key.verify(msg, tag[:8], 8)
    for bad in (b"", tag[:1], tag[:4], tag[:7], tag[:9], tag):
        assert not key.verify(msg, bad, 8), len(bad)
    assert key.verify(msg, tag[:4], 4) and not key.verify(msg, b"", 4)


def test_session_tag_covers_64_bit_sequence_and_acknowledgement():
    keys = (bytes(range(32)), bytes(range(16)), bytes(range(32, 64)), bytes(range(16, 32)))
    a = session.SessionCrypto(keys[0], keys[1], keys[2], keys[3])
    b = session.SessionCrypto(keys[2], keys[3], keys[0], keys[1])
    frame = a.seal(9, 0x10005, 0x20007, wire.PING, b"")
    assert wire.parse_full(frame) == (9, 5, 7, wire.PING)
    assert b.open(frame, 0x10005, 0x20007) is not None
    for seq, ack in ((5, 0x20007), (0x20005, 0x20007), (0x10005, 7), (0x10005, 0x30007)):
        assert b.open(frame, seq, ack) is None
