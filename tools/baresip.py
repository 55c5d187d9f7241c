"""baresip as a SIP phone for tests and `upbx demo sip`: a generated configuration, the process
(in a node of the network lab, or here), and control from Python over its ctrl_tcp module.

Debian's baresip 1.0.0 (package baresip-core) is used as it comes; what it is given:
- `config`: SIP on ADDRESS:PORT (baresip also binds PORT+1 for TLS), RTP ports, the modules
  g711 (PCMU, PCMA), aufile (a WAV file as the microphone: 8000 Hz, mono, 16-bit; when it ends,
  baresip's menu hangs the call up), aubridge (a player with no sound card), sndfile (every call's
  audio both ways into SNDDIR/dump-TIME-enc.wav and -dec.wav: what it sent and what it heard),
  account, menu (the commands) and ctrl_tcp (those commands over TCP, JSON in netstrings);
- `accounts`: one line, the phone's AOR with its password and registrar (or none: regint=0),
  answermode manual or auto, audio_codecs.

    with Baresip(folder, "105", "10.1.0.2", password="secret", lab=lab, node="site-a/phone-1",
                 source="tone.wav").start() as phone:
        phone.wait_event("REGISTER_OK")
        phone.dial("sip:301@10.1.0.2")
        phone.wait_event("CALL_ESTABLISHED")
        phone.hangup()
        phone.heard()             # the dec.wav of the last call: what the phone heard

Events are ctrl_tcp's: {"event": true, "type": "CALL_INCOMING" | "CALL_RINGING" | "CALL_ESTABLISHED"
| "CALL_CLOSED" | "REGISTER_OK" | "REGISTER_FAIL" | ..., "peeruri": ..., "param": ...}.
"""
import glob
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import wave

MODULES = ("g711.so", "aufile.so", "aubridge.so", "sndfile.so")
APP_MODULES = ("account.so", "menu.so", "ctrl_tcp.so")
MODULE_PATH = "/usr/lib/baresip/modules"


class BaresipError(Exception):
    """baresip could not be started or did not do what it was asked; the message says what, with its log."""


def binary():
    """The baresip program, or None when it is not installed (Debian: apt-get install baresip-core)."""
    return shutil.which("baresip")


def write_tone(path, hz, seconds, level=8000, rate=8000):
    """A WAV of a sine tone (8000 Hz mono 16-bit, what aufile plays into a call)."""
    n = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack("<%dh" % n, *(int(level * math.sin(2 * math.pi * hz * i / rate)) for i in range(n))))
    return str(path)


def config_text(address, sip_port, ctrl_port, rtp_ports, source, snd_dir, player="bridge"):
    """baresip's `config` for one phone."""
    lines = ["poll_method epoll", "sip_listen %s:%d" % (address, sip_port),
             "audio_player aubridge,%s" % player, "audio_alert aubridge,%s" % player,
             "audio_source aufile,%s" % source if source else "audio_source aubridge,%s" % player,
             "rtp_ports %d-%d" % rtp_ports, "ctrl_tcp_listen %s:%d" % (address, ctrl_port),
             "snd_path %s" % snd_dir, "module_path %s" % MODULE_PATH]
    lines += ["module %s" % m for m in MODULES] + ["module_app %s" % m for m in APP_MODULES]
    return "\n".join(lines) + "\n"


def account_line(user, domain, password=None, register=True, answer="manual", codecs=("PCMU", "PCMA"),
                 display=None, regint=60):
    """One line of baresip's `accounts`: the AOR sip:USER@DOMAIN, registering there when register."""
    name = '"%s" ' % display if display else ""
    params = []
    if password is not None:
        params.append("auth_pass=%s" % password)
    params.append("regint=%d" % (regint if register else 0))
    params.append("answermode=%s" % answer)
    params.append("audio_codecs=%s" % ",".join(codecs))
    return "%s<sip:%s@%s>;%s\n" % (name, user, domain, ";".join(params))


def _netstring(data):
    return b"%d:%s," % (len(data), data)


