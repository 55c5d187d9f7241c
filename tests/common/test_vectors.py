"""The protocol v2 test vectors, recomputed with common/ and decoded back (both interpreters).

The vectors come from tools/make_vectors.py (tests/vectors/protocol_vectors.json)
and are printed in docs/protocol.md, appendix A; this module also checks the
document: every vector is in it, its IE, message and cause tables match
common/wire.py, and its bandwidth table matches the frame sizes. The numbers that
make_vectors takes from the code under test itself (extend16 results, replay
flags, retransmission times) are also written here literally, worked out from the
rules in docs/protocol.md; the crypto vectors are cross-checked against independent
implementations by `python -m tools.make_vectors --check` (tests/test_make_vectors.py).
"""
import json
from binascii import hexlify, unhexlify

from common import crypto, media, reliable, session, wire
from common.login import UP, Login, LoginUp


def _dir():
    i = __file__.rfind("/")
    return __file__[:i] if i >= 0 else "."


VECTORS_PATH = _dir() + "/../vectors/protocol_vectors.json"
DOC_PATH = _dir() + "/../../docs/protocol.md"

with open(VECTORS_PATH) as _f:
    V = json.load(_f)


def b(text):
    return unhexlify(text)


def hx(data):
    return hexlify(bytes(data)).decode()


def ies_from_json(pairs):
    """{IE type: value} from the JSON form (bytes as hex, addresses as [host, port])."""
    out = {}
    for ie, value in pairs:
        kind = wire.IE_SPEC[ie][1]
        if kind == "bytes":
            value = b(value)
        elif kind == "addr":
            value = (value[0], value[1])
        out[ie] = value
    return out


def _doc():
    with open(DOC_PATH) as f:
        return f.read()


# --- primitives ---------------------------------------------------------------

def test_hmac_sha256_vectors_including_long_key():
    assert len(V["hmac_sha256"]) >= 4
    assert any(len(b(c["key"])) > 64 for c in V["hmac_sha256"])
    for c in V["hmac_sha256"]:
        key, msg, mac = b(c["key"]), b(c["msg"]), b(c["mac"])
        assert crypto.hmac_sha256_portable(key, msg) == mac, c["name"]
        assert crypto.hmac_sha256(key, msg) == mac, c["name"]
        hk = crypto.HmacKey(key)
        assert hk.digest(msg) == mac
        assert hk.tag(msg, 8) == mac[:8]
        assert hk.verify(msg, mac[:4], 4)
        assert not hk.verify(msg, bytes([mac[0] ^ 1]) + mac[1:4], 4)
        # fixed tag lengths: an empty, short or long tag never verifies, even a prefix of the right one
        assert not hk.verify(msg, b"", 8) and not hk.verify(msg, mac[:4], 8) and not hk.verify(msg, mac[:9], 8)


def test_hkdf_vectors():
    for c in V["hkdf_sha256"]:
        assert crypto.hkdf(b(c["secret"]), b(c["salt"]), b(c["info"]), c["length"]) == b(c["okm"]), c["name"]


def test_aes128_ctr_vectors_encrypt_and_decrypt():
    for c in V["aes128_ctr"]:
        ctr = crypto.CounterMode(b(c["key"]), 256)
        buf = bytearray(b(c["plaintext"]))
        ctr.crypt(b(c["nonce"]), buf, 0, len(buf))
        assert bytes(buf) == b(c["ciphertext"]), c["name"]
        ctr.crypt(b(c["nonce"]), buf, 0, len(buf))
        assert bytes(buf) == b(c["plaintext"])


# --- handshake and sessions --------------------------------------------------

