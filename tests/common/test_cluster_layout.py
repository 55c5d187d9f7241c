"""common/cluster.py under both interpreters: the index and call number layout, rendezvous, the node list.

The vectors are written out literally, worked out from the layout in docs/cluster.md (and, for the
rendezvous weights, SHA-256 of the bytes shown): a node, a remote host and a handset that disagree
with them would send datagrams to the wrong node.
"""
from common import cluster, cluster_make, wire


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return str(e)
    raise AssertionError("%s%r did not raise %s" % (fn.__name__, args, exc.__name__))


def test_index_layout_vectors():
    # vv nnnn lllllllllllll www: version 1 in bits 21-20, node in 19-16, local in 15-3, worker in 2-0
    assert cluster_make.make_index(1, 0, 0) == 0x110000
    assert cluster_make.make_index(2, 1, 5) == 0x120029
    assert cluster_make.make_index(15, 7, 8191) == 0x1FFFFF
    for index, node, worker, local in ((0x110000, 1, 0, 0), (0x120029, 2, 1, 5), (0x1FFFFF, 15, 7, 8191)):
        assert cluster.index_version(index) == 1
        assert cluster.index_node(index) == node
        assert cluster.index_worker(index) == worker
        assert cluster.index_local(index) == local
        assert 0 < index <= wire.MAX_SESSION


def test_index_of_another_layout_names_no_node():
    # version 0 (a standalone main host's or an unrouted index), 2 and 3 (layouts this code does not read)
    for index in (0x010203, 0x0FFFFF, 0x210000, 0x3FFFFF):
        assert cluster.index_node(index) is None and cluster.index_worker(index) is None
    assert cluster.index_version(0x3FFFFF) == 3
    assert cluster.index_node(0x100007) is None   # version 1 but node 0: nobody's


def test_call_number_layout_vectors():
    # nnnn ccccccccccc: node in bits 14-11, local in 10-0 (no version bits: docs/protocol.md section 14)
    assert cluster_make.make_call_no(1, 0) == 0x0800
    assert cluster_make.make_call_no(3, 7) == 0x1807
    assert cluster_make.make_call_no(15, 2047) == 0x7FFF == wire.MAX_CALL_NO
    assert cluster.call_no_node(0x1807) == 3
    assert cluster.call_no_node(0x0800) == 1
    # node 0: nobody's
    assert cluster.call_no_node(0x0007) is None and cluster.call_no_node(0x07FF) is None
    # a call number is never 0 (reserved in mini frames), whatever the local part
    assert all(cluster_make.make_call_no(n, 0) > 0 for n in range(1, 16))


def test_layout_refuses_what_does_not_fit():
    assert "outside layout 1" in raises(ValueError, cluster_make.make_index, 16, 0, 0)
    raises(ValueError, cluster_make.make_index, 0, 0, 0)
    raises(ValueError, cluster_make.make_index, 1, 8, 0)
    raises(ValueError, cluster_make.make_index, 1, 0, 8192)
    raises(ValueError, cluster_make.make_call_no, 1, 2048)
    raises(ValueError, cluster_make.make_call_no, 16, 0)


def test_every_field_round_trips():
    for node in (1, 7, 15):
        for worker in range(8):
            for local in (0, 1, 4095, 8191):
                index = cluster_make.make_index(node, worker, local)
                assert (cluster.index_node(index), cluster.index_worker(index), cluster.index_local(index)) \
                    == (node, worker, local)
        for local in (0, 1023, 2047):
            assert cluster.call_no_node(cluster_make.make_call_no(node, local)) == node


def test_rendezvous_vectors():
    # weights: the first 8 bytes of SHA-256(identity || 00 || node id)
    #   host/north: 1 ef93a6cc03941be2, 2 e7f0ed6c4cf837b7, 3 913645f34c32e2c0, 4 b3f639b1f203f769
    #   phone/201:  1 5d777b2e1946eadf, 2 17b5290ff177dacd, 3 31d06f686cb8170c, 4 4cb80a0b2f90dff2
    #   host/south: 1 0a06632c729ef126, 2 5cf587a5b94cb865, 3 112409e2921a741e, 4 5004ba654ac26a29
    assert cluster.identity("host", "north") == b"host/north"
    assert cluster.rendezvous(b"host/north", [1, 2, 3]) == [1, 2, 3]
    assert cluster.rendezvous(b"host/north", [3, 1, 4, 2]) == [1, 2, 4, 3]
    assert cluster.rendezvous("phone/201", [1, 2, 3, 4]) == [1, 4, 3, 2]
    assert cluster.rendezvous(cluster.identity("host", "south"), (1, 2, 3, 4)) == [2, 4, 3, 1]
    assert cluster.rendezvous(b"host/x", []) == []
    nodes = [(n, ("198.18.0.%d" % n, 4569)) for n in (1, 2, 3, 4)]
    assert cluster.ranked(b"host/south", nodes) == [nodes[1], nodes[3], nodes[2], nodes[0]]


