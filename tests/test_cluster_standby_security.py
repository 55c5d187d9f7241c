"""Two holes of the cluster's handshake and forwarding, closed (issue 16; docs/cluster.md "Security
of the handshake and of forwarding"), on real engines and `upbx main` nodes (tools/cluster_lab.py).

- A RESPONSE replayed to a second node: the nodes share the cookie secret but each keeps its own
  used nonces, so a bystander that copied a phone's RESPONSE to n1 could replay it to n2 from the
  same address and open a second session there (a phantom login at n2, a location that is not the
  phone's). Each node now names itself in its cookies and accepts only its own.
- A node forwarded every frame naming another node's session index without a check: anyone could
  make every node a relay into the cluster. Now a node forwards from a source at most a bucket's
  worth of frames (counted and dropped beyond), none that comes from a node's own address, and only
  frames of a form the owner could take.
Every wait is for a state (a node's status, a reply), never for a time.
"""
import select
import socket
import time

import pytest

from upbx.common import cluster, cluster_make, wire
from upbx.common.login import UP
from tests.clusterkit import engines  # noqa: F401 (a fixture)
from tests.intruder import Intruder, Tap, now_ms

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")

NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def lab(engines):
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES)
    try:
        lab.provision(sites=("c",), remote_sites=(), phones={"c": ["301", "302", "303"]})
        lab.start()
        yield lab
    finally:
        lab.close()


def node_address(lab, node):
    return ("127.0.0.1", lab.node_ports[node])


def logged_in(lab, node, number):
    return any(p["extension"] == number for p in lab.status(node)["phones"])


def counters(lab, node):
    return lab.status(node)["stats"]["counters"]


def drops(lab, node):
    return lab.status(node)["stats"].get("drops", {})


def replies(sock, seconds):
    """The datagrams sock receives within seconds."""
    got, deadline = [], time.time() + seconds
    while time.time() < deadline:
        if select.select([sock], [], [], 0.05)[0]:
            got.append(sock.recvfrom(65536)[0])
    return got


def test_a_response_replayed_to_a_second_node_opens_nothing_there(lab):
    tap = Tap(node_address(lab, "n1"))          # a bystander on the phone's path to n1
    try:
        with Intruder.phone("302", lab.secrets["302"], tap.address) as phone:
            phone.log_in()
            lab.wait_for(lambda: logged_in(lab, "n1", "302"), "302 at n1")
            responses = [d for d in tap.captured
                         if wire.frame_kind(d) == wire.KIND_FULL and d[7] == wire.RESPONSE]
            assert len(responses) == 1
            refused = counters(lab, "n2").get("login refused: cookie of another node", 0)
            # the bystander replays it to n2, from the very address n1 saw (the cookie binds it)
            tap.up.sendto(responses[0], node_address(lab, "n2"))
            # (on main dcba0e9 n2 took it: a second session of 302, at n2, that nobody holds the keys of)
            lab.wait_for(lambda: logged_in(lab, "n2", "302")
                         or counters(lab, "n2").get("login refused: cookie of another node", 0) > refused,
                         "n2 takes or refuses the replayed RESPONSE")
            assert not logged_in(lab, "n2", "302")
            assert counters(lab, "n2").get("login refused: cookie of another node", 0) == refused + 1
            assert logged_in(lab, "n1", "302")
            # n1 itself still refuses it too (its own used nonce): the session stays the phone's
            index = lab.status("n1")["phones"]
            tap.up.sendto(responses[0], node_address(lab, "n1"))
            phone.pump(0.3)
            assert lab.status("n1")["phones"] == index
            assert phone.login.state == UP
    finally:
        tap.close()


def test_a_phone_logs_in_at_the_node_it_greeted_and_each_node_names_itself_in_its_cookie(lab):
    for node in NODES:
        with Intruder.phone("303", lab.secrets["303"], node_address(lab, node)) as phone:
            phone.log_in()
            assert logged_in(lab, node, "303")
            # the cookie's last byte is the node's id (IE cookie of the RESPONSE it sent)
            assert phone.login._cookie[-1] == lab.status(node)["cluster"]["node_id"]


def test_a_flood_of_forged_frames_naming_another_node_is_forwarded_only_within_its_bucket(lab):
    from upbx.host.cluster import route
    ids = {n: lab.status(n)["cluster"]["node_id"] for n in NODES}
    index = cluster_make.make_index(ids["n1"], 0, cluster.LOCAL_SESSIONS - 2)     # n1's, nobody's session
    frame = bytearray(wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG)
    wire.pack_trunk_header(frame, index)

    def out():
        return lab.status("n2")["cluster"]["forwarded_out"].get(str(ids["n1"]), 0)

    def limited():
        return drops(lab, "n2").get("cluster: forward rate limited (source)", 0)
    before_out, before_limited = out(), limited()
    before_in = lab.status("n1")["cluster"]["forwarded_in"].get(str(ids["n2"]), 0)
    sessions = (lab.status("n1")["phones"], lab.status("n1")["remote_hosts"])
    sent, count = 0, 3 * route.FORWARD_BURST
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        while sent < count:
            for _ in range(50):
                sock.sendto(bytes(frame), node_address(lab, "n2"))
            sent += 50
            time.sleep(0.005)   # at most 10,000 a second
            if sent % 500 == 0:   # and never more than 1,000 ahead of what n2 took: a node the machine
                # stalls loses none of them to its socket's buffer (those the test could not tell apart)
                lab.wait_for(lambda: out() - before_out + limited() - before_limited >= sent - 1000,
                             "n2 taking the flood", timeout=60)
        lab.wait_for(lambda: out() - before_out + limited() - before_limited >= sent * 0.99,
                     "n2 took the flood", timeout=60)
    elapsed = time.monotonic() - started
    forwarded = out() - before_out
    # what the source's bucket allows over the whole time the node was taking it, no more
    assert forwarded <= route.FORWARD_BURST + route.FORWARD_RATE_PER_S * elapsed + 1
    assert limited() - before_limited >= sent * 0.99 - forwarded
    print("flood: %d sent in %.2f s, %d forwarded, %d dropped at n2" % (sent, elapsed, forwarded,
                                                                         limited() - before_limited))
    # n1 got what was forwarded and created nothing from it
    lab.wait_for(lambda: lab.status("n1")["cluster"]["forwarded_in"].get(str(ids["n2"]), 0) - before_in
                 >= forwarded * 0.99, "n1 got the envelopes")
    assert (lab.status("n1")["phones"], lab.status("n1")["remote_hosts"]) == sessions
