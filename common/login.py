"""Client side of a session: log in, keep it alive, log in again with backoff.

Used by phones (to their remote host or the main host) and by remote hosts
(to the main host). Sans-IO: bytes and integer milliseconds in, bytes and
timers out; times are compared with ticks_diff (a handset's clock wraps). Randomness (nonces, backoff jitter) comes from `random_bytes`.

    login.take_events() -> [LoginUp(welcome ies) | LoginDown(reason)] since the last call
"""
from . import wire
from .compat import const, ticks_add, ticks_diff, ticks_earliest
from .reliable import Channel
from .session import (SessionCrypto, handshake_key, parse_handshake, seal_handshake,
                            session_keys, verify_handshake)

IDLE = "idle"
HELLO_SENT = "hello"
RESPONSE_SENT = "response"
UP = "up"
BACKOFF = "backoff"

_HANDSHAKE_RETRY_MS = const(1000)
_HANDSHAKE_TRIES = const(4)


class Event:
    """What a sans-IO object tells its owner (h11's events): a small class whose fields are its
    __slots__, given in that order (Ended(cause)). Nothing more (no __eq__, no __repr__): each
    method is heap on a handset."""

    __slots__ = ()

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values):   # one __init__ for all: a handset's heap
            setattr(self, name, value)


class LoginUp(Event):
    """Logged in; welcome: the IEs of the server's WELCOME. For a phone: registered."""

    __slots__ = ("welcome",)


class LoginDown(Event):
    """The session is gone (reason: text); the login waits, then logs in again."""

    __slots__ = ("reason",)


