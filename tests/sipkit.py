"""What the SIP tests with Debian's baresip share: the loopback lab with SIP ports, a baresip
registered as an extension, and listening to what each side heard.

    with sip_lab(tmp_path, phones={"a": ["101"], "c": ["301"]}, sip={"105": "a"}) as lab:
        with start_baresip(lab, tmp_path, "105") as bs:       # registered at site a's remote host
            bs.dial(lab.sip_uri("301", "105"))
            ...
        heard_both_ways(bs, handset_record)                  # each side's tone in the other's recording

Every lab's SIP ports, RTP ports and baresip's ports are free ports of this run (free_port), so
labs of parallel workers never meet."""
import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
import time

from tests.support import require_tool
from upbx.common.g711 import ulaw_decode
from upbx.tools.baresip import Baresip, write_tone
from upbx.tools.lab import LoopbackExchange, free_port, free_ports, free_sip_port, goertzel_power, read_g711_record

BS_HZ, HS_HZ = 1000, 600     # what baresip plays, what the handsets play


def tone_windows(pcm, hz, other):
    """Per 100 ms of 16-bit PCM: whether hz dominates (10x other's power and loud enough)."""
    out = []
    for start in range(0, len(pcm) - 1600 + 1, 1600):
        chunk = pcm[start:]
        p = goertzel_power(chunk, 800, hz)
        out.append(p > 1e9 and p > 10 * goertzel_power(chunk, 800, other))
    return out


RTP_SPAN = 20   # ports kept for a host's RTP (10 calls at once) or baresip's (its rtp_ports: the 20)


def rtp_base():
    """The first of RTP_SPAN free ports, even: a host's (or baresip's) RTP ports, given to nothing else."""
    return free_ports(RTP_SPAN)


def handset_heard(record):
    """What a handset heard (`upbx phone --record-g711`), as 16-bit PCM."""
    return b"".join(ulaw_decode(payload) for _ts, payload in read_g711_record(record))


def heard_both_ways(bs, record, bs_hz=BS_HZ, hs_hz=HS_HZ, windows=15):
    """The handset's recording holds baresip's tone, baresip's the handset's, each in at least
    `windows` windows of 100 ms."""
    by_handset = sum(tone_windows(handset_heard(record), bs_hz, hs_hz))
    by_baresip = sum(tone_windows(bs.heard(), hs_hz, bs_hz))
    assert by_handset >= windows, (by_handset, bs.log())
    assert by_baresip >= windows, (by_baresip, bs.log())


def records(lab, limit=20):
    """The main host's call records, newest first."""
    return json.loads(lab.admin("calls", "--json", "--limit", str(limit)))


def main_media(lab):
    """Media datagrams the main host has taken in and sent out so far."""
    counters = lab.status("main")["stats"]["counters"]
    return counters.get("media in", 0) + counters.get("media out", 0)


@contextlib.contextmanager
def sip_lab(folder, sites=("a", "c"), remote_sites=("a",), phones=None, sip=None, main_sip=False, setup=None,
            **options):
    """A started LoopbackExchange whose remote hosts (and the main host, with main_sip) listen for
    SIP on free loopback ports; `sip` {number: site} are SIP extensions (`ext add --sip`), their
    passwords in lab.passwords; `setup(lab)` runs after provisioning, before the daemons start
    (trunks, routes, DIDs); options go to LoopbackExchange (uplink_kbps, ring_timeout_s...)."""
    require_tool("baresip", "apt-get install baresip-core")
    ports = {"main": free_port(), "site-a": free_port()}
    main = dict(options.pop("main_settings", {}))
    if main_sip:
        main.update(sip_listen="127.0.0.1:%d" % ports["main"], sip_rtp_base=rtp_base())
    remote = dict(options.pop("remote_settings", {}))
    remote.update(sip_listen="127.0.0.1:%d" % ports["site-a"], sip_rtp_base=rtp_base())
    lab = LoopbackExchange(str(folder), main_settings=main, remote_settings=remote, **options)
    lab.sip_ports = ports
    try:
        lab.provision(sites=sites, remote_sites=remote_sites, phones=phones or {"a": ["101"], "c": ["301"]})
        lab.passwords = {number: lab.admin("ext", "add", number, "--site", site, "--name", "Desk " + number, "--sip")
                         for number, site in (sip or {}).items()}
        if setup is not None:
            setup(lab)
        lab.start()
        lab.sip_uri = lambda number, daemon="site-a": "sip:%s@127.0.0.1:%d" % (number, ports[daemon])
        yield lab
    finally:
        lab.close()


