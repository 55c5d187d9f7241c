"""A node's own indexes and call numbers, and the core each trunk frame reaches (issue 16 item 2).

Within a node, the session index names its worker (common/cluster.py): the kernel's reuseport
group, steered by host/relay_workers.py's field_steering_program, hands each trunk frame to that
worker's socket. Here the real kernel steers real datagrams; the allocators are the node's own.
"""
import select
import socket
import time

from upbx.common import cluster, cluster_make, wire
from upbx.host.peers import PeerTable
from upbx.host.relay_workers import attach_steering
from upbx.host.core import Stats
from upbx.host.switch import Switch


def test_a_node_deals_its_indexes_round_its_workers_and_says_when_they_run_out():
    table = PeerTable(lambda identity: None, Stats(), 60000)
    table.node_id, table.workers = 5, 3
    seen = []
    for _ in range(9):
        index = table._allocate_index()
        table.peers[index] = None
        seen.append(index)
    assert all(cluster.index_node(i) == 5 and cluster.index_version(i) == cluster.LAYOUT for i in seen)
    workers = [cluster.index_worker(i) for i in seen]
    assert sorted(workers) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(workers[k] != workers[k + 1] for k in range(8))     # one after another round the workers
    # every index of the node's three workers taken: none given twice, and then None (a refused login)
    while True:
        index = table._allocate_index()
        if index is None:
            break
        assert index not in table.peers
        table.peers[index] = None
    assert len(table.peers) == 3 * cluster.LOCAL_SESSIONS
    assert table._allocate_index() is None


def test_a_standalone_main_host_gives_out_indexes_as_before():
    table = PeerTable(lambda identity: None, Stats(), 60000)
    first = table._allocate_index()
    assert table._allocate_index() == first % wire.MAX_SESSION + 1    # one after another, from a random start


def test_a_node_gives_out_its_own_call_numbers_only():
    switch = Switch(lambda *a: None, Stats())
    assert switch.capacity == wire.MAX_CALL_NO
    switch.set_node(7)
    numbers = set()
    while True:
        call_no = switch.allocate_call_no()
        if call_no is None:
            break
        assert cluster.call_no_node(call_no) == 7 and call_no not in numbers
        numbers.add(call_no)
        switch.legs[call_no] = None
    assert len(numbers) == cluster.LOCAL_CALLS == switch.capacity


def test_the_kernel_steers_a_nodes_trunk_frames_to_the_worker_its_index_names():
    group = []
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", group[0].getsockname()[1] if group else 0))
            s.setblocking(False)
            group.append(s)
        attach_steering(group[0], 3, by_field=True)
        address = group[0].getsockname()
        sent = {0: [], 1: [], 2: []}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for node, worker, local in ((1, 0, 0), (1, 1, 0), (1, 2, 0), (2, 1, 77), (15, 2, 8191), (3, 0, 5)):
                index = cluster_make.make_index(node, worker, local)
                frame = bytes([0xC0 | (index >> 16), (index >> 8) & 0xFF, index & 0xFF]) + bytes(20)
                sent[worker].append(frame)
                tx.sendto(frame, address)
            # another node's index with a worker this node has not (5 of 3): the field mod 3
            index = cluster_make.make_index(2, 5, 1)
            frame = bytes([0xC0 | (index >> 16), (index >> 8) & 0xFF, index & 0xFF]) + bytes(20)
            sent[5 % 3].append(frame)
            tx.sendto(frame, address)
            for other in (b"\x80\x00\x01" + bytes(30), b"\x45\x01" + bytes(10)):   # a full frame, a mini frame
                sent[0].append(other)
                tx.sendto(other, address)
        got = {0: [], 1: [], 2: []}
        deadline = time.time() + 10       # a guard against a hang: the wait is for the datagrams
        while sum(map(len, got.values())) < sum(map(len, sent.values())) and time.time() < deadline:
            for k in select.select(group, [], [], 0.1)[0]:
                got[group.index(k)].append(k.recv(100))
        for k in got:
            assert sorted(got[k]) == sorted(sent[k]), "socket %d" % k
    finally:
        for s in group:
            s.close()
