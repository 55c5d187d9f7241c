"""`upbx admin voicemail ...` and `upbx admin attendant ...` (docs/features.md).

    upbx admin --config main.toml voicemail on 101            # unanswered calls to 101 go to its mailbox
    upbx admin --config main.toml voicemail greeting 101 hello.wav   # or --default
    upbx admin --config main.toml voicemail list 101
    upbx admin --config main.toml attendant set 500 --route 1=101 --route 2=600 --route 9=*98101
    upbx admin --config main.toml attendant list | remove 500

The settings live where the main host reads them: the voicemail flag in the extension's
feature settings (sent to its remote host), greetings and attendants in the voicemail database
beside the main host's (DATABASE.voicemail/voicemail.sqlite), which the main host re-reads
within a second of a change.
"""
import os

from upbx.host import attendant as attendants
from upbx.host import features
from upbx.host.voicemail import VoicemailError, VoicemailStore, load_wav


def add_arguments(things, actions, leaf):
    vm = actions(things, "voicemail", "voicemail: on/off per extension, greetings, messages")
    for state in ("on", "off"):
        leaf(vm, state, "calls to the extension it does not answer %s to its mailbox"
             % ("go" if state == "on" else "no longer go")).add_argument("number")
    p = leaf(vm, "greeting", "the extension's greeting: a WAV (8 kHz, mono, 16-bit, at most 60 s) or --default")
    p.add_argument("number")
    p.add_argument("wav", nargs="?")
    p.add_argument("--default", action="store_true", help="the spoken default again")
    leaf(vm, "list", "an extension's messages, new first").add_argument("number")

    att = actions(things, "attendant", "auto-attendants: a number that answers and routes by digit")
    p = leaf(att, "set", "add or replace an attendant")
    p.add_argument("number")
    p.add_argument("--route", action="append", default=[], metavar="DIGIT=NUMBER",
                   help="a digit and where it goes: an extension, a group, *98N (N's mailbox) or *97")
    p.add_argument("--prompt-text", metavar="TEXT", help="what it says (spoken by espeak-ng; default: the routes)")
    p.add_argument("--prompt", metavar="FILE.wav", help="what it plays instead (8 kHz, mono, 16-bit, at most 60 s)")
    leaf(att, "list", "list attendants")
    leaf(att, "remove", "remove an attendant").add_argument("number")


def _store(d):
    return VoicemailStore(str(d.path) + ".voicemail")


def _extension(d, number, error):
    if d.extension(number) is None:
        raise error("unknown extension %r" % number)


def voicemail_switch(d, args, error, done):
    _extension(d, args.number, error)
    settings = d.features(args.number)
    settings["voicemail"] = args.action == "on"
    settings = d.set_features(args.number, features.check(settings), announce=True)
    done(args, "extension %s: voicemail %s (after %d s of ringing, on busy, do not disturb, not registered)"
         % (args.number, args.action, settings["noanswer_s"]) if args.action == "on"
         else "extension %s: voicemail off" % args.number, dict(settings, number=args.number))


def voicemail_greeting(d, args, error, done):
    _extension(d, args.number, error)
    if bool(args.wav) == bool(args.default):
        raise error("voicemail greeting %s: give a WAV file or --default (one of them)" % args.number)
    with _store(d) as store:
        if args.default:
            store.unset_greeting(args.number)
            return done(args, "extension %s: the default greeting" % args.number, {"number": args.number,
                                                                                   "greeting": None})
        try:
            ulaw = load_wav(args.wav)
        except VoicemailError as exc:
            raise error(str(exc)) from None
        name = os.path.basename(args.wav)
        store.set_greeting(args.number, name, ulaw)
    done(args, "extension %s: greeting %s (%.1f s)" % (args.number, name, len(ulaw) / 8000),
         {"number": args.number, "greeting": name, "seconds": len(ulaw) / 8000})


def voicemail_list(d, args, error, table):
    _extension(d, args.number, error)
    with _store(d) as store:
        rows = store.messages(args.number)
    table(args, rows, [("uid", "message"), ("caller", "from"), ("received_ms", "received ms"),
                       ("duration_ms", "ms"), ("state", "state"), ("origin", "recorded by"), ("file", "file")])


def attendant_set(d, args, error, done):
    if d.extension(args.number) is not None or not args.number.isdigit() or len(args.number) > 15:
        raise error("attendant set %s: the number must be digits and not an extension" % args.number)
    if args.prompt and args.prompt_text:
        raise error("attendant set %s: --prompt or --prompt-text, not both" % args.number)
    try:
        routes = attendants.check_routes(args.route)   # any number: extensions, groups, mailboxes
        prompt = load_wav(args.prompt) if args.prompt else None
    except VoicemailError as exc:
        raise error("attendant set %s: %s" % (args.number, exc)) from None
    data = {"routes": routes, "prompt_text": args.prompt_text,
            "prompt_name": os.path.basename(args.prompt) if args.prompt else None}
    with _store(d) as store:
        store.set_attendant(args.number, data, prompt)
    done(args, "attendant %s: %s" % (args.number, ", ".join("%s -> %s" % kv for kv in sorted(routes.items()))),
         dict(data, number=args.number))


def attendant_list(d, args, error, table):
    with _store(d) as store:
        rows = [{"number": n, "routes": " ".join("%s=%s" % kv for kv in sorted(data["routes"].items())),
                 "prompt": data.get("prompt_name") or data.get("prompt_text") or "(the routes, spoken)"}
                for n, (data, _prompt) in store.attendants().items()]
    table(args, rows, [("number", "number"), ("routes", "routes"), ("prompt", "prompt")])


def attendant_remove(d, args, error, done):
    with _store(d) as store:
        if not store.remove_attendant(args.number):
            raise error("no attendant %r" % args.number)
    done(args, "attendant %s removed" % args.number, {"number": args.number})