def test_rendezvous_moves_only_what_it_must():
    names = [cluster.identity("host", "site%d" % i) for i in range(300)]
    three = [cluster.rendezvous(n, [1, 2, 3]) for n in names]
    four = [cluster.rendezvous(n, [1, 2, 3, 4]) for n in names]
    moved = 0
    for before, after in zip(three, four):
        # a new node takes an identity or leaves its home and standby where they were
        if after[0] == 4:
            moved += 1
        else:
            assert after[0] == before[0]
        assert [n for n in after if n != 4] == before
    assert 40 < moved < 110     # about a quarter of 300
    # a node's loss moves only its own identities, each to its standby
    for before in three:
        assert cluster.rendezvous(names[three.index(before)], [n for n in (1, 2, 3) if n != 2]) \
            == [n for n in before if n != 2]
    homes = [r[0] for r in three]
    assert all(60 < homes.count(n) < 140 for n in (1, 2, 3))


def test_a_nodes_clients_share_one_standby_its_successor():
    # rendezvous of b"node/H" over the other nodes: node 1 -> 2, 2 -> 4 (3 without 4), 3 -> 1, 4 -> 3
    assert [cluster.successor(h, [1, 2, 3, 4]) for h in (1, 2, 3, 4)] == [2, 4, 1, 3]
    assert [cluster.successor(h, [3, 2, 1]) for h in (1, 2, 3)] == [2, 3, 1]
    assert cluster.successor(1, [1]) is None
    # the same for every client of the node, whatever the order the node list came in
    assert cluster.successor(2, [4, 3, 2, 1]) == cluster.successor(2, [1, 2, 3, 4]) == 4


def test_node_list_vector_and_round_trip():
    nodes = [(1, ("127.0.0.1", 4569)), (2, ("198.18.0.2", 40000))]
    data = cluster_make.encode_nodes(nodes)
    assert data == bytes.fromhex("01" "01" "7f000001" "11d9" "02" "c6120002" "9c40")
    assert cluster.decode_nodes(data) == nodes
    assert cluster.decode_nodes(cluster_make.encode_nodes([])) == []
    # carried as IE cluster_nodes (0x31)
    assert wire.IE_CLUSTER_NODES == 0x31
    ies = wire.encode_ies({wire.IE_CLUSTER_NODES: data})
    assert ies[:2] == b"\x31\x0f" and wire.decode_ies(ies) == {0x31: data}
    fifteen = [(n, ("10.0.0.%d" % n, 4569)) for n in range(1, 16)]
    assert cluster.decode_nodes(cluster_make.encode_nodes(fifteen)) == fifteen


def test_bad_node_lists_are_refused_with_the_reason():
    good = cluster_make.encode_nodes([(1, ("127.0.0.1", 4569))])
    assert "layout 2" in raises(ValueError, cluster.decode_nodes, b"\x02" + good[1:])
    assert "whole entries" in raises(ValueError, cluster.decode_nodes, good[:-1])
    assert "empty" in raises(ValueError, cluster.decode_nodes, b"")
    assert "node id 0" in raises(ValueError, cluster.decode_nodes, b"\x01\x00" + good[2:])
    assert "node id 1" in raises(ValueError, cluster.decode_nodes, good + good[1:])
    assert "port 0" in raises(ValueError, cluster.decode_nodes, good[:-2] + b"\x00\x00")
    raises(ValueError, cluster_make.encode_nodes, [(16, ("127.0.0.1", 1))])
    raises(ValueError, cluster_make.encode_nodes, [(1, ("::1", 1))])
    raises(ValueError, cluster_make.encode_nodes, [(1, ("127.0.0.1", 0))])