class Baresip:
    """One baresip phone: its folder (config, accounts, recordings, log), its process, its control.

    user, domain: the AOR sip:user@domain (domain: the registrar's HOST[:PORT] or the phone's own
    address); password: digest password; register: REGISTER to domain; lab, node: run inside that
    node of a tools.netlab.Lab (its address is the phone's), else on 127.0.0.1; source: WAV played
    as the microphone (None: silence); answer: "manual" (accept()) or "auto"."""

    def __init__(self, folder, user, domain, password=None, register=True, lab=None, node=None, address=None,
                 sip_port=5060, ctrl_port=4444, rtp_ports=(10000, 10098), source=None, answer="manual",
                 codecs=("PCMU", "PCMA"), display=None):
        self.folder = os.path.abspath(str(folder))
        self.user, self.domain = user, domain
        self.lab, self.node = lab, node
        self.address = address or (lab.address(node) if lab is not None else "127.0.0.1")
        self.sip_port, self.ctrl_port, self.rtp_ports = sip_port, ctrl_port, tuple(rtp_ports)
        self.snd_dir = os.path.join(self.folder, "sound")
        os.makedirs(self.snd_dir, exist_ok=True)
        with open(os.path.join(self.folder, "config"), "w") as f:
            f.write(config_text(self.address, sip_port, ctrl_port, rtp_ports, source, self.snd_dir,
                                player="bs%s" % user))
        with open(os.path.join(self.folder, "accounts"), "w") as f:
            f.write(account_line(user, domain, password, register, answer, codecs, display))
        self.log_path = os.path.join(self.folder, "baresip.log")
        self.process = None
        self.events = []
        self._responses = {}
        self._cond = threading.Condition()
        self._sock = None
        self._reader = None
        self._token = 0

    @property
    def uri(self):
        return "sip:%s@%s:%d" % (self.user, self.address, self.sip_port)

    def start(self, timeout=10.0):
        """Start baresip and connect to its control port; BaresipError with its log if it does not come up."""
        program = binary()
        if program is None:
            raise BaresipError("baresip is not installed (Debian: apt-get install baresip-core)")
        argv = [program, "-f", self.folder]
        log = open(self.log_path, "wb")
        try:
            if self.lab is not None:
                self.process = self.lab.popen(self.node, argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
            else:
                self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BaresipError("baresip exited with %s at start: %s" % (self.process.returncode, self.log()))
            sock = (self.lab.socket(self.node, type=socket.SOCK_STREAM) if self.lab is not None
                    else socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.connect((self.address, self.ctrl_port))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError("baresip's ctrl_tcp did not listen on %s:%d within %.0f s: %s"
                                       % (self.address, self.ctrl_port, timeout, self.log()))
                time.sleep(0.05)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, name="baresip-%s" % self.user, daemon=True)
        self._reader.start()
        return self

    def _read(self):
        buf = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += data
            while True:
                head, colon, rest = buf.partition(b":")
                if not colon or not head.isdigit() or len(rest) < int(head) + 1:
                    break
                n = int(head)
                body, buf = rest[:n], rest[n + 1:]
                try:
                    message = json.loads(body)
                except ValueError:
                    continue
                with self._cond:
                    if message.get("event"):
                        self.events.append(message)
                    elif message.get("response"):
                        self._responses[message.get("token")] = message
                    self._cond.notify_all()

    def command(self, name, params="", timeout=5.0):
        """Run a baresip command (menu's: dial, accept, hangup, hold, resume, reginfo, quit ...);
        its response {"ok": bool, "data": text}. BaresipError when none comes."""
        with self._cond:
            self._token += 1
            token = str(self._token)
        message = {"command": name, "params": params, "token": token}
        self._sock.sendall(_netstring(json.dumps(message).encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BaresipError("baresip %s: no answer to %r within %.0f s" % (self.user, name, timeout))
                self._cond.wait(left)
            return self._responses.pop(token)

    def wait_event(self, kind, timeout=10.0, since=0, fail_on=("CALL_CLOSED",)):
        """The first event of type kind (from the index since on); BaresipError after timeout, or at
        once when an event of fail_on comes first (a call closed before it was established: the
        error carries its reason, e.g. "405 Method Not Allowed")."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event.get("type") == kind:
                        return event
                    if event.get("type") in fail_on:
                        raise BaresipError("baresip %s: %s before %s: %s" % (self.user, event.get("type"), kind,
                                                                             event.get("param") or "(no reason)"))
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("type") for e in self.events]
                    raise BaresipError("baresip %s: no %s within %.0f s (events: %s)" % (self.user, kind, timeout, seen))
                self._cond.wait(min(left, 0.2))

    def dial(self, uri):
        return self.command("dial", uri)

    def accept(self):
        return self.command("accept")

    def hangup(self):
        return self.command("hangup")

    def recordings(self):
        """(enc, dec) WAV paths of the last call: what the phone sent and what it heard; None before one."""
        dec = sorted(glob.glob(os.path.join(self.snd_dir, "dump-*-dec.wav")), key=os.path.getmtime)
        if not dec:
            return None
        return dec[-1][:-len("dec.wav")] + "enc.wav", dec[-1]

    def heard(self):
        """The 16-bit PCM the phone heard in its last call (8000 Hz), from its dec recording."""
        paths = self.recordings()
        if paths is None:
            return b""
        for _ in range(30):   # baresip writes the WAV header when it closes the call's audio, just after CALL_CLOSED
            try:
                with wave.open(paths[1]) as w:
                    return w.readframes(w.getnframes())
            except (wave.Error, EOFError):
                time.sleep(0.1)
        with wave.open(paths[1]) as w:
            return w.readframes(w.getnframes())

    def log(self, tail=3000):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)[-tail:]   # without its colours

    def stop(self):
        """Quit baresip (its recordings are closed then), killing it if it does not go within 3 s."""
        if self.process is None:
            return
        if self._sock is not None and self.process.poll() is None:
            try:
                self._sock.sendall(_netstring(json.dumps({"command": "quit", "params": "", "token": "q"}).encode()))
            except OSError:
                pass
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._sock is not None:
            self._sock.close()
        self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
