"""Per-source token buckets: how much unauthenticated work one address may cost a host.

Anyone can send a HELLO naming a known extension; checking it costs a key lookup
and an HMAC, and a cookie for a RESPONSE. Each handshake datagram takes a token
from its source address's bucket, a failed one (unknown identity, bad tag, stale
cookie, replayed login) takes FAILURE_COST more; an empty bucket means the
datagram is dropped before any lookup or crypto. Nothing is answered either way:
unauthenticated input never gets a reply it could learn from.

Buckets are keyed by IP address, not port (a port is free to change). A site's
phones behind one NAT share their public address, so a bucket holds a burst for
a whole site rebooting at once. The table is bounded: full buckets (which an
absent entry equals) are swept, and when it is still too big it starts afresh.
"""

RATE_PER_S = 50          # tokens a source earns per second
BURST = 400              # tokens a source can bank: 200 phones logging in at once (HELLO + RESPONSE)
FAILURE_COST = 10        # extra tokens a failed handshake takes: 5 failures a second are sustained
MAX_SOURCES = 65536      # bucket table size at which full buckets are swept


class TokenBuckets:
    """Token buckets by source IP; time in integer milliseconds, passed in."""

    def __init__(self, rate_per_s=RATE_PER_S, burst=BURST, max_sources=MAX_SOURCES):
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = burst
        self.max_sources = max_sources
        self._buckets = {}   # ip -> [tokens, ms of the last update]

    def take(self, ip, now, cost=1):
        """True when ip has cost tokens (they are taken); False means drop unexamined."""
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._sweep(now)
            bucket = self._buckets[ip] = [float(self.burst), now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_per_ms)
            bucket[1] = now
        if bucket[0] < cost:
            return False
        bucket[0] -= cost
        return True

    def charge(self, ip, cost):
        """Take cost tokens from ip after the fact (a failure), into debt if need be: the source earns
        its way back before its next datagram is examined. (Stopping at an empty bucket let a source
        that sends without pause be examined whenever one token had come in: 50 failures a second
        instead of 5.) The debt is bounded by a burst: a flood never locks a source out for longer
        than BURST / RATE_PER_S seconds."""
        bucket = self._buckets.get(ip)
        if bucket is not None:
            bucket[0] = max(-float(self.burst), bucket[0] - cost)

    def _sweep(self, now):
        """Forget buckets that have refilled (an absent bucket is a full one); if none, forget all."""
        full = [ip for ip, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate_per_ms >= self.burst]
        for ip in full:
            del self._buckets[ip]
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()

    def __len__(self):
        return len(self._buckets)
