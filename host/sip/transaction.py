"""Transaction timers over UDP (RFC 3261 17), shared by the B2BUA (host/sip/calls.py) and its
transfers (host/sip/refer.py): a request or final response is sent again at T1, 2T1, ... (capped
for non-INVITE requests) until it is answered, and given up after 64*T1."""

T1_MS = 500
T2_MS = 4000
GIVE_UP_MS = 64 * T1_MS


class Retransmit:
    """What waits for an answer: its bytes, where to, when next, until when; cap: the longest
    interval (T2 for non-INVITE requests), None for none."""
    __slots__ = ("data", "addr", "next_at", "interval", "until", "cap")

    def __init__(self, data, addr, now, cap):
        self.data, self.addr, self.cap = data, addr, cap
        self.interval = T1_MS
        self.next_at = now + T1_MS
        self.until = now + GIVE_UP_MS
