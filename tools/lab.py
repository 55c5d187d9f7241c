"""A whole exchange on loopback: main host, remote hosts, virtual handsets as processes.

Used by `upbx demo` and the end-to-end tests. Everything it starts is a real
process on real sockets; `close()` stops them all, also after a failure.
"""
import contextlib
import json
import math
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave

from upbx.host.daemon import query_status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Ports for the lab's daemons. Under pytest-xdist each worker takes ports from a slice of its own
# below Linux's ephemeral range (32768-60999), never the same one twice: a port the kernel handed
# out as "free" (bind to 0) could be handed to another worker's lab, or to any socket that sends
# without binding, before the daemon meant to have it binds it ("Address already in use"). The
# test process takes the first half of its slice, the processes it starts (a demo's lab) the second.
_SLICE = 3000
_issued = set()


def _worker_ports():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and worker[2:].isdigit()):
        return None
    base = 20000 + int(worker[2:]) % 4 * _SLICE
    if "pytest" not in sys.modules:   # a process a test started (`upbx demo`): the slice's other half
        base += _SLICE // 2
    return range(base, base + _SLICE // 2)


def _free(kind):
    ports = _worker_ports()
    if ports is None:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    if len(_issued) >= len(ports) - 100:
        _issued.clear()             # a long run: start the slice again (its first ports are long closed)
    start = random.randrange(len(ports))
    for i in range(len(ports)):
        port = ports[(start + i) % len(ports)]
        if port in _issued:
            continue
        try:
            for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):   # free for both: a daemon may take either
                with socket.socket(socket.AF_INET, k) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _issued.add(port)
        return port
    raise RuntimeError("no free port in %s-%s" % (ports[0], ports[-1]))


def _udp_free(port):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_ports(count):
    """The first (even) of count consecutive UDP ports on 127.0.0.1, each free now and given to nothing
    else of this run: for a range a program binds in only when a call starts (a SIP host's RTP ports,
    baresip's), which another lab of this run would otherwise be given meanwhile (docs/tests.md,
    session 10). Another program (another run beside this one) may still take one: the host passes
    over a port it cannot open (docs/sip.md, "RTP ports")."""
    ports = _worker_ports()
    if ports is None:
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                first = s.getsockname()[1] // 2 * 2
            if all(_udp_free(port) for port in range(first, first + count)):
                return first
        raise RuntimeError("no %d free consecutive ports" % count)
    # the worker's slice, scanned from a random even port for the first run of count ports neither issued nor
    # bound: single ports issued at random (_free) leave few such runs late in a long run, where a random pick
    # of a run would all but never find one; with none left, the slice starts again (its first ports are long
    # closed), as _free does
    firsts = range(ports[0] + ports[0] % 2, ports[-1] - count + 2, 2)
    for _again in (False, True):
        offset = random.randrange(len(firsts))
        for i in range(len(firsts)):
            first = firsts[(offset + i) % len(firsts)]
            block = range(first, first + count)
            if not any(port in _issued for port in block) and all(_udp_free(port) for port in block):
                _issued.update(block)
                return first
        _issued.clear()
    raise RuntimeError("no %d free consecutive ports" % count)


def free_port():
    """A UDP port on 127.0.0.1 that no other lab of this run has been given."""
    return _free(socket.SOCK_DGRAM)


def free_sip_port():
    """A port on 127.0.0.1 for a SIP user agent that listens on UDP and TCP there and for TLS on the next
    port (baresip 1.0 always does: a port taken there ends it at start, "Address already in use"); both
    are issued."""
    for _ in range(100):
        port = _free(socket.SOCK_DGRAM)
        if port + 1 in _issued:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        _issued.add(port + 1)
        return port
    raise RuntimeError("no free pair of ports for a SIP user agent")


def free_tcp_port():
    """A TCP port on 127.0.0.1 that no other lab of this run has been given."""
    return _free(socket.SOCK_STREAM)


def upbx(*args):
    return [sys.executable, "-m", "upbx.tools.cli"] + list(args)


TONE_WINDOW = 800   # 100 ms at 8 kHz: 10 Hz resolution, enough to tell the call-progress tones apart
TONE_PAIRS = {"dial": (350, 440), "ringback": (440, 480), "busy": (480, 620)}


