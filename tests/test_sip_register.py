"""SIP phones registering at the real daemons: baresip (a SIP client nobody here wrote) at a remote
host (site a) and at the main host (site c, which has no remote host), with the password `upbx
admin ext add --sip` printed; no SIP port is open on a host until it has a SIP phone to serve;
wrong passwords from one address are soon not answered."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from upbx.host.sip import message
from upbx.tools.lab import LoopbackExchange, free_port

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed (apt install baresip)")


def baresip(lab, tag, number, password, host_port, seconds):
    """Run baresip registered as number for seconds; returns its process (log: tag.log)."""
    cfg = lab.path("baresip-" + tag)
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "config"), "w") as f:
        f.write("poll_method epoll\nsip_listen 127.0.0.1:%d\naudio_player aufile,%s\naudio_source aufile,%s\n"
                "audio_alert aufile,/dev/null\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\n"
                "module aufile.so\nmodule_app account.so\n"
                % (free_port(), lab.path(tag + "-heard.wav"), "/usr/share/baresip/ring.wav"))
    with open(os.path.join(cfg, "accounts"), "w") as f:
        f.write("<sip:%s@127.0.0.1:%d>;auth_pass=%s;regint=600\n" % (number, host_port, password))
    return lab.spawn("baresip-" + tag, ["baresip", "-f", cfg, "-t", str(seconds)])


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture
def lab(tmp_path):
    sip_ports = {"main": free_port(), "site-a": free_port()}
    lab = LoopbackExchange(str(tmp_path), main_settings={"sip_listen": "127.0.0.1:%d" % sip_ports["main"]},
                           remote_settings={"sip_listen": "127.0.0.1:%d" % sip_ports["site-a"]})
    lab.sip_ports = sip_ports
    try:
        lab.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301"]})
        lab.start()
        yield lab
    finally:
        lab.close()


def registered(lab, daemon, number):
    return lab.status(daemon)["sip"]["registered"].get(number, 0)


def test_baresip_registers_at_a_remote_host_and_at_the_main_host(lab):
    # no SIP phone yet: no SIP port on either host
    time.sleep(1.5)
    assert lab.status("main")["sip_listen"] is None and lab.status("site-a")["sip_listen"] is None
    assert port_is_free(lab.sip_ports["main"]) and port_is_free(lab.sip_ports["site-a"])
    password_a = lab.admin("ext", "add", "105", "--site", "a", "--sip")
    password_c = lab.admin("ext", "add", "305", "--site", "c", "--sip")
    # the main host opens its port; the remote host once the directory with 105's password reached it
    lab.wait_for(lambda: lab.status("main")["sip_listen"] == "127.0.0.1:%d" % lab.sip_ports["main"],
                 "main host's SIP port", timeout=20)
    lab.wait_for(lambda: lab.status("site-a")["sip_listen"] == "127.0.0.1:%d" % lab.sip_ports["site-a"],
                 "remote host's SIP port", timeout=20)
    baresip(lab, "105", "105", password_a, lab.sip_ports["site-a"], 30)
    baresip(lab, "305", "305", password_c, lab.sip_ports["main"], 30)
    lab.wait_for(lambda: registered(lab, "site-a", "105") == 1, "105 registered at site a", timeout=20)
    lab.wait_for(lambda: registered(lab, "main", "305") == 1, "305 registered at the main host", timeout=20)
    # 105 belongs to site a: the main host does not take its registration (a wrong password there)
    assert registered(lab, "main", "105") == 0
    with open(lab.path("baresip-105.log"), "rb") as f:
        assert b"200 OK (upbx) [1 binding]" in f.read()
    # the SIP phone is gone: the port closes again
    lab.admin("ext", "sip", "305", "--off")
    lab.wait_for(lambda: lab.status("main")["sip_listen"] is None, "main host's SIP port closed", timeout=20)
    assert port_is_free(lab.sip_ports["main"])


def test_password_guessing_at_the_daemon_goes_unanswered(lab):
    lab.admin("ext", "add", "105", "--site", "a", "--sip")
    port = lab.sip_ports["site-a"]
    lab.wait_for(lambda: lab.status("site-a")["sip_listen"] is not None, "remote host's SIP port", timeout=20)
    answered = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        for i in range(12):
            req = message.Request("REGISTER", "sip:upbx", [
                ("Via", "SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKscan%d;rport" % (s.getsockname()[1], i)),
                ("From", "<sip:105@upbx>;tag=s"), ("To", "<sip:105@upbx>"), ("Call-ID", "scan%d" % i),
                ("CSeq", "1 REGISTER"), ("Contact", "<sip:105@127.0.0.1>"),
                ("Authorization", 'Digest username="105", realm="upbx", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", '
                                  'uri="sip:upbx", response="%032x", algorithm=MD5, cnonce="x", qop=auth, '
                                  'nc=00000001' % i)])
            s.sendto(req.encode(), ("127.0.0.1", port))
            try:
                answered.append(message.parse(s.recvfrom(65535)[0]).status)
            except socket.timeout:
                answered.append(None)
    assert answered[:3] == [401, 401, 401]
    assert answered[-4:] == [None] * 4
    drops = lab.status("site-a")["stats"]["drops"]
    assert drops["sip auth failed: not our nonce"] >= 3 and drops["sip: source over its limit"] >= 4
    assert lab.status("site-a")["sip"]["registered"] == {}