class Login:
    """One client association with a server, identified by our receive index."""

    def __init__(self, identity_ie, identity, secret, local_index, random_bytes,
                 keepalive_ms=20000, backoff_initial_ms=1000, backoff_max_ms=30000, dead_ms=None):
        self.identity_ie = identity_ie
        self.identity = identity
        self.secret = bytes(secret)
        self.local_index = local_index
        self.random_bytes = random_bytes
        self.keepalive_ms = keepalive_ms
        self.backoff_initial_ms = backoff_initial_ms
        self.backoff_max_ms = backoff_max_ms
        # liveness: when UP and nothing new was heard from the server for keepalive_ms + dead_ms,
        # the session is down (None: only when the channel gives up, ~15 s). New: a frame that
        # authenticates and is not a replay or a duplicate (Channel.new), so an old frame replayed
        # by someone on the path does not keep a dead session alive.
        self.dead_ms = dead_ms
        self.last_heard_ms = None
        self._hs_key = None         # the handshake key, derived at each login and dropped once up
        self.state = IDLE
        self.channel = None
        self._events = []
        self._out = []
        self._timer = None
        self._tries = 0
        self._backoff_ms = backoff_initial_ms
        self._nonce = None
        self._cookie = None
        self._keepalive_at = None
        self.logins = 0

    def take_events(self):
        """The events since the last call, oldest first ([LoginUp | LoginDown])."""
        events = self._events
        if not events:
            return ()
        self._events = []
        return events

    # control

    def start(self, now):
        self._hs_key = handshake_key(self.secret)
        self._nonce = self.random_bytes(16)
        self._cookie = None
        self.channel = self.lost = None
        self.state = HELLO_SENT
        self._tries = 0
        self._send_handshake(now)

    def _identity_ies(self):
        return {self.identity_ie: self.identity, wire.IE_SESSION_INDEX: self.local_index,
                wire.IE_NONCE: self._nonce}

    def _send_handshake(self, now):
        """The HELLO, or once challenged the RESPONSE with its cookie (one function: a handset's heap)."""
        self._tries += 1
        ies = self._identity_ies()
        msg_type = wire.HELLO
        if self.state == RESPONSE_SENT:
            ies[wire.IE_COOKIE] = self._cookie
            msg_type = wire.RESPONSE
        self._out.append(seal_handshake(self._hs_key, 0, msg_type, ies))
        self._timer = ticks_add(now, _HANDSHAKE_RETRY_MS)

    def send(self, msg_type, ies, now):
        """Queue a signalling message on the session; False when not logged in."""
        if self.state != UP:
            return False
        self.channel.send(msg_type, ies, now)
        return True

    def heard(self, now):
        """Note an authenticated frame from the server that bypassed the channel (a trunk frame)."""
        self.last_heard_ms = now

    def set_keepalive(self, keepalive_ms, dead_ms, now):
        """Change the keepalive interval and liveness limit (e.g. tighter while calls are up).

        Tightening sends a PING at once and counts the silence only from now on.
        """
        if keepalive_ms == self.keepalive_ms and dead_ms == self.dead_ms:
            return
        if keepalive_ms < self.keepalive_ms and self.state == UP:
            self._keepalive_at = now
            floor = ticks_add(now, -keepalive_ms)
            if self.last_heard_ms is None or ticks_diff(self.last_heard_ms, floor) < 0:
                self.last_heard_ms = floor
        self.keepalive_ms = keepalive_ms
        self.dead_ms = dead_ms

    def backoff_wait_ms(self):
        """The next wait before logging in again: the backoff minus up to 25 % jitter (never above the cap)."""
        return self._backoff_ms - self.random_bytes(1)[0] * self._backoff_ms // 1024

    def _down(self, reason, now, since=None):
        """Wait, then log in again; `since` (the last HELLO) keeps HELLOs at most one backoff apart."""
        self._events.append(LoginDown(reason))
        self.state = BACKOFF
        # the channel of the session just lost, kept as `lost` until the next login starts: what it never had
        # acknowledged is said again on the next session (a cluster's phone: common/standby.py, common/grace.py)
        self.lost, self.channel = self.channel, None
        at = ticks_add(now if since is None else since, self.backoff_wait_ms())
        self._timer = at if ticks_diff(at, now) > 0 else now
        self._backoff_ms = min(self._backoff_ms * 2, self.backoff_max_ms)

    # I/O

    def receive(self, datagram, now):
        """Messages [(type, ies)] from the server; handshake frames are consumed here.

        Raises wire.DecodeError for malformed input; returns [] for frames that
        fail authentication (the caller counts them).
        """
        msg_type = wire.parse_full(datagram)[3]
        if msg_type == wire.CHALLENGE:
            if self.state != HELLO_SENT:
                return []
            index, _t, ies = parse_handshake(datagram)
            if index != self.local_index or not verify_handshake(self._hs_key, datagram):
                return []
            if wire.IE_COOKIE not in ies:
                raise wire.DecodeError("cookie", wire.FULL_HEADER, "missing in CHALLENGE")
            self._cookie = ies[wire.IE_COOKIE]
            keys = session_keys(self.secret, self._nonce, self._cookie, True)
            self.channel = Channel(SessionCrypto(*keys), 0)
            self.state = RESPONSE_SENT
            self._tries = 0
            self._send_handshake(now)
            return []
        if self.channel is None or msg_type in wire.HANDSHAKE_TYPES:
            return []
        before = self.channel.new
        messages = self.channel.receive(datagram, now)
        if self.channel.new != before:
            self.last_heard_ms = now
        out = []
        for msg_type, ies in messages:
            if msg_type == wire.WELCOME and self.state == RESPONSE_SENT:
                self.channel.peer_index = ies.get(wire.IE_SESSION_INDEX, 0)
                if wire.IE_KEEPALIVE in ies:  # the host knows what it needs: fast on a LAN, sparing at scale
                    self.keepalive_ms = max(500, ies[wire.IE_KEEPALIVE])
                self.state = UP
                self.logins += 1
                self._backoff_ms = self.backoff_initial_ms
                self._keepalive_at = ticks_add(now, self.keepalive_ms)
                self.last_heard_ms = now
                self._timer = None
                self._hs_key = None   # not needed until the next login (a handset's heap is small)
                self._events.append(LoginUp(ies))
            elif self.state == UP:
                out.append((msg_type, ies))
        return out

    def datagrams_to_send(self, now):
        out = self._out
        self._out = []
        if self.channel is not None and self.state in (UP, RESPONSE_SENT):
            out.extend(self.channel.datagrams_to_send(now))
        return out

    def next_timer(self):
        timer = self._timer
        if self.state == UP:
            timer = ticks_earliest(timer, self._keepalive_at)
            if self.dead_ms is not None:
                timer = ticks_earliest(timer, ticks_add(self.last_heard_ms, self.keepalive_ms + self.dead_ms))
            if self.channel is not None:
                timer = ticks_earliest(timer, self.channel.next_timer())
        return timer

    def handle_timer(self, now):
        if self.state in (HELLO_SENT, RESPONSE_SENT) and self._timer is not None and ticks_diff(now, self._timer) >= 0:
            if self._tries >= _HANDSHAKE_TRIES:
                self._down("no answer to login", now, ticks_add(self._timer, -_HANDSHAKE_RETRY_MS))
            else:
                self._send_handshake(now)
        elif self.state == BACKOFF and ticks_diff(now, self._timer) >= 0:
            self.start(now)
        elif self.state == UP:
            if ticks_diff(now, self._keepalive_at) >= 0:
                self._keepalive_at = ticks_add(now, self.keepalive_ms)
                self.channel.send(wire.PING, {}, now)
            self.channel.handle_timer(now)
            if self.channel.failed:
                self._down(self.channel.error, now)
            elif self.dead_ms is not None and ticks_diff(now, self.last_heard_ms) >= self.keepalive_ms + self.dead_ms:
                self._down("nothing heard for %d ms" % ticks_diff(now, self.last_heard_ms), now)