def goertzel_power(pcm, n, hz, rate=8000):
    """Goertzel power of hz over the first n samples of 16-bit little-endian PCM bytes."""
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for v in struct.unpack_from("<%dh" % n, pcm):
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def tones_heard(path):
    """The call-progress tones in a WAV (what a phone's speaker played, `upbx phone --record`),
    one label per 100 ms window found by Goertzel, runs collapsed: ["dial", "ringback", ...]."""
    with wave.open(path) as w:
        data = w.readframes(w.getnframes())
    labels = []
    for start in range(0, len(data) - 2 * TONE_WINDOW + 1, 2 * TONE_WINDOW):
        block = data[start:start + 2 * TONE_WINDOW]
        powers = {hz: goertzel_power(block, TONE_WINDOW, hz) for hz in (350, 440, 480, 620)}
        label = None
        for name, (f1, f2) in TONE_PAIRS.items():
            others = [p for hz, p in powers.items() if hz not in (f1, f2)]
            if min(powers[f1], powers[f2]) > 1e11 and min(powers[f1], powers[f2]) > 20 * max(others):
                label = name
        if label and (not labels or labels[-1] != label):
            labels.append(label)
    return labels


def frequency_label(block, labels, every=None):
    """The label of one 100 ms window (TONE_WINDOW samples of 16-bit PCM) whose frequency dominates
    (labels: {name: (hz, ...)}), "quiet" where nothing is heard, None where no label dominates."""
    every = every or sorted({hz for group in labels.values() for hz in group})
    powers = {hz: goertzel_power(block, TONE_WINDOW, hz) for hz in every}
    loudest = max(powers, key=powers.get)
    energy = sum(v * v for v in struct.unpack_from("<%dh" % TONE_WINDOW, block)) / TONE_WINDOW
    if energy < 1e4:       # below about -50 dBFS
        return "quiet"
    if powers[loudest] > 1e10 and powers[loudest] > 10 * (sum(powers.values()) - powers[loudest]):
        return next(name for name, group in labels.items() if loudest in group)
    return None


def frequencies_heard(path, labels, min_windows=3):
    """What a WAV holds, 100 ms at a time: the label of the frequency that dominates (labels:
    {name: (hz, ...)}), "quiet" where nothing is heard, runs shorter than min_windows left out
    (a concealed frame's tail), runs collapsed: e.g. ["quiet", "holder", "music", "holder"]."""
    with wave.open(path) as w:
        data = w.readframes(w.getnframes())
    every = sorted({hz for group in labels.values() for hz in group})
    runs = []
    for start in range(0, len(data) - 2 * TONE_WINDOW + 1, 2 * TONE_WINDOW):
        label = frequency_label(data[start:start + 2 * TONE_WINDOW], labels, every)
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    out = []
    for label, n in runs:
        if label is not None and n >= min_windows and (not out or out[-1] != label):
            out.append(label)
    return out


def write_noise_wav(path, seconds, seed):
    """A deterministic noise-like signal: every 20 ms frame differs, so frames can be matched."""
    rng = random.Random(seed)
    n = 8000 * seconds
    samples = bytearray()
    level = 0
    for _ in range(n):
        level = int(level * 0.6 + rng.randint(-6000, 6000))
        samples += struct.pack("<h", max(-32768, min(32767, level)))
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", len(samples))
    with open(path, "wb") as f:
        f.write(header + samples)


def wav_frames_g711(path):
    """The set of G.711 (mu-law) payloads of a WAV's 20 ms frames, in order."""
    from upbx.common.g711 import ulaw_encode
    with open(path, "rb") as f:
        data = f.read()[44:]
    return [ulaw_encode(data[i:i + 320]) for i in range(0, len(data) - 319, 320)]


RECORD_FRAME = 4 + 160   # a frame of `upbx phone --record-sent-g711`'s file: 4-byte timestamp, payload


def read_g711_record(path):
    frames = []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return frames
    for i in range(0, len(data) - RECORD_FRAME + 1, RECORD_FRAME):
        frames.append((struct.unpack(">I", data[i:i + 4])[0], data[i + 4:i + RECORD_FRAME]))
    return frames


def audio_match(sent_wav, record_path, sent, gap_frames=0):
    """(match, matched): match when at least 95 % of the `sent` frames (the sender's count for the
    call) arrived as the sender's G.711 frames, in order, and nothing else arrived. gap_frames:
    frames a test expects to lose in one gap it measures and bounds itself (B7 address change)."""
    frames = wav_frames_g711(sent_wav)
    index = {payload: i for i, payload in enumerate(frames)}
    received = read_g711_record(record_path)
    positions = [index.get(payload) for _ts, payload in received]
    found = [p for p in positions if p is not None]
    in_order = all(b > a for a, b in zip(found, found[1:]))
    foreign = len(positions) - len(found)
    return sent > 0 and len(found) >= 0.95 * sent - gap_frames and in_order and not foreign, len(found)


