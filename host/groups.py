"""Ring groups, hunt groups, paging, intercom and pickup (docs/features.md, "Groups").

A group is a number that rings other numbers, kept in the main host's directory and copied to
the remote hosts of the sites its members are on (their site cache):

    {"number": "600", "strategy": "ring-all", "members": ["101", "102", "301"], "ring_s": 15,
     "overflow": None, "site": None}

- **ring-all**: every member rings at once; the first to answer gets the call, the others stop
  ringing with cause 14 "answered elsewhere". After ring_s seconds unanswered, or when every
  member is busy, the call overflows (or the caller hears "no answer" / "busy").
- **hunt**: the members one after the other, in their order, ring_s seconds each; a busy or
  unreachable member is skipped at once.
- **page**: every idle phone of one site answers by itself with its microphone muted (IE answer
  2): the pager's voice, copied by the site's remote host to each, one way (`Switch.forward`).
- **pickup**: rings nobody; its members (of one site) pick up each other's calls with *8, and only
  those (a phone in no pickup group picks up any call ringing on its site).

A call to a group is a host's `Call` whose leg b stays None while it rings: the legs towards the
members ringing are `GroupCall.forks` (host.switch legs of the same call). `GroupCalls` runs them
for one host: the host routes a SETUP for a group number to `start()`, passes every call message
to `call_message()` first, and calls `tick()` every 20 ms. What depends on the host (where a
member's phone is, where an overflow goes, the media path once answered) it asks the host:

    host.group_target(number, call) -> (link, None) or (None, cause); (None, PENDING) while the host
                                       asks where the member is (a cluster's node: Redis, another node)
    host.group_overflow(call, number, now)      (the call, without leg b, goes on to number)
    host.group_answered(call, now)              (leg b is set: the media path, as for any call)

`GroupCalls.pickup()` answers a call ringing at another phone of the picker's pickup group (*8),
or at the one phone named (**N, directed pickup: any phone of the picker's site).
"""
from upbx.common import wire
from upbx.common.call import (ALERTING_RECEIVED, ALERTING_SENT, ANSWER_RECEIVED, ANSWER_SENT, CALLING, CONNECTED,
                              RELEASE_RECEIVED, RINGBACK, SETUP_RECEIVED)
from upbx.host.lines import picked_up_party
from upbx.host.switch import send_on_leg

STRATEGIES = ("ring-all", "hunt", "page", "pickup")
DEFAULT_RING_S = 15
RING_S = (3, 300)           # least and most seconds of ringing (ring-all: the group; hunt: each member)
MAX_MEMBERS = 32
PICKUP_CODE = "*8"
DIRECTED_PICKUP_CODE = "**"  # **N: the call ringing at extension N of the picker's site (directed pickup)
INTERCOM_CODE = "*80"       # *80N: intercom to extension N (answers by itself, two-way)
ANSWER_INTERCOM = 1         # IE answer values (docs/protocol.md)
ANSWER_PAGE = 2
SITE_STRATEGIES = ("page", "pickup")   # groups of one site's phones
PENDING = "pending"         # group_target's cause while the host asks where a member is (host/cluster/trunk.py)
LOCATE_MS = 1500            # a member whose place is asked for is rung once known, skipped (unreachable) after this


def pickup_scope(picker, site_numbers, groups):
    """The numbers whose ringing calls picker may pick up: the members of its pickup groups, or,
    when it is in none, every phone of its site (site_numbers). groups: definitions (dicts)."""
    scope = set()
    for group in groups:
        if group["strategy"] == "pickup" and picker in group["members"]:
            scope.update(group["members"])
    return scope or set(site_numbers)


def directed_pickup_target(called):
    """The extension a directed pickup code (**N) names, else None."""
    number = called[2:]
    if called.startswith(DIRECTED_PICKUP_CODE) and number.isdigit() and len(number) <= 15:
        return number
    return None