def start_baresip(lab, folder, number, daemon="site-a", tone_hz=BS_HZ, seconds=40, transport=None, **options):
    """baresip as extension `number`, registered at `daemon` ("site-a" or "main"), its microphone
    `seconds` of tone_hz; returned once the daemon's registrar has it (not at baresip's own
    REGISTER_OK, which could come before the control connection is up)."""
    rtp = rtp_base()
    domain = "127.0.0.1:%d" % lab.sip_ports[daemon] + (";transport=%s" % transport if transport else "")
    phone = Baresip(folder / ("bs" + number), number, domain, lab.passwords[number], sip_port=free_sip_port(),
                    ctrl_port=free_port(), rtp_ports=(rtp, rtp + RTP_SPAN - 1),
                    source=str(write_tone(folder / ("bs%s-tone.wav" % number), tone_hz, seconds)), **options)
    phone.start()
    try:
        lab.wait_for(lambda: lab.status(daemon)["sip"]["registered"].get(number) == 1, number + " registered",
                     timeout=20)
    except BaseException:
        phone.stop()
        raise
    return phone


KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


class Kamailio:
    """Debian's Kamailio (a SIP server nobody here wrote) on 127.0.0.1:port, as a provider: its
    routing script is `route` (the request_route block's body); its log (xlog lines included) in
    folder/kamailio.log. One worker process, UDP only."""

    def __init__(self, folder, port, route, max_expires=60):
        self.folder, self.port = str(folder), port
        os.makedirs(self.folder, exist_ok=True)
        self.cfg = os.path.join(self.folder, "kamailio.cfg")
        self.log_path = os.path.join(self.folder, "kamailio.log")
        modules = "".join('loadmodule "%s.so"\n' % m for m in ("tm", "sl", "pv", "textops", "usrloc", "registrar",
                                                              "auth", "xlog"))
        with open(self.cfg, "w") as f:
            f.write('#!KAMAILIO\ndebug=2\nlog_stderror=yes\nchildren=1\ndisable_tcp=yes\n'
                    'listen=udp:127.0.0.1:%d\nmpath="%s"\n%s'
                    'modparam("registrar", "max_expires", %d)\nmodparam("registrar", "min_expires", 10)\n'
                    '\nrequest_route {\n%s\n}\n' % (port, KAMAILIO_MODULES, modules, max_expires, route))
        self.process = None

    def start(self):
        require_tool("kamailio", "apt-get install kamailio")
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(["kamailio", "-f", self.cfg, "-DD", "-E", "-m", "32", "-M", "8",
                                         "-P", os.path.join(self.folder, "kamailio.pid")],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        log.close()
        deadline = time.monotonic() + 20
        while "Listening on" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("kamailio did not start: %s" % self.log()[-2000:])
            time.sleep(0.1)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def lines(self, word):
        """The log lines the script's xlog wrote starting with word (e.g. "REGISTERED")."""
        return [line for line in self.log().splitlines() if (": " + word + " ") in line]

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()    # its main process ends its workers
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class PacketSniffer:
    """UDP datagrams read from an AF_PACKET socket (root) by a thread while the `with` block runs:
    `wanted(ip, address)` of a subclass chooses, `take(ip, sport, dport, payload)` keeps."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(0.1)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop:
            try:
                ip, address = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 17 or len(ip) < ihl + 8 or not self.wanted(ip, address):
                continue
            sport, dport = struct.unpack_from("!HH", ip, ihl)
            self.take(ip, sport, dport, ip[ihl + 8:])

    def wanted(self, ip, address):
        return True

    def take(self, ip, sport, dport, payload):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.sock.close()


class LoopbackSniffer(PacketSniffer):
    """UDP datagrams on loopback, each once (loopback shows a datagram going out too)."""

    def __init__(self):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        sock.bind(("lo", 0))
        PacketSniffer.__init__(self, sock)

    def wanted(self, ip, address):
        return address[2] == socket.PACKET_HOST


PHONE_105 = ("10.1.0.50", 5062)     # tests/sip_ua.py's SIP phone 105, on site a's LAN
PHONE_305 = ("198.18.9.9", 5060)    # and 305, site c's, at the main host through its NAT


def sip_world(tmp_path, handsets, site_b=False):
    """The in-memory world (tests/inprocess.py, real host cores on a virtual clock) with the handsets
    registered and SIP phones 105 (site a) and 305 (site c) registered, played by tests/sip_ua.py, in
    world.sip; close() it after."""
    from tests.inprocess import World
    from tests.sip_ua import SipPhone
    from upbx.host.directory import Directory
    w = World(tmp_path, extensions=(("105", "a"), ("305", "c")), site_b=site_b)
    with Directory(tmp_path / "main.sqlite") as d:
        passwords = {n: d.set_sip_password(n) for n in ("105", "305")}
    w.start_remote()
    for i, number in enumerate(handsets):
        w.add_phone(number, i + 1)
    w.run_until(lambda: all(e.phone.registered for e in w.phones.values()), 3000, "registered")
    w.sip = {"105": SipPhone(w.a, "105", passwords["105"], PHONE_105, host_ip="198.18.1.1"),
             "305": SipPhone(w.main, "305", passwords["305"], PHONE_305, host_ip="198.18.0.1")}
    for ua in w.sip.values():
        ua.register(w.net.now)
    return w
