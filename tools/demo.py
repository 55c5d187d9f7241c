"""`upbx demo`: the whole exchange on this machine, calls covering B1, B2 and B3.

Starts a main host, remote hosts for sites A and B, site C with phones straight
at the main host, places one call per behaviour between virtual handsets (the
real firmware under the MicroPython unix port), prints what happened and stops
everything it started.
"""
import json
import os
import shutil
import sys

from upbx.tools.lab import LoopbackExchange, place_call

CALLS = [
    ("B1", "101", "301", "site A phone -> remote host A -> main host -> site C phone"),
    ("B1", "301", "102", "the reverse: site C phone -> main host -> remote host A -> site A phone"),
    ("B2", "101", "201", "site A -> site B, media directly between the remote hosts"),
    ("B3", "101", "102", "two phones of site A, media phone to phone on the LAN"),
]


def add_arguments(parser):
    parser.add_argument("what", nargs="?", choices=["features", "sip"],
                        help="features: one scenario per call feature of issue 12 instead (docs/features.md); "
                             "sip: baresip as a SIP phone calling a handset and called by it (docs/sip.md)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each call")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, recordings)")
    parser.add_argument("--micropython", metavar="PATH",
                        help="the MicroPython binary every handset runs (e.g. a 32-bit image from upbx build)")
    parser.add_argument("--heapsize", help="each handset's MicroPython heap, e.g. 64K (default 2M)")
    parser.add_argument("--mpy", action="store_true", help="handsets load the firmware as .mpy files, not source")
    parser.add_argument("--ticks-start", type=int, metavar="MS",
                        help="each handset's tick counter starts here (e.g. 1073738000: a 32-bit build's "
                             "ticks_ms wraps 3.8 s after the phone boots, in the middle of its call)")


def phone_args(args):
    """The `upbx phone` flags the demo's handsets get from the demo's own flags."""
    out = []
    if args.micropython:
        out += ["--micropython", os.path.abspath(args.micropython)]
    if args.heapsize:
        out += ["--heapsize", args.heapsize]
    if args.mpy:
        out.append("--mpy")
    if args.ticks_start is not None:
        out += ["--ticks-start", str(args.ticks_start)]
    return out


def run_demo(seconds=2.0, lab=None, phone_args=()):
    rows = []
    own = lab is None
    lab = lab or LoopbackExchange(phone_args=phone_args)
    try:
        if own:
            lab.provision()
            lab.start()
        for behaviour, caller, callee, _what in CALLS:
            row = place_call(lab, caller, callee, behaviour, seconds)
            if row["path"] != "local":
                records = json.loads(lab.admin("calls", "--json", "--limit", "1"))
                if records:
                    row["path"] = records[0]["path"]
            rows.append(row)
    finally:
        if own:
            lab.close()
    return rows, lab


def run(args):
    if args.what == "features":
        from upbx.tools import demo_features
        return demo_features.run(args, phone_args(args))
    if args.what == "sip":
        from upbx.tools import demo_sip
        return demo_sip.run(args)
    print("starting main host, remote hosts for sites A and B, phones at sites A, B, C ...", file=sys.stderr)
    lab = LoopbackExchange(phone_args=phone_args(args))
    try:
        rows, _ = run_demo(args.seconds, lab=_started(lab))
    finally:
        lab.close()
        if not args.keep:
            shutil.rmtree(lab.dir, ignore_errors=True)
    if args.json:
        print(json.dumps({"calls": [{k: r[k] for k in ("behaviour", "from", "to", "path", "setup_ms",
                                                        "frames_sent", "frames_received", "audio_match")}
                                    for r in rows]}))
    else:
        header = "%-4s %-5s %-5s %-7s %8s %6s %6s %5s %-5s  %s" % (
            "call", "from", "to", "path", "setup ms", "sent", "recv", "lost", "audio", "media packets seen by hosts")
        print(header)
        print("-" * len(header))
        for r in rows:
            print("%-4s %-5s %-5s %-7s %8s %6d %6d %5d %-5s  %s" % (
                r["behaviour"], r["from"], r["to"], r["path"], r["setup_ms"], r["frames_sent"],
                r["frames_received"], r["frames_lost"], "ok" if r["audio_match"] else "BAD",
                " ".join("%s=%d" % kv for kv in sorted(r["media_at_hosts"].items()))))
        if args.keep:
            print("\nlogs and recordings: %s" % lab.dir)
    return 0 if all(r["audio_match"] for r in rows) else 1


def _started(lab):
    lab.provision()
    lab.start()
    return lab
