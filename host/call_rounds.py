"""The switch's calls looked at a part a tick instead of all of them every tick.

A tick's look at every call grows with the calls (at 1,000-1,500 answered calls ~1 ms a tick on the
bench machine, the relay table held meanwhile: docs/benchmarks.md, relay). `CallRounds` gives a tick
the calls made since the last tick (`new()`, at once) and a slice of the rest (`part()`), so that
every call is looked at once a round of `ticks` ticks. The main host's ring timeouts
(MainHost._ring_calls) and the relay workers' scan (host/relay_workers.py) use one each.
"""


class CallRounds:
    def __init__(self, calls, ticks):
        """calls: the switch's dict, call id -> call, in the order the calls were made (Switch.new_call), each
        with its `serial`, which grows with every call made."""
        self.calls = calls
        self.ticks = ticks
        self.newest = -1      # the serial of the newest call new() has given
        self._round = []      # the calls still to look at in this round
        self._step = 1

    def new(self, pump=None):
        """The calls made since the last call of new(), newest first: a walk back from the newest call to the
        first one given before, nothing kept per call (a set of the calls given, trimmed at each round, took
        0.5-0.8 ms a round at 2,000 calls, the relay table held meanwhile: docs/benchmarks.md, relay, Session 8).
        pump(), when given, at each call given (the main host's relay table relays meanwhile: a burst of calls)."""
        made, newest = [], self.newest
        for call in reversed(self.calls.values()):
            if call.serial <= newest:
                break
            if pump is not None:
                pump()
            made.append(call)
        if made:
            self.newest = made[0].serial
        return made

    def part(self):
        """(this tick's slice of the round, whether a new round began with it): a round is every call there
        was at its start, taken in `ticks` slices."""
        rounds = self._round
        began = not rounds
        if began:
            rounds[:] = self.calls.values()
            self._step = max(1, -(-len(rounds) // self.ticks))
        part = rounds[-self._step:]
        del rounds[-self._step:]
        return part, began