def frames_heard(sent_record, received_record, listener_left_first=False, gap_frames=0):
    """What one direction of a call delivered, frame for frame: the sender's --record-sent-g711
    against the listener's --record-g711 (both: sender timestamp + payload per frame).

    ok when the listener received the sender's frames in order, each once, nothing else, from the
    sender's first frame on, with at most `gap_frames` missing in the middle (a gap a test expects
    and bounds itself, B7), and with none missing at the end unless the listener left the call
    first: the frames the sender sent between the listener's hang-up and its own learning of it
    (one signalling trip, longer on a busy machine) reach nobody, by design. Counting against the
    sender's total instead (audio_match) fails whenever that trip takes more than 5 % of the call.
    """
    sent = read_g711_record(sent_record)
    received = read_g711_record(received_record)
    position = {frame: i for i, frame in enumerate(sent)}
    found = [position.get(frame) for frame in received]
    known = [p for p in found if p is not None]
    foreign = len(found) - len(known)
    in_order = all(b > a for a, b in zip(known, known[1:]))
    head = known[0] if known else len(sent)
    tail = len(sent) - 1 - known[-1] if known else 0
    inside = (known[-1] - head + 1 - len(known)) if known and in_order else 0
    ok = (bool(sent) and bool(known) and not foreign and in_order and head == 0 and inside <= gap_frames
          and (listener_left_first or tail == 0))
    return ok, {"sent": len(sent), "received": len(received), "foreign": foreign, "in_order": in_order,
                "missing_head": head, "missing_inside": inside, "missing_tail": tail}