def test_handshake_key_cookie_frames_and_session_keys():
    hs = V["handshake"]
    secret, nonce = b(hs["secret"]), b(hs["client_nonce"])
    key = session.handshake_key(secret)
    assert key.key == b(hs["handshake_key"])
    index = hs["frames"][0]["ies"][1][1]
    cookie = session.make_cookie(b(hs["cookie_secret"]), ("ext", hs["identity"]), nonce, index,
                                 hs["client_address"], hs["now_ms"])
    assert cookie == b(hs["cookie"])
    # valid in the next 30 s bucket as "previous", not two buckets later
    assert session.make_cookie(b(hs["cookie_secret"]), ("ext", hs["identity"]), nonce, index,
                               hs["client_address"], hs["now_ms"] + 30000, previous=True) == cookie
    assert session.make_cookie(b(hs["cookie_secret"]), ("ext", hs["identity"]), nonce, index,
                               hs["client_address"], hs["now_ms"] + 60000, previous=True) != cookie
    for f in hs["frames"]:
        ies = ies_from_json(f["ies"])
        frame = b(f["frame"])
        assert session.seal_handshake(key, f["receiver_index"], f["type"], ies) == frame, f["name"]
        got_index, got_type, got_ies = session.parse_handshake(frame)
        assert (got_index, got_type, got_ies) == (f["receiver_index"], f["type"], ies)
        assert wire.parse_full(frame) == (f["receiver_index"], 0, 0, f["type"])
        assert session.verify_handshake(key, frame)
        assert not session.verify_handshake(session.handshake_key(b"x" * 16), frame)
    keys = session.session_keys(secret, nonce, cookie, True)
    sk = hs["session_keys"]
    assert [hx(k) for k in keys] == [sk["c2s_auth"], sk["c2s_enc"], sk["s2c_auth"], sk["s2c_enc"]]
    assert session.session_keys(secret, nonce, cookie, False) == (keys[2], keys[3], keys[0], keys[1])


def test_login_state_machine_produces_the_handshake_vectors():
    hs = V["handshake"]
    frames = dict((f["name"], b(f["frame"])) for f in hs["frames"])
    nonce = b(hs["client_nonce"])
    index = hs["frames"][0]["ies"][1][1]
    client = Login(wire.IE_EXTENSION, hs["identity"], b(hs["secret"]), index, lambda n: nonce[:n])
    client.start(0)
    assert client.datagrams_to_send(0) == [frames["HELLO"]]
    assert client.receive(frames["CHALLENGE"], 10) == []
    assert client.datagrams_to_send(10) == [frames["RESPONSE"]]
    welcome = V["full_frames"][0]
    assert client.receive(b(welcome["frame"]), 20) == []
    assert client.state == UP
    assert client.channel.peer_index == ies_from_json(welcome["ies"])[wire.IE_SESSION_INDEX]
    events = client.take_events()
    assert [type(e) for e in events] == [LoginUp] and events[0].welcome == ies_from_json(welcome["ies"])


def _session_cryptos():
    sk = V["handshake"]["session_keys"]
    c2s = (b(sk["c2s_auth"]), b(sk["c2s_enc"]))
    s2c = (b(sk["s2c_auth"]), b(sk["s2c_enc"]))
    client = session.SessionCrypto(c2s[0], c2s[1], s2c[0], s2c[1])
    server = session.SessionCrypto(s2c[0], s2c[1], c2s[0], c2s[1])
    return client, server