def test_a_phone_at_a_node_logs_in_next_by_its_rendezvous_order():
    import os
    from common.login import LoginDown, LoginUp
    from common.phone import Phone
    nodes = [(n, ("198.18.0.%d" % n, 4569)) for n in (1, 2, 3, 4)]
    data = cluster_make.encode_nodes(nodes)
    order = cluster.rendezvous(b"phone/201", [1, 2, 3, 4])      # 1, 4, 3, 2 (test_rendezvous_vectors)
    phone = Phone("201", bytes(16), os.urandom)
    assert phone.cluster_nodes is None and phone.host_next is None

    def event(e):
        phone.login._events.append(e)
        phone._login_events(0)
        phone.take_events()

    # up at node 3 (its WELCOME's index says so), then lost: the next login goes to its first node, 1
    event(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(3, 0, 9), wire.IE_CLUSTER_NODES: data}))
    assert phone.cluster_nodes == data and phone.host_next is None
    event(LoginDown("dead"))
    assert phone.host_next == ("198.18.0.%d" % order[0], 4569)
    # node 1 does not answer: the next in the order (4), then 3, then 2, then round again
    for expected in order[1:] + order[:1]:
        event(LoginDown("no answer"))
        assert phone.host_next == ("198.18.0.%d" % expected, 4569)
    # up at its first node and lost there: the second
    event(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(order[0], 0, 1)}))
    event(LoginDown("dead"))
    assert phone.host_next == ("198.18.0.%d" % order[1], 4569)
    # a node joined: NODES (and SYSINFO's first chunk) bring the new list
    more = cluster_make.encode_nodes(nodes + [(5, ("198.18.0.5", 4569))])
    phone._message(wire.NODES, {wire.IE_CLUSTER_NODES: more}, 0)
    assert phone.cluster_nodes == more
    # a standalone main host's phone never gets any of it
    alone = Phone("202", bytes(16), os.urandom)
    alone.login._events.append(LoginUp({wire.IE_SESSION_INDEX: 0x123456}))
    alone._login_events(0)
    alone.login._events.append(LoginDown("dead"))
    alone._login_events(0)
    assert alone.cluster_nodes is None and alone.host_next is None


def test_a_phone_without_a_standby_up_keeps_its_call_and_names_it_at_the_lost_nodes_successor():
    # the grace period (docs/cluster.md "Failover" 2b): a phone at node 2 of 1..4 in a call, its standby not up (or
    # none: too little heap), loses its session. Its call stays, the LoginDown is passed on (the firmware sends the
    # next login to host_next), and the next login goes to node 2's successor (4), not the phone's own next node:
    # where its call's other party's standby is. Up there, it names its call (NODES standby 0, the node's number).
    import os
    from common.call import CONNECTED
    from common.login import LoginDown, LoginUp
    from common.phone import Ended, Phone
    nodes = [(n, ("198.18.0.%d" % n, 4569)) for n in (1, 2, 3, 4)]
    phone = Phone("201", bytes(16), os.urandom)
    sent = []
    phone.login.send = lambda msg_type, ies, now: sent.append((msg_type, ies))

    def event(e):
        phone.login._events.append(e)
        phone._login_events(0)
        return [type(x).__name__ for x in phone.take_events()]

    event(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(2, 0, 9), wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(nodes)}))
    call = phone.call = phone._new_call(bytes(16), 0, 0)
    call.state = CONNECTED
    call.learn_peer(cluster_make.make_call_no(2, 7))
    assert event(LoginDown("dead")) == ["LoginDown"] and phone.call is call and phone.grace
    assert phone.host_next == ("198.18.0.4", 4569)
    del sent[:]
    assert event(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(4, 0, 3)})) == ["LoginUp"]
    assert [(t, ies) for t, ies in sent if t == 0x73] == [(0x73, {0x38: 0, wire.IE_PEER_CALL_NO: call.peer_call_no})]
    assert phone.call is call and not phone.grace
    # lost again, and the grace's login at node 4's successor is not answered: the call ends "main host lost"
    assert event(LoginDown("dead")) == ["LoginDown"] and phone.call is call
    phone.login._events.append(LoginDown("no answer to login"))
    phone._login_events(0)
    ended = [e for e in phone.take_events() if type(e) is Ended]
    assert phone.call is None and not phone.grace and [e.cause for e in ended] == [0x12]
    # a call the host has not answered yet (no number of its): nothing to name, it ends as before
    event(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(3, 0, 3)}))
    phone.call = phone._new_call(bytes(16), 0, 0)
    assert event(LoginDown("dead")) == ["Ended", "LoginDown"] and phone.call is None and not phone.grace


