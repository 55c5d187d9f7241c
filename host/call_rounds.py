"""The switch's calls looked at a part a tick instead of all of them every tick.

A tick's look at every call grows with the calls (at 1,000-1,500 answered calls ~1 ms a tick on the
bench machine, the relay table held meanwhile: docs/benchmarks.md, relay). `CallRounds` gives a tick
the calls made since the last tick (`new()`, at once) and a slice of the rest (`part()`), so that
every call is looked at once a round of `ticks` ticks. The main host's ring timeouts
(MainHost._ring_calls) and the relay workers' scan (host/relay_workers.py) use one each.
"""


class CallRounds:
    def __init__(self, calls, ticks):
        """calls: the switch's dict, call id -> call (a dict keeps the order the calls were made in)."""
        self.calls = calls
        self.ticks = ticks
        self.seen = set()     # ids of the calls new() has given (forgotten at a round's start once gone)
        self._round = []      # the calls still to look at in this round
        self._step = 1

    def new(self):
        """The calls made since the last call of new(), oldest last."""
        made, seen = [], self.seen
        for call in reversed(self.calls.values()):
            if call.call_id in seen:
                break
            seen.add(call.call_id)
            made.append(call)
        return made

    def part(self):
        """(this tick's slice of the round, whether a new round began with it): a round is every call there
        was at its start, taken in `ticks` slices."""
        rounds = self._round
        began = not rounds
        if began:
            self.seen.intersection_update(self.calls)
            rounds[:] = self.calls.values()
            self._step = max(1, -(-len(rounds) // self.ticks))
        part = rounds[-self._step:]
        del rounds[-self._step:]
        return part, began
