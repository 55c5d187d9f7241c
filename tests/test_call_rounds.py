"""host/call_rounds.py: the calls a tick looks at (the main host's ring timeouts, the relay workers' scan)."""
from upbx.host.call_rounds import CallRounds


class Call:
    def __init__(self, call_id):
        self.call_id = call_id
        self.serial = call_id   # as Switch.new_call numbers them: growing with each call made


def _round(rounds, ticks):
    """The ids one round gave, tick by tick; the round must begin at its first tick and not again."""
    looked = []
    for tick in range(ticks):
        part, began = rounds.part()
        assert began == (tick == 0), tick
        looked += [c.call_id for c in part]
    return looked


def test_new_calls_come_once_and_every_call_comes_once_a_round():
    calls = {i: Call(i) for i in range(25)}
    rounds = CallRounds(calls, 10)
    assert [c.call_id for c in rounds.new()] == list(range(24, -1, -1))   # newest first
    assert rounds.new() == []
    # 25 calls in slices of 3: all of them, each once, in 9 ticks (the 10th begins the next round)
    assert sorted(_round(rounds, 9)) == list(range(25))
    calls[25] = Call(25)
    del calls[3]
    assert [c.call_id for c in rounds.new()] == [25]
    # the next round is of the calls there are then: the one gone is not in it
    assert sorted(_round(rounds, 9)) == sorted(calls)
    # the newest call gone: the next one made is still new, and the older ones are not again
    del calls[25]
    calls[26] = Call(26)
    assert [c.call_id for c in rounds.new()] == [26] and rounds.new() == []


def test_the_switch_numbers_its_calls_so_new_gives_each_once_newest_first():
    from upbx.host.core import Stats
    from upbx.host.switch import Switch

    switch = Switch(lambda *a: None, Stats())
    rounds = CallRounds(switch.calls, 10)
    first = switch.new_call("101", "201", 0)
    second = switch.new_call("102", "202", 0)
    assert first.serial < second.serial
    assert rounds.new() == [second, first] and rounds.new() == []
    switch.calls.pop(second.call_id)   # the newest call ends before the next is made
    third = switch.new_call("103", "203", 0)
    assert rounds.new() == [third]
