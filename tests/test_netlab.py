"""The network lab: real namespaces, real nftables NAT, real UDP (needs root)."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, require_root
from upbx.tools.impair import Impairment, Relay
from upbx.tools.netlab import NFT_TABLE, OWNERS_DIR, Lab, sweep_dead_labs

pytestmark = pytest.mark.root


def _new_prefix():
    # unique per test run, and not starting with the user's "upbx-" so `upbx netlab down` never sees it
    return "upbxt%s-" % secrets.token_hex(3)


def _leftovers(prefix):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


@pytest.fixture
def prefix():
    require_root()
    p = _new_prefix()
    try:
        yield p
    finally:
        Lab(p).down()


@pytest.fixture(scope="module")
def lab():
    """One lab for the read-only tests: A cone with a remote host, B symmetric, C cone phones only."""
    require_root()
    the_lab = Lab(_new_prefix())
    try:
        yield the_lab.up(nat={"a": "cone", "b": "symmetric", "c": "cone"}, phones=1)
    finally:
        the_lab.down()


def _udp(lab, node, port=0):
    sock = lab.socket(node, bind=("0.0.0.0", port))
    sock.settimeout(2.0)
    return sock


def _seen_from(lab, node, sock, destinations):
    """Send one datagram from `sock` (in `node`) to each (node, receiving socket); return the sources they saw."""
    seen = []
    for dest_node, dest in destinations:
        sock.sendto(b"hello", (lab.address(dest_node), dest.getsockname()[1]))
        data, source = dest.recvfrom(100)
        assert data == b"hello"
        seen.append(source)
    return seen


def test_up_then_down_leaves_no_namespace_and_no_nft_table(prefix):
    lab = Lab(prefix).up(phones=2)
    names = _leftovers(prefix)
    assert len(names) == 3 + 3 + 2 + 3 * 2  # inet main peer, 3 routers, 2 remotes, 6 phones
    rules = lab.exec("site-a/router", ["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    assert "table ip %s" % NFT_TABLE in rules and "masquerade" in rules
    Lab(prefix).down()  # a fresh object: everything is found from the kernel by prefix
    assert _leftovers(prefix) == []
    assert Lab(prefix).status()["nodes"] == []


def test_down_cleans_up_after_a_crash_half_way(prefix):
    lab = Lab(prefix).up(sites=("a",), phones=1)
    subprocess.run(["ip", "netns", "del", lab.netns("inet")], check=True)  # as if `up` died
    sleeper = lab.popen("site-a/phone-1", ["sleep", "60"])
    try:
        # `ip netns exec` enters the namespace, then becomes `sleep` (same pid): down() finds what runs
        # in a namespace, so wait until it runs there (on a busy machine it may not be yet)
        deadline = time.time() + 30
        while str(sleeper.pid) not in subprocess.run(["ip", "netns", "pids", lab.netns("site-a/phone-1")],
                                                     capture_output=True, text=True).stdout.split():
            assert time.time() < deadline and sleeper.poll() is None, "the sleeper never ran in its namespace"
            time.sleep(0.05)
        Lab(prefix).down()
        assert _leftovers(prefix) == []
        assert sleeper.wait(timeout=5) is not None  # what ran in the lab was stopped with it
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_up_twice_leaves_the_same_lab_untouched(prefix):
    lab = Lab(prefix).up(nat={"b": "symmetric"}, phones=1)
    before = lab.status()
    links = lab.exec("site-a/phone-1", ["ip", "-o", "link"], capture_output=True, text=True).stdout
    lab.up(nat={"b": "symmetric"}, phones=1)
    assert lab.status() == before
    assert lab.exec("site-a/phone-1", ["ip", "-o", "link"], capture_output=True, text=True).stdout == links
    assert [s["nat"] for s in before["sites"]] == ["cone", "symmetric", "cone"]
    lab.up(nat="cone", sites=("a", "b"), phones=2)  # a different shape converges to it
    assert lab.nat_type("b") == "cone"
    assert "site-c/router" not in lab.nodes() and "site-b/phone-2" in lab.nodes()


def test_phone_packet_reaches_main_from_the_site_wan_address(lab):
    main = _udp(lab, "main", 5060)
    phone = _udp(lab, "site-a/phone-1")
    (source,) = _seen_from(lab, "site-a/phone-1", phone, [("main", main)])
    assert source[0] == lab.wan_address("a") == "198.18.1.1"
    main.sendto(b"reply", source)  # the reply finds its way back through the NAT
    assert phone.recvfrom(100) == (b"reply", ("198.18.0.1", 5060))


def test_cone_nat_shows_one_public_port_to_every_destination(lab):
    main, peer = _udp(lab, "main"), _udp(lab, "peer")
    phone = _udp(lab, "site-a/phone-1")
    to_main, to_peer = _seen_from(lab, "site-a/phone-1", phone, [("main", main), ("peer", peer)])
    assert to_main == to_peer == ("198.18.1.1", phone.getsockname()[1])


def test_symmetric_nat_shows_a_new_port_to_each_destination(lab):
    main, peer = _udp(lab, "main"), _udp(lab, "peer")
    main2 = _udp(lab, "main")
    phone = _udp(lab, "site-b/phone-1")
    seen = _seen_from(lab, "site-b/phone-1", phone, [("main", main), ("peer", peer), ("main", main2)])
    assert {address for address, _ in seen} == {"198.18.2.1"}
    assert len({port for _, port in seen}) == 3


def test_router_drops_unsolicited_packets_and_hole_punching_opens_a_path(lab):
    main = _udp(lab, "main")
    remote_a, phone_c = _udp(lab, "site-a/remote"), _udp(lab, "site-c/phone-1")
    public_a, public_c = (_seen_from(lab, n, s, [("main", main)])[0]
                          for n, s in (("site-a/remote", remote_a), ("site-c/phone-1", phone_c)))
    stranger = _udp(lab, "peer")
    stranger.sendto(b"unsolicited", public_a)
    remote_a.sendto(b"punch", public_c)  # dropped by C's router, but opens A's side
    phone_c.sendto(b"from c", public_a)  # matches A's mapping: gets in, and opens C's side
    remote_a.settimeout(1.0)
    assert remote_a.recvfrom(100) == (b"from c", public_c)  # and not the stranger's packet
    remote_a.sendto(b"from a", public_c)
    assert phone_c.recvfrom(100) == (b"from a", public_a)


def test_exec_and_popen_run_inside_the_node(lab):
    out = lab.exec("site-b/remote", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                   capture_output=True, text=True, check=True).stdout
    assert "10.2.0.2/24" in out
    proc = lab.popen("main", [sys.executable, "-c", "import socket; print(socket.gethostname())"],
                     stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=10)[0].strip()
    env = dict(os.environ, UPBX_NETLAB_PREFIX=lab.prefix)
    cli = [sys.executable, "-m", "upbx.tools.cli", "netlab"]
    done = subprocess.run(cli + ["exec", "site-c/phone-1", "--", "sh", "-c", "ip -o -4 addr; exit 3"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 3 and "10.3.0.11/24" in done.stdout
    status = json.loads(subprocess.run(cli + ["status", "--json"], capture_output=True, text=True,
                                       cwd=ROOT, env=env, check=True).stdout)
    assert {s["site"]: (s["nat"], s["wan"]) for s in status["sites"]} == {
        "a": ("cone", "198.18.1.1"), "b": ("symmetric", "198.18.2.1"), "c": ("cone", "198.18.3.1")}
    assert {"node": "site-a/remote", "netns": lab.prefix + "a-remote", "addresses": ["10.1.0.2/24"]} \
        in status["nodes"]


def test_netlab_refuses_without_root_with_exit_code_2(lab):
    # imports first: the interpreter's own files may not be readable by nobody
    as_nobody = ("import os, sys, argparse, json, tools.cli, tools.netlab; os.seteuid(65534); "
                 "sys.exit(tools.cli.main(['netlab', 'status']))")
    done = subprocess.run([sys.executable, "-c", as_nobody], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "needs root" in done.stderr


def test_new_wan_address_takes_over_an_existing_flow(prefix):
    lab = Lab(prefix).up(sites=("a",), phones=1, remote_sites=("a",))
    main = _udp(lab, "main", 4569)
    remote = _udp(lab, "site-a/remote", 4569)
    assert _seen_from(lab, "site-a/remote", remote, [("main", main)]) == [("198.18.1.1", 4569)]
    lab.change_wan_address("a", "198.18.1.77")
    assert lab.wan_address("a") == "198.18.1.77"
    assert _seen_from(lab, "site-a/remote", remote, [("main", main)]) == [("198.18.1.77", 4569)]
    main.sendto(b"back", ("198.18.1.77", 4569))
    assert remote.recvfrom(100) == (b"back", ("198.18.0.1", 4569))
    lab.up(sites=("a",), phones=1, remote_sites=("a",))  # re-running up keeps the live address
    assert lab.wan_address("a") == "198.18.1.77"


_BUILD_AND_WAIT = ("import sys, time; from upbx.tools.netlab import Lab; Lab(sys.argv[1]).up(sites=(), phones=0); "
                   "print('up', flush=True); time.sleep(600)")


def _lab_owned_by_a_child(prefix):
    """A process that builds a small lab (inet, main, peer) and waits: its owner."""
    child = subprocess.Popen([sys.executable, "-c", _BUILD_AND_WAIT, prefix], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "up"
    return child


def test_the_next_up_removes_the_labs_whose_owner_died_and_no_other(prefix):
    """A killed test run leaves its lab; the next `up` anywhere on the machine removes it (its
    namespaces, and a process still running in one), and leaves the labs of live processes,
    `upbx netlab up`'s (no owner), and one whose owner pid lives on but as another process."""
    dead, live, unowned, reused = (_new_prefix() for _ in range(4))
    children = []
    try:
        children.append(_lab_owned_by_a_child(dead))
        children.append(_lab_owned_by_a_child(live))
        Lab(unowned).up(sites=(), phones=0, owned=False)
        Lab(reused).up(sites=(), phones=0)
        with open(os.path.join(OWNERS_DIR, reused)) as f:
            owner = json.load(f)
        assert owner["pid"] == os.getpid()
        with open(os.path.join(OWNERS_DIR, reused), "w") as f:   # our pid, but not our start: a pid used again
            json.dump({"pid": owner["pid"], "start": owner["start"] - 1}, f)
        orphan = Lab(dead).popen("main", ["sleep", "600"])    # what the dead run still had running
        for p in (dead, live, unowned, reused):
            assert len(_leftovers(p)) == 3, p
        children[0].kill()
        children[0].wait()
        Lab(prefix).up(sites=(), phones=0)            # any lab's up sweeps
        assert _leftovers(dead) == [] and not os.path.exists(os.path.join(OWNERS_DIR, dead))
        assert orphan.wait(10) is not None
        assert _leftovers(reused) == []
        assert len(_leftovers(live)) == 3 and Lab(live).owner()["pid"] == children[1].pid
        assert len(_leftovers(unowned)) == 3 and Lab(unowned).owner() is None
        assert Lab(prefix).status()["owner"]["pid"] == os.getpid()
        assert live not in sweep_dead_labs()          # (another run's dead lab may go here too)
        children[1].kill()
        children[1].wait()
        assert live in sweep_dead_labs() and _leftovers(live) == []
    finally:
        for child in children:
            child.kill()
            child.wait()
        for p in (dead, live, unowned, reused):
            Lab(p).down()


def test_impairment_relay_runs_inside_the_lab(lab):
    echo = _udp(lab, "main", 7000)
    with lab.inside("main"):
        relay = Relay(("198.18.0.1", 7001), ("198.18.0.1", 7000), up=Impairment(seed=3, loss=50))
    with relay:
        phone = _udp(lab, "site-c/phone-1")
        for i in range(40):
            phone.sendto(b"%d" % i, ("198.18.0.1", 7001))
        echo.settimeout(0.5)
        got = []
        try:
            while True:
                data, source = echo.recvfrom(100)
                got.append(int(data))
        except socket.timeout:
            pass
    fate = Impairment(seed=3, loss=50)
    assert got == [i for i in range(40) if fate.decide(0.0)]
    assert source[0] == "198.18.0.1"