def test_a_phone_at_a_node_moves_its_standby_to_its_nodes_new_successor():
    # node 2's successor is 3 among 1..3 and 4 among 1..4 (test_a_nodes_clients_share_one_standby_its_successor):
    # a phone at node 2 keeps its standby at node 3, and moves it to node 4 when NODES says node 4 joined,
    # as a remote host does (a phone once kept its standby at the old successor, docs/cluster.md 2b)
    import os
    from common.login import LoginUp
    from common.phone import Phone
    three = [(n, ("198.18.0.%d" % n, 4569)) for n in (1, 2, 3)]
    phone = Phone("201", bytes(16), os.urandom)
    phone.login._events.append(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(2, 0, 9),
                                        wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(three)}))
    phone._login_events(0)
    assert phone.standby_to == ("198.18.0.3", 4569)
    first = phone.standby
    assert first.datagrams_to_send(0)   # its HELLO
    # node 1 leaves: node 2's successor is still 3, the standby stays as it is
    phone._message(wire.NODES, {wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(three[1:])}, 100)
    assert phone.standby is first and phone.standby_to == ("198.18.0.3", 4569)
    # node 4 joins: the standby goes to node 4, a new login with the same index
    four = three + [(4, ("198.18.0.4", 4569))]
    phone._message(wire.NODES, {wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(four)}, 200)
    assert phone.standby is not first and phone.standby_to == ("198.18.0.4", 4569)
    assert phone.standby.local_index == first.local_index and phone.standby.datagrams_to_send(200)
    # node 4 leaves again: back to node 3
    phone._message(wire.NODES, {wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(three)}, 300)
    assert phone.standby_to == ("198.18.0.3", 4569)


def test_a_phone_alone_at_a_node_takes_a_standby_when_a_second_node_joins():
    # the only node has no successor: no standby, but the phone chose (common/standby.py), so the NODES
    # that says a second node joined gives it one there; a phone whose login was never at a node with room
    # for one chooses nothing on a NODES
    import os
    from common.login import LoginUp
    from common.phone import Phone
    one = [(2, ("198.18.0.2", 4569))]
    phone = Phone("201", bytes(16), os.urandom)
    assert phone.standby_keepalive_ms is None and phone.standby_to is None
    phone.login._events.append(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(2, 0, 9),
                                        wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(one)}))
    phone._login_events(0)
    assert phone.standby is None and phone.standby_to is None
    assert phone.standby_keepalive_ms == phone.login.keepalive_ms
    two = one + [(3, ("198.18.0.3", 4569))]
    phone._message(wire.NODES, {wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(two)}, 100)
    assert phone.standby_to == ("198.18.0.3", 4569) and phone.standby.datagrams_to_send(100)   # its HELLO
    assert phone.standby.keepalive_ms == phone.login.keepalive_ms
    never = Phone("202", bytes(16), os.urandom)
    never._message(wire.NODES, {wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(two)}, 100)
    assert never.cluster_nodes is not None and never.standby is None and never.standby_keepalive_ms is None


def test_an_idle_phone_at_a_node_moves_to_its_first_node_make_before_break():
    # phone 201's order among 1..4 is 1, 4, 3, 2 (test_rendezvous_vectors); at node 2 its standby is node 2's
    # successor, 4. Its first node is 1: a move falls due between half rebalance_ms and all of it; while a call
    # lasts nothing happens; idle, its standby goes to node 1 (make: the old standby gets its BYE); a call starting
    # before that login is up puts the move off (the standby back at node 4, the wait doubled)
    import os
    from common import standby
    from common.call import CallLeg
    from common.login import LoginUp
    from common.phone import Phone
    four = [(n, ("198.18.0.%d" % n, 4569)) for n in (1, 2, 3, 4)]
    phone = Phone("201", bytes(16), os.urandom)
    phone.rebalance_ms = 4000
    phone.login._events.append(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(2, 0, 9),
                                        wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(four)}))
    phone._login_events(0)
    assert phone.standby_to == ("198.18.0.4", 4569)
    entry = standby._move[phone]
    assert 2000 <= entry[0] < 4000 and entry[1] == ("198.18.0.1", 4569) and entry[2] == 0 and entry[3] is None
    phone.call = CallLeg(1, bytes(16), 0)       # in a call when it falls due: it waits
    standby.tick(phone, 4000)
    assert phone.standby_to == ("198.18.0.4", 4569) and entry[3] is None
    phone.call = None
    phone.cluster_out = []
    standby.tick(phone, 4100)                   # idle: the standby logs in at node 1
    assert phone.standby_to == ("198.18.0.1", 4569) and entry[3] == 14100
    assert phone.standby.datagrams_to_send(4100)   # its HELLO
    phone.call = CallLeg(2, bytes(16), 0)       # a call before it is up: put off, back to node 4
    standby.tick(phone, 4200)
    assert phone.standby_to == ("198.18.0.4", 4569) and entry[2] == 1 and entry[3] is None
    assert 4200 + 4000 <= entry[0] < 4200 + 8000   # twice the wait
    phone.call = None
    # a phone at its first node has nothing to do; one with rebalance_ms 0 never moves
    phone._node_up = 1
    standby.choose(phone, 5000)
    assert phone not in standby._move
    still = Phone("201", bytes(16), os.urandom)
    still.rebalance_ms = 0
    still.login._events.append(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(2, 0, 9),
                                        wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(four)}))
    still._login_events(0)
    assert still not in standby._move and still.standby_to == ("198.18.0.4", 4569)


