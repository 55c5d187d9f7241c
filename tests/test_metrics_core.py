"""The metrics collector (host/metrics.py) over the real host cores in one process (tests/inprocess.py,
virtual clock): what the end-to-end test (tests/test_metrics.py) cannot pin to the millisecond, a
call's set-up time in its bucket and the system information fan-out lag while a phone hears nothing.
"""
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest

from upbx.host.callstats import SETUP_BUCKETS
from upbx.host.directory import Directory
from upbx.host.metrics import HostCollector
from tests.inprocess import World
from tests.test_metrics import Scrape


def scrape(core):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(core))
    return Scrape(generate_latest(registry).decode())


def test_a_calls_set_up_time_lands_in_its_bucket_once_and_the_call_is_counted_as_it_ends(tmp_path):
    world = World(tmp_path)
    try:
        world.start_remote()
        caller, callee = world.add_phone("301", 1), world.add_phone("302", 2)
        world.run(500)
        caller.phone.dial("302", world.net.now)
        world.run_until(lambda: any(c.state == "alerting" for c in world.main.switch.calls.values()), 1000, "ringing")
        (call,) = world.main.switch.calls.values()
        seconds = (call.alerted_ms - call.started_ms) / 1000.0
        ringing = scrape(world.main)
        assert ringing.labelled("upbx_calls") == {("relay", "alerting"): 1.0}
        assert ringing.value("upbx_call_setup_seconds_count") == 1
        assert ringing.value("upbx_call_setup_seconds_sum") == pytest.approx(seconds)
        for bound in SETUP_BUCKETS:
            assert ringing.value("upbx_call_setup_seconds_bucket", le=repr(bound)) == (1 if seconds <= bound else 0)
        callee.phone.answer(world.net.now)
        world.run(400)
        assert scrape(world.main).value("upbx_call_setup_seconds_count") == 1   # the answer adds nothing
        caller.phone.hangup(world.net.now)
        world.run(200)
        ended = scrape(world.main)
        assert ended.value("upbx_call_setup_seconds_count") == 1
        assert ended.labelled("upbx_calls_ended_total") == {("normal clearing", "relay"): 1.0}
        # 400 ms answered: 20 frames each way, each passed from one phone's leg to the other's
        relayed = ended.value("upbx_frames_relayed_total")
        assert relayed == len(caller.received) + len(callee.received) and relayed >= 30
    finally:
        world.close()


def test_the_sysinfo_lag_grows_while_a_phone_has_not_acknowledged_and_is_0_once_it_has(tmp_path):
    world = World(tmp_path)
    try:
        world.start_remote()
        world.run(1100)
        phone = world.add_phone("101", 1)
        world.run(1000)
        assert scrape(world.a).value("upbx_sysinfo_phones_behind") == 0
        version = world.main.status()["sysinfo_version"]
        with Directory(tmp_path / "main.sqlite") as d:
            d.set_sysinfo("announcement", "the canteen is closed")
        phone.deaf_until = world.net.now + 1100 + 3000
        world.run_until(lambda: world.a.cache.sysinfo["version"] != version, 1100, "site a has the new version")
        sent_at = world.net.now
        world.run(1000)
        behind = scrape(world.a)
        assert behind.value("upbx_sysinfo_version") == scrape(world.main).value("upbx_sysinfo_version") > version
        assert behind.value("upbx_sysinfo_phones_behind") == 1
        assert behind.value("upbx_sysinfo_lag_seconds") == pytest.approx((world.a.now - sent_at) / 1000.0, abs=0.03)
        world.run_until(lambda: scrape(world.a).value("upbx_sysinfo_phones_behind") == 0, 10000, "acknowledged")
        assert scrape(world.a).value("upbx_sysinfo_lag_seconds") == 0
    finally:
        world.close()


def test_a_local_call_over_the_sites_quota_is_an_admission_refusal_at_whichever_host_decides(tmp_path):
    from tests.test_local_decision import _answers
    world = World(tmp_path, site_a={"local_calls": True, "local_call_quota": 1},
                  extensions=(("103", "a"), ("104", "a")), barred=("103",))
    try:
        world.start_remote()
        for i, number in enumerate(("101", "102", "103", "104")):
            world.add_phone(number, 20 + i)
        world.run(1000)
        by_main = _answers(world)           # one call over the quota (B3: the main host refuses it)
        assert by_main[("104", "103", True)] == "network busy"
        assert scrape(world.main).labelled("upbx_admission_refusals_total") == {("local call quota",): 1.0}
        assert scrape(world.a).labelled("upbx_admission_refusals_total") == {}
        world.main_away()
        world.run(3000)
        by_cache = _answers(world)          # the same, decided by site a from its cached directory (B4)
        assert by_cache[("104", "103", True)] == "network busy"
        assert scrape(world.a).labelled("upbx_admission_refusals_total") == {("local call quota",): 1.0}
        assert scrape(world.a).value("upbx_main_host_up") == 0
    finally:
        world.close()
