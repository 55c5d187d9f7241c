"""rtpengine (Debian's `rtpengine-daemon`) in userspace as the reference relay of `upbx bench relay --peer rtpengine`.

rtpengine is driven as a SIP proxy drives it: over its ng control protocol, one UDP datagram
per command, "<cookie> <bencoded dict>", and the reply "<cookie> <bencoded dict>". A call is an
`offer` (the caller's SDP: where the caller receives) and an `answer` (the callee's SDP); the SDP
rtpengine returns names the port on rtpengine each side sends to. `--table=-1` keeps the media in
userspace (no kernel forwarding module), which is the comparison the issue asks for.

Bencoding is four rules (byte strings, integers, lists, dictionaries with sorted keys); it is
written out here rather than taken from a package because the ng protocol uses a handful of
strings and integers, and the bench must not grow a dependency for it.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

BINARY = "rtpengine"
DEBIAN_PACKAGE = "rtpengine-daemon"


def bencode(value):
    """Bencoded bytes of str/bytes, int, list and dict (keys sorted, as the format requires)."""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple, dict)):
        raise TypeError("cannot bencode %r" % (value,))
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    items = sorted((k.encode() if isinstance(k, str) else bytes(k), v) for k, v in value.items())
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"


def bdecode(data):
    """The value of one bencoded item (byte strings stay bytes); ValueError when malformed or trailed."""
    value, end = _bdecode(bytes(data), 0)
    if end != len(data):
        raise ValueError("bencode: %d bytes after the value" % (len(data) - end))
    return value


def _bdecode(data, i):
    if i >= len(data):
        raise ValueError("bencode: truncated at %d" % i)
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c in (b"l", b"d"):
        out = [] if c == b"l" else {}
        i += 1
        while data[i:i + 1] != b"e":
            if i >= len(data):
                raise ValueError("bencode: unterminated %s" % ("list" if c == b"l" else "dict"))
            if c == b"l":
                value, i = _bdecode(data, i)
                out.append(value)
            else:
                key, i = _bdecode(data, i)
                out[key.decode()], i = _bdecode(data, i)
        return out, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        if colon + 1 + n > len(data):
            raise ValueError("bencode: string runs past the end")
        return data[colon + 1:colon + 1 + n], colon + 1 + n
    raise ValueError("bencode: unexpected byte %r at %d" % (c, i))


def sdp(port, session):
    """A G.711 mu-law audio offer/answer receiving at 127.0.0.1:port."""
    return ("v=0\r\no=- %d 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n" % (session, port))


def sdp_port(text):
    """(address, port) the m=audio line of an SDP names, with its c= line."""
    if isinstance(text, bytes):
        text = text.decode()
    port = re.search(r"^m=audio (\d+)", text, re.M)
    addr = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    if not port or not addr:
        raise ValueError("SDP without m=audio or c=IN IP4: %r" % text)
    return addr.group(1), int(port.group(1))


class NgClient:
    """ng control protocol over UDP: one command, one reply with the same cookie."""

    def __init__(self, address, timeout=5.0):
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self._n = 0

    def command(self, name, **fields):
        self._n += 1
        cookie = b"%d_%s" % (self._n, os.urandom(4).hex().encode())
        fields["command"] = name
        self.sock.send(cookie + b" " + bencode({k.replace("_", "-"): v for k, v in fields.items()}))
        while True:
            data = self.sock.recv(65536)
            got, _, body = data.partition(b" ")
            if got == cookie:
                break
        reply = bdecode(body)
        if reply.get("result") not in (b"ok", b"pong"):
            raise RuntimeError("rtpengine %s: %r" % (name, reply))
        return reply

    def close(self):
        self.sock.close()


class RtpEngine:
    """An rtpengine process in userspace on loopback, pinned to one CPU (all its threads)."""

    def __init__(self, cpu=0, port_min=30000, port_max=39999, tries=3):
        self.binary = shutil.which(BINARY)
        if self.binary is None:
            raise FileNotFoundError("%s not found: install the Debian package %s (make setup, as root)"
                                    % (BINARY, DEBIAN_PACKAGE))
        # its control port is one the kernel just gave out and took back: another process may take it before
        # rtpengine binds it (it then exits at once, seen once in a CI run). Started again on a new port
        for attempt in range(tries):
            try:
                self._start(cpu, port_min, port_max)
                return
            except RuntimeError:
                if attempt == tries - 1:
                    raise

    def _start(self, cpu, port_min, port_max):
        self.dir = tempfile.mkdtemp(prefix="upbx-rtpengine-")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ng_port = s.getsockname()[1]
        self.log = open(os.path.join(self.dir, "rtpengine.log"), "wb")
        # one media worker thread: the main host is one process with one thread; every thread of
        # rtpengine inherits the CPU affinity set before exec, and its CPU time is summed in /proc/PID/stat
        cmd = [self.binary, "--config-file=none", "--table=-1", "--interface=127.0.0.1",
               "--listen-ng=127.0.0.1:%d" % ng_port, "--foreground", "--log-stderr", "--log-level=4",
               "--port-min=%d" % port_min, "--port-max=%d" % port_max, "--num-threads=1",
               "--timeout=600", "--silent-timeout=600", "--final-timeout=0", "--delete-delay=0"]
        pinned = {cpu} if (os.cpu_count() or 1) >= 2 else None
        self.pinned = pinned
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, pinned)) if pinned else None)
        self.ng = NgClient(("127.0.0.1", ng_port), timeout=1.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.ng.command("ping")
                break
            except (OSError, socket.timeout, RuntimeError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.flush()
                    with open(self.log.name, "rb") as f:   # what it said, in the error (the file goes with its directory)
                        said = f.read()[-1500:].decode("utf-8", "replace")
                    self.close()
                    raise RuntimeError("rtpengine did not start (status %s): %s" % (self.proc.poll(), said))
                time.sleep(0.05)
        self.ng.sock.settimeout(5.0)

    def call(self, call_id, a_port, b_port):
        """Set up a call: A receives at a_port, B at b_port; returns (port A sends to, port B sends to)."""
        offer = self.ng.command("offer", call_id=call_id, from_tag="a" + call_id, sdp=sdp(a_port, 1))
        b_sends_to = sdp_port(offer["sdp"])[1]
        answer = self.ng.command("answer", call_id=call_id, from_tag="a" + call_id, to_tag="b" + call_id,
                                 sdp=sdp(b_port, 2))
        a_sends_to = sdp_port(answer["sdp"])[1]
        return a_sends_to, b_sends_to

    def log_tail(self, n=3000):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read()[-n:].decode(errors="replace")

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        self.ng.close() if hasattr(self, "ng") else None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
