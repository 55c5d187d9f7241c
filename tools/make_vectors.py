"""Generate the protocol v2 test vectors and the generated parts of docs/protocol.md.

    python -m upbx.tools.make_vectors          write tests/vectors/protocol_vectors.json and
                                          the two generated sections of docs/protocol.md
    python -m upbx.tools.make_vectors --check  exit 1 when either is out of date

Every input is fixed (no randomness), so the output is reproducible byte for byte.
The crypto vectors are computed with common/ and cross-checked here against
independent implementations (stdlib hmac, cryptography's HKDF and AES-CTR); the
generator refuses to write anything when they disagree.

Generated sections of docs/protocol.md sit between the markers
`<!-- BEGIN generated:NAME -->` and `<!-- END generated:NAME -->`:
`bandwidth` (the bandwidth table) and `vectors` (appendix A).
"""
import argparse
import hmac as stdlib_hmac
import json
import pathlib
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from upbx.common import crypto, media, reliable, session, wire

ROOT = pathlib.Path(__file__).resolve().parent.parent

VECTORS = ROOT / "tests" / "vectors" / "protocol_vectors.json"
DOC = ROOT / "docs" / "protocol.md"

IPV4_UDP = wire.IP_UDP_HEADERS   # 20 bytes IPv4 header + 8 bytes UDP header
FRAMES_PER_S = 50      # one frame per 20 ms
TRUNK_CALLS = (1, 2, 5, 10, 30)
RTP_HEADER = 12
IAX2_MINI_HEADER = 4
IAX2_TRUNK_HEADER = 8  # meta trunk header: meta indicator, command, cmd data, timestamp
IAX2_ENTRY = 4         # call number + length
IAX2_ENTRY_TS = 6      # length + call number + timestamp


def h(data):
    return bytes(data).hex()


def seq_bytes(start, n):
    return bytes((start + i) & 0xFF for i in range(n))


# --- independent cross-checks ------------------------------------------------

def ref_hkdf(secret, salt, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(secret)


def ref_ctr(key, nonce, data):
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce + bytes(4))).encryptor()
    return enc.update(data) + enc.finalize()


def ref_hmac(key, msg):
    return stdlib_hmac.new(key, msg, "sha256").digest()


def check(label, ours, theirs):
    if bytes(ours) != bytes(theirs):
        raise SystemExit("make_vectors: %s disagrees with the reference implementation" % label)


# --- IE values in JSON -------------------------------------------------------

def ies_to_json(ies):
    """[[type, value]] in ascending type order; bytes as hex, addresses as [host, port]."""
    out = []
    for ie in sorted(ies):
        kind = wire.IE_SPEC[ie][1]
        value = ies[ie]
        if kind == "bytes":
            value = h(value)
        elif kind == "addr":
            value = [value[0], value[1]]
        out.append([ie, value])
    return out


# --- the vectors -------------------------------------------------------------

def hmac_vectors():
    cases = [
        ("RFC 4231 case 1", b"\x0b" * 20, b"Hi There"),
        ("RFC 4231 case 6: key longer than the 64-byte block", b"\xaa" * 131,
         b"Test Using Larger Than Block-Size Key - Hash Key First"),
        ("key of exactly one block, empty message", seq_bytes(0, 64), b""),
        ("32-byte session key over a full-frame header", seq_bytes(0x20, 32),
         bytes.fromhex("8000010002000110")),
    ]
    out = []
    for name, key, msg in cases:
        mac = crypto.hmac_sha256_portable(key, msg)
        check(name, mac, ref_hmac(key, msg))
        check(name + " (fast path)", crypto.HmacKey(key).digest(msg), mac)
        out.append({"name": name, "key": h(key), "msg": h(msg), "mac": h(mac)})
    return out


def hkdf_vectors():
    cases = [
        ("RFC 5869 case 1", b"\x0b" * 22, seq_bytes(0, 13), seq_bytes(0xF0, 10), 42),
        ("RFC 5869 case 3: no salt, no info", b"\x0b" * 22, b"", b"", 42),
        ("handshake key", seq_bytes(0, 16), b"", b"upbx v2 handshake", 32),
        ("media leg material", seq_bytes(0x10, 16), b"", b"upbx v2 media", 96),
    ]
    out = []
    for name, secret, salt, info, length in cases:
        okm = crypto.hkdf(secret, salt, info, length)
        check(name, okm, ref_hkdf(secret, salt, info, length))
        out.append({"name": name, "secret": h(secret), "salt": h(salt), "info": h(info),
                    "length": length, "okm": h(okm)})
    return out


