"""What the cluster tests on real engines share (docs/cluster.md), as tests/sipkit.py does for SIP:
the engines fixture, a relayed call between two firmware phones that each send their own noise and
record what they hear, and the end of such a call: hang up, every call ended "normal clearing", each
side's audio at the other in order (one gap allowed: a failover's).

    from tests.clusterkit import engines  # noqa: F401  (the module-scoped fixture)

    call = start_call(lab, "101", "201", tag="failover")       # 201 answers, 101 calls
    lab.wait_for(lambda: live_call(r, "101") is not None, "the answered call's key")
    ...                                                          # the fault under test
    gaps = hang_up_and_compare(lab, call)                        # {receiver: longest gap in ms}

and the records a remote host uploads (site d's, played by the test with tests/intruder.py):
`record`, `upload`, `acknowledged`, and `sql` on the engines' PostgreSQL. A cluster in the network lab
(root), closed and taken down however the test ends:

    with netlab_cluster("upxs", dict(nat="cone", sites=("c",), phones=2), nodes=("n1", "n2")) as (lab, engines, ex):

A module that needs the engines imports `engines` from here; pytest takes a fixture imported into
a test module as the module's own (one set of engines per module, started on first use, stopped and
removed at the module's end even when a test failed)."""
import contextlib
import json
import os
import time

import pytest

from upbx.common import cluster, wire
from upbx.host.records import encode_upload
from upbx.tools.lab import audio_match, frames_heard, read_g711_record, write_noise_wav

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")


def require_engines(missing=cluster_lab.missing):
    """Skip (fail on CI, where the set-up installs them) when the engines cannot run here (missing:
    cluster_lab.missing, or missing_replicated for ReplicatedEngines)."""
    problem = missing()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def engines():
    """PostgreSQL, Redis and etcd for the module (tools/cluster_lab.py Engines)."""
    require_engines()
    with cluster_lab.Engines() as engines:
        yield engines


@pytest.fixture
def own_engines():
    """Engines of the test's own (for a test that provisions what another test of the module did)."""
    require_engines()
    with cluster_lab.Engines() as engines:
        yield engines


@contextlib.contextmanager
def netlab_cluster(prefix, up, exchange=cluster_lab.ClusterNetlabExchange, **kwargs):
    """A cluster in the network lab (root; tools/netlab.py): the lab named prefix + 4 random hex digits, up
    with `up` (Lab.up's keywords), the engines in its main namespace (cluster_lab.engines_in) and `exchange`
    on them (kwargs: its own). Yields (lab, engines, exchange); at the end, however the test ends, the
    exchange and the engines are closed and the lab taken down, each even when one before it failed."""
    from upbx.tools.netlab import Lab
    from tests.support import micropython_binary, require_root
    require_root()
    micropython_binary()
    lab = Lab("%s%s-" % (prefix, os.urandom(2).hex()))
    with contextlib.ExitStack() as stack:
        stack.callback(lab.down)        # also after a partial lab.up
        lab.up(**up)
        engines = cluster_lab.engines_in(lab)
        stack.callback(engines.close)
        ex = exchange(lab, engines, **kwargs)
        stack.callback(ex.close)
        yield lab, engines, ex


def sql(engines, query, *args):
    """Rows of a query on the engines' PostgreSQL (the primary, on ReplicatedEngines)."""
    import psycopg
    with psycopg.connect(engines.postgres_dsn, autocommit=True) as conn:
        return conn.execute(query, args or None).fetchall()


def record(uid, caller="401", callee="401"):
    """A local call record of site d, as its remote host uploads it (the tests play site d's remote
    host themselves: tests/intruder.py Intruder.host)."""
    ended = int(time.time() * 1000)
    return {"uid": uid, "caller": caller, "callee": callee, "path": "local", "started_ms": ended - 5000,
            "answered_ms": ended - 4000, "ended_ms": ended, "cause": "normal clearing", "setup_ms": 300}


def upload(host, rec):
    host.send(wire.RECORDS, {wire.IE_DATA: encode_upload(rec)})


def acknowledgements(host, uid):
    """How many times the node acknowledged (RECORDS) the record uid to the Intruder host."""
    return sum(t == wire.RECORDS and bytes(ies.get(wire.IE_CALL_ID, b"")) == bytes.fromhex(uid)
               for t, ies in host.inbox)


def acknowledged(host, uid):
    """Whether the node acknowledged (RECORDS) the record uid to the Intruder host."""
    return acknowledgements(host, uid) > 0


def survivor(lab, lost="n1"):
    """The node every client of `lost` keeps its standby session to (common/cluster.successor)."""
    ids = {n: lab.status(n)["cluster"]["node_id"] for n in lab.nodes}
    by_id = {v: k for k, v in ids.items()}
    return by_id[cluster.successor(ids[lost], sorted(ids.values()))]


