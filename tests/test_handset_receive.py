"""The handset's receive path (firmware/app.py `App.receive`) on the 32-bit build: each queued UDP
datagram is read alone, media straight into the buffer made once, with no large allocation.

The real App and unix HAL run under the plain 32-bit unix port (the ESP32's word size), with a
real UDP socket on loopback. Datagrams are queued several at a time before the App reads, as a
loop that fell behind finds them. With no call up, every media frame the App reads is counted as
dropped by the protocol (`phone.dropped`) and every signalling datagram as rejected: one count per
datagram read (a signalling datagram here is a trunk frame, which a phone drops), so datagrams
joined into one read would count fewer. The heap the reads leave is
measured with the collector off.
"""
import re
import socket
import subprocess

from tests.support import ROOT

# the real App and unix HAL on a real UDP port (argv[2]), and a socket that sends to it
PRELUDE = r'''
import gc, socket, sys
sys.path.insert(0, sys.argv[1])
import firmware.app
from firmware.app import App
from firmware.hal import unix
port = int(sys.argv[2])
config = {"host": "127.0.0.1", "port": 9, "extension": "101", "secret": "00" * 16, "bind": "127.0.0.1",
          "local_port": port, "sysinfo_file": "/nonexistent/sysinfo.json", "dscp": False}
app = App(config, unix.Hal(name="101"))
assert app.open_socket(0)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
to = socket.getaddrinfo("127.0.0.1", port)[0][-1]
'''