def ctr_vectors():
    cases = [
        ("one block of keystream", seq_bytes(0x2B, 16), bytes(12), bytes(16)),
        ("media nonce: domain 1, role 1, ts64 0x12340; 37 bytes (partial block)",
         seq_bytes(0x10, 16), bytes.fromhex("010100000000000000012340"), seq_bytes(0x41, 37)),
        ("signalling nonce: domain 2, seq64 0x10002; 160 bytes", seq_bytes(0x80, 16),
         bytes.fromhex("020000000000000000010002"), bytes(160)),
    ]
    out = []
    for name, key, nonce, plain in cases:
        buf = bytearray(plain)
        crypto.CounterMode(key, 256).crypt(nonce, buf, 0, len(buf))
        check(name, buf, ref_ctr(key, nonce, plain))
        out.append({"name": name, "key": h(key), "nonce": h(nonce), "plaintext": h(plain),
                    "ciphertext": h(buf)})
    return out


SECRET = seq_bytes(0, 16)
CLIENT_INDEX = 0x000105
SERVER_INDEX = 0x02A5A5
CLIENT_NONCE = seq_bytes(0xA0, 16)
COOKIE_SECRET = seq_bytes(0xC0, 32)
CLIENT_ADDRESS = "198.18.0.10:40000"
NOW_MS = 3600000


