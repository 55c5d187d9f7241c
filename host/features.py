"""Station features of an extension: do not disturb and call forwarding (docs/features.md).

The settings of an extension are a small dict, kept by the host that registers its phone
(a remote host in its site cache, the main host in its directory) and copied to the other:

    {"dnd": False, "always": None, "busy": None, "noanswer": None, "noanswer_s": 15, "waiting": True,
     "voicemail": False}

("voicemail": calls it does not answer go to its mailbox, host/voicemail.py; "waiting": call waiting.)

A phone changes them with a star code, dialled like a number (the handset's `!dnd` and
`!forward` console commands dial these too); its host answers with a RELEASE whose cause
says what happened (CAUSE_FEATURE_ON / CAUSE_FEATURE_OFF, or why it was refused):

    *78  do not disturb on            *79  do not disturb off
    *72N forward always to N          *73  every forwarding off
    *90N forward on busy to N         *92N forward on no answer to N (*92N*S: after S seconds)
    *70  call waiting on              *71  call waiting off (a second call then gets "busy")

`route()` follows forwarding from a called number to the number that should ring, and
stops a loop with CAUSE_FORWARD_LOOP.
"""
import json

from upbx.common import wire

DEFAULT_NOANSWER_S = 15
MAX_HOPS = 5                 # forwards one call may follow; more is taken for a loop
KINDS = ("always", "busy", "noanswer")
NOANSWER_S = (5, 120)        # least and most seconds before a no-answer forward


class FeatureError(ValueError):
    """A star code or settings that make no sense; str() says what is wrong."""


def defaults():
    return {"dnd": False, "always": None, "busy": None, "noanswer": None, "noanswer_s": DEFAULT_NOANSWER_S,
            "waiting": True, "voicemail": False}


def _number(text, what):
    if not (text.isdigit() and 1 <= len(text) <= 15):
        raise FeatureError("bad %s %r: 1 to 15 digits" % (what, text))
    return text


def _seconds(value):
    if isinstance(value, bool) or not isinstance(value, int) or not NOANSWER_S[0] <= value <= NOANSWER_S[1]:
        raise FeatureError("bad no-answer time %r: %d to %d seconds" % (value, NOANSWER_S[0], NOANSWER_S[1]))
    return value


def star_code(called):
    """(changes, cause) for a dialled star code: changes to merge into the settings, cause
    CAUSE_FEATURE_ON or CAUSE_FEATURE_OFF; None when called is no star code; FeatureError when
    it is a star code that is not understood."""
    if not called.startswith("*"):
        return None
    code, rest = called[:3], called[3:]
    if code == "*78" and not rest:
        return {"dnd": True}, wire.CAUSE_FEATURE_ON
    if code == "*79" and not rest:
        return {"dnd": False}, wire.CAUSE_FEATURE_OFF
    if code == "*70" and not rest:
        return {"waiting": True}, wire.CAUSE_FEATURE_ON
    if code == "*71" and not rest:
        return {"waiting": False}, wire.CAUSE_FEATURE_OFF
    if code == "*73" and not rest:
        return {"always": None, "busy": None, "noanswer": None}, wire.CAUSE_FEATURE_OFF
    if code == "*72":
        return {"always": _number(rest, "forward number")}, wire.CAUSE_FEATURE_ON
    if code == "*90":
        return {"busy": _number(rest, "forward number")}, wire.CAUSE_FEATURE_ON
    if code == "*92":
        number, _, seconds = rest.partition("*")
        changes = {"noanswer": _number(number, "forward number")}
        if seconds:
            changes["noanswer_s"] = _seconds(int(_number(seconds, "no-answer time")))
        return changes, wire.CAUSE_FEATURE_ON
    raise FeatureError("unknown star code %r" % called)


def check(settings):
    """Settings as they come from a peer or a file, checked and completed; FeatureError if bad."""
    if not isinstance(settings, dict):
        raise FeatureError("feature settings must be an object")
    unknown = set(settings) - set(defaults())
    if unknown:
        raise FeatureError("unknown feature setting %s" % sorted(unknown)[0])
    out = defaults()
    out.update(settings)
    for flag in ("dnd", "waiting", "voicemail"):
        if not isinstance(out[flag], bool):
            raise FeatureError("bad %s %r: true or false" % (flag, out[flag]))
    for kind in KINDS:
        if out[kind] is not None:
            if not isinstance(out[kind], str):
                raise FeatureError("bad %s forward %r" % (kind, out[kind]))
            _number(out[kind], kind + " forward")
    _seconds(out["noanswer_s"])
    return out


def encode(settings):
    """The settings as FEATURES' data IE (JSON; under 255 bytes with 15-digit numbers)."""
    return json.dumps(settings, separators=(",", ":"), sort_keys=True).encode()


def decode(data):
    """FEATURES' data IE back to checked settings; FeatureError if malformed."""
    try:
        return check(json.loads(data))
    except ValueError as exc:
        if isinstance(exc, FeatureError):
            raise
        raise FeatureError("feature settings are not JSON: %s" % exc)


def route(number, settings_of, busy=None, seen=None):
    """Where a call to number rings: (number, None), or (None, cause) when it must not ring.

    settings_of(number) gives an extension's settings; busy(number) says whether its phone is in
    a call (None: not known here, the registering host decides). Forward always is followed
    first, then forward on busy; the phone that would ring last is checked for do not disturb.
    seen: the numbers this call was already offered to (a forward on no answer continues the
    call's list; it is extended). A number seen twice, or more than MAX_HOPS forwards, is a loop."""
    seen = [] if seen is None else seen
    while True:
        if number in seen or len(seen) > MAX_HOPS:
            return None, wire.CAUSE_FORWARD_LOOP
        seen.append(number)
        settings = settings_of(number)
        target = settings["always"]
        if target is None and busy is not None and settings["busy"] is not None and busy(number):
            target = settings["busy"]
        if target is None:
            if settings["dnd"]:
                return None, wire.CAUSE_DND
            return number, None
        number = target
