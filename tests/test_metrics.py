"""Prometheus metrics (issue 15 item 3, docs/operations.md "Metrics"): a real main host and real remote
host daemons scraped over HTTP while firmware phones call, parsed with prometheus_client's parser,
and every value checked against what happened: calls by path, frames relayed (the C fast path's
too), set-up times, a forged frame dropped with its reason, refused logins, an admission refusal.
"""
import os
import socket
import time

import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("aiohttp")

from prometheus_client.parser import text_string_to_metric_families

from upbx.common import wire
from upbx.common.login import Login
from upbx.host.config import ConfigError, load_main_config, load_remote_config
from upbx.tools.lab import LoopbackExchange, place_call, write_noise_wav
from tests.intruder import Intruder


class Scrape:
    """One scrape, parsed: value("upbx_drops_total", reason="bad tag") -> float (0 when absent)."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, metric, **labels):
        return self.samples.get((metric, frozenset(labels.items())), 0.0)

    def labelled(self, name):
        """{labels as a sorted tuple of values: value} of one sample name."""
        return {tuple(v for _k, v in sorted(labels)): value for (n, labels), value in self.samples.items() if n == name}


def scrape(lab, daemon):
    return Scrape(lab.scrape(daemon))


def _main(lab):
    return ("127.0.0.1", lab.main_port)


def _one_hello(number, secret, server):
    """One HELLO datagram for extension number, tagged with secret (a guess), sent from a fresh socket."""
    login = Login(wire.IE_EXTENSION, number, secret, int.from_bytes(os.urandom(2), "big") + 1, os.urandom)
    login.start(0)
    (hello,) = login.datagrams_to_send(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(hello, server)


@pytest.fixture(scope="module")
def lab():
    """Sites a and b with remote hosts, c with phones at the main host, d with a remote host whose
    uplink budget (1 kbps) admits no call; every daemon serves /metrics."""
    with LoopbackExchange(metrics=True, uplink_kbps={"d": 1}) as lab:
        lab.provision(sites=("a", "b", "c", "d"), remote_sites=("a", "b", "d"),
                      phones={"a": ["101", "102"], "b": ["201"], "c": ["301", "302"], "d": ["401"]})
        lab.start()
        yield lab


def test_a_relayed_call_is_seen_live_then_counted_with_its_frames_and_set_up_time(lab):
    before = {d: scrape(lab, d) for d in ("main", "site-a")}
    wav = lab.path("101.wav")
    write_noise_wav(wav, 10, 101)
    callee = lab.phone("301", "--answer", "--exit-after-call", "--exit-after", "25", tag="m-callee")
    lab.wait_registered("301")
    caller = lab.phone("101", "--send", wav, "--call", "301", "--duration", "4", "--exit-after-call",
                       "--exit-after", "25", tag="m-caller")
    lab.wait_for(lambda: any(c["state"] == "answered" for c in lab.status("main")["calls"]), "call answered", 15)
    time.sleep(0.5)
    first = {d: scrape(lab, d) for d in ("main", "site-a")}
    time.sleep(1.0)
    second = {d: scrape(lab, d) for d in ("main", "site-a")}
    for daemon in ("main", "site-a"):
        # live: one answered call relayed through the main host, one phone registered at each host
        assert first[daemon].labelled("upbx_calls") == {("relay", "answered"): 1.0}, daemon
        assert first[daemon].value("upbx_registered_phones") == 1.0
        # frames relayed grow while the call is up: 50 a second each way
        grown = second[daemon].value("upbx_frames_relayed_total") - first[daemon].value("upbx_frames_relayed_total")
        assert grown >= 40, (daemon, grown)
        # its set-up time is in the histogram while the call is still up
        assert (first[daemon].value("upbx_call_setup_seconds_count")
                - before[daemon].value("upbx_call_setup_seconds_count")) == 1
    main = first["main"]
    fast_path = lab.status("main")["fast_path"]
    assert main.value("upbx_host_info", name="main", role="main", fast_path=fast_path) == 1.0
    assert main.value("upbx_remote_hosts") == 3.0
    assert first["site-a"].value("upbx_main_host_up") == 1.0
    caller.wait(30)
    callee.wait(30)
    after = {d: scrape(lab, d) for d in ("main", "site-a")}
    calls = [lab.summary(tag)["calls"][0] for tag in ("m-caller", "m-callee")]
    rx = sum(c["frames_received"] for c in calls)
    sent = sum(c["frames_sent"] for c in calls)
    for daemon in ("main", "site-a"):
        s, b = after[daemon], before[daemon]
        assert s.labelled("upbx_calls") == {}
        assert (s.value("upbx_calls_ended_total", path="relay", cause="normal clearing")
                - b.value("upbx_calls_ended_total", path="relay", cause="normal clearing")) == 1
        relayed = s.value("upbx_frames_relayed_total") - b.value("upbx_frames_relayed_total")
        # every frame either phone heard was passed on by both hosts on its way; no host passes on
        # more than the phones sent (what is between: frames in flight as the caller hung up)
        assert rx <= relayed <= sent, (daemon, relayed, rx, sent)
        assert relayed >= 300


def test_frames_the_relays_c_fast_path_takes_are_counted():
    """Between two remote hosts without a direct path the main host relays trunk to trunk: the C fast
    path's work (docs/relay.md), which never enters the Python forward(), is in the frames relayed."""
    with LoopbackExchange(metrics=True, direct_media=False) as lab:
        lab.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        lab.start()
        before = scrape(lab, "main")
        row = place_call(lab, "101", "201", "m-fast", seconds=3.0)
        assert row["path"] == "relay" and row["audio_match"], row
        after = scrape(lab, "main")
        calls = [lab.summary("m-fast-101-201-" + end)["calls"][0] for end in ("caller", "callee")]
        rx, sent = sum(c["frames_received"] for c in calls), sum(c["frames_sent"] for c in calls)
        relayed = after.value("upbx_frames_relayed_total") - before.value("upbx_frames_relayed_total")
        assert rx <= relayed <= sent and relayed >= 150, (relayed, rx, sent)
        assert after.labelled("upbx_calls_ended_total") == {("normal clearing", "relay"): 1.0}
        if lab.status("main")["fast_path"] == "C":
            taken = after.value("upbx_fast_path_datagrams_total") - before.value("upbx_fast_path_datagrams_total")
            # the C path took most of site a's and site b's trunk frames (one call: one frame each): had it
            # not counted the frames it relayed, far fewer than the phones heard would be counted above
            assert relayed / 2 <= taken <= relayed, (taken, relayed)


