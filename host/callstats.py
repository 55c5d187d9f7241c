"""What a host keeps about its calls for its metrics (host/metrics.py): calls ended by path and
cause, the media frames of ended calls, and each call's set-up time.

Sans-IO and free of prometheus_client, as the core that holds it (host/core.py): the core tells it
when a call ends (`ended`); host/metrics.py reads it at scrape time and asks it first to take the
set-up times of the calls still up (`observe_live`), so nothing runs per frame and nothing is
threaded through the call control.
"""

# seconds, from SETUP in to the first ALERTING or ANSWER passed on: a LAN call rings in tens of
# milliseconds; a call to another site waits for the WAN (and a phone straight at the main host for
# its keepalive-paced NAT path); beyond 5 s something is wrong
SETUP_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def media_path(call):
    """Where a call's media goes as this host sees it: "local" (phone to phone on the LAN, B3),
    "direct" (remote host to remote host, B2: the main host's call.path, a remote host's legs with
    a direct path up), "relay" (through the main host), "voicemail" (a remote host's own while the
    main host is away)."""
    if call.path == "relay":
        for leg in (call.a, call.b):
            if leg is not None and leg.direct is not None and leg.direct[1].up:
                return "direct"
    return call.path


def setup_ms(call):
    """ms from the SETUP to the first ALERTING or ANSWER the host passed on, or None (not yet, or never)."""
    marks = [t for t in (call.alerted_ms, call.answered_ms) if t is not None]
    return min(marks) - call.started_ms if marks else None


class SetupHistogram:
    """Cumulative bucket counts of set-up times (seconds), as a Prometheus histogram reads them."""

    def __init__(self, buckets=SETUP_BUCKETS):
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)   # per bucket, the last one +Inf (not cumulative)
        self.sum = 0.0

    def observe(self, seconds):
        i = 0
        while i < len(self.bounds) and seconds > self.bounds[i]:
            i += 1
        self.counts[i] += 1
        self.sum += seconds

    def cumulative(self):
        """[(upper bound as text, calls at or below it)], ending with ("+Inf", all of them)."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class CallStats:
    """Counts of a host's calls that live longer than the calls (Switch.calls forgets a call as it ends)."""

    def __init__(self):
        self.ended = {}          # (path, cause text) -> calls
        self.ended_frames = 0    # media frames forwarded in calls that have ended
        self.setup = SetupHistogram()
        self._observed = set()   # uids of live calls whose set-up time is in the histogram

    def call_ended(self, call, cause_text):
        """A call ended (HostCore.end_call): counted, its frames kept, its set-up time taken if it had one."""
        self._observe(call)
        self._observed.discard(call.call_id)
        key = (media_path(call), cause_text)
        self.ended[key] = self.ended.get(key, 0) + 1
        self.ended_frames += call.frames

    def look(self, calls):
        """One pass over the live calls at a scrape: their set-up times are taken if they rang or were
        answered since the last look; returns ({(media path, state): calls}, media frames forwarded
        so far, the ended calls' and the live ones': the C fast path counts each frame it relays in
        its call's `frames` too, docs/relay.md)."""
        live = set()
        by_path = {}
        frames = self.ended_frames
        observed = self._observed
        for call in calls:
            live.add(call.call_id)
            if call.call_id not in observed:
                self._observe(call, live=True)
            key = (media_path(call), call.state)
            by_path[key] = by_path.get(key, 0) + 1
            frames += call.frames
        self._observed = observed & live   # a call given a new uid by a transfer (host/lines.py) is not kept
        return by_path, frames

    def _observe(self, call, live=False):
        if call.call_id in self._observed or call.linked is not None:
            return          # a call joined by a transfer goes on: its set-up was its first part's
        ms = setup_ms(call)
        if ms is None:
            return
        self.setup.observe(ms / 1000.0)
        if live:
            self._observed.add(call.call_id)
