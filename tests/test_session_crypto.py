"""A host's session crypto (host/session_crypto.py) seals and opens the same bytes as the handset's
(common.session.SessionCrypto): on the protocol vectors, on random frames both ways, and after
resting (the AES contexts dropped by an idle session); a registered phone at the main host keeps
no per-session hash or cipher state while idle."""
import json
import os
import random

import pytest

from upbx.common import reliable, session, wire
from upbx.common.reliable import Channel
from upbx.host.session_crypto import HostSessionCrypto

VECTORS = json.load(open(os.path.join(os.path.dirname(__file__), "vectors", "protocol_vectors.json")))


def _keys():
    sk = VECTORS["handshake"]["session_keys"]
    return [bytes.fromhex(sk[k]) for k in ("c2s_auth", "c2s_enc", "s2c_auth", "s2c_enc")]


def _pairs():
    """(common client, common server, host client, host server) over the vectors' session keys."""
    c2s_auth, c2s_enc, s2c_auth, s2c_enc = keys = _keys()
    material = b"".join(keys)
    return (session.SessionCrypto(c2s_auth, c2s_enc, s2c_auth, s2c_enc),
            session.SessionCrypto(s2c_auth, s2c_enc, c2s_auth, c2s_enc),
            HostSessionCrypto(material, is_client=True), HostSessionCrypto(material))


def test_host_session_crypto_seals_and_opens_the_protocol_vectors():
    _c, _s, client, server = _pairs()
    for f in VECTORS["full_frames"]:
        sender, receiver = (client, server) if f["direction"] == "c2s" else (server, client)
        payload = bytes.fromhex(f["plaintext"])
        frame = sender.seal(f["receiver_index"], f["seq64"], f["ack64"], f["type"], payload)
        assert frame == bytes.fromhex(f["frame"]), f["name"]
        assert receiver.open(bytearray(frame), f["seq64"], f["ack64"]) == bytearray(payload)
        assert receiver.open(frame, f["seq64"] + 0x10000, f["ack64"]) is None   # 64-bit numbers under the tag
        assert receiver.open(frame, f["seq64"], f["ack64"] + 0x10000) is None
        assert sender.open(frame, f["seq64"], f["ack64"]) is None               # the other direction's keys
        for i in range(len(frame)):
            bad = bytearray(frame)
            bad[i] ^= 0x01
            if i >= wire.FULL_HEADER or i in (3, 4, 5, 6, 7):   # the index (0-2) is not ours to check
                assert receiver.open(bytes(bad), f["seq64"], f["ack64"]) is None


def test_host_and_handset_session_crypto_agree_on_random_frames_both_ways():
    rng = random.Random(14)
    common_client, common_server, host_client, host_server = _pairs()
    for n in range(400):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 15, 16, 17, 200, 512))))
        seq, ack = rng.getrandbits(rng.choice((16, 40, 64))), rng.getrandbits(rng.choice((16, 64)))
        index, msg_type = rng.randrange(1, wire.MAX_SESSION), rng.randrange(256)
        for common_side, host_side, common_peer, host_peer in ((common_server, host_server, common_client, host_client),
                                                               (common_client, host_client, common_server, host_server)):
            frame = host_side.seal(index, seq, ack, msg_type, payload)
            assert frame == common_side.seal(index, seq, ack, msg_type, payload)
            assert bytes(common_peer.open(bytearray(frame), seq, ack)) == payload
            assert bytes(host_peer.open(bytearray(frame), seq, ack)) == payload
        if n % 7 == 0:
            host_server.rest()   # an idle session: the next payload makes its AES context again
            host_client.rest()


def test_host_session_crypto_refuses_what_the_handset_refuses():
    _c, _s, _hc, server = _pairs()
    with pytest.raises(ValueError):
        HostSessionCrypto(b"x" * 95)
    with pytest.raises(ValueError):   # longer than the counter-mode buffer, as common.session's
        server.seal(1, 0, 0, wire.SETUP, b"x" * 513)
    assert server.open(bytes(wire.FULL_HEADER + wire.FULL_TAG), 0, 0) is None


def test_trunk_keys_of_a_host_session_are_the_session_keys():
    """The relay tags a remote host's trunk frames with its session's auth keys (host/switch.py)."""
    common_client, common_server, _hc, server = _pairs()
    assert server.send_auth.key == common_server.send_auth.key == _keys()[2]
    assert server.recv_auth.key == common_server.recv_auth.key == _keys()[0]
    assert server.send_auth is server.send_auth   # made once, kept
    assert server.recv_auth.digest(b"frame") == common_client.send_auth.digest(b"frame")


def test_an_idle_host_channel_keeps_only_its_keys():
    """After a burst at login is acknowledged, the host's side of the session holds no AES context
    and the channel's queues are empty tuples (no room kept), yet the session works on."""
    material = b"".join(_keys())
    server = Channel(HostSessionCrypto(material), 7)
    client = Channel(HostSessionCrypto(material, is_client=True), 9)
    for k in range(5):
        server.send(wire.SYSINFO, {wire.IE_VERSION: k}, 0)
    for frame in server.datagrams_to_send(0):
        assert [m[0] for m in client.receive(bytearray(frame), 0)] == [wire.SYSINFO]
    for frame in client.datagrams_to_send(1):
        assert server.receive(bytearray(frame), 1) == []
    assert server.pending() == 0
    server.crypto.rest()
    state = {name: getattr(server.crypto, name) for name in ("_send_ctr", "_recv_ctr", "_auth")}
    assert state == {"_send_ctr": None, "_recv_ctr": None, "_auth": None}
    assert (server._queue, server._early, server._out, server._unacked) == ((), (), (), {})
    assert server._unacked is reliable._NONE   # the one shared empty dict, never written to
    assert not hasattr(server, "__dict__") and not hasattr(server.crypto, "__dict__")
    server.send(wire.PING, {}, 2)
    server.send(wire.SYSINFO, {wire.IE_VERSION: 9}, 2)
    got = [m for frame in server.datagrams_to_send(2) for m in client.receive(bytearray(frame), 2)]
    assert got == [(wire.PING, {}), (wire.SYSINFO, {wire.IE_VERSION: 9})]