def test_local_and_direct_calls_are_counted_by_their_path(lab):
    before = {d: scrape(lab, d) for d in ("main", "site-a", "site-b")}
    local = place_call(lab, "101", "102", "m-local")
    direct = place_call(lab, "101", "201", "m-direct")
    assert local["path"] == "local" and local["audio_match"], local     # a phone knows only local or not
    assert direct["audio_match"], direct
    after = {d: scrape(lab, d) for d in ("main", "site-a", "site-b")}

    def ended(daemon):
        return {k: v - before[daemon].labelled("upbx_calls_ended_total").get(k, 0)
                for k, v in after[daemon].labelled("upbx_calls_ended_total").items()
                if v != before[daemon].labelled("upbx_calls_ended_total").get(k, 0)}

    # labels sort as (cause, path)
    assert ended("site-a") == {("normal clearing", "local"): 1, ("normal clearing", "direct"): 1}
    assert ended("site-b") == {("normal clearing", "direct"): 1}
    assert ended("main") == {("normal clearing", "direct"): 1}      # B3 never reaches it
    # B3: the phones sent to each other; B2: the main host carried no media
    assert after["main"].value("upbx_frames_relayed_total") == before["main"].value("upbx_frames_relayed_total")
    # the local call's record went up to the main host: nothing waits on site a's disk
    lab.wait_for(lambda: scrape(lab, "site-a").value("upbx_records_pending") == 0, "record uploaded")
    assert scrape(lab, "main").value("upbx_events_total", event="records stored") >= 1


def test_a_forged_frame_is_a_drop_with_its_reason_and_a_refused_login_is_counted(lab):
    before = {d: scrape(lab, d) for d in ("main", "site-a")}
    with Intruder.phone("302", lab.secrets["302"], _main(lab)) as phone:
        phone.log_in()
        channel = phone.login.channel
        sealed = bytearray(channel.crypto.seal(channel.peer_index, channel.next_seq, channel.expected, wire.PING,
                                               wire.encode_ies({})))
        sealed[-1] ^= 0x01                         # the tag no longer verifies
        phone.sock.sendto(bytes(sealed), _main(lab))
        lab.wait_for(lambda: scrape(lab, "main").value("upbx_drops_total", reason="bad tag")
                     > before["main"].value("upbx_drops_total", reason="bad tag"), "forged frame dropped")
    _one_hello("302", bytes(16), _main(lab))              # a guessed secret
    _one_hello("999", bytes(16), _main(lab))              # no such extension
    _one_hello("101", bytes(16), ("127.0.0.1", lab.remote_ports["a"]))
    lab.wait_for(lambda: scrape(lab, "site-a").value("upbx_login_failures_total", reason="bad tag") >= 1
                 and scrape(lab, "main").value("upbx_login_failures_total", reason="unknown identity") >= 1,
                 "logins refused")
    after = {d: scrape(lab, d) for d in ("main", "site-a")}

    def delta(daemon, name, **labels):
        return after[daemon].value(name, **labels) - before[daemon].value(name, **labels)

    assert delta("main", "upbx_drops_total", reason="bad tag") == 2   # the forged frame and the guessed HELLO
    assert delta("main", "upbx_login_failures_total", reason="bad tag") == 1
    assert delta("main", "upbx_login_failures_total", reason="unknown identity") == 1
    assert delta("site-a", "upbx_login_failures_total", reason="bad tag") == 1
    assert delta("site-a", "upbx_drops_total", reason="bad tag") == 1
    # the intruder's own login was a good one: not counted as a failure
    assert sum(after["main"].labelled("upbx_login_failures_total").values()) - sum(
        before["main"].labelled("upbx_login_failures_total").values()) == 2
    assert "internal error" not in after["main"].labelled("upbx_drops_total")