@contextlib.contextmanager
def _stops_held():
    """SIGTERM and Ctrl-C wait until the block is done: a child being started is known to close()
    (one interrupted inside Popen ran on, unknown, after everything else was stopped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    signums = (signal.SIGTERM, signal.SIGINT)
    previous = {n: signal.signal(n, lambda signum, frame: held.append(signum)) for n in signums}
    try:
        yield
    finally:
        for n in signums:
            signal.signal(n, previous[n])
        for signum in held[:1]:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


class LoopbackExchange:
    """Main host + remote hosts for sites a, b + site c with phones straight at the main host."""

    def __init__(self, workdir=None, direct_media=True, ring_timeout_s=30, uplink_kbps=None, log_level="info",
                 remote_settings=None, phone_args=(), metrics=False, main_settings=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="upbx-lab-")
        self.procs = []
        self.secrets = {}
        self.direct_media = direct_media
        self.ring_timeout_s = ring_timeout_s
        self.uplink_kbps = uplink_kbps or {}
        self.log_level = log_level
        self.main_port = free_port()
        self.remote_ports = {}
        self.remote_settings = remote_settings or {}   # extra [remote] keys, e.g. {"login_backoff_max_s": 2}
        self.main_settings = main_settings or {}       # extra [main] keys, e.g. {"api_listen": "127.0.0.1:8080", "sip_listen": "127.0.0.1:5062"}
        self.argv = {}
        self.phone_args = list(phone_args)  # flags every virtual handset gets, e.g. --micropython, --heapsize
        self.metrics = metrics              # each daemon serves Prometheus metrics on a port of its own
        self.metrics_ports = {}             # daemon name -> TCP port of its /metrics

    def _metrics_table(self, name):
        if not self.metrics:
            return ""
        port = self.metrics_ports[name] = free_tcp_port()
        return '\n[metrics]\nport = %d\n' % port

    def scrape(self, daemon):
        """The text a daemon's /metrics serves (LoopbackExchange(metrics=True))."""
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_ports[daemon], timeout=10) as r:
            return r.read().decode()

    def path(self, name):
        return os.path.join(self.dir, name)

    def admin(self, *args):
        out = subprocess.run(upbx("admin", "--database", self.path("main.sqlite"), *args), cwd=ROOT,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def provision(self, sites=("a", "b", "c"), remote_sites=("a", "b"), phones=None):
        phones = phones or {"a": ["101", "102"], "b": ["201", "202"], "c": ["301", "302"]}
        for site in sites:
            self.admin("site", "add", site)
            if site in remote_sites:
                self.secrets["site-" + site] = self.admin("host", "add", "site-" + site, "--site", site)
            for number in phones.get(site, []):
                self.secrets[number] = self.admin("ext", "add", number, "--site", site, "--name", "Phone " + number)
        self.phone_site = {n: s for s, ns in phones.items() for n in ns}
        self.remote_sites = remote_sites

    def start(self):
        with open(self.path("main.toml"), "w") as f:
            f.write('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "main.sqlite"\ncontrol_socket = "%s"\n'
                    'ring_timeout_s = %d\ndirect_media = %s\nlog_level = "%s"\n'
                    % (self.main_port, self.path("main.sock"), self.ring_timeout_s,
                       "true" if self.direct_media else "false", self.log_level))
            for key, value in self.main_settings.items():
                f.write("%s = %s\n" % (key, json.dumps(value)))
            f.write(self._metrics_table("main"))   # a table of its own: after every [main] key
        self.spawn("main", upbx("main", "--config", self.path("main.toml")))
        for site in self.remote_sites:
            port = self.remote_ports[site] = free_port()
            name = "site-" + site
            with open(self.path(name + ".toml"), "w") as f:
                f.write('[remote]\nname = "%s"\nsecret = "%s"\nmain = "127.0.0.1:%d"\nlisten = "127.0.0.1:%d"\n'
                        'control_socket = "%s"\nuplink_kbps = %d\nlog_level = "%s"\n'
                        % (name, self.secrets[name], self.main_port, port, self.path(name + ".sock"),
                           self.uplink_kbps.get(site, 0), self.log_level))
                for key, value in self.remote_settings.items():
                    f.write("%s = %s\n" % (key, json.dumps(value)))
                f.write(self._metrics_table(name))
            self.spawn(name, upbx("remote", "--config", self.path(name + ".toml")))
        # a minute: three Python daemons starting on a busy machine (or a Raspberry Pi) take a while
        self.wait_for(lambda: all(self.status("site-" + s)["main"]["state"] == "up" for s in self.remote_sites),
                      "remote hosts logged in", timeout=60,
                      watch=("main",) + tuple("site-" + s for s in self.remote_sites))

    def spawn(self, name, argv, **kwargs):
        log = open(self.path(name + ".log"), "ab")
        # own process group: a phone's wrapper and its MicroPython child are stopped together
        with _stops_held():
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    **kwargs)
            proc.upbx_name = name
            self.procs.append(proc)
        self.argv[name] = (argv, kwargs)
        return proc

    def restart(self, name, wait=True):
        """Start a daemon ("main" or "site-X") again with the same config and databases (after kill())."""
        self.kill(name)
        argv, kwargs = self.argv[name]
        proc = self.spawn(name, argv, **kwargs)
        if wait:
            self.wait_for(lambda: self.status(name)["pid"] == proc.pid, name + " restarted")
        return proc

    def status(self, daemon):
        sock = self.path(("main" if daemon == "main" else daemon) + ".sock")
        return query_status(sock)

    def wait_for(self, predicate, what, timeout=10, watch=()):
        """Wait until predicate() is true; a process named in `watch` that exits meanwhile (a
        daemon that died: a port taken, a bad config) ends the wait at once, with its log."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for proc in self.procs:
                if proc.poll() is not None and getattr(proc, "upbx_name", "") in watch:
                    raise RuntimeError("%s exited (status %s) while waiting for %s: %s" % (
                        proc.upbx_name, proc.returncode, what, self._log_tail(proc.upbx_name)))
            try:
                if predicate():
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise TimeoutError("timed out waiting for " + what)

    def _log_tail(self, name, lines=8):
        try:
            with open(self.path(name + ".log"), "rb") as f:
                return " | ".join(f.read().decode("utf-8", "replace").strip().splitlines()[-lines:])
        except OSError as exc:
            return "(no log: %s)" % exc

    def host_of(self, number):
        site = self.phone_site[number]
        port = self.remote_ports.get(site, self.main_port)
        return "127.0.0.1:%d" % port

    def phone(self, number, *args, tag=None):
        """Start a virtual handset (the firmware under the MicroPython unix port)."""
        tag = tag or number
        argv = upbx("phone", "--extension", number, "--secret", self.secrets[number], "--host",
                    self.host_of(number), "--bind", "127.0.0.1", "--summary", self.path(tag + ".summary.json"),
                    "--flash-dir", self.path("flash-" + tag), *self.phone_args, *args)
        return self.spawn("phone-" + tag, argv, stdin=subprocess.PIPE)

    def summary(self, tag):
        with open(self.path(tag + ".summary.json")) as f:
            return json.load(f)

    def sysinfo_version(self):
        """The system information version in the main host's database (every `upbx admin` change
        to the directory, groups, features, attendants bumps it)."""
        import sqlite3
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % self.path("main.sqlite"), uri=True)) as db:
            return db.execute("SELECT max(version) FROM sysinfo").fetchone()[0] or 0

    def wait_sites_current(self, timeout=60):
        """Wait until every remote host holds the main host's newest system information (the
        directory, groups, features: sent to them within a second or so of an `upbx admin` change)."""
        version = self.sysinfo_version()
        self.wait_for(lambda: all(self.status("site-" + s)["sysinfo_version"] >= version for s in self.remote_sites),
                      "the remote hosts have system information version %d" % version, timeout)

    def wait_registered(self, number, timeout=30):
        site = self.phone_site[number]
        if site in self.remote_ports:
            check = lambda: any(p["extension"] == number for p in self.status("site-" + site)["phones"])
        else:
            check = lambda: any(p["extension"] == number for p in self.status("main")["phones"])
        self.wait_for(check, "phone %s registered" % number, timeout)

    def media_counters(self):
        out = {}
        for daemon in ["main"] + ["site-" + s for s in self.remote_sites]:
            try:
                counters = self.status(daemon)["stats"]["counters"]
            except OSError:
                continue   # a daemon killed on purpose (B4 tests)
            out[daemon] = counters.get("media in", 0)
        return out

    @staticmethod
    def _signal(proc, sig):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass

    def kill(self, name, sig=signal.SIGKILL):
        for proc in self.procs:
            if proc.upbx_name == name and proc.poll() is None:
                self._signal(proc, sig)
                proc.wait(5)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
        deadline = time.time() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
            self._signal(proc, signal.SIGKILL)  # children of a finished wrapper

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def place_call(lab, caller, callee, behaviour, seconds=2.0, answer=True, caller_args=(), callee_args=(),
               callee_phone=True, rings=None):
    """One scripted call between two virtual handsets; returns the demo's row for it. rings: the
    phone that rings when it is not the number dialled (forwarding), started instead of callee."""
    tag = "%s-%s-%s" % (behaviour, caller, callee)
    wav = lab.path(caller + ".wav")
    if not os.path.exists(wav):
        write_noise_wav(wav, 20, int(caller))
    record = lab.path(tag + ".rx.g711")
    before = lab.media_counters()
    callee_proc = None
    if callee_phone:
        callee_proc = lab.phone(rings or callee, *(["--answer"] if answer else []), "--record-g711", record,
                                "--exit-after-call", "--exit-after", str(seconds + 45), *callee_args,
                                tag=tag + "-callee")
        lab.wait_registered(rings or callee)
    caller_proc = lab.phone(caller, "--send", wav, "--call", callee, "--call-after", "0.8", "--duration",
                            str(seconds), "--exit-after-call", "--exit-after", str(seconds + 40), *caller_args,
                            tag=tag + "-caller")
    caller_proc.wait(seconds + 60)        # bounds a busy machine does not reach: each exits after its call
    if callee_proc is not None:
        callee_proc.wait(seconds + 60)
    after = lab.media_counters()
    summary = lab.summary(tag + "-caller")
    callee_summary = lab.summary(tag + "-callee") if callee_proc is not None else {"frames_received": 0}
    call = summary["calls"][0] if summary["calls"] else {}
    match, matched = audio_match(wav, record, call.get("frames_sent", 0))
    return {
        "behaviour": behaviour, "from": caller, "to": callee, "path": call.get("path"),
        "setup_ms": call.get("setup_ms"), "frames_sent": call.get("frames_sent", 0),
        "frames_received": callee_summary["frames_received"], "frames_lost":
            max(0, call.get("frames_sent", 0) - callee_summary["frames_received"]),
        "audio_match": match, "cause": call.get("cause"),
        # the caller's microphone frames lost while its process was stalled (docs/handset.md): with frames_sent,
        # a frame for every 20 ms of the call
        "mic_frames_lost": summary.get("mic_frames_lost") or 0,
        "media_at_hosts": {k: after[k] - before.get(k, 0) for k in after if k in before},
    }