class GroupError(ValueError):
    """A group definition that makes no sense; str() says which field and what is wrong."""


def _number(text, what):
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or not 1 <= len(text) <= 15:
        raise GroupError("bad %s %r: 1 to 15 digits" % (what, text))
    return text


def check(group):
    """A group definition (from the directory, a peer or `upbx admin`), checked and completed."""
    if not isinstance(group, dict):
        raise GroupError("a group must be an object")
    unknown = set(group) - {"number", "strategy", "members", "ring_s", "overflow", "site"}
    if unknown:
        raise GroupError("unknown group field %r" % sorted(unknown)[0])
    out = {"number": _number(group.get("number"), "group number"), "strategy": group.get("strategy", "ring-all"),
           "members": list(group.get("members") or ()), "ring_s": group.get("ring_s", DEFAULT_RING_S),
           "overflow": group.get("overflow"), "site": group.get("site")}
    if out["strategy"] not in STRATEGIES:
        raise GroupError("bad strategy %r: use %s" % (out["strategy"], ", ".join(STRATEGIES)))
    for member in out["members"]:
        _number(member, "member")
    if len(set(out["members"])) != len(out["members"]):
        raise GroupError("member %s is listed twice" % next(m for m in out["members"] if out["members"].count(m) > 1))
    if out["number"] in out["members"]:
        raise GroupError("group %s cannot be its own member" % out["number"])
    if len(out["members"]) > MAX_MEMBERS:
        raise GroupError("%d members: at most %d" % (len(out["members"]), MAX_MEMBERS))
    if not out["members"] and out["strategy"] != "page":
        raise GroupError("a %s group needs members" % out["strategy"])
    if out["strategy"] == "pickup" and (out["overflow"] is not None or out["ring_s"] != DEFAULT_RING_S):
        raise GroupError("a pickup group rings nobody: no ring time, no overflow")
    ring_s = out["ring_s"]
    if isinstance(ring_s, bool) or not isinstance(ring_s, int) or not RING_S[0] <= ring_s <= RING_S[1]:
        raise GroupError("bad ring time %r: %d to %d seconds" % (ring_s, RING_S[0], RING_S[1]))
    if out["overflow"] is not None:
        _number(out["overflow"], "overflow number")
        if out["overflow"] == out["number"]:
            raise GroupError("group %s cannot overflow to itself" % out["number"])
        if out["strategy"] == "page":
            raise GroupError("a page group has no overflow")
    if (out["site"] is not None) != (out["strategy"] in SITE_STRATEGIES):
        raise GroupError("a page or pickup group, and only those, has a site")
    return out


def intercom_target(called):
    """The extension an intercom code (*80N) calls, else None."""
    if called.startswith(INTERCOM_CODE) and called[3:].isdigit() and len(called) <= 18:
        return called[3:]
    return None


class GroupCall:
    """A call to a group while it rings (and a page call while it lasts): call.group."""

    def __init__(self, group, now):
        self.number = group["number"]
        self.strategy = group["strategy"]
        self.members = list(group["members"])
        self.ring_ms = group["ring_s"] * 1000
        self.overflow = group["overflow"]
        self.forks = []           # legs towards members ringing (a page: answered too)
        self.next = 0             # the next member to try (hunt)
        self.started_ms = now
        self.offered_ms = now     # when the member now ringing was offered (hunt)
        self.alerted = False      # a member rang: the caller has heard ALERTING
        self.answered = False
        self.causes = []          # why members did not take the call
        self.name = ""            # the caller's name, in each member's SETUP
        self.answer = None        # the members answer by themselves: ANSWER_INTERCOM, ANSWER_PAGE
        self.waiting = []         # members whose place the host is asking for (PENDING): rung when known
        self.wait_until = None    # ... until then; after it they are skipped as unreachable

    @property
    def page(self):
        return self.strategy == "page"


