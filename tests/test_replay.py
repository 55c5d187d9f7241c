"""Replayed datagrams at the daemons: every frame of a phone arrives twice (a replaying relay in the path).

The host must drop each second copy of a media frame (replay window), acknowledge but
not act on each second copy of a signalling frame, and the call must be unaffected.
"""
from upbx.tools.impair import Impairment, Relay
from upbx.tools.lab import LoopbackExchange, audio_match, write_noise_wav


def test_every_datagram_replayed_is_dropped_and_the_call_is_unaffected():
    with LoopbackExchange() as lab:
        lab.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301"]})
        lab.start()
        relay = Relay(("127.0.0.1", 0), ("127.0.0.1", lab.remote_ports["a"]),
                      up=Impairment(seed=1, duplicate=100.0), down=None)
        relay.start()
        try:
            wav = lab.path("101.wav")
            write_noise_wav(wav, 10, 101)
            record = lab.path("rx.g711")
            callee = lab.phone("301", "--answer", "--record-g711", record, "--exit-after-call",
                               "--exit-after", "15", tag="callee")
            lab.wait_registered("301")
            before = lab.status("site-a")["stats"]["drops"].get("media rejected", 0)
            argv_host = "127.0.0.1:%d" % relay.address[1]
            lab.host_of = lambda number: argv_host if number == "101" else "127.0.0.1:%d" % lab.main_port
            caller = lab.phone("101", "--send", wav, "--call", "301", "--call-after", "0.5", "--duration", "3",
                               "--exit-after-call", "--exit-after", "14", tag="caller")
            caller.wait(20)
            callee.wait(20)
        finally:
            relay.stop()
        status = lab.status("site-a")
        summary = lab.summary("caller")
        sent = summary["calls"][0]["frames_sent"]
        assert summary["calls"][0]["cause"] == "normal clearing"
        assert relay.counters["up"]["duplicated"] >= sent
        # every replayed media frame was refused by the replay window, none forwarded twice
        assert status["stats"]["drops"].get("media rejected", 0) - before >= sent - 2
        match, matched = audio_match(wav, record, sent)
        assert match and matched >= sent - 5
        assert "internal error" not in status["stats"]["drops"]
