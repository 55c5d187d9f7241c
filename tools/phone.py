"""`upbx phone`: a virtual handset, the real firmware under the MicroPython unix port.

Settings come from a TOML file ([phone] table, see docs/config.md) or flags;
the script flags (--call, --answer, --duration ...) drive it without a person.
"""
import json
import os
import subprocess
import sys
import tempfile

from host.config import ConfigError, load_phone_config, parse_hostport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micropython():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    return here if os.path.exists(here) else "micropython"


def add_arguments(parser):
    parser.add_argument("--config", help="TOML file with a [phone] table")
    parser.add_argument("--extension", help="extension number (overrides the file)")
    parser.add_argument("--secret", help="hex secret from `upbx admin ext add`")
    parser.add_argument("--host", help="HOST:PORT of the remote host, or the main host where the site has none")
    parser.add_argument("--bind", default="0.0.0.0", help="local address to bind")
    parser.add_argument("--send", dest="audio_in", help='microphone: a WAV file (8 kHz, 16-bit mono) or "tone:HZ"')
    parser.add_argument("--record", dest="audio_out", help="write what the speaker plays to this WAV file")
    parser.add_argument("--record-g711", help="write each received frame (4-byte timestamp + payload) here")
    parser.add_argument("--call", help="dial this number once registered")
    parser.add_argument("--call-after", type=float, default=0.0, help="seconds to wait before dialing")
    parser.add_argument("--duration", type=float, help="hang up this many seconds after the call is answered")
    parser.add_argument("--answer", action="store_true", help="answer incoming calls automatically")
    parser.add_argument("--dtmf", help="digits to send once connected")
    parser.add_argument("--exit-after", type=float, help="quit after this many seconds")
    parser.add_argument("--exit-after-call", action="store_true", help="quit when the first call ends")
    parser.add_argument("--summary", help="write a JSON summary of the run here")
    parser.add_argument("--no-plc", action="store_true", help="turn packet loss concealment off")
    parser.add_argument("--vad", action="store_true",
                        help="silence suppression: no voice frames in silence, comfort-noise frames instead")
    parser.add_argument("--heapsize", default="2M",
                        help="MicroPython heap, e.g. 100K for an ESP32-WROOM without PSRAM (default 2M)")


def device_config(args):
    """The JSON the firmware reads (what `upbx deploy` writes to a real handset)."""
    values = {}
    if args.config:
        cfg = load_phone_config(args.config)
        values = {"extension": cfg.extension, "secret": cfg.secret.hex(), "host": cfg.host[0],
                  "port": cfg.host[1], "audio_in": cfg.audio_in, "audio_out": cfg.audio_out}
    if args.extension:
        values["extension"] = args.extension
    if args.secret:
        values["secret"] = args.secret
    if args.host:
        values["host"], values["port"] = parse_hostport(args.host)
    for key in ("audio_in", "audio_out"):
        if getattr(args, key):
            values[key] = os.path.abspath(getattr(args, key)) if not getattr(args, key).startswith("tone:") else getattr(args, key)
    missing = [k for k in ("extension", "secret", "host") if k not in values]
    if missing:
        raise ValueError("missing %s (give --config or the flags)" % ", ".join(missing))
    values["bind"] = args.bind
    values["plc"] = not args.no_plc
    if args.vad:
        values["vad"] = True
    script = {}
    if args.call:
        script["call"] = args.call
        script["call_after_ms"] = int(args.call_after * 1000)
    if args.duration:
        script["duration_ms"] = int(args.duration * 1000)
    if args.answer:
        script["answer"] = True
    if args.dtmf:
        script["dtmf"] = args.dtmf
    if args.exit_after:
        script["exit_after_ms"] = int(args.exit_after * 1000)
    if args.exit_after_call:
        script["exit_after_call"] = True
    if args.summary:
        script["summary"] = os.path.abspath(args.summary)
    if args.record_g711:
        script["record_g711"] = os.path.abspath(args.record_g711)
    values["script"] = script
    return values


def run(args):
    try:
        values = device_config(args)
    except (ConfigError, ValueError) as exc:
        print("upbx phone: %s" % exc, file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="upbx-phone-")
    values["sysinfo_file"] = os.path.join(workdir, "sysinfo.json")
    path = os.path.join(workdir, "upbx_config.json")
    with open(path, "w") as f:
        json.dump(values, f)
    env = dict(os.environ, MICROPYPATH=ROOT + ":.frozen")
    argv = [micropython(), "-X", "heapsize=" + args.heapsize, os.path.join(ROOT, "firmware", "main.py"), path]
    proc = subprocess.Popen(argv, env=env, cwd=workdir)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