class GroupCalls:
    """The group calls one host switches (see the module's docstring for what the host provides)."""

    def __init__(self, host):
        self.host = host
        self.switch = host.switch
        self.active = []          # calls with a GroupCall still ringing, or a page going on

    def start(self, call, group, name, now, answer=None):
        """Ring group (a checked definition) for call, whose leg a is set up and leg b is None."""
        g = call.group = GroupCall(group, now)
        g.name = name or ""
        g.answer = ANSWER_PAGE if g.page else answer
        self.active.append(call)
        self.host.log.info("group-call", call=call.uid, group=g.number, strategy=g.strategy, caller=call.caller)
        if g.strategy == "hunt":
            self._hunt(call, now)
        else:
            for member in g.members:
                if member != call.caller and self._offer(call, member, now) == PENDING:
                    g.waiting.append(member)
            if not g.forks and not g.waiting:
                self._exhausted(call, now)

    def _offer(self, call, number, now):
        """A leg towards member number: True; False (and why, in g.causes) when it cannot ring now;
        PENDING while the host asks where it is (at most LOCATE_MS from the first ask: then False)."""
        g = call.group
        link, cause = self.host.group_target(number, call)
        if cause == PENDING:
            if g.wait_until is None:
                g.wait_until = now + LOCATE_MS
            if now < g.wait_until:
                return PENDING
            self.host.stats.count("group: member not located in time")
            link, cause = None, wire.CAUSE_UNREACHABLE
        if link is not None and link is call.a.link and link.kind == "phone":
            link, cause = None, wire.CAUSE_BUSY     # the caller's own phone (another name for it)
        if link is not None:
            cause = self.switch.admit(link)
        if cause is not None:
            g.causes.append(cause)
            return False
        extra = {wire.IE_ANSWER: g.answer} if g.answer else None
        leg = self.switch.offer(call, link, now, g.name, local=call.path == "local", fork=True, extra=extra,
                                called=number)
        leg.number = number
        g.forks.append(leg)
        g.offered_ms = now
        return True

    def _hunt(self, call, now):
        """The next member that can ring, in order; none left: the group is exhausted."""
        g = call.group
        while g.next < len(g.members):
            member = g.members[g.next]
            g.next += 1
            offered = self._offer(call, member, now) if member != call.caller else False
            if offered == PENDING:      # its place is asked for: the hunt goes on from it then (tick)
                g.waiting = [member]
                return
            if offered:
                return
        self._exhausted(call, now)

    def _located(self, call, now):
        """tick: the members whose place was asked for are rung once the host knows it (or skipped as
        unreachable after LOCATE_MS); a hunt then goes on, a ring-all nobody rings for is exhausted."""
        g = call.group
        waiting, g.waiting = g.waiting, []
        rang = False
        for member in waiting:
            offered = self._offer(call, member, now)
            if offered == PENDING:
                g.waiting.append(member)
            rang = rang or offered is True
        if g.waiting:
            return
        g.wait_until = None
        if g.strategy == "hunt" and not rang:
            self._hunt(call, now)
        elif not g.forks:
            self._exhausted(call, now)

    def _drop(self, call, leg, cause, now):
        call.group.forks.remove(leg)
        self.switch.drop_leg(leg, cause, now)

    def _exhausted(self, call, now):
        """Nobody took the call: it overflows, or the caller hears why."""
        g = call.group
        self._finish(call)
        if g.overflow is not None:
            self.host.log.info("group-overflow", call=call.uid, group=g.number, to=g.overflow)
            return self.host.group_overflow(call, g.overflow, now)
        cause = wire.CAUSE_NO_ANSWER if g.alerted or wire.CAUSE_NO_ANSWER in g.causes else (
            wire.CAUSE_BUSY if wire.CAUSE_BUSY in g.causes or not g.causes else g.causes[0])
        self.switch.release(call.a, cause, now)
        self.host.end_call(call, cause, now)

    def _finish(self, call):
        """The group no longer rings: the call goes on as any call (or ends)."""
        if call in self.active:
            self.active.remove(call)
        call.group = None

    def call_message(self, leg, msg_type, ies, now):
        """A call message on a leg of a group call that rings (or a page): handled here, True;
        False for every other call (the host handles it as usual)."""
        call = leg.call
        g = call.group
        if g is None or (g.answered and not g.page):
            return False
        if leg is call.a:
            if msg_type == wire.RELEASE:
                leg.apply(RELEASE_RECEIVED)
                cause = ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL)
                self.host.end_call(call, cause, now)      # released_forks() tells the members
            else:
                self.host.stats.drop("message out of turn")
            return True
        if leg not in g.forks:
            self.host.stats.drop("message out of turn")
            return True
        if msg_type == wire.ALERTING:
            if leg.apply(ALERTING_RECEIVED) is None:
                self.host.stats.drop("message out of turn")
            elif not g.alerted and call.a.apply(ALERTING_SENT) is not None:
                g.alerted = True
                call.alerted_ms = now
                send_on_leg(call.a, wire.ALERTING, {}, now)
        elif msg_type == wire.ANSWER:
            if leg.apply(ANSWER_RECEIVED) is None:
                self.host.stats.drop("message out of turn")
            elif g.page:
                self._page_answered(call, leg, now)
            else:
                self._answered(call, leg, now)
        elif msg_type == wire.RELEASE:
            leg.apply(RELEASE_RECEIVED)
            self._fork_gone(call, leg, ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL), now)
        return True

    def _fork_gone(self, call, leg, cause, now):
        """A member's leg ended from its side (busy, rejected, its phone or host gone)."""
        g = call.group
        g.forks.remove(leg)
        self.switch.forget_leg(leg, now)
        g.causes.append(cause)
        if g.page:
            self._page_left(call, leg, now)
        elif g.strategy == "hunt":
            self._hunt(call, now)
        elif not g.forks and not g.waiting:
            self._exhausted(call, now)

    def link_gone(self, link, now):
        """link (a member's phone, or the remote host it is behind) is gone: its legs leave their group calls."""
        for call in list(self.active):
            g = call.group
            for leg in [f for f in (g.forks if g is not None else ()) if f.link is link]:
                if call.group is g:
                    self._fork_gone(call, leg, wire.CAUSE_UNREACHABLE, now)

    def _answered(self, call, leg, now, cause=wire.CAUSE_ANSWERED_ELSEWHERE):
        """leg took the call: the other members stop ringing, the caller is connected to it."""
        g = call.group
        for other in list(g.forks):
            if other is not leg:
                self._drop(call, other, cause, now)
        g.forks = []
        g.waiting = []
        g.answered = True
        self._finish(call)
        call.b = leg
        call.callee = leg.number or call.callee
        self.switch.answered(call, now)
        if call.alerted_ms is None:
            call.alerted_ms = now
        if call.a.apply(ANSWER_SENT) is not None:
            send_on_leg(call.a, wire.ANSWER, {}, now)
        self.host.log.info("group-answered", call=call.uid, group=g.number, by=call.callee)
        self.host.group_answered(call, now)

    def released_forks(self, call, cause, now):
        """The call ends (the host's end_call): every member still ringing (or paged) hears it."""
        g = call.group
        if g is None:
            return
        for leg in list(g.forks):
            self._drop(call, leg, cause, now)
        self._finish(call)

    def tick(self, now):
        """Hunt: the next member after ring_s; ring-all: overflow after ring_s; a page nobody answered ends."""
        for call in list(self.active):
            g = call.group
            if g is None or (g.answered and not (g.page and g.waiting)):
                continue                # (a page goes on: a member at another node joins once located)
            if g.waiting:
                self._located(call, now)
                if call.group is not g or g.strategy == "hunt" or g.answered:
                    continue
            if g.strategy == "hunt" and now - g.offered_ms >= g.ring_ms:
                for leg in list(g.forks):
                    self._drop(call, leg, wire.CAUSE_NO_ANSWER, now)
                g.causes.append(wire.CAUSE_NO_ANSWER)
                self._hunt(call, now)
            elif g.strategy != "hunt" and now - g.started_ms >= g.ring_ms:
                for leg in list(g.forks):
                    self._drop(call, leg, wire.CAUSE_NO_ANSWER, now)
                g.causes.append(wire.CAUSE_NO_ANSWER)
                self._exhausted(call, now)

    def pickup(self, link, ies, now, scope, picker_number=None):
        """*8 from link's phone (ies: its SETUP): the longest-ringing call to another phone whose
        number is in scope (the picker's pickup group) is answered by the picker; False when
        nothing rings there. picker_number: the picker when link is not its phone (a cluster's
        node trunk: **N from a phone at another node, host/main_host.py)."""
        switch = self.switch
        best = None
        for call in switch.calls.values():
            if call.answered_ms is not None or call.a is None:
                continue
            legs = call.group.forks if call.group is not None else (call.b,) if call.b is not None else ()
            for leg in legs:
                if (leg.link.kind == "phone" and leg.link is not link and leg.link.name in scope
                        and leg.state in (CALLING, RINGBACK)
                        and (best is None or call.started_ms < best[0].started_ms)):
                    best = (call, leg)
        if best is None or switch.admit(link) is not None:
            return False
        call, rung = best
        picker = switch.new_leg(link, ies[wire.IE_MEDIA_KEY], 1, call)
        picker.learn_peer(ies[wire.IE_CALL_NO])
        picker.apply(SETUP_RECEIVED)
        picker.apply(ANSWER_SENT)
        picker.number = picker_number or link.name
        send_on_leg(picker, wire.ANSWER, {}, now)
        picked_up_party(self.host, call, picker, now)     # who talks to whom now, before the caller's ANSWER
        self.host.log.info("call-picked-up", call=call.uid, rang=rung.link.name, by=picker.number)
        if call.group is not None:          # a group's member: the others stop ringing
            call.group.forks.remove(rung)
            switch.drop_leg(rung, wire.CAUSE_PICKED_UP, now)
            call.group.forks.append(picker)
            self._answered(call, picker, now)
            return True
        switch.drop_leg(rung, wire.CAUSE_PICKED_UP, now)
        call.b = picker
        call.callee = picker.number
        call.noanswer = None                # no forward on no answer any more
        switch.answered(call, now)
        if call.alerted_ms is None:
            call.alerted_ms = now
        if call.a.apply(ANSWER_SENT) is not None:
            send_on_leg(call.a, wire.ANSWER, {}, now)
        self.host.group_answered(call, now)
        return True

    # paging: the pager's voice to every paged phone, one way (host.switch.Switch.forward)

    def _page_answered(self, call, leg, now):
        g = call.group
        call.fanout = g.forks
        if not g.answered:     # the first paged phone: the pager is connected and may speak
            g.answered = True
            call.b = leg
            call.alerted_ms = now
            self.switch.answered(call, now)
            if call.a.apply(ANSWER_SENT) is not None:
                send_on_leg(call.a, wire.ANSWER, {}, now)
        self.host.log.info("page-joined", call=call.uid, group=g.number, phone=leg.number)

    def _page_left(self, call, leg, now):
        """A paged phone hung up: the page goes on for the others; none left: it ends."""
        g = call.group
        if call.b is leg:
            call.b = next((f for f in g.forks if f.state == CONNECTED), None)
        if not g.forks:
            self._finish(call)
            cause = wire.CAUSE_NORMAL if g.answered else (g.causes[0] if g.causes else wire.CAUSE_UNREACHABLE)
            self.switch.release(call.a, cause, now)
            self.host.end_call(call, cause, now)
        elif call.b is None:
            call.b = g.forks[0]