def test_sealed_full_frames_seal_open_and_decode():
    client, server = _session_cryptos()
    for f in V["full_frames"]:
        sender, receiver = (client, server) if f["direction"] == "c2s" else (server, client)
        ies = ies_from_json(f["ies"])
        payload = wire.encode_ies(ies)
        assert payload == b(f["plaintext"])
        frame = sender.seal(f["receiver_index"], f["seq64"], f["ack64"], f["type"], payload)
        assert frame == b(f["frame"]), f["name"]
        assert wire.frame_kind(frame) == wire.KIND_FULL
        assert wire.parse_full(frame) == (f["receiver_index"], f["seq64"] & 0xFFFF, f["ack64"] & 0xFFFF, f["type"])
        assert b(f["nonce"]) == bytes([2, 0, 0, 0]) + bytes((f["seq64"] >> (8 * (7 - i))) & 0xFF for i in range(8))
        opened = receiver.open(frame, f["seq64"], f["ack64"])
        assert bytes(opened) == payload
        # v2: the tag covers all 64 bits of the sequence number and ack, not just the 16 on the wire
        assert receiver.open(frame, f["seq64"] + 0x10000, f["ack64"]) is None
        assert receiver.open(frame, f["seq64"], f["ack64"] + 0x10000) is None
        assert wire.decode_ies(opened) == ies
        # the wrong direction's keys, or a flipped bit, do not open it
        assert sender.open(frame, f["seq64"], f["ack64"]) is None
        bad = bytearray(frame)
        bad[len(bad) // 2] ^= 0x10
        assert receiver.open(bytes(bad), f["seq64"], f["ack64"]) is None


def test_channel_delivers_the_setup_vector_once_and_acks_it():
    client, server = _session_cryptos()
    welcome, setup = V["full_frames"][0], V["full_frames"][1]
    channel = reliable.Channel(server, welcome["receiver_index"])
    channel.expected = setup["seq64"]       # the client has sent 0x10002 frames before
    got = channel.receive(b(setup["frame"]), 0)
    assert got == [(setup["type"], ies_from_json(setup["ies"]))]
    assert channel.receive(b(setup["frame"]), 1) == []    # duplicate: re-acked, not delivered
    assert channel.duplicates == 1
    acks = channel.datagrams_to_send(1)
    assert len(acks) == 1
    assert wire.parse_full(acks[0])[3] == wire.ACK
    assert wire.parse_full(acks[0])[2] == (setup["seq64"] + 1) & 0xFFFF


# --- media ---------------------------------------------------------------------

def test_mini_frames_seal_open_and_decode():
    mv = V["mini_frames"]
    key = b(mv["media_key"])
    lk = mv["leg_keys_role0"]
    assert [hx(k) for k in media.leg_keys(key, 0)] == [lk["send_auth"], lk["send_enc"], lk["recv_auth"],
                                                        lk["recv_enc"]]
    k1 = media.leg_keys(key, 1)
    assert (hx(k1[0]), hx(k1[1])) == (lk["recv_auth"], lk["recv_enc"])
    for f in mv["frames"]:
        payload = b(f["payload"])
        sender = media.MediaLeg(key, f["role"], f["call_no"], f["peer_call_no"])
        frame = bytes(sender.seal_mini(f["ts64"], payload))
        assert frame == b(f["frame"]), f["name"]
        assert len(frame) == wire.MINI_HEADER + len(payload) + wire.MEDIA_TAG
        assert wire.frame_kind(frame) == wire.KIND_MINI
        assert wire.parse_mini(frame) == (f["peer_call_no"], f["ts64"] & 0xFFFF)
        receiver = media.MediaLeg(key, 1 - f["role"], f["peer_call_no"], f["call_no"])
        receiver.replay.highest = f["receiver_highest"]
        buf = bytearray(frame)
        assert receiver.open_mini(buf) == f["ts64"]
        assert bytes(buf[wire.MINI_HEADER:len(buf) - wire.MEDIA_TAG]) == payload
        assert receiver.open_mini(bytearray(frame)) is None    # replay
        # a receiver with the same role (wrong direction keys) rejects it
        same = media.MediaLeg(key, f["role"], f["peer_call_no"], f["call_no"])
        assert same.open_mini(bytearray(frame)) is None


def test_trunk_frame_with_three_calls_seal_open_and_decode():
    t = V["trunk_frame"]
    auth = crypto.HmacKey(b(t["session_auth"]))
    entries = []
    for e in t["entries"]:
        entries.append((media.MediaLeg(b(e["media_key"]), e["role"], 1, e["peer_call_no"]), e["ts64"],
                        b(e["payload"])))
    frame = bytes(media.seal_trunk(auth, t["receiver_index"], entries, bytearray(1024)))
    assert frame == b(t["frame"])
    assert wire.frame_kind(frame) == wire.KIND_TRUNK
    assert wire.session_of(frame) == t["receiver_index"]
    buf = bytearray(frame)
    legs = {}
    for e in t["entries"]:
        leg = media.MediaLeg(b(e["media_key"]), 1 - e["role"], e["peer_call_no"], 1)
        leg.replay.highest = e["ts64"] - 20      # the receiver has seen the frame before
        legs[e["peer_call_no"]] = leg
    extend = lambda call_no, ts16: crypto.extend16(legs[call_no].replay.highest, ts16) if call_no in legs else None
    parsed = media.open_trunk(auth, buf, extend)
    assert [(c, ts) for c, ts, _s, _e in parsed] == [(e["peer_call_no"], e["ts64"]) for e in t["entries"]]
    for (call_no, ts, start, end), e in zip(parsed, t["entries"]):
        assert (buf[start - wire.TRUNK_ENTRY_HEADER] & 0x80 != 0) == e["comfort_noise"]
        leg = legs[call_no]
        assert bytes(leg.open_entry_bytes(buf, ts, start, end)) == b(e["payload"])
        assert leg.received == 1 and leg.replay.highest == e["ts64"]
        assert leg.open_entry_bytes(buf, ts, start, end) is None     # replay
    bad = bytearray(frame)
    bad[3] ^= 0x01
    assert media.open_trunk(auth, bad, extend) is None
    # the same frame read 65.536 s later (the 16-bit timestamps wrapped) fails its tag
    for leg in legs.values():
        leg.replay.highest += 0x10000
    assert media.open_trunk(auth, bytearray(frame), extend) is None


# --- framing and IEs -----------------------------------------------------------

def test_headers_at_their_limits():
    hv = V["headers"]
    full = bytearray(8)
    f = hv["full"]
    wire.pack_full_header(full, f["session"], f["seq16"], f["ack16"], f["type"])
    assert hx(full) == f["header"]
    assert wire.session_of(full) == f["session"]
    mini = bytearray(4)
    wire.pack_mini_header(mini, hv["mini"]["call_no"], hv["mini"]["ts16"])
    assert hx(mini) == hv["mini"]["header"]
    tr = hv["trunk"]
    buf = bytearray(3 + 4 * len(tr["entries"]))
    wire.pack_trunk_header(buf, tr["session"])
    offset = 3
    for call_no, ts, cn in tr["entries"]:
        offset = wire.pack_trunk_entry(buf, offset, call_no, ts, cn)
    assert hx(buf) == tr["bytes"]


def test_every_ie_kind_encodes_and_decodes():
    kinds = set()
    seen = set()
    for c in V["ies"]:
        ies = ies_from_json([[c["type"], c["value"]]])
        assert wire.IE_SPEC[c["type"]][:2] == (c["name"], c["kind"])
        assert hx(wire.encode_ies(ies)) == c["encoding"], c["name"]
        assert wire.decode_ies(b(c["encoding"])) == ies
        kinds.add(c["kind"])
        seen.add(c["type"])
    assert seen == set(wire.IE_SPEC)
    assert kinds == set(["u8", "u16", "u32", "u64", "idx", "str", "bytes", "addr"])
    comb = V["ies_combined"]
    ies = ies_from_json(comb["ies"])
    assert hx(wire.encode_ies(ies)) == comb["encoding"]
    assert wire.decode_ies(b(comb["encoding"])) == ies
    skip = V["ies_unknown_skipped"]
    assert wire.decode_ies(b(skip["input"])) == ies_from_json(skip["ies"])


def test_malformed_inputs_raise_decode_error_naming_field_and_offset():
    for c in V["malformed"]:
        try:
            getattr(wire, c["decoder"])(b(c["input"]))
        except wire.DecodeError as exc:
            assert (exc.field, exc.offset, exc.problem) == (c["field"], c["offset"], c["problem"]), c
        else:
            raise AssertionError("%s accepted %s" % (c["decoder"], c["input"]))


# (highest so far, 16 bits received, the 64-bit number): the closest to highest with those low
# bits, never negative; at a tie (0x8000 either way) the one in highest's block of 0x10000
EXTEND16 = [
    (-1, 0x0007, 0x7), (-1, 0xFFFF, 0xFFFF),                  # nothing received yet: as it is
    (0xFFF0, 0x0010, 0x10010), (0x10010, 0xFFF0, 0xFFF0),     # across the wrap, both ways
    (0x12340, 0x2354, 0x12354), (0x12354, 0x2340, 0x12340),   # 20 ahead, 20 behind
    (100, 0xFFF0, 0xFFF0),                                    # the one below would be negative
    (0x18000, 0x0000, 0x10000), (0x18001, 0x0000, 0x20000),   # a tie: highest's block; one past it: the next
    (0x10000, 0x8000, 0x18000), (0x10000, 0x8001, 0x8001),    # a tie; one past it: the block below
    (0x123456789, 0x6789, 0x123456789),
]

# a ReplayWindow of 1024 slots: (number, accepted); accepted numbers are marked, rejected ones not
REPLAY_WINDOW = {
    "in order, then a duplicate": [(0, True), (1, True), (2, True), (3, True), (2, False)],
    "out of order inside the window": [(10, True), (5, True), (7, True), (6, True), (5, False), (11, True),
                                       (9, True)],
    "1023 behind is inside, 1024 behind is too old": [(2000, True), (977, True), (976, False), (977, False)],
    "a jump of 1024 or more clears the window": [(5, True), (3, True), (1030, True), (1029, True), (5, False),
                                                 (1030, False), (3, False), (6, False), (3000, True),
                                                 (1977, True), (1976, False)],
    "the example of tests/common/test_protocol.py": [(5, True), (3, True), (70, True), (69, True), (5, False),
                                                     (70, False), (3, False), (68, True)],
}

# a media leg's window: check, then jump_ok (after the tag), then mark; a number more than 1024
# above the highest is held until the next one follows it (at most 1024 above it)
MEDIA_JUMP = {
    "steps up to 1024 ahead move the window at once": [(1000, True), (1020, True), (2044, True), (2064, True)],
    "a lone frame 1025 or more ahead is held, the stream goes on": [(1000, True), (1020, True), (33000, False),
                                                                    (1040, True), (1060, True)],
    "a far jump confirmed by the next frame moves the window": [(1000, True), (1020, True), (40000, False),
                                                                (40020, True), (1040, False), (40040, True)],
    "a frame that does not follow the held one is held instead": [(1000, True), (40000, False), (60000, False),
                                                                  (1020, True), (60020, True)],
}

# one message never acknowledged: sent at 0, then after 250 ms doubling to at most 4000 ms,
# 8 sends in all; the channel fails 4000 ms after the last
RETRANSMIT_SENDS_MS = [0, 250, 750, 1750, 3750, 7750, 11750, 15750]
RETRANSMIT_GIVES_UP_MS = 19750


def _ops(pairs):
    return [[n, accepted] for n, accepted in pairs]


def test_extend16_vectors():
    for highest, value, result in EXTEND16:
        assert crypto.extend16(highest, value) == result, (highest, value)
    assert V["extend16"] == [[h, v, r] for h, v, r in EXTEND16]


def test_replay_window_sequences():
    for name, ops in REPLAY_WINDOW.items():
        w = crypto.ReplayWindow()
        for n, accepted in ops:
            assert w.check(n) == accepted, (name, n)
            if accepted:
                w.mark(n)
    assert dict((c["name"], c["ops"]) for c in V["replay_window"]) == dict(
        (name, _ops(ops)) for name, ops in REPLAY_WINDOW.items())


def test_media_jump_sequences():
    assert V["protocol"] == "upbx v%d" % wire.VERSION
    for name, ops in MEDIA_JUMP.items():
        w = crypto.ReplayWindow()
        for n, accepted in ops:
            assert (w.check(n) and w.jump_ok(n)) == accepted, (name, n)
            if accepted:
                w.mark(n)
    assert dict((c["name"], c["ops"]) for c in V["media_jump"]) == dict(
        (name, _ops(ops)) for name, ops in MEDIA_JUMP.items())


def test_retransmission_schedule():
    assert (reliable.RTO_INITIAL_MS, reliable.RTO_MAX_MS, reliable.MAX_TRIES, reliable.WINDOW) == (250, 4000, 8, 32)
    client, _server = _session_cryptos()
    channel = reliable.Channel(client, 1)
    channel.send(wire.PING, {}, 0)
    sends = [0] * len(channel.datagrams_to_send(0))
    now = 0
    while not channel.failed:
        now = channel.next_timer()
        channel.handle_timer(now)
        sends += [now] * len(channel.datagrams_to_send(now))
    assert sends == RETRANSMIT_SENDS_MS
    assert now == RETRANSMIT_GIVES_UP_MS
    r = V["retransmit_schedule_ms"]
    assert (r["sends_ms"], r["gives_up_ms"]) == (RETRANSMIT_SENDS_MS, RETRANSMIT_GIVES_UP_MS)
    assert (r["rto_initial_ms"], r["rto_max_ms"], r["max_tries"], r["window"]) == (250, 4000, 8, 32)


# --- the document --------------------------------------------------------------

def _hex_strings(value, out):
    if isinstance(value, dict):
        for v in value.values():
            _hex_strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _hex_strings(v, out)
    elif isinstance(value, str) and len(value) >= 2 and len(value) % 2 == 0:
        for ch in value:
            if ch not in "0123456789abcdef":
                return
        out.append(value)


def test_every_vector_appears_in_the_document():
    doc = "".join(_doc().split()).lower()
    found = []
    _hex_strings(V, found)
    assert len(found) > 80
    missing = [h for h in found if h not in doc]
    assert not missing, "not in docs/protocol.md: %s" % missing[:3]


def test_document_tables_match_wire():
    doc = _doc()
    for ie in wire.IE_SPEC:
        name, kind, lo, hi = wire.IE_SPEC[ie]
        row = "| 0x%02x | %s | %s | %d..%d |" % (ie, name, kind, lo, hi)
        assert row in doc, "IE table row missing: " + row
    for code in wire.MESSAGE_NAMES:
        row = "| 0x%02x | %s |" % (code, wire.MESSAGE_NAMES[code])
        assert row in doc, "message table row missing: " + row
    for cause in wire.CAUSE_TEXT:
        row = "| %d | %s |" % (cause, wire.CAUSE_TEXT[cause])
        assert row in doc, "cause table row missing: " + row
    for i, name in enumerate(wire.PATH_NAMES):
        assert "| %d | %s |" % (i, name) in doc


def test_the_codec_layout_is_the_ie_table():
    # common.wire keeps the IE table's lengths and kinds in compact form (a handset's heap holds
    # no names); it must say what common.wire_names' table says, IE by IE
    from common import wire_names
    assert wire._LAYOUT == wire_names.layout()
    assert wire.ie_name(wire.IE_MEDIA_KEY) == "media_key" and wire.ie_name(0x3F) == "IE 0x3f"
    for ie, (name, kind, lo, hi) in wire.IE_SPEC.items():
        value = {"str": "x" * lo, "bytes": bytes(lo), "addr": ("10.0.0.1", 9)}.get(kind, 0)
        assert wire.decode_ies(wire.encode_ies({ie: value})) == {ie: value}, name
        assert getattr(wire, "IE_" + name.upper()) == ie, name   # those a handset uses are in wire.py
    for number, name in wire.MESSAGE_NAMES.items():                # the rest come from the table
        assert getattr(wire, name) == number, name
    for missing in ("IE_NOTHING", "NOTHING", "parse_nothing"):
        try:
            getattr(wire, missing)
            raise AssertionError(missing)
        except AttributeError:
            pass


def _bandwidth_table():
    doc = _doc()
    begin = doc.index("<!-- BEGIN generated:bandwidth -->")
    end = doc.index("<!-- END generated:bandwidth -->")
    rows = []
    header = None
    for line in doc[begin:end].split("\n"):
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        else:
            rows.append(dict(zip(header, cells)))
    return rows


def _kbps(ip_bytes, calls):
    """kbit/s per call of ip_bytes every 20 ms, as the table prints it (2 decimals, half up)."""
    centi = (ip_bytes * 8 * 50 * 100 * 2 + 1000 * calls) // (2000 * calls)
    return "%d.%02d" % (centi // 100, centi % 100)


def test_bandwidth_table_matches_frame_sizes():
    ip_udp = 20 + 8
    voice = wire.VOICE_BYTES
    rows = _bandwidth_table()
    assert [(r["frame"], r["calls N"]) for r in rows] == [
        ("mini", "1"), ("trunk", "1"), ("trunk", "2"), ("trunk", "5"), ("trunk", "10"), ("trunk", "30")]
    # real frames have the sizes the table is computed from
    leg = media.MediaLeg(bytes(16), 0, 1, 2)
    mini_frame = len(leg.seal_mini(0, bytes(voice)))
    assert mini_frame == 4 + 160 + 4
    legs = [media.MediaLeg(bytes([i]) * 16, 0, 1, i) for i in range(1, 31)]
    per_mtu = 0
    while 3 + (per_mtu + 1) * 164 + 4 + ip_udp <= 1500:
        per_mtu += 1
    assert per_mtu == 8
    for r in rows:
        n = int(r["calls N"])
        rtp = 12 + voice + ip_udp
        assert (r["RTP bytes/tick"], r["RTP kbps/call"]) == (str(n * rtp), _kbps(n * rtp, n))
        if r["frame"] == "mini":
            ours = mini_frame + ip_udp
            split = ours
            iax = 4 + voice + ip_udp
            assert (r["IAX2 ts bytes/tick"], r["IAX2 ts kbps/call"]) == ("-", "-")
        else:
            trunk = len(media.seal_trunk(crypto.HmacKey(bytes(32)), 1, [(l, 0, bytes(voice)) for l in legs[:n]],
                                         bytearray(6000)))
            assert trunk == media.trunk_capacity(n) == 3 + 164 * n + 4
            ours = trunk + ip_udp
            full, rest = n // per_mtu, n % per_mtu
            split = full * (3 + 164 * per_mtu + 4 + ip_udp) + ((3 + 164 * rest + 4 + ip_udp) if rest else 0)
            iax = 8 + n * (4 + voice) + ip_udp
            iax_ts = 8 + n * (6 + voice) + ip_udp
            assert (r["IAX2 ts bytes/tick"], r["IAX2 ts kbps/call"]) == (str(iax_ts), _kbps(iax_ts, n))
        assert (r["upbx bytes/tick"], r["upbx kbps/call"]) == (str(ours), _kbps(ours, n))
        assert r["upbx split at MTU kbps/call"] == _kbps(split, n)
        assert (r["IAX2 bytes/tick"], r["IAX2 kbps/call"]) == (str(iax), _kbps(iax, n))
    # the figures the brief and the prose quote
    assert rows[0]["upbx kbps/call"] == "78.40" and rows[0]["RTP kbps/call"] == "80.00"
    assert rows[0]["IAX2 kbps/call"] == "76.80"


CALL_EVENTS = ("SETUP_SENT", "SETUP_RECEIVED", "ALERTING_SENT", "ALERTING_RECEIVED", "ANSWER_SENT", "ANSWER_RECEIVED",
               "RELEASE_SENT", "RELEASE_RECEIVED", "DTMF_SENT", "DTMF_RECEIVED", "TIMEOUT")


def call_leg_rows():
    """docs/protocol.md's call-leg table from common.call's table: one row per state, its legal
    events grouped by the state they lead to."""
    from common import call
    table = {}                 # every (state, event) a leg takes, and where to: the table, read back
    leg = call.CallLeg(1, bytes(16), 0)
    for state in range(len(call.STATE_NAMES)):
        for event in range(-1, 13):
            leg.state = state
            new = leg.apply(event)
            if new is None:
                assert leg.state == state, (state, event)     # not legal: the leg is unchanged
            else:
                assert leg.state == new, (state, event)
                table[(state, event)] = new
    assert len(table) == 27
    names = dict((getattr(call, n), n) for n in CALL_EVENTS)
    assert len(names) == len(CALL_EVENTS)
    rows = []
    for state, state_name in enumerate(call.STATE_NAMES):
        targets = []
        for event in sorted(names):
            target = table.get((state, event))
            if target is None:
                continue
            group = [g for g in targets if g[0] == target]
            if group:
                group[0][1].append(names[event])
            else:
                targets.append((target, [names[event]]))
        legal = "; ".join("%s: %s" % (", ".join(events), call.STATE_NAMES[t]) for t, events in targets)
        rows.append("| %s | %s |" % (state_name, legal or "(none)"))
    return rows


def test_document_call_leg_table_is_the_transition_table():
    doc = _doc()
    begin = doc.index("<!-- BEGIN generated:call-leg -->")
    end = doc.index("<!-- END generated:call-leg -->")
    rows = [line for line in doc[begin:end].split("\n") if line.startswith("| ") and not line.startswith("| state |")]
    assert rows == call_leg_rows(), "\n".join(call_leg_rows())
