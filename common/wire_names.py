"""The names of upbx v1 message types and information elements, and each IE's layout.

The table the wire format is specified by (docs/protocol.md shows it): hosts, tests and tools read
MESSAGE_NAMES, IE_SPEC and the message types and IEs only hosts use (wire.LOCAL_REQUEST,
wire.IE_TTL ...) through common.wire; a handset imports this module only to name an IE in an error. common.wire's codec reads LAYOUT in compact form (`python -m upbx.common.wire_names`
prints it; tests/common/test_vectors.py checks that the two agree).
"""

MESSAGES = """01 HELLO 02 CHALLENGE 03 RESPONSE 04 WELCOME 06 ACK 07 PING 08 BYE 10 SETUP 12 ALERTING
13 ANSWER 14 RELEASE 16 DTMF 17 MEDIA_PEER 18 HOLD 19 TRANSFER 1A PARTY 1B MAILBOX_CHANGE 1C CONFERENCE 1D MESSAGE_WAITING 1E MAILBOX 20 LOCAL_REQUEST 21 LOCAL_GRANT 22 LOCAL_REFUSE 30 PUNCH_OFFER
31 PUNCH 32 PUNCH_RESULT 40 SYSINFO 41 SYSINFO_ACK 42 VOICEMAIL 43 FIRMWARE 44 FIRMWARE_WANT 45 FIRMWARE_STATE 50 RECORDS 60 PHONE_STATE 61 FEATURES 70 DIRECTORY 71 MUSIC 72 FORWARDED 73 NODES"""

# IE type, name, kind, least and most value bytes
IES = """01 extension str 1 15
02 host_name str 1 63
03 session_index idx 3 3
04 nonce bytes 16 16
05 cookie bytes 16 16
06 ttl u16 2 2
07 time u64 8 8
10 call_no u16 2 2
11 peer_call_no u16 2 2
12 called str 1 31
13 calling str 1 31
14 calling_name str 0 63
15 cause u8 1 1
16 call_id bytes 8 8
17 media_key bytes 16 16
18 digit str 1 1
19 address addr 6 6
1a path u8 1 1
1b codec u8 1 1
1c role u8 1 1
20 version u32 4 4
21 chunk u32 4 4
22 data bytes 0 255
23 peer_name str 1 63
24 peer_key bytes 32 32
25 state u8 1 1
26 keepalive u16 2 2
27 join_call_no u16 2 2
29 answer u8 1 1
2b conf_call_no u16 2 2
2e fw_version str 1 31
2f fw_state u8 1 1
30 fw_running str 0 31
31 cluster_nodes bytes 1 255
32 node u8 1 1
38 standby u8 1 1"""
# release causes only hosts send (a handset shows their text from common.wire.CAUSE_TEXT)
CAUSES = """0e ANSWERED_ELSEWHERE 0f PICKED_UP 11 NO_OUTSIDE_LINE 12 MAIN_LOST"""
KINDS = ("str", "bytes", "addr")  # codes 1, 2, 3 in the layout; any other kind is an unsigned integer (4)


def rows():
    """(type, name, kind, lo, hi) of every IE."""
    for line in IES.split("\n"):
        ie, name, kind, lo, hi = line.split()
        yield int(ie, 16), name, kind, int(lo), int(hi)


def layout():
    """common.wire's codec table: 3 bytes per IE type (kind code, lo, hi), kind 0 for an unknown type."""
    top = max(row[0] for row in rows())
    table = bytearray(3 * (top + 1))
    for ie, _, kind, lo, hi in rows():
        table[3 * ie] = KINDS.index(kind) + 1 if kind in KINDS else 4
        table[3 * ie + 1] = lo
        table[3 * ie + 2] = hi
    return bytes(table)


def ie_name(ie):
    """The name of a known IE type ("extension"), else "IE 0xNN"."""
    for row in rows():
        if row[0] == ie:
            return row[1]
    return "IE 0x%02x" % ie


def number(name):
    """The number of a message type ("LOCAL_REQUEST"), IE ("IE_HOST_NAME") or host-only cause
    ("CAUSE_PICKED_UP") by its name, else None
    (common.wire gives the hosts' own message types and IEs this way)."""
    words = MESSAGES.split()
    for i in range(1, len(words), 2):
        if words[i] == name:
            return int(words[i - 1], 16)
    if name.startswith("CAUSE_"):
        words = CAUSES.split()
        for i in range(1, len(words), 2):
            if words[i] == name[6:]:
                return int(words[i - 1], 16)
    if name.startswith("IE_"):
        for row in rows():
            if row[1] == name[3:].lower():
                return row[0]
    return None


def message_names():
    """{type: "NAME"} of every message type."""
    words = MESSAGES.split()
    return {int(words[i], 16): words[i + 1] for i in range(0, len(words), 2)}


def ie_spec():
    """{type: (name, kind, lo, hi)} of every IE."""
    return {row[0]: row[1:] for row in rows()}


if __name__ == "__main__":
    data = layout()
    print("_LAYOUT = (")
    for i in range(0, len(data), 24):
        print('    b"%s"' % "".join("\\x%02x" % b for b in data[i:i + 24]))
    print(")")
