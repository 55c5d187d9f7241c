"""A whole exchange inside the network lab: real NAT routers between the hosts and phones.

Like tools.lab.LoopbackExchange, but every daemon and virtual handset runs in its own
network namespace of a tools.netlab.Lab: the main host in `main` (198.18.0.1:4569, on
"the Internet"), the remote host of site X in `site-X/remote` (10.k.0.2:4570 behind the
site's router), phone N of site X in `site-X/phone-N`. Phones of a site with a remote
host attach to it on the LAN; those of a site without one (site c) attach to the main
host through their router's NAT. Control sockets, logs, summaries and recordings live in
one work directory on the shared file system, so the test process reads them directly.
"""
import json
import os
import subprocess
import time

from upbx.tools.lab import ROOT, LoopbackExchange, frames_heard, read_g711_record, upbx, write_noise_wav
from upbx.tools.netlab import node_address

MAIN_PORT = 4569
REMOTE_PORT = 4570


class NetlabExchange(LoopbackExchange):
    """Main host + remote hosts + phones placed in the lab's nodes (see the module doc)."""

    def __init__(self, lab, workdir=None, keepalive_s=20, punch_timeout_ms=2000, **kwargs):
        LoopbackExchange.__init__(self, workdir, **kwargs)
        self.lab = lab
        self.keepalive_s = keepalive_s
        self.punch_timeout_ms = punch_timeout_ms
        self.main_port = MAIN_PORT
        self.main_ip = node_address("main")

    def remote_ip(self, site):
        return node_address("site-%s/remote" % site)

    def start(self):
        with open(self.path("main.toml"), "w") as f:
            f.write('[main]\nlisten = "%s:%d"\ndatabase = "main.sqlite"\ncontrol_socket = "%s"\n'
                    'ring_timeout_s = %d\ndirect_media = %s\nlog_level = "%s"\n'
                    % (self.main_ip, MAIN_PORT, self.path("main.sock"), self.ring_timeout_s,
                       "true" if self.direct_media else "false", self.log_level))
            for key, value in self.main_settings.items():
                f.write("%s = %s\n" % (key, json.dumps(value)))
        self.spawn("main", upbx("main", "--config", self.path("main.toml")), node="main")
        for site in self.remote_sites:
            self.remote_ports[site] = REMOTE_PORT
            name = "site-" + site
            with open(self.path(name + ".toml"), "w") as f:
                f.write('[remote]\nname = "%s"\nsecret = "%s"\nmain = "%s:%d"\nlisten = "%s:%d"\n'
                        'control_socket = "%s"\nuplink_kbps = %d\nlog_level = "%s"\nkeepalive_s = %d\n'
                        'punch_timeout_s = %s\n'
                        % (name, self.secrets[name], self.main_ip, MAIN_PORT, self.remote_ip(site), REMOTE_PORT,
                           self.path(name + ".sock"), self.uplink_kbps.get(site, 0), self.log_level,
                           self.keepalive_s, self.punch_timeout_ms / 1000))
                for key, value in self.remote_settings.items():   # e.g. sip_listen (docs/sip.md)
                    f.write("%s = %s\n" % (key, json.dumps(value)))
            self.spawn(name, upbx("remote", "--config", self.path(name + ".toml")), node="site-%s/remote" % site)
        self.wait_for(lambda: all(self.status("site-" + s)["main"]["state"] == "up" for s in self.remote_sites),
                      "remote hosts logged in")

    def spawn(self, name, argv, node=None, **kwargs):
        if node is None:
            return LoopbackExchange.spawn(self, name, argv, **kwargs)
        log = open(self.path(name + ".log"), "ab")
        # own process group (as LoopbackExchange does): close() and kill() signal the group
        proc = self.lab.popen(node, argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              **kwargs)
        proc.upbx_name = name
        self.procs.append(proc)
        if hasattr(self, "argv"):
            self.argv[name] = (argv, dict(kwargs, node=node))  # for LoopbackExchange.restart
        return proc

    def node_of(self, number):
        """The lab node of a phone: the Nth number of a site runs in site-X/phone-N."""
        site = self.phone_site[number]
        numbers = [n for n, s in sorted(self.phone_site.items()) if s == site]
        return "site-%s/phone-%d" % (site, numbers.index(number) + 1)

    def host_of(self, number):
        site = self.phone_site[number]
        if site in self.remote_sites:
            return "%s:%d" % (self.remote_ip(site), REMOTE_PORT)
        return "%s:%d" % (self.main_ip, MAIN_PORT)

    def phone(self, number, *args, tag=None):
        tag = tag or number
        node = self.node_of(number)
        argv = upbx("phone", "--extension", number, "--secret", self.secrets[number], "--host",
                    self.host_of(number), "--bind", node_address(node), "--summary",
                    self.path(tag + ".summary.json"), *args)
        return self.spawn("phone-" + tag, argv, node=node, stdin=subprocess.PIPE)

    def log_lines(self, daemon, event):
        """Lines of a daemon's log naming an event (`address-changed`, `login` ...)."""
        with open(self.path(daemon + ".log"), errors="replace") as f:
            return [line.rstrip("\n") for line in f if " %s " % event in line or line.rstrip().endswith(" " + event)]

    def host_address_at_main(self, site):
        for host in self.status("main")["remote_hosts"]:
            if host["name"] == "site-" + site:
                return host["address"]
        return None


