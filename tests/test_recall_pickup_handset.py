"""Blind-transfer recall and directed pickup with firmware phones (the MicroPython unix port) and
real daemons (`upbx demo features`' transfer_recall and directed_pickup scenarios,
tools/calls_demo.py, tools/demo_groups.py): what each speaker played (Goertzel on its recording,
every phone sends its own tone) and what the phones showed. tests/test_recall.py and
tests/test_directed_pickup.py cover the host logic on the virtual clock.
"""
import json

import pytest

from upbx.tools import calls_demo, demo_groups
from upbx.tools.lab import LoopbackExchange

RECALL_S = 6


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=30, remote_settings={"transfer_recall_s": RECALL_S}) as lab:
        lab.provision()
        lab.start()
        yield lab


def test_an_unanswered_blind_transfer_rings_the_transferring_phone_with_a_recall_caller_id(lab):
    result = calls_demo.transfer_recall(lab, 2.0)
    assert result["ok"] is True, json.dumps(result)
    assert result["recall_display"] == "incoming call from 301 recall: 201 no answer", result
    # 301 heard 101, the music from the transfer until 101 answered the recall, then 101 again
    assert result["heard"] == {"101": ["301"], "301": ["101", "music", "101"], "201": []}, result
    assert result["recalled_after_s"] >= RECALL_S - 1.5, result    # not before the recall time


def test_pickup_n_on_the_console_takes_the_named_phones_call(lab):
    result = demo_groups.directed_pickup(lab, 2.0)
    assert result["ok"] is True, json.dumps(result)
    # 101's call rang first and rings on; 102 talks with 201, whose call rang at 103
    assert result["first_call_still_ringing"] and result["named_phone_stopped"], result
    assert result["heard"] == {"301": [], "101": [], "201": ["102"], "103": [], "102": ["201"]}, result