def handshake_vectors():
    key = session.handshake_key(SECRET)
    check("handshake key", key.key, ref_hkdf(SECRET, b"", b"upbx v2 handshake", 32))
    identity = ("ext", "201")
    cookie = session.make_cookie(COOKIE_SECRET, identity, CLIENT_NONCE, CLIENT_INDEX, CLIENT_ADDRESS, NOW_MS)
    check("cookie", cookie, ref_hmac(COOKIE_SECRET, ("%s|%d|%s|%d" % (
        identity, CLIENT_INDEX, CLIENT_ADDRESS, NOW_MS // session.COOKIE_BUCKET_MS)).encode() + CLIENT_NONCE)[:16])
    hello = {wire.IE_EXTENSION: "201", wire.IE_SESSION_INDEX: CLIENT_INDEX, wire.IE_NONCE: CLIENT_NONCE}
    challenge = {wire.IE_COOKIE: cookie}
    response = dict(hello)
    response[wire.IE_COOKIE] = cookie
    frames = []
    for name, index, msg_type, ies in (("HELLO", 0, wire.HELLO, hello),
                                        ("CHALLENGE", CLIENT_INDEX, wire.CHALLENGE, challenge),
                                        ("RESPONSE", 0, wire.RESPONSE, response)):
        frame = session.seal_handshake(key, index, msg_type, ies)
        check(name, frame[-8:], ref_hmac(key.key, frame[:-8])[:8])
        frames.append({"name": name, "receiver_index": index, "type": msg_type, "ies": ies_to_json(ies),
                       "frame": h(frame)})
    keys = session.session_keys(SECRET, CLIENT_NONCE, cookie, True)
    check("session keys", b"".join(keys[:2]) + b"".join(keys[2:]),
          ref_hkdf(SECRET, CLIENT_NONCE + cookie, b"upbx v2 session", 96))
    return {
        "secret": h(SECRET), "identity": "201", "client_nonce": h(CLIENT_NONCE),
        "cookie_secret": h(COOKIE_SECRET), "client_address": CLIENT_ADDRESS, "now_ms": NOW_MS,
        "handshake_key": h(key.key), "cookie": h(cookie), "frames": frames,
        "session_keys": {"c2s_auth": h(keys[0]), "c2s_enc": h(keys[1]),
                         "s2c_auth": h(keys[2]), "s2c_enc": h(keys[3])},
    }, keys


def full_frame_vectors(keys):
    c2s_auth, c2s_enc, s2c_auth, s2c_enc = keys
    server = session.SessionCrypto(s2c_auth, s2c_enc, c2s_auth, c2s_enc)
    client = session.SessionCrypto(c2s_auth, c2s_enc, s2c_auth, s2c_enc)
    cases = [
        ("WELCOME from the server, its first reliable message", server, "s2c", CLIENT_INDEX, 0, 0, wire.WELCOME,
         {wire.IE_SESSION_INDEX: SERVER_INDEX, wire.IE_TTL: 60, wire.IE_TIME: NOW_MS}),
        ("SETUP from the client, seq64 0x10002 (seq16 2 on the wire), ack64 1", client, "c2s", SERVER_INDEX,
         0x10002, 1,
         wire.SETUP, {wire.IE_CALL_NO: 0x0123, wire.IE_CALLED: "3105", wire.IE_CALLING: "201",
                      wire.IE_CALLING_NAME: "Front desk", wire.IE_CALL_ID: seq_bytes(0xE0, 8),
                      wire.IE_CODEC: wire.CODEC_ULAW}),
        ("ACK-only frame: no IEs, carries the next unsent seq", client, "c2s", SERVER_INDEX, 0x10003, 2,
         wire.ACK, {}),
    ]
    out = []
    for name, sealer, direction, index, seq, ack, msg_type, ies in cases:
        payload = wire.encode_ies(ies)
        frame = sealer.seal(index, seq, ack, msg_type, payload)
        enc = c2s_enc if direction == "c2s" else s2c_enc
        auth = c2s_auth if direction == "c2s" else s2c_auth
        nonce = bytes([2, 0, 0, 0]) + seq.to_bytes(8, "big")
        check(name + " ciphertext", frame[8:-8], ref_ctr(enc, nonce, payload))
        # v2: the tag covers the 64-bit sequence number and ack, of which the header carries 16 bits each
        check(name + " tag", frame[-8:], ref_hmac(auth, seq.to_bytes(8, "big") + ack.to_bytes(8, "big")
                                                  + frame[:-8])[:8])
        out.append({"name": name, "direction": direction, "receiver_index": index, "seq64": seq,
                    "ack64": ack, "type": msg_type, "ies": ies_to_json(ies), "plaintext": h(payload),
                    "nonce": h(nonce), "frame": h(frame)})
    return out


MEDIA_KEY = seq_bytes(0x10, 16)


def mini_frame_vectors():
    leg = media.MediaLeg(MEDIA_KEY, 0, 0x0123, 0x0456)
    material = crypto.hkdf(MEDIA_KEY, b"", b"upbx v2 media", 96)
    keys = media.leg_keys(MEDIA_KEY, 0)
    check("leg keys", b"".join(keys), material)
    voice = bytes((i * 37 + 5) & 0xFF for i in range(wire.VOICE_BYTES))
    out = {"media_key": h(MEDIA_KEY),
           "leg_keys_role0": {"send_auth": h(keys[0]), "send_enc": h(keys[1]),
                              "recv_auth": h(keys[2]), "recv_enc": h(keys[3])},
           "frames": []}
    for name, ts, payload in (("voice, ts64 0x12340", 0x12340, voice),
                              ("comfort noise (1 level byte), next tick", 0x12354, b"\x5a")):
        frame = bytes(leg.seal_mini(ts, payload))
        nonce = bytes([1, 0, 0, 0]) + ts.to_bytes(8, "big")
        check(name + " ciphertext", frame[4:-4], ref_ctr(keys[1], nonce, payload))
        check(name + " tag", frame[-4:], ref_hmac(keys[0], ts.to_bytes(8, "big") + frame[:-4])[:4])
        out["frames"].append({"name": name, "role": 0, "call_no": 0x0123, "peer_call_no": 0x0456, "ts64": ts,
                              "receiver_highest": ts - 20, "payload": h(payload), "nonce": h(nonce),
                              "frame": h(frame)})
    return out


TRUNK_AUTH = seq_bytes(0x40, 32)


def trunk_frame_vector():
    calls = [(bytes([0x61]) * 16, 0x0101, 1000, bytes((i * 3) & 0xFF for i in range(160))),
             (bytes([0x62]) * 16, 0x0202, 1000, bytes((255 - i) & 0xFF for i in range(160))),
             (bytes([0x63]) * 16, 0x7FFF, 20000, b"\x2a")]
    entries = []
    for key, peer_call_no, ts, payload in calls:
        entries.append((media.MediaLeg(key, 0, 1, peer_call_no), ts, payload))
    buf = bytearray(1024)
    frame = bytes(media.seal_trunk(crypto.HmacKey(TRUNK_AUTH), SERVER_INDEX, entries, buf))
    stamps = b"".join(ts.to_bytes(8, "big") for _k, _c, ts, _p in calls)
    check("trunk tag", frame[-4:], ref_hmac(TRUNK_AUTH, stamps + frame[:-4])[:4])
    offset = 3
    for key, peer_call_no, ts, payload in calls:
        send_enc = media.leg_keys(key, 0)[1]
        nonce = bytes([1, 0, 0, 0]) + ts.to_bytes(8, "big")
        start = offset + 4
        check("trunk entry", frame[start:start + len(payload)], ref_ctr(send_enc, nonce, payload))
        offset = start + len(payload)
    return {"session_auth": h(TRUNK_AUTH), "receiver_index": SERVER_INDEX,
            "entries": [{"media_key": h(k), "role": 0, "peer_call_no": c, "ts64": ts,
                         "comfort_noise": len(p) == 1, "payload": h(p)} for k, c, ts, p in calls],
            "frame": h(frame)}


IE_EXAMPLES = {
    wire.IE_EXTENSION: "201", wire.IE_HOST_NAME: "farm-north", wire.IE_SESSION_INDEX: 0x2A5A5,
    wire.IE_NONCE: seq_bytes(0xA0, 16), wire.IE_COOKIE: seq_bytes(0xB0, 16), wire.IE_TTL: 60,
    wire.IE_TIME: 1767225600000, wire.IE_CALL_NO: 0x0123, wire.IE_PEER_CALL_NO: 0x7FFF,
    wire.IE_CALLED: "3105", wire.IE_CALLING: "201", wire.IE_CALLING_NAME: "Zoë's desk",
    wire.IE_CAUSE: wire.CAUSE_BUSY, wire.IE_CALL_ID: seq_bytes(0xE0, 8), wire.IE_MEDIA_KEY: seq_bytes(0x10, 16),
    wire.IE_DIGIT: "#", wire.IE_ADDRESS: ("198.18.7.9", 40000), wire.IE_PATH: wire.PATH_DIRECT,
    wire.IE_CODEC: wire.CODEC_ALAW, wire.IE_ROLE: 1, wire.IE_VERSION: 42, wire.IE_CHUNK: (2 << 16) | 5,
    wire.IE_DATA: seq_bytes(0, 12), wire.IE_PEER_NAME: "clinic", wire.IE_PEER_KEY: seq_bytes(0x30, 32),
    wire.IE_STATE: 1,
    wire.IE_KEEPALIVE: 20000,
    wire.IE_JOIN_CALL_NO: 0x0124,
    wire.IE_ANSWER: 2,
    wire.IE_CONF_CALL_NO: 0x0456,
    wire.IE_FW_VERSION: "2.0.1", wire.IE_FW_STATE: 4, wire.IE_FW_RUNNING: "2.0.0",
    # layout 1, node 1 at 198.18.0.1:4569, node 2 at 198.18.0.2:4569 (common/cluster.py)
    wire.IE_CLUSTER_NODES: bytes.fromhex("01" "01c612000111d9" "02c612000211d9"), wire.IE_NODE: 2,
    wire.IE_STANDBY: 1,
}


def ie_vectors():
    missing = set(wire.IE_SPEC) - set(IE_EXAMPLES)
    if missing:
        raise SystemExit("make_vectors: no example for IE %s" % sorted(missing))
    out = []
    for ie in sorted(wire.IE_SPEC):
        name, kind, lo, hi = wire.IE_SPEC[ie]
        one = {ie: IE_EXAMPLES[ie]}
        out.append({"type": ie, "name": name, "kind": kind, "value": ies_to_json(one)[0][1],
                    "encoding": h(wire.encode_ies(one))})
    return out


def ie_combined_vector():
    ies = {wire.IE_CAUSE: wire.CAUSE_NOT_PERMITTED, wire.IE_CALL_NO: 0x0123, wire.IE_PEER_CALL_NO: 0x0456}
    return {"ies": ies_to_json(ies), "encoding": h(wire.encode_ies(ies)),
            "note": "IEs are written in ascending type order whatever order the caller gives"}


def header_vectors():
    full = bytearray(8)
    wire.pack_full_header(full, wire.MAX_SESSION, 0xFFFF, 0x1234, wire.DIRECTORY)
    mini = bytearray(4)
    wire.pack_mini_header(mini, wire.MAX_CALL_NO, 0xFFFF)
    trunk = bytearray(3 + 8)
    wire.pack_trunk_header(trunk, 0x000001)
    wire.pack_trunk_entry(trunk, 3, 0x0001, 0x0000, False)
    wire.pack_trunk_entry(trunk, 7, 0x7FFF, 0xABCD, True)
    return {
        "full": {"session": wire.MAX_SESSION, "seq16": 0xFFFF, "ack16": 0x1234, "type": wire.DIRECTORY,
                 "header": h(full)},
        "mini": {"call_no": wire.MAX_CALL_NO, "ts16": 0xFFFF, "header": h(mini)},
        "trunk": {"session": 1, "entries": [[1, 0, False], [0x7FFF, 0xABCD, True]], "bytes": h(trunk)},
    }


def malformed_vectors():
    """Inputs each decoder must refuse, with the field and offset its DecodeError names."""
    voice = bytes(160)
    cases = [
        ("frame_kind", b""),
        ("parse_full", bytes.fromhex("80000100000000")),
        ("parse_full", bytes(16)),
        ("parse_mini", bytes.fromhex("0001000000")),
        ("parse_mini", bytes.fromhex("00010000") + bytes(2) + bytes(4)),
        ("parse_mini", bytes.fromhex("00000000") + voice + bytes(4)),
        ("parse_mini", bytes.fromhex("80010000") + voice + bytes(4)),
        ("parse_trunk", bytes.fromhex("c00001") + bytes.fromhex("0001") + bytes(4)),
        ("parse_trunk", bytes.fromhex("800001") + bytes.fromhex("80010000") + bytes(1) + bytes(4)),
        ("parse_trunk", bytes.fromhex("c00001") + bytes.fromhex("00000000") + bytes(1) + bytes(4)),
        ("parse_trunk", bytes.fromhex("c00001") + bytes.fromhex("00010000") + bytes(20) + bytes(4)),
        ("parse_trunk", bytes.fromhex("c00001") + bytes.fromhex("80010000") + bytes(1) + bytes(2) + bytes(4)),
        ("decode_ies", bytes.fromhex("10")),
        ("decode_ies", bytes.fromhex("100501")),
        ("decode_ies", bytes.fromhex("1002012310020456")),
        ("decode_ies", bytes.fromhex("1003000102")),
        ("decode_ies", bytes.fromhex("0102ff41")),
        ("decode_ies", bytes.fromhex("190401020304")),
    ]
    out = []
    for decoder, data in cases:
        try:
            getattr(wire, decoder)(data)
        except wire.DecodeError as exc:
            out.append({"decoder": decoder, "input": h(data), "field": exc.field, "offset": exc.offset,
                        "problem": exc.problem})
        else:
            raise SystemExit("make_vectors: %s accepted %s" % (decoder, h(data)))
    # unknown IEs are skipped (a newer peer may send them)
    out_ok = {"decoder": "decode_ies", "input": "ff020000" + "15" + "01" + "03",
              "ies": [[wire.IE_CAUSE, 3]], "note": "unknown IE 0xff skipped"}
    return out, out_ok


def extend16_vectors():
    cases = [(-1, 7), (-1, 0xFFFF), (0xFFF0, 0x0010), (0x10010, 0xFFF0), (0x12340, 0x2354), (0x12354, 0x2340),
             (100, 0xFFF0), (0x18000, 0x0000), (0x18001, 0x0000), (0x10000, 0x8000), (0x10000, 0x8001),
             (0x123456789, 0x6789)]
    out = []
    for highest, value in cases:
        result = crypto.extend16(highest, value)
        if result & 0xFFFF != value or result < 0:
            raise SystemExit("make_vectors: extend16 low bits")
        # the closest non-negative candidate, when it is unique
        cands = [c for c in (result - 0x10000, result, result + 0x10000) if c >= 0]
        if highest >= 0:
            best = min(abs(c - highest) for c in cands)
            if abs(result - highest) != best:
                raise SystemExit("make_vectors: extend16(%d, %d) is not the closest" % (highest, value))
        out.append([highest, value, result])
    return out


def replay_vectors():
    sequences = [
        ("in order, then a duplicate", [0, 1, 2, 3, 2]),
        ("out of order inside the window", [10, 5, 7, 6, 5, 11, 9]),
        ("1023 behind is inside, 1024 behind is too old", [2000, 977, 976, 977]),
        ("a jump of 1024 or more clears the window", [5, 3, 1030, 1029, 5, 1030, 3, 6, 3000, 1977, 1976]),
        ("the example of tests/common/test_protocol.py", [5, 3, 70, 69, 5, 70, 3, 68]),
    ]
    out = []
    for name, numbers in sequences:
        window = crypto.ReplayWindow()
        ops = []
        for n in numbers:
            accepted = window.check(n)
            if accepted:
                window.mark(n)
            ops.append([n, accepted])
        out.append({"name": name, "ops": ops})
    return out


def media_jump_vectors():
    """A media leg's window (check, then jump_ok after the tag, then mark): far jumps wait for a second frame."""
    sequences = [
        ("steps up to 1024 ahead move the window at once", [1000, 1020, 2044, 2064]),
        ("a lone frame 1025 or more ahead is held, the stream goes on", [1000, 1020, 33000, 1040, 1060]),
        ("a far jump confirmed by the next frame moves the window", [1000, 1020, 40000, 40020, 1040, 40040]),
        ("a frame that does not follow the held one is held instead", [1000, 40000, 60000, 1020, 60020]),
    ]
    out = []
    for name, numbers in sequences:
        window = crypto.ReplayWindow()
        ops = []
        for n in numbers:
            accepted = window.check(n) and window.jump_ok(n)
            if accepted:
                window.mark(n)
            ops.append([n, accepted])
        out.append({"name": name, "ops": ops})
    return out


def retransmit_vector():
    """Send times of one unacknowledged message, and when the channel gives up (reliable.py)."""
    keys = (seq_bytes(0, 32), seq_bytes(32, 16), seq_bytes(48, 32), seq_bytes(80, 16))
    channel = reliable.Channel(session.SessionCrypto(*keys), 1)
    channel.send(wire.PING, {}, 0)
    sends = [0] * len(channel.datagrams_to_send(0))
    now = 0
    while not channel.failed:
        now = channel.next_timer()
        channel.handle_timer(now)
        sends += [now] * len(channel.datagrams_to_send(now))
    return {"sends_ms": sends, "gives_up_ms": now, "rto_initial_ms": reliable.RTO_INITIAL_MS,
            "rto_max_ms": reliable.RTO_MAX_MS, "max_tries": reliable.MAX_TRIES, "window": reliable.WINDOW}


def build_vectors():
    handshake, keys = handshake_vectors()
    malformed, skipped = malformed_vectors()
    return {
        "protocol": "upbx v%d" % wire.VERSION,
        "generated_by": "tools/make_vectors.py (fixed inputs; do not edit by hand)",
        "hmac_sha256": hmac_vectors(),
        "hkdf_sha256": hkdf_vectors(),
        "aes128_ctr": ctr_vectors(),
        "handshake": handshake,
        "full_frames": full_frame_vectors(keys),
        "mini_frames": mini_frame_vectors(),
        "trunk_frame": trunk_frame_vector(),
        "headers": header_vectors(),
        "ies": ie_vectors(),
        "ies_combined": ie_combined_vector(),
        "ies_unknown_skipped": skipped,
        "malformed": malformed,
        "extend16": extend16_vectors(),
        "replay_window": replay_vectors(),
        "media_jump": media_jump_vectors(),
        "retransmit_schedule_ms": retransmit_vector(),
    }


# --- bandwidth ---------------------------------------------------------------

def centi_kbps(ip_bytes, calls=1):
    """Hundredths of a kbit/s per call for one datagram of ip_bytes every 20 ms, rounded half up."""
    bits_per_s_x100 = ip_bytes * 8 * FRAMES_PER_S * 100
    return (2 * bits_per_s_x100 + 1000 * calls) // (2000 * calls)


def kbps_text(centi):
    return "%d.%02d" % (centi // 100, centi % 100)


MTU = 1500


def trunk_calls_per_datagram(mtu=MTU):
    """Most voice entries one trunk frame can carry without IP fragmentation."""
    n = 0
    while media.trunk_capacity(n + 1) + IPV4_UDP <= mtu:
        n += 1
    return n


BANDWIDTH_COLUMNS = ("frame", "calls N", "upbx bytes/tick", "upbx kbps/call", "upbx split at MTU kbps/call",
                     "IAX2 bytes/tick", "IAX2 kbps/call", "IAX2 ts bytes/tick", "IAX2 ts kbps/call",
                     "RTP bytes/tick", "RTP kbps/call")


def bandwidth_rows():
    """Rows of BANDWIDTH_COLUMNS (text cells): IP bytes per 20 ms tick for N calls and kbit/s per call."""
    rows = []
    rtp = RTP_HEADER + wire.VOICE_BYTES + IPV4_UDP
    mini = wire.MINI_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG + IPV4_UDP
    iax_mini = IAX2_MINI_HEADER + wire.VOICE_BYTES + IPV4_UDP
    k = kbps_text
    rows.append(("mini", "1", str(mini), k(centi_kbps(mini)), k(centi_kbps(mini)), str(iax_mini),
                 k(centi_kbps(iax_mini)), "-", "-", str(rtp), k(centi_kbps(rtp))))
    per_datagram = trunk_calls_per_datagram()
    for n in TRUNK_CALLS:
        ours = media.trunk_capacity(n) + IPV4_UDP
        split = 0
        left = n
        while left:
            take = min(left, per_datagram)
            split += media.trunk_capacity(take) + IPV4_UDP
            left -= take
        iax = IAX2_TRUNK_HEADER + n * (IAX2_ENTRY + wire.VOICE_BYTES) + IPV4_UDP
        iax_ts = IAX2_TRUNK_HEADER + n * (IAX2_ENTRY_TS + wire.VOICE_BYTES) + IPV4_UDP
        rows.append(("trunk", str(n), str(ours), k(centi_kbps(ours, n)), k(centi_kbps(split, n)), str(iax),
                     k(centi_kbps(iax, n)), str(iax_ts), k(centi_kbps(iax_ts, n)), str(n * rtp),
                     k(centi_kbps(n * rtp, n))))
    return rows


def bandwidth_markdown():
    lines = ["| " + " | ".join(BANDWIDTH_COLUMNS) + " |",
             "|---|" + "---:|" * (len(BANDWIDTH_COLUMNS) - 1)]
    for row in bandwidth_rows():
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("One trunk frame carries at most %d voice calls within a %d-byte MTU; "
                 "\"split at MTU\" sends N calls as ceil(N / %d) trunk frames." % (
                     trunk_calls_per_datagram(), MTU, trunk_calls_per_datagram()))
    return "\n".join(lines)


# --- appendix ----------------------------------------------------------------

def _hex_block(text, width=64):
    return "\n".join(text[i:i + width] for i in range(0, len(text), width)) or "(empty)"


def appendix_markdown(v):
    out = []

    def block(label, hex_text):
        out.append("%s:\n\n```\n%s\n```\n" % (label, _hex_block(hex_text)))

    out.append("### A.1 HMAC-SHA256\n")
    for c in v["hmac_sha256"]:
        out.append("**%s**\n" % c["name"])
        block("key", c["key"])
        block("message", c["msg"])
        block("HMAC-SHA256", c["mac"])
    out.append("### A.2 HKDF-SHA256\n")
    for c in v["hkdf_sha256"]:
        out.append("**%s** (L = %d)\n" % (c["name"], c["length"]))
        block("IKM (secret)", c["secret"])
        block("salt", c["salt"])
        block("info", c["info"])
        block("OKM", c["okm"])
    out.append("### A.3 AES-128-CTR (keystream block i = AES(K, nonce12 || be32(i)))\n")
    for c in v["aes128_ctr"]:
        out.append("**%s**\n" % c["name"])
        block("key", c["key"])
        block("nonce", c["nonce"])
        block("plaintext", c["plaintext"])
        block("ciphertext", c["ciphertext"])
    hs = v["handshake"]
    out.append("### A.4 Login handshake\n")
    out.append("Extension `%s`, client index 0x%06x, server index 0x%06x, server's cookie bucket "
               "from now = %d ms, client address `%s`.\n" % (
                   hs["identity"], CLIENT_INDEX, SERVER_INDEX, hs["now_ms"], hs["client_address"]))
    block("device secret", hs["secret"])
    block("client nonce Nc", hs["client_nonce"])
    block("server cookie secret", hs["cookie_secret"])
    block("handshake key = HKDF(secret, \"\", \"upbx v2 handshake\", 32)", hs["handshake_key"])
    block("cookie", hs["cookie"])
    for f in hs["frames"]:
        block("%s frame (to index 0x%06x)" % (f["name"], f["receiver_index"]), f["frame"])
    for name in ("c2s_auth", "c2s_enc", "s2c_auth", "s2c_enc"):
        block("session key %s" % name, hs["session_keys"][name])
    out.append("### A.5 Sealed full frames\n")
    for f in v["full_frames"]:
        out.append("**%s** (%s, to index 0x%06x, seq64 0x%x, ack64 0x%x, type 0x%02x)\n" % (
            f["name"], f["direction"], f["receiver_index"], f["seq64"], f["ack64"], f["type"]))
        block("plaintext IEs", f["plaintext"])
        block("nonce", f["nonce"])
        block("frame", f["frame"])
    mv = v["mini_frames"]
    out.append("### A.6 Mini frames\n")
    block("media key", mv["media_key"])
    for name in ("send_auth", "send_enc", "recv_auth", "recv_enc"):
        block("role 0 %s" % name, mv["leg_keys_role0"][name])
    for f in mv["frames"]:
        out.append("**%s** (role %d, to call 0x%04x, ts64 0x%x)\n" % (
            f["name"], f["role"], f["peer_call_no"], f["ts64"]))
        block("payload", f["payload"])
        block("nonce", f["nonce"])
        block("frame", f["frame"])
    t = v["trunk_frame"]
    out.append("### A.7 Trunk frame with three calls\n")
    block("session auth key (host-to-host session)", t["session_auth"])
    for i, e in enumerate(t["entries"]):
        out.append("entry %d: call 0x%04x, ts64 %d, %s\n" % (
            i + 1, e["peer_call_no"], e["ts64"], "comfort noise" if e["comfort_noise"] else "voice"))
        block("entry %d media key (role 0)" % (i + 1), e["media_key"])
        block("entry %d payload" % (i + 1), e["payload"])
    block("trunk frame (to index 0x%06x)" % t["receiver_index"], t["frame"])
    hv = v["headers"]
    out.append("### A.8 Headers at their limits\n")
    block("full header: session 0x3fffff, seq 0xffff, ack 0x1234, DIRECTORY", hv["full"]["header"])
    block("mini header: call 0x7fff, ts 0xffff", hv["mini"]["header"])
    block("trunk header, session 1, entry (call 1, ts 0), entry (call 0x7fff, ts 0xabcd, CN)",
          hv["trunk"]["bytes"])
    out.append("### A.9 Information elements\n")
    out.append("| type | name | kind | value | encoding |\n|---|---|---|---|---|")
    for c in v["ies"]:
        value = c["value"]
        value = "%s:%d" % tuple(value) if isinstance(value, list) else value
        out.append("| 0x%02x | %s | %s | `%s` | `%s` |" % (c["type"], c["name"], c["kind"], value, c["encoding"]))
    out.append("")
    block("CAUSE=4, CALL_NO=0x0123, PEER_CALL_NO=0x0456 (ascending type order)", v["ies_combined"]["encoding"])
    block("unknown IE 0xff then CAUSE=3: decodes to {CAUSE: 3}", v["ies_unknown_skipped"]["input"])
    out.append("### A.10 Malformed input and the DecodeError it raises\n")
    for c in v["malformed"]:
        out.append("`%s` raises DecodeError(field \"%s\", offset %d): %s\n" % (
            c["decoder"], c["field"], c["offset"], c["problem"]))
        block("input", c["input"])
    out.append("### A.11 Extending 16-bit numbers\n")
    out.append("| highest | received 16 bits | extended |\n|---:|---:|---:|")
    for highest, value, result in v["extend16"]:
        out.append("| %s | 0x%04x | 0x%x |" % ("-1 (none yet)" if highest < 0 else "0x%x" % highest, value, result))
    out.append("")
    out.append("### A.12 Replay window (1024 slots)\n")
    out.append("Each number is checked, and marked when accepted (+) ; rejected numbers (-) are not marked.\n")
    for c in v["replay_window"]:
        out.append("- %s: %s" % (c["name"], " ".join("%d%s" % (n, "+" if ok else "-") for n, ok in c["ops"])))
    out.append("")
    out.append("A media leg also holds a timestamp more than 1024 above the highest until a second one "
               "follows it (`ReplayWindow.jump_ok`, section 5):\n")
    for c in v["media_jump"]:
        out.append("- %s: %s" % (c["name"], " ".join("%d%s" % (n, "+" if ok else "-") for n, ok in c["ops"])))
    out.append("")
    r = v["retransmit_schedule_ms"]
    out.append("### A.13 Retransmission schedule of one unacknowledged message\n")
    out.append("Sends at %s ms; the channel fails at %d ms (RTO %d ms doubling to %d ms, %d tries).\n" % (
        ", ".join(str(t) for t in r["sends_ms"]), r["gives_up_ms"], r["rto_initial_ms"], r["rto_max_ms"],
        r["max_tries"]))
    return "\n".join(out)


def replace_section(text, name, body):
    begin = "<!-- BEGIN generated:%s -->" % name
    end = "<!-- END generated:%s -->" % name
    i = text.index(begin) + len(begin)
    j = text.index(end)
    return text[:i] + "\n" + body.strip("\n") + "\n" + text[j:]


def render():
    vectors = build_vectors()
    json_text = json.dumps(vectors, indent=1, ensure_ascii=True) + "\n"
    doc = DOC.read_text(encoding="utf-8")
    doc = replace_section(doc, "bandwidth", bandwidth_markdown())
    doc = replace_section(doc, "vectors", appendix_markdown(vectors))
    return json_text, doc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the files are out of date")
    args = parser.parse_args(argv)
    json_text, doc = render()
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in ((VECTORS, json_text), (DOC, doc))
                 if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print("out of date: %s (run python -m upbx.tools.make_vectors)" % ", ".join(stale))
            return 1
        print("vectors and docs/protocol.md are up to date")
        return 0
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json_text, encoding="utf-8")
    DOC.write_text(doc, encoding="utf-8")
    print("wrote %s and the generated sections of %s" % (VECTORS.relative_to(ROOT), DOC.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