def test_a_call_over_the_uplink_budget_is_an_admission_refusal(lab):
    before = scrape(lab, "site-d")
    row = place_call(lab, "401", "301", "m-refused", callee_phone=False)
    assert row["cause"] == "network busy", row
    after = scrape(lab, "site-d")
    assert (after.value("upbx_admission_refusals_total", reason="uplink budget")
            - before.value("upbx_admission_refusals_total", reason="uplink budget")) == 1
    assert after.value("upbx_uplink_budget_bits_per_second") == 1000
    # the call had begun at site d (its SETUP taken) when admission refused it: it ended "network busy"
    ended = after.labelled("upbx_calls_ended_total")
    assert ended.get(("network busy", "relay"), 0) - before.labelled("upbx_calls_ended_total").get(
        ("network busy", "relay"), 0) == 1


def test_sysinfo_and_bandwidth_are_reported_per_host(lab):
    main_version = scrape(lab, "main").value("upbx_sysinfo_version")
    assert main_version >= 1
    for site in ("site-a", "site-b"):
        s = scrape(lab, site)
        assert s.value("upbx_sysinfo_version") == main_version
        assert s.value("upbx_sysinfo_lag_seconds") >= 0
        # the WAN carried this host's signalling and calls, in both directions
        assert s.value("upbx_traffic_bytes_total", group="wan", direction="out") > 0
        assert s.value("upbx_traffic_bytes_total", group="wan", direction="in") > 0
    main = scrape(lab, "main")
    assert main.value("upbx_traffic_bytes_total", group="site a", direction="in") > 0
    # every metric of the doc's table is served, named as it says
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "operations.md")) as f:
        doc = f.read()
    for name in set(main.families) | set(scrape(lab, "site-a").families):
        if name.startswith("upbx_"):
            assert "`%s" % name in doc, name


def test_a_bad_metrics_setting_names_the_file_the_key_and_the_problem(tmp_path):
    path = tmp_path / "main.toml"
    path.write_text('[main]\n[metrics]\nport = 70000\n')
    with pytest.raises(ConfigError) as exc:
        load_main_config(path)
    assert str(exc.value) == "%s: key 'metrics.port': expected 0..65535, got 70000" % path
    path.write_text('[main]\n[metrics]\nport = 9464\naddress = "localhost:1"\n')
    with pytest.raises(ConfigError) as exc:
        load_main_config(path)
    assert str(exc.value) == '%s: key \'metrics.address\': expected an IPv4 or IPv6 address, got "localhost:1"' % path
    path.write_text('[main]\n[metrics]\nprot = 9464\n')
    with pytest.raises(ConfigError, match=r"key 'metrics.prot': unknown key \(did you mean 'metrics.port'\?\)"):
        load_main_config(path)
    remote = tmp_path / "remote.toml"
    remote.write_text('[remote]\nname = "a"\nsecret = "%s"\nmain = "127.0.0.1:4569"\n[metrics]\nport = 9464\n'
                      % ("00" * 16))
    config = load_remote_config(remote)
    assert (config.metrics_address, config.metrics_port) == ("127.0.0.1", 9464)
    assert load_main_config(_plain(tmp_path)).metrics_port == 0


def _plain(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text("[main]\n")
    return path


def test_a_metrics_port_in_use_stops_the_daemon_with_the_reason(tmp_path):
    import subprocess
    import sys

    from upbx.tools.lab import ROOT, free_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "main.toml"
        config.write_text('[main]\nlisten = "127.0.0.1:%d"\ndatabase = ":memory:"\n[metrics]\nport = %d\n'
                          % (free_port(), port))
        out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "main", "--config", str(config)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    # the listener is one of the daemon's services (host/daemon.py): the daemon logged its start and stop
    # before it; its last line is the reason
    assert out.stderr.strip().splitlines()[-1] == (
        "upbx main: metrics: cannot listen on 127.0.0.1:%d: Address already in use" % port)