def _up(login, seed):
    """A login made up as a session that is up (no handshake): its channel keyed from seed."""
    from common.reliable import Channel
    from common.session import SessionCrypto, session_keys
    login.state = "up"
    login.channel = Channel(SessionCrypto(*session_keys(bytes(16), bytes([seed]) * 16, bytes(16), True)), 0)


def _phone_at_node_2():
    """A phone logged in at node 2 of nodes 1..4 (its session made up by _up), its standby chosen (node 4) and not
    up yet."""
    import os
    from common.login import LoginUp
    from common.phone import Phone
    nodes = [(n, ("198.18.0.%d" % n, 4569)) for n in (1, 2, 3, 4)]
    phone = Phone("201", bytes(16), os.urandom)
    _up(phone.login, 1)
    phone.login._events.append(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(2, 0, 9),
                                        wire.IE_CLUSTER_NODES: cluster_make.encode_nodes(nodes)}))
    phone._login_events(0)
    return phone


def test_a_phone_that_switches_while_it_dials_sets_the_call_up_again_or_ends_it():
    # docs/cluster.md "A call dialled as its node dies": a phone at node 2 with its standby up at node 4 dials; its
    # session falls silent and it switches. A SETUP node 2 never acknowledged is said again on the new session, the
    # same bytes; one node 2 acknowledged, with no number of node 2's for the call yet, ends "main host lost"
    from common import standby
    from common.call import CALLING
    from common.phone import Ended
    for acknowledged in (False, True):
        phone = _phone_at_node_2()
        assert phone.standby_to == ("198.18.0.4", 4569)
        _up(phone.standby, 2)
        old, new = phone.login, phone.standby
        assert phone.dial("301", 100) and phone.call.state == CALLING
        (seq, entry), = old.channel._unacked.items()
        assert entry[0] == wire.SETUP
        if acknowledged:
            old.channel._acknowledged(seq + 1, 120)   # (the next expected)
        standby.tick(phone, 140)
        lost = old.channel
        old._down("nothing heard", 2000)   # silent: its channel let go, kept as the lost one
        assert old.channel is None and old.lost is lost
        phone._login_events(2000)
        assert phone.login is new and phone.standby is None
        said = sorted(new.channel._unacked.values()) + list(new.channel._queue)
        setups = [e[1] for e in said if e[0] == wire.SETUP]
        ended = [e.cause for e in phone.take_events() if type(e) is Ended]
        if acknowledged:
            assert setups == [] and phone.call is None and ended == [0x12]   # main host lost
        else:
            assert setups == [entry[1]] and phone.call.state == CALLING and ended == []