def gap_ms(path):
    """The longest gap in a recorded stream (sender timestamps of consecutive frames received)."""
    frames = read_g711_record(path)
    return max((b[0] - a[0] for a, b in zip(frames, frames[1:])), default=0)


def frames(path):
    """How many frames a phone has recorded so far."""
    return len(read_g711_record(path)) if os.path.exists(path) else 0


TAIL_FRAMES = 150   # hang_up_and_compare: at most 3 s of the callee's audio after the caller hung up


def assert_audio_arrived(lab, sender, received_record, frames_sent, gap_frames, sent_record=None):
    """sender's audio (its WAV) arrived at the record in order, nothing foreign, all but 5 % and gap_frames of
    what it sent. sent_record (its --record-sent-g711) when the listener hung up first: what the sender
    sent after that, until the RELEASE reached it, reaches nobody by design (tools/lab.py frames_heard;
    440 ms of it in a loaded CI run) and is not counted, up to TAIL_FRAMES."""
    tail = 0
    if sent_record is not None:
        tail = frames_heard(sent_record, received_record, listener_left_first=True)[1]["missing_tail"]
        assert tail <= TAIL_FRAMES, (sender, tail)
    match, matched = audio_match(lab.path(sender + ".wav"), received_record, frames_sent - tail, gap_frames=gap_frames)
    assert match, (sender, matched, frames_sent, tail, gap_frames)


class Call:
    """Two firmware phones in a call: `procs` and `records` ({number: ...}), the caller, the tag."""

    def __init__(self, caller, callee, tag, procs, records, sent=None):
        self.caller, self.callee, self.tag = caller, callee, tag
        self.procs, self.records = procs, records
        self.sent = sent or {}   # {number: its --record-sent-g711}

    def frames(self):
        """{number: frames it has recorded so far}."""
        return {n: frames(path) for n, path in self.records.items()}


def start_call(lab, caller, callee, tag, seconds=120):
    """The callee (answering) and the caller (calling it after 0.5 s), each sending `seconds` of its
    own noise (seeded by its number) and recording what it receives; the call lasts until
    hang_up_and_compare (or `seconds` of audio): returns a Call once both are registered."""
    procs, records, sent = {}, {}, {}
    for number in (callee, caller):
        wav = lab.path(number + ".wav")
        write_noise_wav(wav, seconds, int(number))
        records[number] = lab.path(number + ".rx.g711")
        sent[number] = lab.path(number + ".tx.g711")
        args = ["--send", wav, "--record-g711", records[number], "--record-sent-g711", sent[number],
                "--exit-after-call", "--exit-after", "300"]
        args += ["--answer"] if number == callee else ["--call", callee, "--call-after", "0.5"]
        procs[number] = lab.phone(number, *args, tag="%s-%s" % (tag, number))
        lab.wait_registered(number, timeout=60)
    return Call(caller, callee, tag, procs, records, sent)


def live_call(r, caller):
    """The answered, not ended, call key in Redis whose caller is `caller` (r: a redis.Redis), or None."""
    for key in r.scan_iter(match="upbx:call:*"):
        call = json.loads(r.get(key) or b"{}")
        if call.get("caller") == caller and call.get("state") == "answered" and not call.get("ended"):
            return call
    return None


def wait_audio_flows(lab, call, what, frames_more=100, timeout=30):
    """Wait until each phone has recorded frames_more frames more than now (100: 2 s of audio)."""
    before = call.frames()
    lab.wait_for(lambda: all(frames(call.records[n]) >= before[n] + frames_more for n in before), what,
                 timeout=timeout)


def hang_up_and_compare(lab, call, causes=("normal clearing",)):
    """The caller hangs up; both phones exit; each side's call ended with one of `causes` (no call
    dropped) and its audio is at the other in order, nothing foreign (one gap allowed, the longest
    recorded). What the callee sent after the caller hung up, until the RELEASE reached it, reaches nobody
    by design (tools/lab.py frames_heard; 440 ms of it in a loaded CI run): it is not counted as sent, up
    to TAIL_FRAMES. Returns {receiver: its longest gap in ms}."""
    caller = call.procs[call.caller]
    caller.stdin.write(b"!hangup\n")
    caller.stdin.flush()
    for proc in call.procs.values():
        proc.wait(60)
    gaps = {}
    for sender, receiver in ((call.caller, call.callee), (call.callee, call.caller)):
        summary = lab.summary("%s-%s" % (call.tag, sender))["calls"][0]
        assert summary["cause"] in causes, summary
        gaps[receiver] = gap_ms(call.records[receiver])
        assert_audio_arrived(lab, sender, call.records[receiver], summary["frames_sent"], gaps[receiver] // 20 + 5,
                             call.sent.get(sender) if receiver == call.caller else None)   # the caller left first
    return gaps
