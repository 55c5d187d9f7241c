"""The auto-attendant: a number the main host answers with a prompt, then routes by the digit
the caller presses (docs/features.md, Auto-attendant).

Configured with `upbx admin attendant set NUMBER --route 1=101 --route 2=600 --route 9=*98101
[--prompt-text TEXT | --prompt FILE.wav]`, kept in the voicemail database (host/voicemail.py).
A digit routes the call as a forward does (the target's forwarding, do not disturb and
voicemail apply); the caller hears ring-back until the target answers. An unknown digit says so
and plays the prompt again; no digit after the prompt has played PLAYS times ends the call.
"""
import math
import struct

from upbx.common.g711 import ulaw_encode
from upbx.host import prompts
from upbx.host.voicemail import DEPOSIT, RETRIEVE, Session, VoicemailError

PLAYS = 3
PAUSE_MS = 4000          # silence after each prompt, for the caller's digit
DIGITS = "0123456789*#"


def default_prompt(routes):
    """The spoken prompt when none was given: "For 101, press 1. ..." from the routes."""
    parts = []
    for digit, number in sorted(routes.items()):
        if number == RETRIEVE:
            what = "your voicemail"
        elif number.startswith(DEPOSIT):
            what = "the voicemail of %s" % " ".join(number[3:])
        else:
            what = " ".join(number)
        parts.append("For %s, press %s." % (what, digit))
    return "Welcome. " + " ".join(parts)


def check_routes(pairs):
    """{digit: number} from ["1=101", ...]; VoicemailError naming the bad one."""
    routes = {}
    for pair in pairs:
        digit, sep, number = pair.partition("=")
        if not sep or digit not in DIGITS or len(digit) != 1:
            raise VoicemailError("bad route %r: DIGIT=NUMBER, DIGIT one of %s" % (pair, DIGITS))
        body = number[3:] if number.startswith(DEPOSIT) else number
        if number != RETRIEVE and not (body.isdigit() and 1 <= len(body) <= 15):
            raise VoicemailError("bad route %r: NUMBER is an extension, a group, *98N or *97" % pair)
        if digit in routes:
            raise VoicemailError("digit %s routed twice" % digit)
        routes[digit] = number
    if not routes:
        raise VoicemailError("an attendant needs at least one --route DIGIT=NUMBER")
    return routes


def ringback_frames():
    """North American ring-back (440 + 480 Hz, 2 s on, 4 s off) as mu-law frames, one cycle."""
    rate = prompts.RATE
    on = 2 * rate
    pcm = b"".join(struct.pack("<h", int(3000 * (math.sin(2 * math.pi * 440 * i / rate) +
                                                 math.sin(2 * math.pi * 480 * i / rate)))) for i in range(on))
    return prompts.frames_of_ulaw(ulaw_encode(pcm)) + [prompts.SILENCE] * 200


class Attendant:
    """One attendant number: its routes and its prompt (an operator's mu-law, or text to speak)."""

    def __init__(self, number, data, prompt):
        self.number = number
        self.routes = data["routes"]
        self.text = data.get("prompt_text") or default_prompt(self.routes)
        self.ulaw = prompt

    def play_prompt(self, session):
        if self.ulaw:
            session.play(prompts.frames_of_ulaw(self.ulaw))
        else:
            session.say(self.text)

    def session(self, endpoint, leg, caller, now):
        return AttendantSession(endpoint, leg, caller, now, self)


class AttendantSession(Session):
    def __init__(self, endpoint, leg, caller, now, attendant):
        Session.__init__(self, endpoint, leg, caller, now)
        self.attendant = attendant
        self.plays = 0
        self.silent_since = None

    def _prompt(self, now):
        self.plays += 1
        self.attendant.play_prompt(self)
        self.silent_since = None

    def on_answer(self, now):
        self._prompt(now)

    def on_played(self, now):
        self.silent_since = now

    def on_tick(self, now):
        if self.silent_since is not None and now - self.silent_since >= PAUSE_MS:
            if self.plays >= PLAYS:
                self.hangup = True
                self.silent_since = None
            else:
                self._prompt(now)

    def on_dtmf(self, digit, now):
        number = self.attendant.routes.get(digit)
        self.interrupt()
        if number is None:
            self.say("Not a choice.")
            return self._prompt(now)
        self.endpoint.host.log.info("attendant-route", attendant=self.attendant.number, digit=digit, to=number,
                                    call=self.leg.call.uid)
        self.endpoint.route_on(self, number, now)