def test_a_phone_without_a_standby_up_says_its_setup_again_at_the_successor_or_ends_the_call():
    # the grace period (common/grace.py; docs/cluster.md "A call dialled as its node dies"): a phone at node 2 whose
    # standby is not up (or that has none) dials; its session is lost. A SETUP node 2 never acknowledged keeps the
    # call: the lost session's channel is read and let go, the next login goes to node 2's successor (4), and once
    # up there the SETUP is said again, the same bytes. One node 2 acknowledged (no number of its for the call yet)
    # ends "main host lost" at the loss, and the next login goes as it would
    from common.call import CALLING
    from common.login import LoginUp
    from common.phone import Ended
    for acknowledged in (False, True):
        phone = _phone_at_node_2()
        login = phone.login
        assert phone.standby is None or phone.standby.state != "up"
        assert phone.dial("301", 100) and phone.call.state == CALLING
        (seq, entry), = login.channel._unacked.items()
        assert entry[0] == wire.SETUP
        if acknowledged:
            login.channel._acknowledged(seq + 1, 120)
        login._down("nothing heard", 2000)
        phone._login_events(2000)
        assert login.lost is None   # read and let go
        ended = [e.cause for e in phone.take_events() if type(e) is Ended]
        if acknowledged:
            assert phone.call is None and not getattr(phone, "grace", 0) and ended == [0x12]   # main host lost
            continue
        assert phone.call.state == CALLING and phone.grace and ended == []
        assert phone.host_next == ("198.18.0.4", 4569)
        _up(login, 3)   # the grace period's login at node 4
        login._events.append(LoginUp({wire.IE_SESSION_INDEX: cluster_make.make_index(4, 0, 3)}))
        phone._login_events(2500)
        said = sorted(login.channel._unacked.values()) + list(login.channel._queue)
        assert [e[1] for e in said if e[0] == wire.SETUP] == [entry[1]]
        assert phone.call.state == CALLING and not phone.grace


def test_a_phone_that_switches_says_again_the_answer_and_the_hold_state_of_its_calls():
    # a call answered, held or resumed just before its node died may be otherwise in its key (written every 20 ms): at
    # the switch the phone says the ANSWER of each call it answered (role 1) again, acknowledged or not (not of one it
    # placed), and of each answered call whether it holds it (HOLD state 1: the other line; 0: the current one)
    from common import standby
    from common.call import CONNECTED
    phone = _phone_at_node_2()
    _up(phone.standby, 2)
    old, new = phone.login, phone.standby
    answered = phone.call = phone._new_call(bytes(16), 1, 0)       # called: we answered it
    placed = phone.other = phone._new_call(bytes(16), 0, 0)        # ours, held
    for call, n in ((answered, 7), (placed, 8)):
        call.state = CONNECTED
        call.learn_peer(cluster_make.make_call_no(2, n))
    standby.tick(phone, 100)
    old._down("nothing heard", 1800)
    phone._login_events(1800)
    assert phone.login is new
    said = [wire.decode_ies(e[1]) for e in sorted(new.channel._unacked.values()) + list(new.channel._queue)
            if e[0] == wire.ANSWER]
    assert [(ies[wire.IE_CALL_NO], ies[wire.IE_PEER_CALL_NO]) for ies in said] == [
        (answered.call_no, answered.peer_call_no)]
    holds = [wire.decode_ies(e[1]) for e in sorted(new.channel._unacked.values()) + list(new.channel._queue)
             if e[0] == wire.HOLD]
    assert sorted((ies[wire.IE_CALL_NO], ies[wire.IE_STATE]) for ies in holds) == sorted(
        [(answered.call_no, 0), (placed.call_no, 1)])


def test_a_phone_that_hangs_up_as_its_node_dies_keeps_watching_and_says_the_release_again():
    # a RELEASE the node has not acknowledged keeps the call's tight keepalive (its silence noticed within 1.5 s, not
    # the idle node keepalive + 2 s), and at the switch it is said again on the new session, the same bytes, for the
    # node that takes the call over (host/cluster/calls.py defer)
    from common import standby
    from common.call import CONNECTED
    phone = _phone_at_node_2()
    _up(phone.standby, 2)
    phone.standby_keepalive_ms = 20000
    old, new = phone.login, phone.standby
    call = phone.call = phone._new_call(bytes(16), 0, 0)
    call.state = CONNECTED
    call.learn_peer(cluster_make.make_call_no(2, 7))
    standby.tick(phone, 100)
    assert old.keepalive_ms == 500
    assert phone.hangup(200) and phone.call is None
    (entry,) = old.channel._unacked.values()
    assert entry[0] == wire.RELEASE
    standby.tick(phone, 220)
    assert old.keepalive_ms == 500            # idle, but its RELEASE not acknowledged: still watched closely
    old._down("nothing heard", 1800)
    phone._login_events(1800)
    assert phone.login is new
    said = [e[:2] for e in sorted(new.channel._unacked.values()) if e[0] != 0x73]   # (its NODES first)
    assert said == [[wire.RELEASE, entry[1]]]