SCRIPT = PRELUDE + r'''
voice = bytearray(168)
voice[0] = 0x01
for i in range(4, 168):
    voice[i] = i & 0xFF
cn = bytes(b"\x01\x00\x00\x07\x2a\x00\x00\x00\x00")
signalling = bytes(b"\xc0" + bytes(59))   # the signalling path (top bit set); a trunk frame, which a phone drops

def reads(batch, calls):
    """Queue the batch, then call receive `calls` times: datagrams read (one count each)."""
    for d in batch:
        tx.sendto(d, to)
    before = app.phone.dropped + app.frames_rejected
    for _ in range(calls):
        app.receive(0)
    return app.phone.dropped + app.frames_rejected - before

# warm-up: every path once
reads([voice, cn, signalling], 3)
# media and signalling queued three and four at a time: one read each
counts = [reads([voice, cn, voice], 3) for _ in range(20)] + [reads([cn, signalling, cn, voice], 4) for _ in range(10)]
print("RESULT counts", sorted(set(counts)))
print("RESULT last_is_voice", bytes(app._rx[:168]) == bytes(voice))
# the heap: 300 media datagrams, three queued at a time, with the collector off
gc.collect()
gc.disable()
batch = [voice, cn, voice]
m0 = gc.mem_alloc()
for _ in range(100):
    reads(batch, 3)
grew = gc.mem_alloc() - m0
gc.enable()
print("RESULT grew", grew, "per", grew // 300)
# a mini frame of neither length (forged or broken) takes the one queued behind it; then one each again
print("RESULT odd", reads([bytes(b"\x01" + bytes(99)), voice, voice, cn], 4), reads([voice, cn, voice], 3))
# an empty datagram: the socket is closed and a new one bound to the same port (an ESP32's socket
# answers every read with 0 bytes after one), losing the voice frame queued behind it in the old
# one; frames sent to the same address then arrive, one read each
old_sock = app._raw_sock
print("RESULT empty", reads([b"", voice], 2), reads([voice, cn, voice], 3), app.summary["empty_datagrams"],
      app._raw_sock is not old_sock)
# why not readinto(buffer) alone: MicroPython's stream readinto joins the queued datagrams
for d in (voice, cn, voice):
    tx.sendto(d, to)
print("RESULT joined", app._raw_sock.readinto(bytearray(768)))
'''


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_app_script(path, text, micropython, tree=ROOT, heap="2M"):
    """The script on the 32-bit build (tree: the source, or a .mpy tree as a handset holds it), with a 2M
    heap: its RESULT lines as {name: text}, and its output."""
    path.write_text(text)
    r = subprocess.run([micropython, "-X", "heapsize=" + heap, str(path), str(tree), str(free_udp_port())],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return dict(re.findall(r"RESULT (\w+) (.*)", out)), out


def test_each_queued_datagram_is_read_alone_without_a_large_allocation(tmp_path, unix32_plain):
    found, out = run_app_script(tmp_path / "receive.py", SCRIPT, unix32_plain)
    print(found)
    assert found["counts"] == "[3, 4]", out          # every batch: one read per datagram, none joined
    assert found["last_is_voice"] == "True", out      # a voice frame lands whole in the buffer made once
    grew, per = [int(x) for x in re.findall(r"-?\d+", found["grew"])]
    # the peek's bytes object (two 16-byte blocks on a 32-bit build) per datagram, nothing larger:
    # recv(768) left 192 bytes a datagram and needed 768 + 192 contiguous bytes for each read
    assert 0 <= per <= 32, out
    assert found["odd"] == "3 3", out   # the odd one joined the voice frame behind it, then one each
    assert found["empty"] == "0 3 1 True", out
    assert found["joined"] == "345", out   # 168 + 9 + 168: what a plain readinto would have read


FORGED = PRELUDE + r'''
from common import wire
packs = []
real_pack = firmware.app._pack
def counted():
    packs.append(1)
    real_pack()
firmware.app._pack = counted
import select
poller = select.poll()
poller.register(app._raw_sock, select.POLLIN)

def flood(kind, count, start_ms):
    """count forged full frames of message type kind, one a ms from start_ms: (collections, datagrams left
    unread, no call came of them)."""
    forged = bytearray(60)
    forged[0] = 0x80   # a full frame; its type in the clear header, its tag wrong
    forged[7] = kind
    before, left = len(packs), 0
    for i in range(count):
        tx.sendto(forged, to)
        app.receive(start_ms + i)
        left += len(poller.poll(0))   # read (and dropped: its tag is wrong), not left queued
    return len(packs) - before, left, app.phone.call is None

print("RESULT challenge", flood(wire.CHALLENGE, 300, 0))
print("RESULT setup", flood(wire.SETUP, 300, 400))
print("RESULT later", flood(wire.MEDIA_PEER, 300, 1000))
# a genuine registration (its event, as the protocol gives it) opens the gate: a call set up just after it has
# its collection
import firmware.events
from common.login import LoginUp
firmware.events.handle(app, [LoginUp({})], 1350)
print("RESULT registered", flood(wire.SETUP, 300, 1400))
'''


def test_forged_setup_datagrams_buy_one_collection_a_second_not_one_each(tmp_path, unix32_plain):
    """A SETUP, MEDIA_PEER or CHALLENGE (the type is read from the clear header, before the datagram is
    authenticated) has the handset collect its garbage first (firmware/app.py `_pack`: a few ms on an
    ESP32). Forged ones, 1,200 at one a ms, are each read and dropped, and buy one collection per second
    (`_PACK_GAP_MS`), not one each: 300 a second would have kept an ESP32's loop busy. A genuine registration
    (and an incoming call) opens the gate again, so that a call set up just after it keeps its collection."""
    found, out = run_app_script(tmp_path / "forged.py", FORGED, unix32_plain)
    # (collections, datagrams left unread, no call came of them): CHALLENGEs at 0-299 ms one; SETUPs at 400-699
    # none (within the second); MEDIA_PEERs at 1000-1299 one; SETUPs at 1400-1699, after a registration at
    # 1350, one
    assert [found[k] for k in ("challenge", "setup", "later", "registered")] == [
        "(1, 0, True)", "(0, 0, True)", "(1, 0, True)", "(1, 0, True)"], out
