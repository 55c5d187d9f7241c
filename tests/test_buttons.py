"""Boards without a digit keypad (LyraT, A1S) dial with their buttons: speed-dial numbers from the
system information, `settings.speed_dial` = "BUTTON=NUMBER,...", set with `upbx admin`.

The virtual handset has no buttons; `!button NAME` on its console is what the ESP32 HAL reports
for a press (tests/test_firmware_hal.py checks that side against stand-in pins).
"""
import time

from tests.test_handset import Handset
from upbx.tools.lab import LoopbackExchange


def test_a_button_dials_its_speed_dial_number_answers_and_hangs_up():
    with LoopbackExchange() as lab:
        lab.provision()
        lab.admin("sysinfo", "set", "settings.speed_dial", "key2=301, key3=102,mode=201, bad")
        lab.start()
        callee = Handset(lab, "301", "--answer", tag="sd-301")
        lab.wait_registered("301")
        phone = Handset(lab, "101", tag="sd-101")
        lab.wait_registered("101")
        deadline = time.time() + 10
        while phone.state()["speed_dial"] != {"key2": "301", "key3": "102", "mode": "201"}:
            assert time.time() < deadline, phone.state()
            time.sleep(0.1)
        assert "W phone settings.speed_dial: 'bad' is not BUTTON=NUMBER" in phone.log()
        phone.press("!button key5")           # no number: nothing happens
        phone.wait_line("W phone button key5 has no speed-dial number")
        phone.press("!button key2")
        phone.wait_line("I phone connected")
        callee.wait_line("I phone connected")
        phone.press("!button key2")           # a speed-dial button ends the call it is in
        phone.wait_line("I phone call ended: normal clearing")
        summary = phone.quit()
        callee.quit()
    assert [(c["to"], c["cause"]) for c in summary["calls"]] == [("301", "normal clearing")]


def test_any_button_answers_a_ringing_call():
    with LoopbackExchange() as lab:
        lab.provision()
        lab.start()
        phone = Handset(lab, "102", tag="ans-102")
        lab.wait_registered("102")
        caller = Handset(lab, "101", "--call", "102", "--duration", "1", "--exit-after-call", tag="ans-101")
        phone.wait_line("I phone incoming call from 101")
        phone.press("!button rec")            # the push-to-talk key of a half-duplex board
        phone.wait_line("I phone connected")
        caller.proc.wait(15)
        phone.wait_line("I phone call ended: normal clearing")
        assert phone.quit()["calls"][0]["from"] == "101"