def gaps_ms(record_path):
    """Audio gaps in a --record-g711 file, in ms of the sender's clock: (largest gap, its
    timestamp, frames received). Frames carry the sender's timestamp (20 ms apart), so
    lost frames show as a jump; the gap is the jump minus one frame."""
    frames = read_g711_record(record_path)
    stamps = [ts for ts, _payload in frames]
    worst, at = 0, None
    for a, b in zip(stamps, stamps[1:]):
        if b - a - 20 > worst:
            worst, at = b - a - 20, a
    return worst, at, len(stamps)


def talk(ex, caller, callee, seconds=4.0, during=None, during_after_s=1.5, before_call=None, tag=None):
    """A call where both phones send their own noise and record what they hear.

    `during(ex)` runs once the callee has heard `during_after_s` seconds of audio (the
    call is up and media flows); `before_call(ex)` once the callee is registered, before the
    caller starts. Returns per direction the audio match (tools.lab.frames_heard: the sender's
    frames as it recorded them sending, against what the listener recorded; the caller hangs
    up, so the callee's last frames may miss it), frames, the largest gap and what is missing,
    plus the caller's call summary and the daemons' media counter deltas.
    """
    tag = tag or "talk-%s-%s-%d" % (caller, callee, int(time.time() * 1000) % 100000)
    wavs, records, sent_records = {}, {}, {}
    for number in (caller, callee):
        wavs[number] = ex.path("%s.wav" % number)
        if not os.path.exists(wavs[number]):
            write_noise_wav(wavs[number], 20, int(number))
        records[number] = ex.path("%s-%s.rx.g711" % (tag, number))
        sent_records[number] = ex.path("%s-%s.tx.g711" % (tag, number))
    before = ex.media_counters()
    callee_proc = ex.phone(callee, "--answer", "--send", wavs[callee], "--record-g711", records[callee],
                           "--record-sent-g711", sent_records[callee],
                           "--exit-after-call", "--exit-after", str(seconds + 20), tag=tag + "-callee")
    ex.wait_registered(callee)
    before_result = before_call(ex) if before_call is not None else None
    caller_proc = ex.phone(caller, "--send", wavs[caller], "--record-g711", records[caller],
                           "--record-sent-g711", sent_records[caller], "--call", callee,
                           "--call-after", "0.8", "--duration", str(seconds), "--exit-after-call",
                           "--exit-after", str(seconds + 18), tag=tag + "-caller")
    during_result = None
    if during is not None:
        need = int(during_after_s * 50) * 164
        ex.wait_for(lambda: os.path.getsize(records[callee]) >= need, "audio flowing", timeout=15)
        during_result = during(ex)
    caller_proc.wait(seconds + 25)
    callee_proc.wait(seconds + 25)
    after = ex.media_counters()
    summary = ex.summary(tag + "-caller")
    out = {"call": summary["calls"][0] if summary["calls"] else {}, "during": during_result,
           "before_call": before_result, "records": records,
           "media_at_hosts": {k: after[k] - before.get(k, 0) for k in after}}
    for listener, speaker in ((callee, caller), (caller, callee)):
        gap, gap_at, frames = gaps_ms(records[listener])
        match, heard = frames_heard(sent_records[speaker], records[listener], listener_left_first=listener == caller,
                                    gap_frames=gap // 20)
        out["%s->%s" % (speaker, listener)] = dict(heard, match=match, frames=frames, gap_ms=gap, gap_at_ms=gap_at)
    return out

